"""How many trials a study runs at once: what the cluster can *reach*, not what is up.

An autoscaling cluster starts with no GPU workers; sizing Tune's trial limit from the nodes up
at the start (``ray.cluster_resources()``) gives 1 there, so the autoscaler only ever sees one
pending trial and the whole search runs one trial at a time. The limit is computed instead from
the nodes the cluster can bring up (the cluster YAML's node types × their ``max_workers``), the
resources declared for an attached cluster, or, on a local Ray, the nodes that are up.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from search_spaces import StudySpec


def trials_per_node(per_trial: Mapping[str, float], node: Mapping[str, float]) -> int:
    """Trials of ``per_trial`` ({"CPU": c, "GPU": g}) that fit on one node at once."""
    fits = [math.floor(node.get(k, 0.0) / v + 1e-9) for k, v in per_trial.items() if v > 0]
    return max(0, min(fits)) if fits else 0


def trial_slots(spec: StudySpec, nodes: Iterable[Mapping[str, float]]) -> int:
    """Trials of ``spec`` that run at once on ``nodes`` (one resource dict per node, e.g. the
    autoscaler's maximum: every worker type repeated ``max_workers`` times); at least 1."""
    per_trial = {"CPU": spec.resources.cpus, "GPU": spec.resources.gpus}
    return max(1, sum(trials_per_node(per_trial, n) for n in nodes))


def live_nodes() -> list[dict[str, float]]:
    """The resources of each alive node of the Ray cluster this process is connected to."""
    import ray

    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]

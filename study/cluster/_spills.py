"""At a study's end, every other node of the Ray cluster delivers what its trials spilled.

A trial logger that could not deliver at its end writes its buffer to its machine's temp
folder (``study.tracking.default_spill_dir``); the next trial that starts on that machine
replays it, and the driver replays its own machine's at the study's end. A machine where no
further trial of the study starts would keep its spills: so the driver asks each other live
node to replay (one small task per node, pinned to it, no CPU reserved, bounded in time) before
it closes the study's runs, and names the nodes whose spills stay, with their folder.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class NodeReplay:
    """What one node delivered: ``delivered`` runs, ``left`` spill files of this study's server
    still there (in ``folder`` on ``host``), or ``error`` (the task failed or timed out)."""

    node_id: str
    host: str
    delivered: int = 0
    left: int = 0
    folder: str = ""
    error: str = ""


def replay_on_nodes(tracking_uri: str, login: Any = None, *,
                    timeout_s: float = 30.0) -> list[NodeReplay]:
    """Ask every live node but this driver's own to replay its spills for ``tracking_uri``
    (``login``: the MLflow login the trials got, ``study.tracking._login``); wait at most
    ``timeout_s``. Nothing runs on a one-node (local) Ray."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    nodes = [n for n in ray.nodes() if n.get("Alive") and n["NodeID"] != here]
    if not nodes:
        return []
    task = ray.remote(num_cpus=0, max_retries=0)(_replay_here)
    refs = {task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        n["NodeID"], soft=False)).remote(tracking_uri, login): n for n in nodes}
    ready, late = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
    out = []
    for ref, node in refs.items():
        nid, host = node["NodeID"], str(node.get("NodeManagerAddress", ""))
        if ref not in ready:
            out.append(NodeReplay(nid, host, error=f"no answer within {timeout_s:.0f} s"))
            continue
        try:
            out.append(NodeReplay(nid, host, **ray.get(ref)))
        except Exception as exc:  # noqa: BLE001 -- a node lost meanwhile: say so, go on
            out.append(NodeReplay(nid, host, error=str(exc).strip().splitlines()[-1][:200]))
    for ref in late:
        ray.cancel(ref, force=True)
    return out


def left_behind(replays: list[NodeReplay]) -> list[str]:
    """One line per node whose spills stay; empty when every node delivered its own."""
    lines = []
    for r in replays:
        if r.error:
            lines.append(f"node {r.node_id[:8]} ({r.host}): spilled MLflow data not replayed "
                         f"({r.error}); it stays in that machine's temp folder "
                         "(tlstudy-mlflow-spill) for the next trial there")
        elif r.left:
            lines.append(f"node {r.node_id[:8]} ({r.host}): {r.left} spilled run(s) not "
                         f"delivered yet, in {r.folder} (replayed by the next trial there)")
    return lines


def _replay_here(tracking_uri: str, login: Any) -> dict[str, Any]:
    """On a node: deliver its spills for ``tracking_uri`` and count what is left."""
    import json

    from study import tracking

    if login is not None:  # a worker node has no credentials of its own
        login.apply()
    delivered = tracking.replay_spilled(only_uri=tracking_uri, wait_s=10)
    folder = tracking.default_spill_dir()
    left = 0
    for path in folder.glob("*.pending.json") if folder.is_dir() else []:
        try:
            left += json.loads(path.read_text()).get("tracking_uri") == tracking_uri
        except (OSError, ValueError):
            continue
    return {"delivered": delivered, "left": left, "folder": f"{socket.gethostname()}:{folder}"}

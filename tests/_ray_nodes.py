"""Several Ray nodes on this one machine, as separate machines would be.

Used by the scripts the multi-node tests run in a process of their own (so the session's Ray is
untouched and a timeout can kill the whole cluster): each node gets agent ports of its own (by
default two nodes on one host share them and the second agent fails) and a session folder of its
own (sharing the head's, its runtime-env agent would delete a Ray job's working_dir under the
running driver).
"""

from __future__ import annotations

import socket
from typing import Any


def node_ports() -> dict[str, int]:
    """Free ports for one node's dashboard agent and metrics agent."""
    out = {}
    for key in ("dashboard_agent_listen_port", "metrics_agent_port", "metrics_export_port"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            out[key] = s.getsockname()[1]
    return out


def two_nodes(worker_tmp: str, *, head: dict[str, Any] | None = None,
              worker: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """A head and one worker node (1 CPU each unless ``head``/``worker`` say otherwise);
    ``worker_tmp``: the worker's session folder (keep it short: socket paths). Returns the
    ``ray.cluster_utils.Cluster`` and the worker's node."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, **node_ports(), **(head or {})})
    node = cluster.add_node(**{"num_cpus": 1, "temp_dir": worker_tmp, **node_ports(),
                               **(worker or {})})
    return cluster, node

"""Several Ray nodes on this one machine, as separate machines would be.

Used by the scripts the multi-node tests run in a process of their own (so the session's Ray is
untouched and a timeout can kill the whole cluster): each node gets agent ports of its own (by
default two nodes on one host share them and the second agent fails) and a session folder of its
own (sharing the head's, its runtime-env agent would delete a Ray job's working_dir under the
running driver).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest


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


def run_cluster_script(source: str, args: dict[str, Any], folder: Path, *,
                       timeout_s: float) -> dict[str, Any]:
    """Run ``source`` (a script that starts its own Ray nodes) as ``python SCRIPT ARGS_JSON``
    in the project folder and return the JSON object it prints last. ``args["root"]`` is set to
    the project folder and ``args["worker_tmp"]`` to a short new folder (removed afterwards).
    The script runs in a session of its own: on a timeout the whole cluster is killed and the
    test fails with the script's stderr; a failing script fails the test the same way."""
    from study.cluster import PROJECT_ROOT

    args = {**args, "root": str(PROJECT_ROOT),
            "worker_tmp": tempfile.mkdtemp(prefix="rw", dir="/tmp")}  # short: socket paths
    script = Path(folder) / "cluster_script.py"
    script.write_text(source)
    proc = subprocess.Popen([sys.executable, str(script), json.dumps(args)], cwd=PROJECT_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{script.name} timed out after {timeout_s:.0f} s:\n{err[-4000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever of the cluster is left
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(args["worker_tmp"], ignore_errors=True)
    assert proc.returncode == 0, err[-4000:]
    report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    report["stderr"] = err
    return report

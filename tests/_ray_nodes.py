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
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

_HANDED_OUT: set[int] = set()


def quiet_port() -> int:
    """A free port for a Ray node to bind, from where no process is given ports at random:
    above Ray's worker ports (10002-19999) and below the kernel's ephemeral range
    (``ip_local_port_range``). A ``bind(0)`` port lies in that ephemeral range, where the
    processes started between the pick and the node's own bind (its GCS, raylet and workers, the
    session's Ray) take theirs too; a dashboard agent whose HTTP port was taken stays up without
    it and never registers, so every ``ray job submit`` is then refused. Checked free on every
    address; never handed out twice by this process."""
    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    pick = random.SystemRandom()
    for _ in range(1000):
        port = pick.randint(20000, max(ephemeral, 21000) - 1)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free port between 20000 and the ephemeral range")


def node_ports() -> dict[str, int]:
    """Ports of one node's dashboard agent (HTTP, gRPC) and metrics exporter."""
    return {key: quiet_port() for key in
            ("dashboard_agent_listen_port", "metrics_agent_port", "metrics_export_port")}


NO_AGENT = "No available agent"      # Ray's job head: the head's job agent is not registered yet


def submit_job(attempt: Callable[[], tuple[int, str]], *, session_dirs: Sequence[str | Path],
               deadline_s: float = 300.0) -> tuple[int, str]:
    """``attempt()`` (one ``ray job submit``: its exit status and output) until it is not
    refused for want of the head's job agent, which registers some seconds after the dashboard
    (longer on a loaded machine), for at most ``deadline_s``. A submission Ray refuses that way
    creates no job, so the same submission id can be sent again. When it is still refused, the
    output gets the attempts, the time waited and the tail of each node's
    ``dashboard_agent.log`` (``session_dirs``: the nodes' Ray session folders), which say why."""
    start = time.monotonic()
    attempts = 0
    while True:
        rc, out = attempt()
        attempts += 1
        if rc == 0 or NO_AGENT not in out:
            return rc, out
        if time.monotonic() - start > deadline_s:
            break
        time.sleep(2)
    notes = [f"\n[{attempts} submissions refused for want of a job agent over "
             f"{time.monotonic() - start:.0f} s]"]
    logs = {log.resolve() for folder in session_dirs
            for log in Path(folder).glob("**/logs/dashboard_agent.log")}
    notes += [f"[{log}]\n{log.read_text(errors='replace')[-3000:]}" for log in sorted(logs)]
    return rc, out + "\n".join(notes)


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


# ---------------------------------------------------------------- `ray start` raylets

_WAIT_NODES = """
import json, sys, time, ray
address, count, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ray.init(address=address, configure_logging=False, log_to_driver=False)
deadline = time.monotonic() + timeout
while True:
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) >= count or time.monotonic() > deadline:
        break
    time.sleep(0.5)
print(json.dumps(sorted(n["NodeID"] for n in alive)))
"""


def own_ip() -> str:
    """A non-loopback address of this machine's own network namespace (the one its default
    route leaves from); skips the test when there is none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            ip = str(s.getsockname()[0])
        except OSError:
            ip = "127.0.0.1"
    if ip.startswith("127."):
        pytest.skip("this machine has no non-loopback address")
    return ip


class RayStartCluster:
    """A head and worker raylets started with the ``ray`` command as on separate machines:
    ``ray start --head`` then ``ray start --address``, each ``--block``-ed in a session of its
    own (stopped by that session, never by ``ray stop``), each with its own ``--temp-dir`` and
    agent ports, all bound to ``ip``. ``env`` / ``worker_env``: each node's environment (what
    its workers inherit: a credentials file on the head only, as on a cloud)."""

    def __init__(self, ip: str, folder: Path, *, head_env: dict[str, str],
                 worker_env: dict[str, str], cpus: int = 1) -> None:
        self.ip, self.folder, self.cpus = ip, Path(folder), cpus
        # token authentication on every node and client, as the cluster YAML sets it
        self.head_env = {**head_env, "RAY_AUTH_MODE": "token"}
        self.worker_env = {**worker_env, "RAY_AUTH_MODE": "token"}
        self.port = quiet_port()
        self.dashboard_port = quiet_port()
        self.client_port = quiet_port()                  # Ray Client; not everyone's 10001
        self.procs: list[subprocess.Popen] = []
        self.temp_dirs: list[str] = []
        self.head_id = self.worker_id = ""

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def job_address(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def client_address(self) -> str:
        """The head's Ray Client server (``ray://``)."""
        return f"ray://{self.ip}:{self.client_port}"

    def _start(self, args: list[str], env: dict[str, str], name: str) -> subprocess.Popen:
        tmp = tempfile.mkdtemp(prefix=f"r{name[0]}", dir="/tmp")  # short: socket paths
        self.temp_dirs.append(tmp)
        ports = node_ports()
        ray = str(Path(sys.executable).parent / "ray")
        argv = [ray, "start", "--block", "--disable-usage-stats", f"--node-ip-address={self.ip}",
                f"--num-cpus={self.cpus}", f"--temp-dir={tmp}",
                f"--dashboard-agent-listen-port={ports['dashboard_agent_listen_port']}",
                f"--metrics-export-port={ports['metrics_export_port']}",
                f"--dashboard-agent-grpc-port={ports['metrics_agent_port']}", *args]
        log = (self.folder / f"{name}.log").open("ab")
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        return proc

    def start(self, timeout_s: float = 120.0, *, worker: bool = True) -> list[str]:
        """Start both nodes (the head alone without ``worker``) and wait until they are
        alive; returns their node ids."""
        self._start(["--head", f"--port={self.port}", "--include-dashboard=true",
                     "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
                     f"--ray-client-server-port={self.client_port}"],
                    self.head_env, "head")
        (self.head_id,) = self.wait(1, timeout_s)
        if not worker:
            return [self.head_id]
        self._start([f"--address={self.address}"], self.worker_env, "worker")
        ids = self.wait(2, timeout_s)
        assert len(ids) == 2, f"worker raylet did not join: {self.log('worker')[-3000:]}"
        (self.worker_id,) = set(ids) - {self.head_id}
        return ids

    def wait(self, count: int, timeout_s: float) -> list[str]:
        done = subprocess.run([sys.executable, "-c", _WAIT_NODES, self.address, str(count),
                               str(timeout_s)], capture_output=True, text=True,
                              timeout=timeout_s + 60, env=self.head_env)
        assert done.returncode == 0, (done.stderr[-3000:] + self.log("head")[-3000:])
        ids: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
        return ids

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def kill_worker(self) -> None:
        """The worker machine lost: its whole session killed at once."""
        _kill_session(self.procs[1].pid)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            _kill_session(proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        for tmp in self.temp_dirs:
            shutil.rmtree(tmp, ignore_errors=True)

    def __enter__(self) -> RayStartCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid`` (a node we started, with what it spawned)."""
    from study.tracking._proc import session_members

    for pid in session_members(sid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)

"""``--address ray://HOST:PORT`` (Ray Client) is refused before anything starts, with the two
commands that run the same study on that cluster instead.

Why, from Ray 2.60's source and a smoke study run against a real head with a Ray Client
server: when the driver is a Ray Client, ``tune.Tuner`` runs its whole ``TunerInternal`` — the
fit loop, the searcher, the scheduler and every callback — as an actor pinned to the Ray Client
server's node, the head (``ray/tune/tuner.py``, ``Tuner.__init__``/``fit``;
``ray/air/util/node.py``: "If using Ray Client, the current node is the client server node").
The study's driver-side state is then split between two machines:

- Optuna's storage (``<runs>/<study>/optuna.db``) and Tune's experiment folder are written on
  the head, at this machine's paths, while the launcher reads its own copy to learn whether the
  searches ran out and which configuration won. With the head's disk apart from the driver's
  (a private mount over the runs folder), a smoke study whose trials all completed on the head
  ended as "interrupted" (exit 130).
- The run-closer callback runs on the head without the driver's MLflow login: every run it
  had to end was answered HTTP 401 (5 of the smoke study's 8 trials).
- The progress display is a pickled copy: the terminal stayed at "0/6 done · starting".
- Ctrl-C stops the client only; Tune's loop on the head goes on.

Ray's own ways to run a driver on a cluster are a Ray job (``ray job submit``: the driver runs
on the head) and a driver on one of the cluster's machines joined by its GCS address; the
refusal prints both, with the addresses the cluster itself reports through the Ray Client
connection (its GCS address and its dashboard as the head sees them).
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeGuard

from study.cluster import job_submit_argv

RAY_CLIENT = "ray://"
DEFAULT_GCS_PORT = 6379          # `ray start --head` without --port
DEFAULT_DASHBOARD_PORT = 8265    # and without --dashboard-port


def is_ray_client(address: str | None) -> TypeGuard[str]:
    return address is not None and address.startswith(RAY_CLIENT)


@dataclass(frozen=True)
class Endpoints:
    """Where a cluster takes a driver (``gcs``, ``HOST:PORT``) and a job (``dashboard``,
    ``HOST:PORT`` as the head sees it); ``asked``: reported by the cluster, else Ray's defaults
    on the Ray Client's host (``error`` says why it could not be asked)."""

    gcs: str
    dashboard: str
    asked: bool
    error: str = ""


def cluster_endpoints(address: str, attempts: int = 2) -> Endpoints:
    """Ask the cluster behind the Ray Client ``address`` for its GCS address and dashboard
    (a Ray Client connection, closed again: nothing is scheduled on the cluster). A server
    that answered but failed to start this client's session ("Initialization failure from
    server", seen once in a few connections to a real head) is asked again."""
    host = address[len(RAY_CLIENT):].rsplit(":", 1)[0]
    error = ""
    for _ in range(attempts):
        try:
            gcs, dashboard = _ask(address)
        except Exception as exc:  # noqa: BLE001 -- any failure: fall back to Ray's defaults
            text = str(exc).strip()
            error = text.splitlines()[0][:200] if text else type(exc).__name__
            if "Initialization failure" not in text:
                break
            continue
        return Endpoints(gcs, dashboard or f"{host}:{DEFAULT_DASHBOARD_PORT}",
                         asked=bool(dashboard))
    return Endpoints(f"{host}:{DEFAULT_GCS_PORT}", f"{host}:{DEFAULT_DASHBOARD_PORT}",
                     asked=False, error=error)


def _ask(address: str) -> tuple[str, str]:
    import ray

    ctx = ray.init(address=address, configure_logging=False, log_to_driver=False)
    try:
        return (str(ray.get_runtime_context().gcs_address),
                str(getattr(ctx, "dashboard_url", "") or ""))
    finally:
        ray.shutdown()


def instead(ends: Endpoints, options: Sequence[str]) -> tuple[list[str], list[str]]:
    """The two command lines that run the study (launcher ``options``, without ``--address``)
    on the cluster: as a Ray job submitted from the project folder, and the launcher on a
    machine of the cluster attached to its GCS."""
    entry = ["python", "-m", "study.launch", *options]
    job = job_submit_argv(entry, submission_id=None, working_dir=".",
                          address=f"http://{ends.dashboard}")
    return job, ["python", "-m", "study.launch", "--address", ends.gcs, *options]


def refusal(address: str, source: str, ends: Endpoints, options: Sequence[str]) -> str:
    """The launcher's error for a Ray Client address: why, and what to paste instead."""
    job, attach = instead(ends, options)
    dash_host, _, dash_port = ends.dashboard.rpartition(":")
    where = ("the addresses the cluster reported" if ends.asked else
             f"Ray's default ports: the cluster could not be asked ({ends.error})")
    lines = [
        f"{source}={address} is Ray Client, which cannot run a study: under Ray Client, Ray "
        "Tune runs the study's driver loop (the Optuna searcher, ASHA, the callbacks that end "
        "MLflow runs and show progress) in an actor on the cluster's head, apart from this "
        "process, its runs folder and its MLflow login. Nothing was started.",
        f"Run the study on the cluster instead ({where}), from this project folder:",
        "  as a Ray job (the driver runs on the head and its output streams here; the head "
        "needs the MLflow login: TLSTUDY_MLFLOW_CREDENTIALS in the environment its `ray "
        "start` ran with, or --tracking-uri; --data and --runs-dir are paths on the head):",
        "    " + shlex.join(job),
    ]
    if _loopback(dash_host):
        lines.append(f"    (the dashboard listens on the head's {dash_host}: run it on the head, "
                     f"or here through `ssh -L {dash_port}:{dash_host}:{dash_port} HEAD`)")
    lines += ["  or on a machine of the cluster (e.g. the head), attached to its GCS:",
              "    " + shlex.join(attach)]
    return "\n".join(lines)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"

"""``python -m study.launch --address HOST:PORT | auto``: a study on a Ray cluster that is
already running (machines joined with ``ray start``, a KubeRay RayCluster, the head of a
``ray up`` cluster), with this process as the driver on one of the cluster's machines.
``ray://HOST:PORT`` (Ray Client) is understood but refused, with the commands to run instead
(:mod:`study.cluster._client`).

What differs from a local study:

- Ray: the driver joins the cluster (``ray.init(address=...)``) instead of starting its own.
  Without ``--address`` the launcher honours ``RAY_ADDRESS`` as Ray's own tools do.
- MLflow: trials on other machines must reach the tracking server. Without ``--tracking-uri``
  the managed server binds the address this machine has on the cluster's network (the
  driver's Ray node address) and so turns MLflow's login on: the driver needs credentials
  (``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` or ``TLSTUDY_MLFLOW_CREDENTIALS``);
  trials get them from the driver through Ray (``study.tracking._login``), the other
  machines need none.
  A cluster whose nodes all share the driver's loopback address keeps a loopback server.
- Storage: a cluster spanning several machines needs ``--storage-path`` on storage every node
  reaches (Tune writes trial checkpoints there), as with ``--cluster``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study.cluster import ClusterError

_HOST_PORT = re.compile(r"(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})")


@dataclass(frozen=True)
class AttachSettings:
    """How a study attached to a running Ray cluster runs (what ``attach`` found)."""

    address: str                    # as given (``auto``, ``HOST:PORT``)
    tracking_uri: str               # MLflow as every node reaches it
    node_ip: str                    # this driver's address on the cluster network
    hosts: frozenset[str]           # the addresses of the cluster's live nodes
    resources: dict[str, float]     # what the cluster can reach: up now, or its autoscaler's
                                    # maximum when larger (GPU workers not started yet)


def resolve_address(flag: str | None, environ: Mapping[str, str]) -> str | None:
    """The Ray cluster to attach to: ``--address``, else ``RAY_ADDRESS``, else None (a local
    Ray of this machine's own). Raises ClusterError for an address Ray would not understand.
    A ``ray://`` address is returned as such: the launcher refuses it with what to run instead
    (:mod:`study.cluster._client`)."""
    value = flag if flag is not None else environ.get("RAY_ADDRESS") or None
    if value is None:
        return None
    source = "--address" if flag is not None else "RAY_ADDRESS"
    value = value.strip()
    if value == "auto":
        return value
    if value == "local":
        raise ClusterError(f"{source}=local starts a new Ray, it attaches to nothing: leave it "
                           "out for a study on this machine's own Ray")
    rest = value[len("ray://"):] if value.startswith("ray://") else value
    m = _HOST_PORT.fullmatch(rest)
    if m is None or not 0 < int(m["port"]) < 65536:
        raise ClusterError(f"{source}={value!r}: expected HOST:PORT (the head's GCS address, "
                           "e.g. 10.0.0.5:6379) or auto (the cluster `ray start` runs on this "
                           "machine)")
    return value


def attach(address: str, runs_dir: Path, tracking_uri: str | None, *,
           storage_path: str | None, echo: Callable[[str], Any] = print,
           server_timeout_s: float = 120.0,
           server_options: Mapping[str, Any] | None = None) -> AttachSettings:
    """Join the Ray cluster at ``address`` and choose the MLflow server its trials log to.
    ``server_options`` (``backend``, ``artifacts``, ``workers``: the launcher's
    ``--backend-store-uri``, ``--artifacts-destination``, ``--server-workers``) go to the
    managed server when no ``tracking_uri`` is given.

    Raises ClusterError (nothing started on the cluster) when Ray cannot be reached, when the
    tracking server would be out of the other machines' reach, when a multi-machine cluster has
    no shared ``storage_path``, or when the managed server cannot start (e.g. no login)."""
    import ray

    if not ray.is_initialized():
        try:
            ray.init(address=address, configure_logging=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ClusterError(
                f"cannot attach to the Ray cluster at {address}: {exc}\n(is it running? "
                f"`ray status --address {address}`; a cluster with token authentication "
                "needs RAY_AUTH_MODE=token here and its token in ~/.ray/auth_token or "
                "RAY_AUTH_TOKEN)") from None
    node_ip = ray.util.get_node_ip_address()
    hosts = frozenset(str(n["NodeManagerAddress"]) for n in ray.nodes() if n.get("Alive"))
    remote = hosts - {node_ip}
    if remote and storage_path is None:
        raise ClusterError(
            f"the Ray cluster at {address} spans several machines ({', '.join(sorted(hosts))}):"
            " give --storage-path on storage every node reaches (s3://bucket/prefix, gs://..., "
            "or an NFS mount such as /mnt/nfs/tlstudy) for Tune's trial checkpoints")
    if tracking_uri is None:
        tracking_uri = _managed_server(runs_dir, node_ip, server_timeout_s,
                                       dict(server_options or {}))
    elif remote and _uri_is_loopback(tracking_uri):
        raise ClusterError(f"--tracking-uri {tracking_uri} is this machine's loopback address: "
                           f"trials on {', '.join(sorted(remote))} cannot reach it. Give an "
                           "address every node reaches")
    res = {k: float(v) for k, v in ray.cluster_resources().items()}
    most = autoscaler_maximum()
    reach = reachable(res, most)
    echo(f"Ray: attached to {address} ({len(hosts)} machine(s), {len(ray.nodes())} node(s) "
         f"known; up now: {_fmt(res)}"
         + (f"; the autoscaler can reach {_fmt(reach)}" if most else "") + ")")
    echo(f"MLflow: trials log to {tracking_uri}")
    return AttachSettings(address, tracking_uri, node_ip, hosts, reach)


def autoscaler_maximum() -> dict[str, float] | None:
    """The most the cluster's autoscaler may bring up, all node groups together (what Ray
    Train asks too: the cluster config the autoscaler keeps in the GCS, e.g. KubeRay's worker
    groups' ``maxReplicas`` × their resources); None without an autoscaler."""
    try:
        from ray._private.state import state

        most = state.get_max_resources_from_cluster_config()
    except Exception:  # noqa: BLE001 -- private API; no autoscaler config is the common case
        return None
    return {k: float(v) for k, v in most.items()} if most else None


def reachable(now: Mapping[str, float], most: Mapping[str, float] | None) -> dict[str, float]:
    """Per resource, the larger of what is up now and the autoscaler's maximum."""
    out = dict(now)
    for key, value in (most or {}).items():
        out[key] = max(out.get(key, 0.0), value)
    return out


def _fmt(res: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {res[k]:g}" for k in ("CPU", "GPU") if k in res) or "nothing"


def _managed_server(runs_dir: Path, node_ip: str, timeout_s: float,
                    options: dict[str, Any]) -> str:
    """The runs folder's MLflow server, bound where the cluster reaches this machine."""
    from study.server import ServerError, ensure_server, is_loopback

    host = "127.0.0.1" if is_loopback(node_ip) else node_ip
    try:
        info = ensure_server(runs_dir, host=host, timeout_s=timeout_s, **options)
    except (ServerError, ValueError) as exc:
        raise ClusterError(f"the MLflow server for the cluster's trials did not start: {exc}"
                           ) from None
    if is_loopback(info.host) and not is_loopback(node_ip):
        raise ClusterError(
            f"the MLflow server of {runs_dir} ({info.url}) binds {info.host}: trials on the "
            f"cluster cannot reach it. Stop it (python -m study.server stop --runs-dir "
            f"{runs_dir}) and launch again: it restarts on {node_ip} with login")
    return info.url


def _uri_is_loopback(uri: str) -> bool:
    from urllib.parse import urlparse

    host = urlparse(uri).hostname or ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"

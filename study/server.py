"""The managed MLflow tracking server of a study folder: start or reuse, stop, status.

Layout under ``<study_dir>/mlflow/``::

    mlflow.db      SQLite backend store (experiments, runs, params, metrics, tags): the
                   embedded default for one machine
    artifacts/     artifact store, served through the server's mlflow-artifacts proxy (or
                   ``--artifacts-destination``: s3://, gs://, a shared folder)
    server.json    the running server's record (pid, port, url, stores) — written by us
    server.log     the server's stdout + stderr, appended per start
    server.lock    advisory lock so two launchers do not start two servers
    basic_auth.*   MLflow's login (config without secrets + user store), only when the server
                   binds a non-loopback address, which needs credentials (``credentials_from_env``)

The backend store is chosen with ``backend`` (``--backend-store-uri``): ``sqlite`` (default),
``postgres`` — the runs folder's own PostgreSQL (``study.tracking._postgres``: ``<runs>/postgres/``,
started first, a unix socket; once a folder has one it is the folder's default) — or any
SQLAlchemy URI (a team's PostgreSQL). One SQLite or PostgreSQL server worker held 16 concurrent
trials and failed at 32 (its SQLAlchemy pool of 5 + 10 exhausted, HTTP 400s); ``workers`` sizes
the server (``workers_for(concurrency)``: one per 16 trials, at most one per core; the folder's
PostgreSQL gets a pool of 10 + 30 per worker), and ``capacity_warning`` says when
a study asks more of a store than the load test (``bench/tracking_load.py``) saw it hold.

The server is ``<this python> -m mlflow server`` in its own session (process group), so it
outlives the launcher that started it; ``stop_server`` ends the whole group.

It is started light for a small machine: one uvicorn worker unless asked (``--workers``;
MLflow's default is 4, about 1.9 GB resident with the job runner) and MLflow's GenAI job runner off
(``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``: it spawns seven huey consumers that a
training study never uses). Together about 0.5 GB in two processes.

CLI::

    python -m study.server start  [--study-dir DIR] [--port P] [--host H] [--timeout S]
                                  [--allowed-hosts NAME,...] [--workers N]
                                  [--backend-store-uri sqlite|postgres|URI]
                                  [--artifacts-destination PATH|URI] [--login]
                                  (DIR: the launcher's --runs-dir, default ``runs``)
    python -m study.server stop   [--study-dir DIR]   (and the folder's PostgreSQL, if any)
    python -m study.server status [--study-dir DIR] [--json]
    python -m study.server dump    [--study-dir DIR] [OUT]   (pg_dump: OUT/mlflow.dump,
                                                             optuna.dump; OUT=DIR/dumps)
    python -m study.server restore [--study-dir DIR] DUMPS   (into a runs folder without results)
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from study.tracking import _proc as proc
from study.tracking._proc import ServiceFiles

logger = logging.getLogger(__name__)

DEFAULT_STUDY_DIR = Path("runs")  # the launcher's --runs-dir default
_STOP_GRACE_S = 10.0
_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
CREDENTIALS_FILE_ENV = "TLSTUDY_MLFLOW_CREDENTIALS"
PG_POOL = (10, 30)  # SQLAlchemy pool size + overflow per worker on the folder's PostgreSQL
KEEP_ALIVE_S = 120  # uvicorn's idle keep-alive (its default is 5 s)
AUTH_CACHE_TTL_S = 300  # MLflow's basic-auth login cache (0, its default, hashes per request)


class ServerError(RuntimeError):
    """The managed MLflow server could not be started (the message carries the log tail)."""


@dataclass(frozen=True)
class ServerInfo:
    """A managed MLflow server: where it listens and where it stores.

    ``url`` is what clients use as tracking URI and what users open in a browser.
    ``reused`` is True when ``ensure_server`` found it already running.
    """

    url: str
    pid: int
    port: int
    host: str
    backend_uri: str
    artifacts_dir: Path
    log_path: Path
    started_at: float
    auth: str | None = None  # "basic-auth" when MLflow's login is on (credentials never kept)
    workers: int = 1
    store: str = "sqlite"  # "sqlite", "postgres" (the runs folder's own) or "uri" (given)
    artifacts_destination: str = ""  # where artifacts go ('' = artifacts_dir)
    reused: bool = False

    def to_json(self) -> dict:
        """The record kept in ``server.json`` (``reused`` is a property of a call, not kept)."""
        d = dataclasses.asdict(self)
        d.pop("reused")
        d["artifacts_dir"] = str(self.artifacts_dir)
        d["log_path"] = str(self.log_path)
        return d

    @classmethod
    def from_json(cls, d: dict) -> ServerInfo:
        """Inverse of ``to_json``."""
        return cls(
            url=d["url"], pid=int(d["pid"]), port=int(d["port"]), host=d["host"],
            backend_uri=d["backend_uri"], artifacts_dir=Path(d["artifacts_dir"]),
            log_path=Path(d["log_path"]), started_at=float(d["started_at"]),
            auth=d.get("auth"), workers=int(d.get("workers", 1)),
            store=d.get("store", "sqlite"),
            artifacts_destination=d.get("artifacts_destination", ""),
        )


@dataclass(frozen=True)
class ServerStatus:
    """What ``server_status`` found: ``running`` (alive and healthy), ``unhealthy`` (process
    alive, ``/health`` does not answer — starting up or hung), ``stopped`` (no live process)."""

    state: Literal["running", "unhealthy", "stopped"]
    info: ServerInfo | None
    detail: str


@dataclass(frozen=True)
class _Paths(ServiceFiles):
    STEM: ClassVar[str] = "server"

    @property
    def db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def auth_config(self) -> Path:
        return self.root / "basic_auth.ini"

    @property
    def auth_db(self) -> Path:
        return self.root / "basic_auth.db"


def _paths(study_dir: Path) -> _Paths:
    return _Paths(Path(study_dir).resolve() / "mlflow")


def _read_record(paths: _Paths) -> ServerInfo | None:
    try:
        return ServerInfo.from_json(json.loads(paths.record.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as e:
        logger.warning("ignoring unreadable %s (%s)", paths.record, e)
        return None


def _is_our_server(info: ServerInfo) -> bool:
    """The recorded pid is alive and still an MLflow server (guards against pid reuse)."""
    if not proc.pid_alive(info.pid):
        return False
    cmd = proc.cmdline(info.pid)
    return not cmd or "mlflow" in cmd  # unreadable cmdline: trust the pid


def _wait_healthy(info: ServerInfo, timeout_s: float, child: subprocess.Popen | None) -> None:
    """Poll ``/health`` until it answers; raise ``ServerError`` (with the log tail) when the
    process exits first or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while not proc.healthy(info.url, timeout_s=2.0):
        exited = child.poll() is not None if child is not None else not proc.pid_alive(info.pid)
        if exited:
            raise ServerError(
                f"MLflow server (pid {info.pid}) exited before answering {info.url}/health.\n"
                f"Last lines of {info.log_path}:\n{proc.tail(info.log_path)}"
            )
        if time.monotonic() >= deadline:
            raise ServerError(
                f"MLflow server (pid {info.pid}) did not answer {info.url}/health within "
                f"{timeout_s:.0f} s (a loaded machine may need a larger timeout).\n"
                f"Last lines of {info.log_path}:\n{proc.tail(info.log_path)}"
            )
        time.sleep(0.25)


@dataclass(frozen=True)
class StoreChoice:
    """Where a managed server keeps runs (``backend_uri``, ``kind``) and artifacts."""

    backend_uri: str
    kind: str  # "sqlite" | "postgres" | "uri"
    artifacts: str  # a local folder (absolute) or a URI (s3://, gs://, ...)


def _choose_store(study_dir: Path, paths: _Paths, backend: str | None,
                  artifacts: str | None, previous: ServerInfo | None,
                  timeout_s: float) -> StoreChoice:
    """Resolve ``backend``/``artifacts`` (None: what the folder used last, else SQLite or the
    folder's PostgreSQL when it has one); starts the folder's PostgreSQL when chosen."""
    from study.tracking import _postgres

    if backend is None:
        if previous is not None and previous.store in ("sqlite", "postgres", "uri"):
            backend = previous.backend_uri if previous.store == "uri" else previous.store
        else:
            backend = "postgres" if _postgres.has_postgres(study_dir) else "sqlite"
    if backend == "sqlite":
        choice = StoreChoice(f"sqlite:///{paths.db}", "sqlite", "")
    elif backend in ("postgres", "postgresql"):
        try:
            pg = _postgres.ensure_postgres(study_dir, timeout_s=timeout_s)
        except _postgres.PostgresError as e:
            raise ServerError(f"the runs folder's PostgreSQL did not start: {e}") from None
        choice = StoreChoice(pg.url("mlflow"), "postgres", "")
    elif "://" in backend:
        choice = StoreChoice(backend, "uri", "")
    else:
        raise ValueError(f"backend store {backend!r}: use sqlite, postgres or a SQLAlchemy URI "
                         "(postgresql://user@host/db)")
    if artifacts is None:
        artifacts = (previous.artifacts_destination or str(previous.artifacts_dir)
                     if previous is not None else str(paths.artifacts))
    if "://" not in artifacts:
        artifacts = str(Path(artifacts).expanduser().resolve())
    return dataclasses.replace(choice, artifacts=artifacts)


def workers_for(concurrency: int, cpus: int | None = None) -> int:
    """Server workers for ``concurrency`` simultaneous trials: one per 16 (what one worker
    with MLflow's default pool held in the load test), but no more than the machine's
    ``cpus`` (default: this one's) and 8 — on 2 cores, 2 workers served 64 trials at 54
    requests/s where 4 managed 45."""
    cores = cpus if cpus is not None else (os.cpu_count() or 1)
    return max(1, min(8, cores, -(-int(concurrency) // 16)))


# What the load test (bench/tracking_load.py, RELIABILITY.md, issue 16) saw each store hold
# with 0 errors and every history complete, per server worker count: concurrent trials.
# "postgres": the runs folder's own (pool 10 + 30 per worker); "postgres-uri": a PostgreSQL
# given by URI (MLflow's default pool, 5 + 10).
HELD_IN_LOAD_TEST = {("sqlite", 1): 16, ("sqlite", 4): 32, ("postgres", 1): 16,
                     ("postgres", 2): 64, ("postgres", 4): 64, ("postgres-uri", 1): 16,
                     ("postgres-uri", 4): 32}


def capacity_warning(info: ServerInfo, concurrency: int) -> str | None:
    """A warning when ``concurrency`` trials exceed what this server's store and worker count
    held in the load test (None when within it, or not measured for a given URI)."""
    if info.backend_uri.startswith("sqlite"):
        kind = "sqlite"
    elif info.backend_uri.startswith("postgres"):
        kind = "postgres" if info.store == "postgres" else "postgres-uri"
    else:
        return None
    measured = [(w, n) for (k, w), n in HELD_IN_LOAD_TEST.items()
                if k == kind and w <= info.workers]
    held = max((n for _, n in measured), default=0)
    if concurrency <= held:
        return None
    more = workers_for(concurrency)
    fixes = [f"--workers {more}"] if more > info.workers else []
    if kind != "postgres":
        fixes.append("--backend-store-uri postgres")
    advice = (f"restart the server with {' '.join(fixes)} (python -m study.server stop, "
              "then start)" if fixes else "give the server a machine with more cores")
    return (f"{concurrency} concurrent trials against an MLflow server on {kind} with "
            f"{info.workers} worker(s): the load test saw this store hold {held or 'none'} "
            f"(RELIABILITY.md); beyond that it answered pool-exhausted errors. Trials keep "
            f"their metrics and retry, but may slow: {advice}.")


def _pool_env(store: StoreChoice) -> dict[str, str]:
    """A bigger SQLAlchemy pool per worker on the folder's own PostgreSQL (10 + 30 instead of
    5 + 10, within its max_connections for 8 workers): under load a request then waits for the
    CPU instead of failing after 30 s without a connection. SQLite (one writer) and a team's
    PostgreSQL (its own connection limit) keep MLflow's default."""
    if store.kind != "postgres":
        return {}
    return {"MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": str(PG_POOL[0]),
            "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": str(PG_POOL[1])}


def _server_command(store: StoreChoice, host: str, port: int, workers: int,
                    auth: bool = False, allowed: Sequence[str] = ()) -> list[str]:
    return [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", store.backend_uri,
        "--artifacts-destination", store.artifacts,
        "--host", host,
        "--port", str(port),
        "--workers", str(workers),
        # keep idle client connections longer than uvicorn's 5 s, so a trial's per-epoch
        # request rarely meets a connection the server is closing (RemoteDisconnected)
        "--uvicorn-opts", f"--timeout-keep-alive {KEEP_ALIVE_S}",
        *(["--app-name", "basic-auth"] if auth else []),
        *(["--allowed-hosts", ",".join(allowed)] if allowed else []),
    ]


def own_addresses() -> set[str]:
    """This machine's addresses: its name's, and the one its default route leaves from (a UDP
    socket "connected" to a non-routed address sends nothing; the kernel picks the source)."""
    out: set[str] = set()
    with contextlib.suppress(OSError):
        out.update(str(a[4][0]) for a in socket.getaddrinfo(socket.gethostname(), None))
    for family, probe in ((socket.AF_INET, "10.255.255.255"), (socket.AF_INET6, "fd00::ffff")):
        with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((probe, 1))
            out.add(str(s.getsockname()[0]))
    return {a.split("%", 1)[0] for a in out}


def allowed_hosts(host: str, extra: Sequence[str] = ()) -> list[str]:
    """The ``Host`` headers an exposed server answers (MLflow refuses any other with 403, its
    guard against DNS rebinding): MLflow's defaults (loopback names, the private address
    ranges), this machine's names and addresses, the bind address and ``extra`` (a DNS name
    users reach it by), each with any port. A loopback server keeps MLflow's defaults (``[]``)."""
    if is_loopback(host):
        return []
    from mlflow.server.security_utils import get_default_allowed_hosts

    names = {socket.gethostname(), socket.getfqdn(), *own_addresses(), *extra}
    if host not in ("0.0.0.0", "::"):
        names.add(host)
    names |= {n.lower() for n in names}  # browsers send the name lower-cased
    out = list(get_default_allowed_hosts())
    for name in sorted(n for n in names if n):
        bracketed = f"[{name}]" if ":" in name else name
        escaped = bracketed.replace("[", "[[]", 1) if ":" in name else bracketed
        out += [bracketed, f"{escaped}:*"]
    return list(dict.fromkeys(out))


def _check_login(info: ServerInfo, timeout_s: float) -> None:
    """An exposed server must accept the credentials its clients will use; MLflow keeps the
    admin password of its first start in ``basic_auth.db``, so a changed one is refused there
    (401) although ``/health`` answers: say so now, not at the first trial."""
    if info.auth is None:
        return
    creds = credentials_from_env()
    if creds is None:
        raise ServerError(
            f"MLflow server {info.url} requires a login (basic-auth): set "
            f"MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or {CREDENTIALS_FILE_ENV}")
    if info.host in ("0.0.0.0", "::"):  # every interface: loopback among them
        host = "127.0.0.1" if info.host == "0.0.0.0" else "[::1]"
    else:
        host = f"[{info.host}]" if ":" in info.host else info.host
    url = f"http://{host}:{info.port}/api/2.0/mlflow/experiments/search?max_results=1"
    request = urllib.request.Request(url)
    token = base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=max(1.0, min(30.0, timeout_s))):
            return
    except urllib.error.HTTPError as e:
        if e.code != 401:
            raise ServerError(f"MLflow server {info.url} answers {e.code} to a logged-in "
                              f"request; see its log {info.log_path}") from None
    except OSError as e:  # refused, timed out
        raise ServerError(f"MLflow server {info.url} answers /health but not a logged-in "
                          f"request ({e}); see its log {info.log_path}") from None
    raise ServerError(
        f"MLflow server {info.url} refuses the credentials for user {creds[0]!r} (401). MLflow "
        f"keeps the admin password of its first start in {info.log_path.parent / 'basic_auth.db'}"
        ": log in with that one, or change it there "
        "(mlflow.server.get_app_client('basic-auth', tracking_uri=URL)"
        ".update_user_password(USER, NEW, current_password=OLD)), "
        "or delete basic_auth.db to start over with these credentials")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def credentials_from_env() -> tuple[str, str] | None:
    """``(username, password)`` for MLflow's basic-auth, or None when none are configured.

    From ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (the variables MLflow
    clients — the launcher, every trial — read to log in), else from the file named by
    ``TLSTUDY_MLFLOW_CREDENTIALS`` holding one line ``username:password``.
    """
    user = os.environ.get("MLFLOW_TRACKING_USERNAME", "")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD", "")
    if user and password:
        return user, password
    path = os.environ.get(CREDENTIALS_FILE_ENV)
    if path:
        try:
            line = Path(path).read_text(encoding="utf-8").strip().splitlines()[0]
        except (OSError, IndexError, UnicodeDecodeError) as e:
            raise ServerError(f"{CREDENTIALS_FILE_ENV}={path}: cannot read a "
                              f"'username:password' line ({type(e).__name__})") from None
        user, sep, password = line.partition(":")
        if sep and user and password:
            return user, password
        raise ServerError(f"{CREDENTIALS_FILE_ENV}={path}: expected one line "
                          "'username:password'")
    return None


def _auth_env(paths: _Paths, host: str, login: bool = False) -> dict[str, str]:
    """Child environment turning MLflow's basic-auth on; empty for a loopback bind unless
    ``login`` asks for it there too.

    A non-loopback bind without credentials is refused. The password goes to the server
    through its environment only (``MLFLOW_AUTH_ADMIN_PASSWORD``): never on its command line
    (logged in ``server.log``), in ``server.json`` or in ``basic_auth.ini``.
    """
    if is_loopback(host) and not login:
        return {}
    creds = credentials_from_env()
    if creds is None and login:
        raise ServerError("the MLflow login (basic-auth) needs credentials: set "
                          "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or "
                          f"{CREDENTIALS_FILE_ENV}")
    if creds is None:
        raise ServerError(
            f"binding the MLflow server to {host} exposes it beyond this machine, so it needs "
            "authentication (MLflow's basic-auth). Set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD (clients read the same variables), or "
            f"{CREDENTIALS_FILE_ENV}=<file with one line username:password>; or bind 127.0.0.1 "
            "and reach it through an SSH tunnel."
        )
    if len(creds[1]) < 12:
        raise ServerError("the MLflow password must be at least 12 characters (MLflow's rule)")
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.auth_config.write_text(
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{paths.auth_db}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # a verified login is cached (per worker) instead of a ~170 ms password hash per
        # request: 2.9 requests/s at 8 trials without it, 22.7 with it (issue 16)
        f"auth_cache_ttl_seconds = {AUTH_CACHE_TTL_S}\n"
    )
    paths.auth_config.chmod(0o600)
    # the auth app's CSRF key: the user's if set, else a fresh one per start (one worker)
    key = os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY") or secrets.token_hex(32)
    return {"MLFLOW_AUTH_CONFIG_PATH": str(paths.auth_config),
            "MLFLOW_AUTH_ADMIN_USERNAME": creds[0], "MLFLOW_AUTH_ADMIN_PASSWORD": creds[1],
            "MLFLOW_FLASK_SERVER_SECRET_KEY": key}


def _spawn(
    paths: _Paths, store: StoreChoice, host: str, port: int, workers: int,
    extra_hosts: Sequence[str] = (), login: bool = False
) -> tuple[ServerInfo, subprocess.Popen]:
    """Start the server detached (own session), logging to ``server.log``; no waiting."""
    if "://" not in store.artifacts:
        Path(store.artifacts).mkdir(parents=True, exist_ok=True)
    auth_env = _auth_env(paths, host, login)
    cmd = _server_command(store, host, port, workers, auth=bool(auth_env),
                          allowed=allowed_hosts(host, extra_hosts))
    with paths.log.open("ab") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"\n=== {stamp} starting: {' '.join(cmd)}\n".encode())
        log.flush()
        child = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=paths.root, env={**os.environ, **_SERVER_ENV, **_pool_env(store), **auth_env},
            start_new_session=True,
        )
    url_host = f"[{host}]" if ":" in host else host
    info = ServerInfo(
        url=f"http://{url_host}:{port}", pid=child.pid, port=port, host=host,
        backend_uri=store.backend_uri,
        artifacts_dir=Path(store.artifacts) if "://" not in store.artifacts else paths.artifacts,
        log_path=paths.log, started_at=time.time(),
        auth="basic-auth" if auth_env else None, workers=workers, store=store.kind,
        artifacts_destination="" if "://" not in store.artifacts else store.artifacts,
    )
    paths.write_record(info.to_json())
    return info, child


def _choose_port(paths: _Paths, host: str, previous: ServerInfo | None) -> int:
    """The previous server's port when free (clients holding its URL keep working after a
    restart), else any free port."""
    if previous is not None and proc.port_free(host, previous.port):
        return previous.port
    return proc.free_port(host)


def _warn_if_exposed(host: str) -> None:
    if not is_loopback(host):
        logger.warning("MLflow server binds %s: reachable beyond this machine; basic-auth on",
                       host)


def ensure_server(
    study_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    timeout_s: float = 60.0,
    workers: int | None = None,
    extra_hosts: Sequence[str] = (),
    backend: str | None = None,
    artifacts: str | None = None,
    login: bool = False,
    default_workers: int = 1,
) -> ServerInfo:
    """Reuse the study's running MLflow server, or start one and wait for ``/health``.

    ``backend``: ``sqlite``, ``postgres`` (the runs folder's own PostgreSQL, started first) or
    a SQLAlchemy URI; ``artifacts``: a folder or a URI (s3://, gs://); ``workers``: server
    worker processes (``workers_for(concurrency)``). None keeps what the folder's server
    used last (SQLite, 1 worker, ``mlflow/artifacts`` the first time; PostgreSQL when the
    folder has one). A running server asked for other settings is restarted with them.
    ``login``: MLflow's basic-auth also on a loopback bind (always on for an exposed one).
    ``default_workers``: the workers of a first start when ``workers`` is None (the
    launcher's ``workers_for(concurrency)``).

    Reuse: the server recorded in ``server.json`` whose process is alive and answers
    ``/health`` (one still starting up is waited for). Otherwise a new server starts on
    ``port`` — or, when None, on the recorded port if free (so URLs held by running trials
    stay valid), else on a free port. An explicit ``port`` other than the running server's
    restarts the server there. An exposed server (``host`` not loopback) answers requests
    addressed to this machine's names and addresses and to ``extra_hosts`` (``allowed_hosts``).

    Raises:
        ServerError: the server exited early or did not answer within ``timeout_s`` (it is
            then stopped); the message holds the tail of ``server.log``.
        ValueError: an explicit ``port`` is in use by something else.
    """
    paths = _paths(study_dir)
    with paths.locked():
        previous = _read_record(paths)
        if previous is not None and _is_our_server(previous):
            wanted = _changed_settings(previous, backend, artifacts, workers, study_dir)
            if login and previous.auth is None:
                wanted = ", ".join(filter(None, [wanted, "login on"]))
            if wanted:
                logger.warning("restarting the MLflow server with %s", wanted)
                _stop(paths, previous)
            elif port is None or port == previous.port:
                try:
                    _wait_healthy(previous, timeout_s, child=None)
                except ServerError as e:
                    if _is_our_server(previous):  # alive but silent: hung, not ours to kill
                        raise ServerError(f"{e}\nStop it with: python -m study.server stop "
                                          f"--study-dir {study_dir}") from None
                else:  # (it died while we waited: start a new one below)
                    logger.info("reusing MLflow server %s (pid %d)", previous.url, previous.pid)
                    if extra_hosts:
                        logger.warning("reusing the running MLflow server: --allowed-hosts "
                                       "takes effect when it is started again (stop it first)")
                    _check_login(previous, timeout_s)
                    return dataclasses.replace(previous, reused=True)
            else:
                _stop(paths, previous)
        if port is not None and not proc.port_free(host, port):
            raise ValueError(f"port {port} on {host} is in use; pick another or omit --port")
        if not is_loopback(host) or login:
            _auth_env(paths, host, login)  # refuses a login without credentials, before spawning
        _warn_if_exposed(host)
        store = _choose_store(study_dir, paths, backend, artifacts, previous, timeout_s)
        n_workers = workers or max(default_workers, previous.workers if previous else 1)
        attempts = 1 if port is not None else 2  # an auto-picked port may be taken meanwhile
        for attempt in range(attempts):
            chosen = port if port is not None else _choose_port(paths, host, previous)
            info, child = _spawn(paths, store, host, chosen, n_workers, extra_hosts, login)
            logger.info("starting MLflow server on %s (pid %d)", info.url, info.pid)
            try:
                _wait_healthy(info, timeout_s, child)
            except ServerError as e:
                _stop(paths, info)
                in_use = "address already in use" in str(e).lower()
                if in_use and attempt + 1 < attempts:
                    previous = None
                    continue
                raise
            logger.info("MLflow server ready at %s", info.url)
            _check_login(info, timeout_s)
            return info
    raise AssertionError("unreachable")  # pragma: no cover


def _changed_settings(previous: ServerInfo, backend: str | None, artifacts: str | None,
                      workers: int | None, study_dir: Path) -> str:
    """What an explicit request changes in the running server ('' when nothing)."""
    changes = []
    if workers is not None and workers != previous.workers:
        changes.append(f"{workers} workers (was {previous.workers})")
    if backend is not None:
        same = (backend == previous.store if backend in ("sqlite", "postgres")
                else backend == previous.backend_uri)
        if backend == "postgresql":
            same = previous.store == "postgres"
        if not same:
            changes.append(f"backend {backend} (was {previous.store})")
    if artifacts is not None:
        target = artifacts if "://" in artifacts else str(Path(artifacts).expanduser().resolve())
        current = previous.artifacts_destination or str(previous.artifacts_dir)
        if target != current:
            changes.append(f"artifacts {target} (was {current})")
    return ", ".join(changes)


def _stop(paths: _Paths, info: ServerInfo) -> bool:
    """SIGTERM the server's process group, SIGKILL after a grace period. True if something was
    running. The record stays, so the next start reuses the port (stable URL)."""
    was_running = bool(proc.group_members(info.pid)) or proc.pid_alive(info.pid)
    if was_running:
        proc.signal_group(info.pid, signal.SIGTERM)
        if not proc.wait_group_gone(info.pid, _STOP_GRACE_S, leader=info.pid):
            logger.warning("MLflow server (pid %d) ignored SIGTERM; killing it", info.pid)
            proc.signal_group(info.pid, signal.SIGKILL)
            proc.wait_group_gone(info.pid, 5.0, leader=info.pid)
    return was_running


def stop_server(study_dir: Path) -> bool:
    """Stop the study's managed MLflow server (idempotent). True if one was running.

    The store (``mlflow.db``, ``artifacts/``), ``server.log`` and ``server.json`` are kept; the
    next ``ensure_server`` starts on the same port when it is free, so clients holding the URL
    (trial loggers buffering through the outage) reach the new server."""
    paths = _paths(study_dir)
    if not paths.root.is_dir():
        return False
    with paths.locked():
        info = _read_record(paths)
        if info is None:
            return False
        members = proc.group_members(info.pid)
        if not any("mlflow" in proc.cmdline(pid) for pid in members):
            return False
        return _stop(paths, info)


def server_status(study_dir: Path) -> ServerStatus:
    """Whether the study's managed server runs and answers ``/health`` (never starts one)."""
    info = _read_record(_paths(study_dir))
    if info is None:
        return ServerStatus("stopped", None, "no server recorded")
    if not _is_our_server(info):
        return ServerStatus("stopped", info, f"recorded pid {info.pid} is not running")
    if proc.healthy(info.url):
        return ServerStatus("running", info, f"{info.url} (pid {info.pid})")
    return ServerStatus("unhealthy", info, f"pid {info.pid} alive, {info.url}/health silent")


# ---------------------------------------------------------------- CLI


@dataclass(frozen=True)
class _CliArgs:
    command: Literal["start", "stop", "status", "dump", "restore"]
    study_dir: Path
    host: str
    port: int | None
    timeout_s: float
    as_json: bool
    extra_hosts: tuple[str, ...] = ()
    workers: int | None = None
    backend: str | None = None
    artifacts: str | None = None
    login: bool = False
    path: Path | None = None


def _parse(argv: list[str] | None) -> _CliArgs:
    p = argparse.ArgumentParser(
        prog="python -m study.server",
        description="Start, stop or inspect the study folder's MLflow tracking server.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  python -m study.server start --runs-dir runs\n"
               "  python -m study.server status --runs-dir runs --json\n"
               "  python -m study.server stop --runs-dir runs\n"
               "  python -m study.server dump --runs-dir runs            # to runs/dumps\n"
               "  python -m study.server restore --runs-dir runs2 runs/dumps\n\n"
               "exit status: start 0 running, 1 did not start; stop 0; status 0 running, "
               "1 unhealthy, 3 stopped; 2 bad arguments",
    )
    p.add_argument("command", choices=["start", "stop", "status", "dump", "restore"])
    p.add_argument("path", nargs="?", type=Path, default=None,
                   help="dump: the folder to write mlflow.dump and optuna.dump to (default: "
                   "DIR/dumps); restore: the folder holding them")
    p.add_argument("--runs-dir", "--study-dir", type=Path, default=DEFAULT_STUDY_DIR,
                   dest="study_dir",
                   help=f"the launcher's --runs-dir, holding mlflow/ (default: "
                        f"{DEFAULT_STUDY_DIR}; --study-dir is the old spelling)")
    p.add_argument("--host", default="127.0.0.1",
                   help="bind address (default: 127.0.0.1); any other address turns "
                   "MLflow's basic-auth on and needs MLFLOW_TRACKING_USERNAME/"
                   f"MLFLOW_TRACKING_PASSWORD or {CREDENTIALS_FILE_ENV}")
    p.add_argument("--port", type=int, default=None, help="port (default: previous or free)")
    p.add_argument("--allowed-hosts", default="", dest="extra_hosts",
                   help="with --host: other names users reach the server by (comma-separated, "
                   "e.g. mlflow.lab.org); this machine's own names and addresses are allowed")
    p.add_argument("--timeout", type=float, default=60.0, dest="timeout_s",
                   help="seconds to wait for /health (default: 60)")
    p.add_argument("--workers", type=int, default=None,
                   help="server worker processes (default: as last time, else 1); one per 16 "
                   "concurrent trials")
    p.add_argument("--backend-store-uri", default=None, dest="backend",
                   help="sqlite (default), postgres (the runs folder's own PostgreSQL, "
                   "started under DIR/postgres) or a SQLAlchemy URI of a team's PostgreSQL")
    p.add_argument("--artifacts-destination", default=None, dest="artifacts",
                   help="artifact store: a folder (shared, e.g. NFS) or s3://, gs:// "
                   "(default: DIR/mlflow/artifacts)")
    p.add_argument("--login", action="store_true",
                   help="MLflow's login (basic-auth) on a loopback bind too (always on for "
                   "another address)")
    p.add_argument("--json", action="store_true", dest="as_json", help="machine-readable output")
    ns = p.parse_intermixed_args(argv)  # the folder may follow the options
    if ns.workers is not None and ns.workers < 1:
        p.error("--workers must be at least 1")
    if ns.command == "restore" and ns.path is None:
        p.error("restore needs the folder holding the dumps")
    if ns.command not in ("dump", "restore") and ns.path is not None:
        p.error(f"{ns.command} takes no folder argument")
    ns.extra_hosts = tuple(h.strip() for h in ns.extra_hosts.split(",") if h.strip())
    return _CliArgs(**vars(ns))


def _cmd_start(args: _CliArgs) -> int:
    try:
        info = ensure_server(args.study_dir, host=args.host, port=args.port,
                             timeout_s=args.timeout_s, extra_hosts=args.extra_hosts,
                             workers=args.workers, backend=args.backend,
                             artifacts=args.artifacts, login=args.login)
    except (ServerError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    verb = "already running" if info.reused else "started"
    print(f"MLflow server {verb}: {info.url}  (pid {info.pid}, {info.store} store, "
          f"{info.workers} worker(s))")
    print(f"stop it with: python -m study.server stop --runs-dir {args.study_dir}")
    return 0


def _cmd_stop(args: _CliArgs) -> int:
    from study.tracking._postgres import PostgresError, stop_postgres

    stopped = stop_server(args.study_dir)
    print("MLflow server stopped" if stopped else "no MLflow server was running")
    try:
        if stop_postgres(args.study_dir):
            print("the runs folder's PostgreSQL stopped (its data stays in "
                  f"{Path(args.study_dir) / 'postgres'})")
    except PostgresError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _cmd_status(args: _CliArgs) -> int:
    status = server_status(args.study_dir)
    if args.as_json:
        record = status.info.to_json() if status.info else None
        from study.tracking._postgres import postgres_status

        pg = postgres_status(args.study_dir)
        print(json.dumps({"state": status.state, "detail": status.detail, "server": record,
                          "postgres": pg.to_json() if pg else None}))
    else:
        print(f"{status.state}: {status.detail}")
    return {"running": 0, "unhealthy": 1, "stopped": 3}[status.state]


def _cmd_dump(args: _CliArgs) -> int:
    from study.tracking._pg_dump import dump_postgres
    from study.tracking._postgres import PostgresError

    try:
        files = dump_postgres(args.study_dir, args.path)
    except PostgresError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for f in files:
        print(f"dumped {f} ({f.stat().st_size / 1e6:.1f} MB)")
    print(f"restore with: python -m study.server restore --runs-dir NEW_RUNS {files[0].parent}")
    return 0


def _cmd_restore(args: _CliArgs) -> int:
    from study.tracking._pg_dump import restore_postgres
    from study.tracking._postgres import PostgresError

    try:
        restored = restore_postgres(args.study_dir, args.path)  # type: ignore[arg-type]
    except PostgresError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"restored {', '.join(restored)} into {args.study_dir}'s PostgreSQL; copy MLflow's "
          f"artifacts to {Path(args.study_dir) / 'mlflow' / 'artifacts'}, then: python -m "
          f"study.server start --runs-dir {args.study_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (status: 0 running, 1 unhealthy, 3 stopped)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = _parse(argv)
    command = {"start": _cmd_start, "stop": _cmd_stop, "status": _cmd_status,
               "dump": _cmd_dump, "restore": _cmd_restore}[args.command]
    return command(args)


if __name__ == "__main__":
    sys.exit(main())

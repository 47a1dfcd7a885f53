"""The project's own PostgreSQL for a runs folder: the store MLflow and Optuna share for a team
or a cluster head, started and stopped the way the managed MLflow server is.

Layout under ``<runs>/postgres/`` (owned by the user the database runs as)::

    data/           the database cluster (``initdb``), 0700
    postgres.json   the running server's record (pid, socket folder, port) — written by us
    postgres.log    the server's log
    postgres.lock   advisory lock so two launchers do not start two servers

It is Debian's PostgreSQL (``postgresql`` package: ``initdb``, ``pg_ctl``, ``postgres`` under
``/usr/lib/postgresql/<version>/bin``; ``make postgresql`` installs it). It listens on a unix
socket only, in a 0700 folder (``<runs>/postgres/socket``, or ``$TMPDIR/tlstudy-pg-<hash>``
when that path is too long for a socket), with ``trust`` for local connections: only the
folder's owner (and root) can connect, no password exists to leak, and nothing listens on
the network. Clients use SQLAlchemy URLs of the form
``postgresql+psycopg2://tlstudy@/<database>?host=<socket folder>&port=<port>``.

PostgreSQL refuses to run as root. When this process is root, ``initdb`` and ``pg_ctl`` run as
the unprivileged ``postgres`` user (``runuser -u postgres --``; Debian's package creates it).
That user must be able to reach what it writes (data, log, socket). When a parent of the runs
folder is not searchable by others (``/root``, pytest's 0700 temporary folders), a *new*
database cluster is placed in that user's home instead, ``~postgres/tlstudy/<runs name>-<random>/``
(``data/``, ``postgres.log``, ``socket/``), and ``<runs>/postgres/data`` is a symbolic link to
it: the link says where the data is, and the runs folder still finds its database. A cluster
that already lives inside an unreachable runs folder is not moved: the error names the folder
and the fix (``chmod o+x``).

Where the data lives is where the runs folder lives (or where its ``data`` link points): on a
cloud head node, a disk that ``ray down`` deletes unless the runs folder is on a kept volume —
back it up with ``pg_dump`` (see the README) or keep ``<runs>`` on persistent storage. Copying
the runs folder copies the link, not the database: use ``pg_dump``.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from study.tracking._proc import ServiceFiles

logger = logging.getLogger(__name__)

DB_USER = "tlstudy"
SERVICE_USER = "postgres"  # who runs the database when we are root
DATABASES = ("mlflow", "optuna")
DEFAULT_PORT = 5432  # names the socket file only: nothing listens on TCP
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes with the file name ".s.PGSQL.<port>"


class PostgresError(RuntimeError):
    """The managed PostgreSQL could not be set up or started (the message says why and how)."""


@dataclass(frozen=True)
class PostgresInfo:
    """A managed PostgreSQL: its data, socket and log; ``url(db)`` for SQLAlchemy clients."""

    pid: int
    port: int
    socket_dir: Path
    data_dir: Path
    log_path: Path
    started_at: float
    reused: bool = False

    def url(self, database: str = "mlflow") -> str:
        """SQLAlchemy URL of ``database`` over the unix socket (no password: socket trust)."""
        return (f"postgresql+psycopg2://{DB_USER}@/{database}"
                f"?host={self.socket_dir}&port={self.port}")

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("reused")
        return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}

    @classmethod
    def from_json(cls, d: dict) -> PostgresInfo:
        return cls(pid=int(d["pid"]), port=int(d["port"]), socket_dir=Path(d["socket_dir"]),
                   data_dir=Path(d["data_dir"]), log_path=Path(d["log_path"]),
                   started_at=float(d["started_at"]))


@dataclass(frozen=True)
class _Paths(ServiceFiles):
    """``root`` (``<runs>/postgres``) holds the lock and the record; ``home`` what the database
    server itself writes: ``root`` too, or the folder ``root/data`` links to (see the module
    docstring)."""

    STEM: ClassVar[str] = "postgres"

    @property
    def link(self) -> Path:
        return self.root / "data"

    @property
    def home(self) -> Path:
        if self.link.is_symlink():
            return Path(os.readlink(self.link)).parent
        return self.root

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def log(self) -> Path:
        return self.home / f"{self.STEM}.log"

    @property
    def socket(self) -> Path:
        local = self.home / "socket"
        if len(str(local)) + 16 <= _MAX_SOCKET_PATH:
            return local
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"tlstudy-pg-{digest}"


def _paths(runs_dir: Path) -> _Paths:
    return _Paths(Path(runs_dir).resolve() / "postgres")


def has_postgres(runs_dir: Path) -> bool:
    """Whether the runs folder holds a managed PostgreSQL (started now or before)."""
    return (_paths(runs_dir).data / "PG_VERSION").is_file()


def bin_dir() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl``: ``$TLSTUDY_PG_BIN``, else the newest
    ``/usr/lib/postgresql/<version>/bin`` (Debian), else wherever ``pg_ctl`` is on PATH."""
    explicit = os.environ.get("TLSTUDY_PG_BIN")
    if explicit:
        if (Path(explicit) / "initdb").is_file() and (Path(explicit) / "pg_ctl").is_file():
            return Path(explicit)
        raise PostgresError(f"TLSTUDY_PG_BIN={explicit} holds no initdb and pg_ctl")
    candidates: list[Path] = []
    found = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted((Path(p) for p in found),
                         key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
                         reverse=True)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).parent)
    for c in candidates:
        if (c / "initdb").is_file() and (c / "pg_ctl").is_file():
            return c
    raise PostgresError(
        "PostgreSQL's server programs (initdb, pg_ctl) were not found: install Debian's "
        "'postgresql' package (make postgresql, or apt-get install postgresql), or point "
        "TLSTUDY_PG_BIN at the folder holding them")


def _as_service(cmd: list[str]) -> list[str]:
    """``cmd`` run as the unprivileged service user when we are root (PostgreSQL refuses
    root), else as ourselves."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", SERVICE_USER, "--", *cmd]


def _own(path: Path) -> None:
    """Give ``path`` to the service user (when we are root)."""
    if os.geteuid() != 0:
        return
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise PostgresError(
            f"running as root, PostgreSQL needs the unprivileged user {SERVICE_USER!r} (Debian's "
            "postgresql package creates it): apt-get install postgresql, or run as another "
            "user") from None
    os.chown(path, entry.pw_uid, entry.pw_gid)


def _reachable(path: Path) -> bool:
    """Whether the service user (we ourselves unless root) can write in ``path``."""
    if os.geteuid() != 0:
        return True
    return subprocess.run(_as_service(["test", "-w", str(path)]), check=False).returncode == 0


def _blocked(path: Path) -> Path:
    """The first folder on the way to ``path`` that others cannot search (``path`` if none)."""
    return next((p for p in reversed(path.parents) if not os.stat(p).st_mode & 0o001), path)


def _check_reachable(path: Path) -> None:
    """As root, the service user must reach ``path``: name the first parent it cannot."""
    if _reachable(path):
        return
    blocked = _blocked(path)
    raise PostgresError(
        f"PostgreSQL runs as user {SERVICE_USER!r} (it refuses root), and that user cannot "
        f"reach {path}: {blocked} is not searchable by others. Allow it (chmod o+x "
        f"{blocked}) or put the runs folder elsewhere (--runs-dir)")


def _run(cmd: list[str], what: str, timeout_s: float) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                             check=False, start_new_session=True)
    except subprocess.TimeoutExpired:
        raise PostgresError(f"{what} did not finish within {timeout_s:.0f} s") from None
    if out.returncode != 0:
        raise PostgresError(f"{what} failed (exit {out.returncode}): "
                            f"{(out.stderr or out.stdout).strip()[-1500:]}")
    return out.stdout


def _postmaster_pid(paths: _Paths) -> int | None:
    """The running postmaster's pid from ``data/postmaster.pid`` when it is alive."""
    from study.tracking._proc import pid_alive

    try:
        pid = int((paths.data / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid_alive(pid) else None


def _service_home() -> Path:
    """Where a database cluster goes when the runs folder is out of the service user's reach:
    ``~postgres/tlstudy`` (made, 0700, owned by that user)."""
    base = Path(pwd.getpwnam(SERVICE_USER).pw_dir) / "tlstudy"
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    _own(base)
    return base


def _new_home(paths: _Paths) -> Path:
    """The folder a new database cluster of ``paths`` goes to: ``paths.root`` when the service
    user can reach it, else a new folder in that user's home (root only; see the module
    docstring), logged with the reason."""
    if _reachable(paths.root):
        return paths.root
    try:
        base = _service_home()
    except (KeyError, OSError) as e:
        _check_reachable(paths.root)   # raises, naming the folder and the fix
        raise PostgresError(f"cannot place the database in {SERVICE_USER}'s home: {e}") from None
    home = Path(tempfile.mkdtemp(prefix=f"{paths.root.parent.name[:40]}-", dir=base))
    _own(home)
    _check_reachable(home)
    blocked = _blocked(paths.root)
    logger.warning(
        "PostgreSQL runs as user %r (it refuses root), which cannot enter %s: the database of "
        "%s goes to %s (linked from %s). To keep it inside the runs folder instead, allow the "
        "folder (chmod o+x %s) before the first start.", SERVICE_USER, blocked,
        paths.root.parent, home, paths.link, blocked)
    return home


def _initdb(data: Path, timeout_s: float) -> None:
    data.mkdir(mode=0o700)
    _own(data)
    _run(_as_service([str(bin_dir() / "initdb"), "-D", str(data), "-U", DB_USER,
                      "-A", "trust", "-E", "UTF8", "--no-locale", "--no-instructions"]),
         "initdb", timeout_s)
    with (data / "postgresql.conf").open("a") as f:
        f.write("\n# tlstudy: unix socket only; enough connections for several MLflow workers\n"
                "listen_addresses = ''\nmax_connections = 400\n")


def _create_databases(info: PostgresInfo, timeout_s: float) -> None:
    import psycopg2

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn = psycopg2.connect(dbname="postgres", user=DB_USER, host=str(info.socket_dir),
                                    port=info.port, connect_timeout=5)
            break
        except psycopg2.OperationalError as e:
            if time.monotonic() > deadline:
                raise PostgresError(f"PostgreSQL at {info.socket_dir} does not accept "
                                    f"connections: {e}") from None
            time.sleep(0.25)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            for db in DATABASES:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{db}"')
    finally:
        conn.close()


def ensure_postgres(runs_dir: Path, *, timeout_s: float = 60.0) -> PostgresInfo:
    """Reuse the runs folder's running PostgreSQL, or create (``initdb``, first time) and
    start it (``pg_ctl start``, detached in its own session so it outlives the launcher);
    make sure the ``mlflow`` and ``optuna`` databases exist.

    Raises:
        PostgresError: the binaries are missing, the service user cannot reach the folder,
            or the server did not start (with the tail of ``postgres.log``).
    """
    paths = _paths(runs_dir)
    binaries = bin_dir()
    with paths.locked():
        previous = _read_record(paths)
        pid = _postmaster_pid(paths)
        if pid is not None and previous is not None and previous.pid == pid:
            info = dataclasses.replace(previous, reused=True)
            _create_databases(info, timeout_s)
            return info
        _own(paths.root)
        if not (paths.data / "PG_VERSION").is_file():
            if paths.link.is_symlink():
                raise PostgresError(f"{paths.link} links to {paths.data}, which holds no "
                                    "database cluster (removed?): restore it, or remove the "
                                    "link to start an empty one")
            if paths.data.exists():
                raise PostgresError(f"{paths.data} exists but holds no database cluster; "
                                    "move it away")
            home = _new_home(paths)
            _initdb(home / "data", timeout_s)
            if home != paths.root:
                paths.link.symlink_to(home / "data", target_is_directory=True)
        _check_reachable(paths.home)
        socket_dir = paths.socket
        socket_dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(socket_dir, 0o700)
        _own(socket_dir)
        port = previous.port if previous is not None else DEFAULT_PORT
        if pid is None:
            options = f"-k {socket_dir} -p {port}"
            try:
                _run(_as_service([str(binaries / "pg_ctl"), "-D", str(paths.data), "-l",
                                  str(paths.log), "-o", options, "-w", "-t",
                                  str(int(timeout_s)), "start"]), "pg_ctl start",
                     timeout_s + 10)
            except PostgresError as e:
                from study.tracking._proc import tail

                raise PostgresError(f"{e}\nLast lines of {paths.log}:\n{tail(paths.log)}"
                                    ) from None
            pid = _postmaster_pid(paths)
            if pid is None:
                raise PostgresError(f"PostgreSQL started but left no live postmaster.pid in "
                                    f"{paths.data}; see {paths.log}")
        info = PostgresInfo(pid=pid, port=port, socket_dir=socket_dir, data_dir=paths.data,
                            log_path=paths.log, started_at=time.time())
        _create_databases(info, timeout_s)
        paths.write_record(info.to_json())
        return info


def stop_postgres(runs_dir: Path, timeout_s: float = 60.0) -> bool:
    """Stop the runs folder's PostgreSQL (``pg_ctl stop -m fast``; idempotent). True if one
    was running. The data stays."""
    paths = _paths(runs_dir)
    if not (paths.data / "PG_VERSION").is_file():
        return False
    with paths.locked():
        if _postmaster_pid(paths) is None:
            return False
        _run(_as_service([str(bin_dir() / "pg_ctl"), "-D", str(paths.data), "-m", "fast",
                          "-w", "-t", str(int(timeout_s)), "stop"]), "pg_ctl stop",
             timeout_s + 10)
        return True


def drop_postgres(runs_dir: Path, timeout_s: float = 60.0) -> None:
    """Stop the runs folder's PostgreSQL and delete its database cluster, wherever it lives
    (a runs folder thrown away, tests). Everything MLflow and Optuna kept there is gone."""
    stop_postgres(runs_dir, timeout_s)
    paths = _paths(runs_dir)
    if paths.home != paths.root:
        shutil.rmtree(paths.home, ignore_errors=True)
        paths.link.unlink(missing_ok=True)
    shutil.rmtree(paths.data, ignore_errors=True)


def postgres_status(runs_dir: Path) -> PostgresInfo | None:
    """The running PostgreSQL of the runs folder, or None (never starts one)."""
    paths = _paths(runs_dir)
    info = _read_record(paths)
    pid = _postmaster_pid(paths)
    return info if info is not None and pid == info.pid else None


def _read_record(paths: _Paths) -> PostgresInfo | None:
    try:
        return PostgresInfo.from_json(json.loads(paths.record.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def optuna_storage_url(study_dir: Path) -> str:
    """Optuna's storage for a study folder (``<runs>/<study>``): the runs folder's PostgreSQL
    (database ``optuna``, started if needed) when the folder has one — MLflow and Optuna then
    share one store that outlives the machine's other state — else SQLite
    ``<study_dir>/optuna.db``. A study that began on SQLite stays there (its trials are in
    that file; moving stores mid-study would lose them)."""
    study_dir = Path(study_dir)
    sqlite = study_dir / "optuna.db"
    if has_postgres(study_dir.parent) and not sqlite.exists():
        return ensure_postgres(study_dir.parent).url("optuna")
    return f"sqlite:///{sqlite.resolve()}"

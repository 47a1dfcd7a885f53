"""Process helpers for the managed MLflow server: liveness, process groups, health, ports.

Linux-first (reads ``/proc``), with portable fallbacks. Kept apart from ``server.py`` so the
server's life cycle reads as policy and these as mechanism.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

_PROC = Path("/proc")


def _proc_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` from ``/proc/<pid>/stat`` ('Z' = zombie), or None."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # "pid (comm) S ppid pgrp ..." — comm may contain spaces/parentheses: split after the last ')'.
    return stat.rsplit(")", 1)[1].split()[0]


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our own child, so it does not linger as a zombie."""
    with contextlib.suppress(OSError):  # ChildProcessError: not our child
        os.waitpid(pid, os.WNOHANG)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (zombies count as dead)."""
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _proc_state(pid) not in ("Z", "X")


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    if not _PROC.is_dir():  # pragma: no cover - non-Linux fallback
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    return _members(2, pgid)


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid`` (Linux)."""
    return _members(3, sid)


def _members(field: int, value: int) -> list[int]:
    """Live processes whose ``/proc/<pid>/stat`` field ``field`` (after the command name:
    0 state, 1 ppid, 2 pgrp, 3 session) is ``value``."""
    members = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[field]) == value and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to a process group, ignoring a group that is already gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def wait_group_gone(pgid: int, timeout_s: float, leader: int | None = None) -> bool:
    """Poll until no live process is left in ``pgid``; True if gone within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        if leader is not None:
            _reap(leader)
        if not group_members(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def cmdline(pid: int) -> str:
    """The command line of ``pid`` (space-joined), or '' when unreadable."""
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def healthy(url: str, timeout_s: float = 2.0) -> bool:
    """Whether ``GET {url}/health`` answers 200 within ``timeout_s`` seconds."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout_s) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now. SO_REUSEADDR as uvicorn sets it:
    connections in TIME_WAIT from a stopped server do not block, a listener does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str) -> int:
    """A port on ``host`` that the OS says is free now (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def tail(path: Path, n_lines: int = 30) -> str:
    """The last ``n_lines`` lines of a text file ('' when missing)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16_384))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-n_lines:])


@dataclass(frozen=True)
class ServiceFiles:
    """The files a managed service (the MLflow server, PostgreSQL) keeps in its folder:
    ``<STEM>.json`` (pid, port, ...), ``<STEM>.log`` and ``<STEM>.lock``."""

    root: Path
    STEM: ClassVar[str] = "service"

    @property
    def record(self) -> Path:
        return self.root / f"{self.STEM}.json"

    @property
    def log(self) -> Path:
        return self.root / f"{self.STEM}.log"

    @property
    def lock(self) -> Path:
        return self.root / f"{self.STEM}.lock"

    def write_record(self, data: dict) -> None:
        """Write the record (JSON) whole or not at all: a reader never sees half of it."""
        tmp = self.record.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.record)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the service's lock (blocks while another process holds it)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self.lock.open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

"""One execution of a study at a time: an exclusive ``flock`` on ``<study dir>/schedule.lock``.

The file says who holds it (pid, host, start time, command) so that a second start can say so.
The kernel drops the lock when its process dies (also on SIGKILL or a reboot), so a crashed run
never leaves a stale lock behind; the file's contents are only informative. ``flock`` is
reliable on local disks; on NFS use one scheduler host per study (a Kubernetes CronJob with
``concurrencyPolicy: Forbid`` does that).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

LOCK_FILE = "schedule.lock"


@dataclass(frozen=True)
class Holder:
    pid: int | None
    host: str
    started: str
    command: str

    def describe(self) -> str:
        return (f"pid {self.pid if self.pid is not None else '?'} on {self.host or '?'} since "
                f"{self.started or '?'}" + (f" ({self.command})" if self.command else ""))


class StudyLocked(RuntimeError):
    """Another process runs this study; ``holder`` says who."""

    def __init__(self, path: Path, holder: Holder) -> None:
        super().__init__(f"study is already running: {holder.describe()}; lock {path}")
        self.path = path
        self.holder = holder


class StudyLock:
    """``with StudyLock(study_dir):`` — raises :class:`StudyLocked` if another process holds
    the study's lock. Not re-entrant: a second ``StudyLock`` on the same folder conflicts, also
    in the same process."""

    def __init__(self, study_dir: Path, command: str | None = None) -> None:
        self.path = Path(study_dir) / LOCK_FILE
        self.command = command if command is not None else " ".join(sys.argv[1:])[:200]
        self._fd: int | None = None

    def acquire(self) -> StudyLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StudyLocked(self.path, read_holder(self.path)) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": self.command}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)  # nobody holds it now; the file itself may stay
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> StudyLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def read_holder(path: Path) -> Holder:
    """Who the lock file says holds it (fields '?' when unreadable: being written)."""
    try:
        data = json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        data = {}
    pid = data.get("pid")
    return Holder(pid if isinstance(pid, int) else None, str(data.get("host", "")),
                  str(data.get("started", "")), str(data.get("command", "")))

"""A real file system that can run full: a tmpfs of a given size mounted for one test (the
tests run as root in the project's containers; without the right, the test fails saying so)."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A real file system of its own at ``path`` (tmpfs, ``size``): it can run full."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:  # not a skip: the fault must be injected for the test to say yes
        pytest.fail(f"cannot mount a tmpfs to fill ({done.stderr.strip()}): this test needs "
                    "root (CAP_SYS_ADMIN), as in the project's containers")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=False)


def fill(disk: Path) -> Path:
    """Take every byte left on ``disk`` (``ENOSPC`` from the next write); returns the filler."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        stat = os.statvfs(disk)
        with contextlib.suppress(OSError):  # most of it at once (a trial writes meanwhile)
            os.posix_fallocate(fd, 0, max(stat.f_bavail * stat.f_frsize - (64 << 20), 1))
        os.lseek(fd, 0, os.SEEK_END)
        for chunk in (1 << 20, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * chunk)
    finally:
        os.close(fd)
    with pytest.raises(OSError) as err:
        (disk / "probe").write_bytes(b"\0" * 8192)
    assert err.value.errno == errno.ENOSPC
    return filler

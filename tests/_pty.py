"""Running a command in a pseudo-terminal from a test, with the time each line appeared."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PtyRun:
    """What a command wrote to its terminal: ``(seconds since start, line)`` per line, where
    a line rewritten in place (``\\r``) counts as one line per rewrite."""

    returncode: int
    lines: list[tuple[float, str]]

    @property
    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


def run_in_pty(argv: list[str], *, cwd: Path, env: dict[str, str], timeout_s: float) -> PtyRun:
    """Run ``argv`` with stdout and stderr on a new pseudo-terminal; collect its output."""
    master, slave = pty.openpty()
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=slave, close_fds=True, start_new_session=True)
    os.close(slave)
    lines: list[tuple[float, str]] = []
    buf = b""
    deadline = t0 + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    chunk = b""
                if not chunk:
                    break
                buf += chunk
                *done, buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
                now = time.monotonic() - t0
                lines += [(now, x.decode(errors="replace").replace("\x1b[K", "")) for x in done]
            elif proc.poll() is not None:
                break
        else:
            os.killpg(proc.pid, 9)
            raise TimeoutError(f"{argv} ran over {timeout_s} s; output so far:\n"
                               + "\n".join(x for _, x in lines))
    finally:
        os.close(master)
    if buf:
        lines.append((time.monotonic() - t0, buf.decode(errors="replace")))
    return PtyRun(proc.wait(timeout=60), [(t, x) for t, x in lines if x.strip()])

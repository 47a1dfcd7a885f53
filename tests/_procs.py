"""Driving a launcher in a process of its own from a test."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def wait_for_output(log: Path, text: str, proc: subprocess.Popen, timeout_s: float) -> None:
    """Wait until ``text`` appears in ``log`` while ``proc`` still runs; fails with the log
    when the process ended first (or nothing came within ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if text in log.read_text():
            break
        time.sleep(0.3)
    assert proc.poll() is None, log.read_text()

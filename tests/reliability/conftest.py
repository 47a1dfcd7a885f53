"""Reliability tests: reports how many bad inputs were tried and faults injected."""

from __future__ import annotations

import pytest

from tests.reliability._tally import tally


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    if not tally:
        return
    terminalreporter.section("reliability")
    for name, n in sorted(tally.items()):
        terminalreporter.write_line(f"{n:6d}  {name}")
    if getattr(config, "cache", None) is not None:
        config.cache.set("reliability/counts", dict(tally))

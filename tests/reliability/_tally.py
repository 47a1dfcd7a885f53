"""Counts of what the reliability tests really did, reported at the end of the session."""

from __future__ import annotations

from collections import Counter

#: ``tally["bad inputs tried (bcdr)"] += 1`` etc.; printed by ``conftest.pytest_terminal_summary``
#: and kept in pytest's cache under ``reliability/counts`` (``pytest --cache-show``).
tally: Counter[str] = Counter()

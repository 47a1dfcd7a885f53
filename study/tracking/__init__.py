"""Tracking: the study's MLflow layout and everything that talks to the tracking server.

``study.tracking`` exposes the run layout (:mod:`study.tracking._runs`: experiment per study,
parent run per execution, child run per trial, the trial logger); its modules are the server
process helpers (``_proc``), the PostgreSQL store (``_postgres``), the logger's sending and
retry rules (``_logger``, ``_send``, ``_limits``), the epoch journal (``_journal``) and the
cluster login (``_login``). The names are loaded on first use (PEP 562), so that importing
a light helper such as ``study.tracking._proc`` (``python -m study.server --help``) does not
import MLflow.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "EXPERIMENT_KIND_TAG", "LOGGING_ERRORS_TAG", "NOTE_TAG", "PARENT_TAG", "UI_QUERY",
    "TRIAL_POLICY", "RetryPolicy", "RunLogger", "TerminalStatus", "all_runs",
    "child_runs", "client_for", "close_dangling_runs", "default_spill_dir", "describe_parent",
    "experiment_for", "find_child_run", "log_table1", "open_child_run", "replay_spilled",
    "log_once", "per_variant_metrics", "start_child_run", "start_parent_run", "table1_metrics",
    "ui_url",
]


def __getattr__(name: str) -> Any:
    if name not in __all__:  # a submodule (``from study.tracking import _proc``) or a probe
        raise AttributeError(f"module 'study.tracking' has no attribute {name!r}")
    runs = importlib.import_module("study.tracking._runs")
    try:
        return getattr(runs, name)
    except AttributeError:
        raise AttributeError(f"module 'study.tracking' has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted(__all__)

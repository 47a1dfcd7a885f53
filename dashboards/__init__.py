"""Dashboards: the paper's tables, ROC curves and statistics rebuilt from MLflow (issue 6).

``python -m dashboards.report --study NAME`` builds the whole report; the pieces:

* ``_load.load_study`` — one study execution read from MLflow into DataFrames (``StudyRuns``)
* ``tables`` — Table 1 and Table 2 (with ``literature``'s reported rows below a rule)
* ``stats`` — DeLong, stratified bootstrap, operating points, Holm, paired tests, calibration
* ``comparisons`` — those statistics applied to a study (each variant against the best)
* ``roc`` — mean ROC over splits on a common FPR grid
* ``search_view`` — search progress, Optuna importance, FTED λ × LR, compute and ASHA savings
* ``plots`` — figures from the DataFrames above; ``formats`` / ``html`` — text and the page
* ``build`` — compute → draw → write; ``report`` — the CLI, which also logs to MLflow
"""


from __future__ import annotations

import importlib
from typing import Any

__all__ = ["StudyNotFound", "StudyRuns", "load_study", "table1", "table1_from_frame", "table2"]
_HOME = {"StudyNotFound": "_load", "StudyRuns": "_load", "load_study": "_load",
         "table1": "tables", "table1_from_frame": "tables", "table2": "tables"}


def __getattr__(name: str) -> Any:
    """The public names, imported on first use (MLflow and pandas take seconds to import;
    ``python -m dashboards.report --help`` should not wait for them)."""
    if name not in _HOME:
        raise AttributeError(f"module 'dashboards' has no attribute {name!r}")
    return getattr(importlib.import_module(f"dashboards.{_HOME[name]}"), name)

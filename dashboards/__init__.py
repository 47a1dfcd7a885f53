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

from dashboards._load import StudyNotFound, StudyRuns, load_study
from dashboards.tables import table1, table1_from_frame, table2

__all__ = ["StudyNotFound", "StudyRuns", "load_study", "table1", "table1_from_frame", "table2"]

"""Optuna trials that lead to their MLflow runs, for optuna-dashboard.

Each search trial gets the user attributes ``mlflow_run_id`` and ``mlflow_url`` (the run's
page in the MLflow UI) before Optuna is told its outcome (a finished trial's attributes can
no longer change). Every report of a trial carries its run id; a trial that never reported
(it failed at its start) gets no link. The study's objective is
named ``val_loss`` (what optuna-dashboard shows on its axes).

    optuna-dashboard sqlite:///runs/<study>/optuna.db
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

#: Study attributes the searcher is given so that it can link trials (``study_attrs``).
URI_ATTR, EXPERIMENT_ATTR, PARENT_ATTR = ("mlflow_tracking_uri", "mlflow_experiment_id",
                                          "mlflow_parent_run_id")


def trial_links(attrs: Mapping[str, Any], trial_id: str,
                result: Mapping[str, Any] | None) -> dict[str, str]:
    """``{"tune_trial_id", "mlflow_run_id", "mlflow_url"}`` of one search trial (the MLflow
    keys left out when its run cannot be found: a link is never worth failing a study)."""
    out = {"tune_trial_id": trial_id}
    uri, exp = attrs.get(URI_ATTR), attrs.get(EXPERIMENT_ATTR)
    # every report carries the trial's run id; no lookup in MLflow here: this runs in Tune's
    # driver loop, which must never wait on the tracking server (an outage would stall every
    # trial in ``report``)
    run_id = (result or {}).get("mlflow_run_id")
    if run_id:
        out["mlflow_run_id"] = str(run_id)
        if uri and exp:
            from study.tracking import ui_url

            out["mlflow_url"] = ui_url(str(uri), str(exp), str(run_id))
    return out

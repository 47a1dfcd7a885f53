"""Read one study execution back from MLflow into DataFrames (the only module that talks to it).

A study is an MLflow experiment; an execution is a parent run (no ``mlflow.parentRunId`` tag)
whose children carry ``phase`` (search | evaluate), ``variant``, ``split`` and ``trial`` tags.
:func:`load_study` returns a :class:`StudyRuns`: the parent's tags, params and
``study_spec.json``, one row per evaluation run, one row per search run, and the evaluation
runs' per-sample test (and validation) predictions (``test_predictions.json``,
``val_predictions.json``) in long form, with each view's anonymous lesion (``cluster``) and
patient ids. Whatever is missing
or partial (no parent, a variant without a finished evaluation, a failed split, a predictions
file absent) becomes a line in ``StudyRuns.problems`` instead of an exception.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.tracking import MlflowClient

from dashboards.literature import PAPER_ORDER
from study.tracking import all_runs

log = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
EVAL_METRICS = ("test_acc", "test_auc", "test_sensitivity", "test_specificity", "test_loss",
                "wall_time_s", "epochs_run", "best_epoch", "best_val_loss", "best_val_acc",
                "best_val_auc")
SEARCH_METRICS = ("best_val_loss", "best_val_acc", "best_val_auc", "val_loss", "val_acc",
                  "val_auc", "epoch", "epochs_run", "wall_time_s", "epoch_time_s")
HYPER_PARAMS = ("regime.base_lr", "regime.lam", "optuna_trial")
EVAL_COLUMNS = ("run_id", "variant", "split", "seed", "status", "stop_reason", "start_time",
                "duration_s", "base_lr", "lam", *EVAL_METRICS)
SEARCH_COLUMNS = ("run_id", "variant", "split", "trial", "optuna_trial", "status",
                  "stop_reason", "start_time", "duration_s", "base_lr", "lam", "hp",
                  *SEARCH_METRICS)
PRED_COLUMNS = ("variant", "split", "seed", "run_id", "sample_id", "cluster", "patient",
                "p_malignant", "label")


class StudyNotFound(LookupError):
    """No experiment of that name, or no execution (parent run) in it."""


@dataclass(frozen=True)
class StudyRuns:
    """One study execution as read from MLflow.

    Attributes:
        study / tracking_uri / experiment_id / parent_run_id: where it was read from.
        parent_status: the parent run's status (RUNNING while the launcher is still at work).
        tags / params: the parent run's tags and (flattened space-file) params.
        spec: the parent's ``study_spec.json`` (``StudySpec.to_dict()``), or None.
        evaluations: one row per evaluation run, any status (``EVAL_COLUMNS``).
        searches: one row per search run, any status (``SEARCH_COLUMNS``; ``hp`` holds all
            the run's params as strings, keyed by search-space name).
        predictions: per-sample test predictions of the finished evaluation runs used in the
            tables (``PRED_COLUMNS``), one row per (variant, split, seed, sample); ``cluster``
            and ``patient`` are the anonymous lesion and patient ids (the sample id itself
            when a run did not log them: then each view is its own cluster).
        val_predictions: the same for the validation part of those runs (thresholds are
            chosen on these), empty when not logged.
        variants: expected variants (the spec's, else what the runs show), paper order first.
        n_splits: expected outer splits (``n_splits × repeats`` for repeated k-fold).
        problems: what is missing or partial, one human-readable line each.
    """

    study: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    parent_status: str
    tags: dict[str, str]
    params: dict[str, str]
    spec: dict[str, Any] | None
    evaluations: pd.DataFrame
    searches: pd.DataFrame
    predictions: pd.DataFrame
    variants: tuple[str, ...]
    n_splits: int
    problems: tuple[str, ...] = field(default=())
    val_predictions: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=list(PRED_COLUMNS)))

    @property
    def finished_evaluations(self) -> pd.DataFrame:
        """The evaluation runs the tables use: FINISHED, with a test accuracy; the newest run
        when a (variant, split, seed) was evaluated twice."""
        ev = self.evaluations
        if "seed" not in ev:
            ev = ev.assign(seed=0)
        ok = ev[(ev["status"] == "FINISHED") & ev["test_acc"].notna()]
        ok = ok.sort_values("start_time").drop_duplicates(["variant", "split", "seed"],
                                                          keep="last")
        return ok.sort_values(["variant", "split", "seed"]).reset_index(drop=True)


def variant_order(names: Any) -> list[str]:
    """Variants in the paper's row order (RI, FE, 1FT, 2FT, 3FT, AllFT, FTED), others after."""
    rank = {v: i for i, v in enumerate(PAPER_ORDER)}
    return sorted(dict.fromkeys(names), key=lambda v: (rank.get(v, len(rank)), v))


def find_parent(client: MlflowClient, study: str, run_id: str | None = None) -> tuple[str, Any]:
    """(experiment id, parent run) of ``study``: ``run_id`` if given, else the newest parent."""
    exp = client.get_experiment_by_name(study)
    if exp is None:
        raise StudyNotFound(f"no MLflow experiment named {study!r} at "
                            f"{client.tracking_uri}; run the study first or check --study")
    if run_id is not None:
        run = client.get_run(run_id)
        if run.info.experiment_id != exp.experiment_id:
            raise StudyNotFound(f"run {run_id} is not in study {study!r}")
        return exp.experiment_id, run
    parents = [r for r in all_runs(client, exp.experiment_id)
               if PARENT_TAG not in r.data.tags]
    if not parents:
        raise StudyNotFound(f"study {study!r} has no execution (parent run) yet")
    return exp.experiment_id, max(parents, key=lambda r: r.info.start_time or 0)


def load_study(client: MlflowClient, study: str, run_id: str | None = None, *,
               during_study: bool = False) -> StudyRuns:
    """Everything the report needs about one execution of ``study`` (the newest by default).

    ``during_study``: the launcher reports before it ends its parent run, so a RUNNING parent
    is expected and not listed as a problem."""
    with _quiet_downloads():
        return _load(client, study, run_id, during_study)


@contextlib.contextmanager
def _quiet_downloads() -> Iterator[None]:
    """No tqdm bar per downloaded artifact (MLflow's default), restored afterwards."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    old = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _load(client: MlflowClient, study: str, run_id: str | None,
          during_study: bool) -> StudyRuns:
    exp_id, parent = find_parent(client, study, run_id)
    pid = parent.info.run_id
    problems: list[str] = []
    expected = ("FINISHED", "RUNNING") if during_study else ("FINISHED",)
    if parent.info.status not in expected:
        problems.append(f"the study's parent run {pid} is {parent.info.status}, not FINISHED: "
                        "the tables show what had finished when this report was made")
    spec = _read_json(client, pid, "study_spec.json")
    if spec is None:
        problems.append("study_spec.json is missing on the parent run: expected variants and "
                        "splits are inferred from the runs found")
    children = all_runs(client, exp_id, f"tags.`{PARENT_TAG}` = '{pid}'")
    problems += [f"run {r.info.run_name or r.info.run_id}: MLflow rejected part of what it "
                 f"logged ({r.data.tags['logging_errors']})"  # the trial logger's record
                 for r in [parent, *children] if "logging_errors" in r.data.tags]
    evaluations = _frame([_row(r, EVAL_METRICS) for r in children
                          if r.data.tags.get("phase") == "evaluate"], EVAL_COLUMNS)
    searches = _frame([_row(r, SEARCH_METRICS) for r in children
                       if r.data.tags.get("phase") == "search"], SEARCH_COLUMNS)
    variants, n_splits = _expected(spec, evaluations, searches)
    runs = StudyRuns(study, client.tracking_uri, exp_id, pid, parent.info.status,
                     dict(parent.data.tags), dict(parent.data.params), spec, evaluations,
                     searches, pd.DataFrame(columns=list(PRED_COLUMNS)), tuple(variants),
                     n_splits)
    problems += _coverage_problems(runs)
    predictions, pred_problems = _predictions(client, runs.finished_evaluations)
    problems += pred_problems
    val_predictions, _ = _predictions(client, runs.finished_evaluations, "val")
    return replace(runs, predictions=predictions, val_predictions=val_predictions,
                   problems=tuple(problems))


# ------------------------------------------------------------------------- helpers


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _row(run: Any, metrics: tuple[str, ...]) -> dict[str, Any]:
    tags, params, info = run.data.tags, run.data.params, run.info
    start, end = info.start_time, info.end_time
    split = tags.get("split", "")
    seed = tags.get("seed", params.get("seed", "0"))
    return {  # "hp": every param, "regime." dropped (search-space names)
        "run_id": info.run_id, "variant": tags.get("variant", "?"),
        "split": int(split) if split.lstrip("-").isdigit() else -1,
        "seed": int(seed) if str(seed).isdigit() else 0,
        "trial": tags.get("trial", ""), "optuna_trial": _num(params.get("optuna_trial")),
        "status": info.status, "stop_reason": tags.get("stop_reason", ""),
        "start_time": start or 0,
        "duration_s": (end - start) / 1000 if start and end else float("nan"),
        "base_lr": _num(params.get("regime.base_lr")), "lam": _num(params.get("regime.lam")),
        "hp": {k.removeprefix("regime."): v for k, v in params.items()},
        **{m: _num(run.data.metrics.get(m)) for m in metrics},
    }


def _frame(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(columns))
    return df.astype({"split": int}) if len(df) else df


def expected_splits(splits: dict[str, Any]) -> int:
    """Outer splits of a spec's ``splits`` section: ``n_splits × repeats`` for k-fold."""
    n = int(splits["n_splits"])
    return n * int(splits.get("repeats", 1)) if splits.get("scheme") == "kfold" else n


def _expected(spec: dict | None, evaluations: pd.DataFrame,
              searches: pd.DataFrame) -> tuple[list[str], int]:
    if spec is not None:
        return variant_order(spec.get("variants", [])), expected_splits(spec["splits"])
    seen = list(evaluations["variant"]) + list(searches["variant"])
    splits = list(evaluations["split"]) + list(searches["split"])
    return variant_order(seen), (max(splits) + 1 if splits else 0)


def _coverage_problems(runs: StudyRuns) -> list[str]:
    out = []
    ok = runs.finished_evaluations
    ev = runs.evaluations
    for v in runs.variants:
        done = set(ok.loc[ok["variant"] == v, "split"])
        if not done:
            out.append(f"{v}: no finished evaluation run — left out of the tables and figures")
            continue
        for k in range(runs.n_splits):
            if k in done:
                continue
            bad = ev[(ev["variant"] == v) & (ev["split"] == k)]
            why = (f"its evaluation run is {', '.join(sorted(set(bad['status'])))}" if len(bad)
                   else "no evaluation run")
            out.append(f"{v} split {k}: {why} — {v}'s means use {len(done)} of "
                       f"{runs.n_splits} splits")
    extra = sorted(set(ok["variant"]) - set(runs.variants))
    if extra:
        out.append(f"evaluation runs of variants not in the spec: {', '.join(extra)}")
    return out


def _read_json(client: MlflowClient, run_id: str, path: str) -> Any:
    with tempfile.TemporaryDirectory(prefix="tlstudy-dash-") as tmp:
        try:
            local = client.download_artifacts(run_id, path, tmp)
        except Exception as e:  # noqa: BLE001 - absent artifact: MlflowException or OSError
            log.debug("artifact %s of %s: %s", path, run_id, e)
            return None
        return json.loads(Path(local).read_text())


def _predictions(client: MlflowClient, finished: pd.DataFrame,
                 part: str = "test") -> tuple[pd.DataFrame, list[str]]:
    frames, problems = [], []
    no_clusters = []
    for r in finished.itertuples(index=False):
        data = _read_json(client, r.run_id, f"{part}_predictions.json")
        if not data or not data.get("sample_id"):
            if part == "test":
                problems.append(f"{r.variant} split {r.split}: test_predictions.json missing — "
                                "no ROC curve, DeLong test, bootstrap or calibration for this "
                                "split")
            continue
        ids = [str(s) for s in data["sample_id"]]
        if "cluster" not in data:
            no_clusters.append(f"{r.variant} split {r.split}")
        frames.append(pd.DataFrame({
            "variant": r.variant, "split": int(r.split), "seed": int(getattr(r, "seed", 0)),
            "run_id": r.run_id, "sample_id": ids,
            "cluster": [str(c) for c in data.get("cluster", ids)],
            "patient": [str(c) for c in data.get("patient", data.get("cluster", ids))],
            "p_malignant": [float(p) for p in data["p_malignant"]],
            "label": [int(y) for y in data["label"]]}))
    if no_clusters and part == "test":
        problems.append(f"no lesion ids logged ({', '.join(no_clusters)}): those views count "
                        "as separate lesions and patients")
    if not frames:
        return pd.DataFrame(columns=list(PRED_COLUMNS)), problems
    return pd.concat(frames, ignore_index=True)[list(PRED_COLUMNS)], problems

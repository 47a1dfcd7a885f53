"""The study's MLflow layout: experiment per study, parent run per execution, child per trial.

All functions take an explicit ``MlflowClient`` (``client_for(uri)``); nothing here sets
MLflow's global tracking URI or active run. Children are nested with the ``mlflow.parentRunId``
tag and carry ``phase``, ``variant``, ``split`` and ``trial`` tags, which together identify a
trial: starting the same child twice (a trial restored from its checkpoint, a resumed study)
returns the existing run instead of a duplicate.

Per-epoch metrics, params, tags and artifacts go through ``RunLogger`` (batched, buffered while
the server is away); every run is ended by ``RunLogger.finish`` or, after a crash or Ctrl-C,
by ``close_dangling_runs``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from study.tracking import _limits as lim
from study.tracking._logger import (
    LOGGING_ERRORS_TAG,
    TRIAL_POLICY,
    RetryPolicy,
    RunLogger,
    TerminalStatus,
    default_spill_dir,
    replay_spilled,
)

logger = logging.getLogger(__name__)

__all__ = [
    "LOGGING_ERRORS_TAG", "PARENT_TAG", "TRIAL_POLICY", "RetryPolicy", "RunLogger",
    "TerminalStatus", "all_runs",
    "child_runs", "client_for", "close_dangling_runs", "default_spill_dir", "describe_parent",
    "experiment_for", "find_child_run", "log_table1", "open_child_run", "replay_spilled",
    "log_once", "per_variant_metrics", "start_child_run", "start_parent_run", "table1_metrics",
    "ui_url",
]

T = TypeVar("T")
START_WAIT_S = 120.0  # how long a trial's start waits out a busy server (pool exhausted, 5xx)

PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
NOTE_TAG = "mlflow.note.content"  # the run's "Description" (Markdown) in the MLflow UI
#: Says the experiment is classic model training (MLflow 3.x's own kinds); what the UI opens
#: on is decided by ``UI_QUERY`` in the address (see ``ui_url``).
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
TRIAL_KEYS = ("phase", "variant", "split", "trial")


def client_for(tracking_uri: str) -> MlflowClient:
    """An ``MlflowClient`` bound to ``tracking_uri`` (no global state touched)."""
    return MlflowClient(tracking_uri=tracking_uri)


def experiment_for(client: MlflowClient, study_name: str) -> str:
    """The id of the experiment named ``study_name``, created if missing (restored if it was
    deleted in the UI; safe when two processes race to create it)."""
    if not study_name or not study_name.strip():
        raise ValueError("study name must be a non-empty string")
    exp = client.get_experiment_by_name(study_name)
    if exp is None:
        try:
            return client.create_experiment(study_name,
                                            tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except MlflowException as e:
            exp = client.get_experiment_by_name(study_name)
            if exp is None:
                raise
            logger.debug("experiment %r created concurrently (%s)", study_name, e)
    if exp.lifecycle_stage == "deleted":
        logger.warning("experiment %r was deleted; restoring it", study_name)
        client.restore_experiment(exp.experiment_id)
    if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return exp.experiment_id


def _tag_list(tags: Mapping[str, object]) -> list[RunTag]:
    return [RunTag(lim.check_key(k, "tag"), lim.truncate(v, lim.MAX_TAG_VAL_LENGTH))
            for k, v in tags.items()]


def start_parent_run(client: MlflowClient, exp_id: str, *,
                     tags: Mapping[str, object] | None = None,
                     run_name: str | None = None) -> str:
    """Create the run of one study execution (RUNNING) and return its id.

    A re-study passes the previous parent's id in ``tags`` (e.g. ``previous_run_id``)."""
    all_tags = dict(tags or {})
    if run_name is not None:
        all_tags[RUN_NAME_TAG] = run_name
    run = client.create_run(exp_id, tags={t.key: t.value for t in _tag_list(all_tags)},
                            run_name=run_name)
    return run.info.run_id


def _trial_tags(phase: str, variant: str, split: int | str, trial: int | str) -> dict[str, str]:
    return {"phase": str(phase), "variant": str(variant), "split": str(split),
            "trial": str(trial)}


def _quote(value: str) -> str:
    if "'" in value:
        raise ValueError(f"tag value {value!r} may not contain a single quote")
    return f"'{value}'"


def child_runs(client: MlflowClient, exp_id: str, parent_run_id: str, *,
               status: str | None = None, **tag_filter: object) -> list:
    """All child runs of ``parent_run_id`` (``mlflow.entities.Run``), optionally only those with
    ``status`` (e.g. "RUNNING") and the given tag values (e.g. ``phase="search"``)."""
    clauses = [f"tags.`{PARENT_TAG}` = {_quote(parent_run_id)}"]
    if status is not None:
        clauses.append(f"attributes.status = {_quote(status)}")
    clauses += [f"tags.`{k}` = {_quote(str(v))}" for k, v in tag_filter.items()]
    return all_runs(client, exp_id, " and ".join(clauses))


def all_runs(client: MlflowClient, exp_id: str, filter_string: str = "") -> list:
    """Every active run of the experiment matching ``filter_string`` (all pages)."""
    runs: list = []
    token = None
    while True:
        page = client.search_runs([exp_id], filter_string=filter_string,
                                  run_view_type=ViewType.ACTIVE_ONLY, max_results=1000,
                                  page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def find_child_run(client: MlflowClient, exp_id: str, parent_run_id: str, *,
                   phase: str, variant: str, split: int | str,
                   trial: int | str) -> str | None:
    """The id of the child run for this trial, or None."""
    found = child_runs(client, exp_id, parent_run_id,
                       **_trial_tags(phase, variant, split, trial))
    if len(found) > 1:
        logger.warning("%d runs for trial %s/%s/%s/%s under %s; using the oldest", len(found),
                       phase, variant, split, trial, parent_run_id)
    found.sort(key=lambda r: r.info.start_time or 0)
    return found[0].info.run_id if found else None


def _patient(call: Callable[[], T], what: str, wait_s: float = START_WAIT_S) -> T:
    """``call()``, retried with backoff for up to ``wait_s`` seconds while the server answers
    "not now" (the HTTP 400 of an exhausted pool, 5xx, 429, no answer: ``study.tracking._send``); a
    definitive error is raised at once."""
    from study.tracking._send import classify_exception

    deadline = time.monotonic() + wait_s
    delay = 0.5
    while True:
        try:
            return call()
        except Exception as e:
            answer = classify_exception(e)
            if answer.verdict != "transient" or time.monotonic() + delay > deadline:
                raise
            logger.warning("MLflow busy during %s (%s); retrying in %.1f s", what,
                           answer.detail[:200], delay)
            time.sleep(delay)
            delay = min(2 * delay, 10.0)


def start_child_run(client: MlflowClient, exp_id: str, parent_run_id: str, *,
                    phase: str, variant: str, split: int | str, trial: int | str,
                    params: Mapping[str, object] | None = None,
                    tags: Mapping[str, object] | None = None,
                    run_name: str | None = None) -> str:
    """Create (or reopen) the child run of one trial under ``parent_run_id``; return its id
    (see :func:`open_child_run`)."""
    return open_child_run(client, exp_id, parent_run_id, phase=phase, variant=variant,
                          split=split, trial=trial, params=params, tags=tags,
                          run_name=run_name)[0]


def open_child_run(client: MlflowClient, exp_id: str, parent_run_id: str, *,
                   phase: str, variant: str, split: int | str, trial: int | str,
                   params: Mapping[str, object] | None = None,
                   tags: Mapping[str, object] | None = None,
                   run_name: str | None = None) -> tuple[str, bool]:
    """Create (or reopen) the child run of one trial under ``parent_run_id``; return its id
    and whether it existed (then it may already hold some of the trial's history).

    Tags: ``mlflow.parentRunId``, ``phase``, ``variant``, ``split``, ``trial`` plus ``tags``;
    params are logged at once (values truncated to MLflow's limit). If a child with the same
    phase/variant/split/trial exists (restarted trial, resumed study) it is reused and set back
    to RUNNING, so MLflow holds one run per trial. The default run name is
    ``{phase}-{variant}-s{split}-t{trial}``. A busy server (pool exhausted, 5xx) is waited out
    for up to ``START_WAIT_S`` rather than failing the trial.
    """
    ident = _trial_tags(phase, variant, split, trial)
    found = _patient(lambda: find_child_run(client, exp_id, parent_run_id, **ident), "search")
    if found is not None:
        run_id = found
        logger.info("reusing MLflow run %s for trial %s", run_id, ident)
        _patient(lambda: client.update_run(run_id, status="RUNNING"), "update-run")
        _patient(lambda: client.log_batch(run_id, tags=_tag_list(dict(tags or {}))),
                 "log-batch")
    else:
        name = run_name or f"{phase}-{variant}-s{split}-t{trial}"
        all_tags = {**dict(tags or {}), **ident, PARENT_TAG: parent_run_id, RUN_NAME_TAG: name}
        run = _patient(lambda: client.create_run(
            exp_id, tags={t.key: t.value for t in _tag_list(all_tags)}, run_name=name),
            "create-run")
        run_id = run.info.run_id
    if params:
        plist = [Param(lim.check_key(k, "param"), lim.truncate(v, lim.MAX_PARAM_VAL_LENGTH))
                 for k, v in params.items()]
        for batch in lim.chunks(plist, lim.MAX_PARAMS_TAGS_PER_BATCH,
                                lambda p: 64 + len(p.key) + len(p.value)):
            _patient(lambda b=batch: client.log_batch(run_id, params=b), "log-batch")
    return run_id, found is not None


def close_dangling_runs(client: MlflowClient, exp_id: str, parent_run_id: str,
                        status: TerminalStatus = "KILLED") -> list[str]:
    """End every child of ``parent_run_id`` still RUNNING with ``status`` (after Ctrl-C or a
    crash, so no run stays RUNNING). Returns the ids it ended. The parent is left alone."""
    ended = []
    for run in child_runs(client, exp_id, parent_run_id, status="RUNNING"):
        client.set_terminated(run.info.run_id, status=status)
        ended.append(run.info.run_id)
    if ended:
        logger.warning("ended %d RUNNING child run(s) of %s as %s", len(ended), parent_run_id,
                       status)
    return ended


#: The MLflow 3.17 UI opens an experiment or run on its GenAI views unless the URL (or the
#: user's last choice, kept in the browser) asks for the model-training ones; the
#: ``mlflow.experimentKind`` tag alone does not (checked in headless Chromium).
UI_QUERY = "?workflowType=machine_learning"


def ui_url(tracking_uri: str, exp_id: str, run_id: str | None = None) -> str:
    """The MLflow UI address of an experiment (its runs table) or a run, opening on the
    model-training view."""
    base = f"{tracking_uri.rstrip('/')}/#/experiments/{exp_id}"
    return f"{base}/runs/{run_id}{UI_QUERY}" if run_id else f"{base}{UI_QUERY}"


def table1_metrics(table) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """The launcher's view-level quick summary (``study.phases._report.table1``) as parent-run
    metrics, one set per variant: ``table1_views.<V>.acc_mean`` / ``acc_std`` (test accuracy %,
    mean and sample std over splits, every view a case), ``auc`` (mean test AUC),
    ``time_min``, ``splits``. Logged only when the report (whose Table 1 gives the
    ``table1.*`` metrics, ``dashboards.report.publish``) could not be built."""
    names = {"accuracy_%": "acc_mean", "std_%": "acc_std", "auc": "auc", "time_min": "time_min",
             "splits": "splits"}
    return per_variant_metrics(table, names, "table1_views")


def per_variant_metrics(table, names: dict[str, str],  # type: ignore[no-untyped-def]
                        prefix: str) -> dict[str, float]:
    """``<prefix>.<variant>.<short>`` for each row of ``table`` and ``column: short`` of
    ``names``; NaN values are left out."""
    import math

    out: dict[str, float] = {}
    for row in table.to_dict(orient="records"):
        for column, short in names.items():
            value = row.get(column)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                out[f"{prefix}.{row['variant']}.{short}"] = float(value)
    return out


def log_once(client: MlflowClient, run_id: str, metrics: Mapping[str, float],
             tags: Mapping[str, object] | None = None) -> None:
    """``metrics`` (at step 0) and ``tags`` on ``run_id``, an ended run too, in one request
    within MLflow's limits, a busy server waited out (``START_WAIT_S``)."""
    now = int(time.time() * 1000)
    batch = [Metric(lim.check_key(k, "metric"), lim.metric_value(k, v), now, 0)
             for k, v in metrics.items()]
    _patient(lambda: client.log_batch(run_id, metrics=batch, tags=_tag_list(dict(tags or {}))),
             "log-batch")


def log_table1(run_logger: RunLogger, table) -> None:  # type: ignore[no-untyped-def]
    """The quick summary as the parent run's description until the report replaces it (with
    its own Table 1, and the ``table1.*`` metrics)."""
    run_logger.tags({NOTE_TAG: describe_parent(table)})


def describe_parent(table, *, report: str | None = None,  # type: ignore[no-untyped-def]
                    verdict: str | None = None, warnings: list[str] | None = None,
                    summary: tuple[str, str] | None = None) -> str:
    """The parent run's Markdown description: Table 1, the re-study verdict, warnings and
    where the report is. ``summary`` (title, Markdown table): the report's Table 1 in brief,
    at the unit of analysis with CIs (``table`` unused, may be None); without it (no report
    yet) the launcher's view-level ``table``, labelled a quick summary."""
    if summary is not None:
        title, body = summary
        lines = [f"**{title}**", "", body.rstrip("\n")]
    else:
        lines = ["**Table 1, quick summary** (every view a case, no CIs: the report's Table 1 "
                 "combines a lesion's views and gives CIs; test accuracy %, mean ± sample std "
                 "over splits; mean test AUC)", "",
                 "| variant | accuracy % | std % | AUC | time min | splits |",
                 "|---|---:|---:|---:|---:|---:|"]
        for r in table.to_dict(orient="records"):
            lines.append(f"| {r['variant']} | {r['accuracy_%']:.2f} | {r['std_%']:.2f} | "
                         f"{r['auc']:.3f} | {r['time_min']:.2f} | {int(r['splits'])} |")
        if not len(table):
            lines.append("| (no variant evaluated) | | | | | |")
    if verdict:
        lines += ["", f"**Re-study verdict:** {verdict}"]
    for w in warnings or []:
        lines += ["", f"**Warning:** {w}"]
    lines += ["", "Full report (tables with CIs, ROC curves, statistics): "
              + (report or "`report/report.html` in this run's Artifacts")]
    return lim.truncate("\n".join(lines), lim.MAX_TAG_VAL_LENGTH)

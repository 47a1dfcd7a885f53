"""One scheduled execution of a study: lock, compare with the last execution in MLflow, skip or
run a (warm-started) re-study, and leave a failure visible as a FAILED parent run.

Exit statuses (``run_once``): 0 ran or skipped, 1 the study failed (its parent run is FAILED
with a ``failure_reason`` tag; the next scheduled run retries), 2 bad input (space file, data),
3 another execution of the study holds its lock, 130 interrupted.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search_spaces import SpecError, StudySpec
from study.scheduling._lock import StudyLock, StudyLocked
from study.scheduling._restudy import (
    Current,
    Decision,
    Restudy,
    decide,
    executions,
    warm_start_configs,
)

log = logging.getLogger(__name__)

LOCKED = 3


@dataclass(frozen=True)
class ScheduledRun:
    """``python -m study.schedule run`` arguments.

    ``cluster``: on a Ray cluster's head (the cluster-launcher config there); ``ray_address``:
    a running Ray to join instead of a local one."""

    study: str
    space: str
    runs_dir: Path
    data: Path | None = None
    data_format: str | None = None
    tracking_uri: str | None = None
    force: bool = False
    cluster: Path | None = None
    ray_address: str | None = None
    storage_path: str | None = None
    restudy_trials: int | None = None

    def __post_init__(self) -> None:
        if (self.data is None) != (self.data_format is None):
            raise ValueError("--data and --data-format go together")
        if self.restudy_trials is not None and self.restudy_trials < 1:
            raise ValueError(f"--restudy-trials must be >= 1, got {self.restudy_trials}")


def load_scheduled_spec(run: ScheduledRun) -> StudySpec:
    from search_spaces import load_spec
    from trainables.backbones import available_backbones

    spec = load_spec(run.space, known_backbones=available_backbones())
    if run.data is not None:
        spec = spec.with_dataset(run.data, run.data_format)  # type: ignore[arg-type]
    return spec.with_name(run.study)


def run_once(run: ScheduledRun, *, echo: Callable[[str], Any] = print,
             err: Callable[[str], Any] = print) -> int:
    """Run the study once if anything changed since its last execution (see module doc)."""
    from study._preflight import PreflightError, check_weights
    from trainables.records import DatasetError

    try:
        spec = load_scheduled_spec(run)
        if run.cluster is None:  # on a cluster the head's workers hold the weights
            check_weights(spec)
    except (SpecError, PreflightError) as e:
        err(f"error: {e}")
        return 2
    runs = run.runs_dir.expanduser().resolve()
    try:
        lock = StudyLock(runs / spec.name).acquire()
    except StudyLocked as e:
        err(f"error: {spec.name}: {e}")
        return LOCKED
    try:
        uri, extra = _connect(run, runs, echo)
        return _run_locked(run, spec, runs, uri, extra, echo, err)
    except DatasetError as e:
        err(f"error: {e}")
        return 2
    except KeyboardInterrupt:
        err("interrupted: the re-study's runs ended as KILLED; the next scheduled run retries")
        return 130
    finally:
        lock.release()


def _connect(run: ScheduledRun, runs: Path, echo: Callable[[str], Any]
             ) -> tuple[str, dict[str, Any]]:
    """The tracking URI, and run_study's Ray settings (cluster head, or an address)."""
    uri = run.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if run.cluster is not None:
        from study.cluster import head_settings

        head = head_settings(run.cluster, runs, uri, echo=echo)
        return head.tracking_uri, {"address": head.address, "resources": head.resources}
    if uri is None:
        from study.server import ensure_server

        uri = ensure_server(runs).url
    return uri, ({"address": run.ray_address} if run.ray_address else {})


def _run_locked(run: ScheduledRun, spec: StudySpec, runs: Path, uri: str,
                extra: dict[str, Any], echo: Callable[[str], Any],
                err: Callable[[str], Any]) -> int:
    from study import tracking
    from study.phases._data import prepare_data
    from study.run import _git_commit, run_study
    from trainables.records import DatasetError

    client = tracking.client_for(uri)
    history = executions(client, spec.name)
    started = int(time.time() * 1000)
    try:
        data = prepare_data(spec, runs)
    except DatasetError as e:
        record_failure(client, spec, f"data: {e}", trigger="data")
        raise
    current = Current(data.fingerprint, _git_commit(), spec.fingerprint(),
                      spec.flat_dict())
    decision = decide(current, history, force=run.force)
    if not decision.run:
        echo(f"skip {spec.name}: {decision.reason}")
        return 0
    echo(f"run {spec.name}: {decision.reason}")
    restudy = _restudy(client, spec, decision, echo, run.restudy_trials)
    try:
        outcome = run_study(spec, runs / spec.name, uri, restudy=restudy, data=data,
                            storage_path=run.storage_path, **extra)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - a scheduled run reports, the next one retries
        log.debug("scheduled run failed", exc_info=True)
        if not [x for x in executions(client, spec.name) if x.start_time >= started]:
            record_failure(client, spec, f"{type(e).__name__}: {e}", trigger="start")
        err(f"error: the execution of {spec.name} failed ({type(e).__name__}: {e}); its parent "
            "run is FAILED with the reason, the next scheduled run retries")
        return 1
    tags = client.get_run(outcome.parent_run_id).data.tags
    if restudy is not None:
        echo(f"verdict: {tags.get('verdict', 'not computed (the report was not built)')}")
        if "restudy_savings" in tags:
            echo(f"warm start: {tags['restudy_savings']}")
    return 0


def _restudy(client: Any, spec: StudySpec, decision: Decision, echo: Callable[[str], Any],
             trials: int | None) -> Restudy | None:
    if decision.previous is None:
        return None
    warm = warm_start_configs(client, decision.previous.run_id, spec)
    echo(f"re-study of {decision.previous.run_id}: {sum(map(len, warm.values()))} previous best "
         f"configuration(s) evaluated first ({', '.join(sorted(warm)) or 'none found'})")
    return Restudy(decision.previous.run_id, decision.changed, decision.trigger,
                   decision.reason, warm, trials)


def record_failure(client: Any, spec: StudySpec, reason: str, *, trigger: str) -> str:
    """A FAILED parent run saying why an execution could not start (the data could not be
    read, Ray did not start ...), so that the failure shows in MLflow and the next run
    retries."""
    from study import tracking
    from study.run import _git_commit
    from study.scheduling._restudy import failure_reason

    exp = tracking.experiment_for(client, spec.name)
    run_id = tracking.start_parent_run(
        client, exp, run_name=f"{spec.name}-failed",
        tags={"study": spec.name, "spec_fingerprint": spec.fingerprint(),
              "git_commit": _git_commit(), "failure_reason": failure_reason(reason),
              "failed_at": trigger})
    client.set_terminated(run_id, status="FAILED")
    return run_id

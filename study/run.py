"""A whole study: data → MLflow parent run → search → evaluation → Table 1.

``run_study`` is what ``python -m study.launch`` calls once it has parsed its arguments.
Every run it opens ends FINISHED, FAILED or KILLED — also on Ctrl-C or a crash.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shlex
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search_spaces import StudySpec, check_resources
from study import tracking
from study.phases._data import StudyData, prepare_data
from study.phases._report import format_table1, table1
from study.tracking._login import driver_login

if TYPE_CHECKING:
    from study.scheduling._restudy import Restudy

log = logging.getLogger(__name__)
STATE_FILE = "state.json"


@dataclass(frozen=True)
class StudyOutcome:
    parent_run_id: str
    experiment_id: str
    table: Any  # pandas.DataFrame
    evaluations: list[dict]


def run_study(spec: StudySpec, study_dir: Path, tracking_uri: str, *, resume: bool = False,
              echo: Any = print, address: str | None = None, storage_path: str | None = None,
              resources: Mapping[str, float] | None = None,
              max_concurrent_trials: int | None = None,
              restudy: Restudy | None = None, data: StudyData | None = None) -> StudyOutcome:
    """Run (or, with ``resume``, continue) ``spec`` with its files under ``study_dir``.

    ``address``: a running Ray cluster to join (default: a local Ray on this machine's cores).
    ``storage_path``: where Tune keeps trial checkpoints and experiment state, under
    ``<storage_path>/<study name>`` (default ``study_dir/ray``); a multi-node cluster needs
    storage every node reaches (``s3://...``, an NFS mount). ``resources``: what the cluster can
    reach, to check the space against (an autoscaling cluster's GPU workers may not be up
    yet; default: what Ray has now). ``max_concurrent_trials``: the search's declared trial
    limit (``--max-concurrent-trials``: a cluster that grows beyond what is up now; default:
    what fits now). ``restudy``: this execution re-runs an earlier one
    (``python -m study.schedule run``): the parent run is tagged with the previous one and what
    changed, the search gets its own Optuna studies (``<study>@<run id[:8]>/<variant>/split<k>``)
    seeded with the previous best configurations (TPE seeds salted with the previous run's id,
    so the re-study does not replay its random start-up proposals). ``data``: already
    prepared (the scheduler fingerprinted it). An exception leaves the parent run FAILED
    with a ``failure_reason`` tag."""
    import ray

    from study.phases import _run as _phases
    from study.phases import _trial

    # Tune warns at every forced experiment snapshot (one per checkpoint with num_to_keep set)
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

    study_dir.mkdir(parents=True, exist_ok=True)
    data = data or prepare_data(spec, study_dir.parent)
    echo(f"data: {data.counts['views']} ROIs of {data.counts['patients']} patients "
         f"({data.counts['benign']} benign, {data.counts['malignant']} malignant), "
         f"{len(data.splits)} outer splits, fingerprint {data.rois.fingerprint}")
    if not ray.is_initialized() and address is not None:
        ray.init(address=address, configure_logging=False, log_to_driver=False)
    elif not ray.is_initialized():
        echo(f"Ray: starting a local Ray on {os.cpu_count()} CPUs ...")
        # "local": a new Ray on this machine's cores, even if a `ray start` cluster runs here
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
                 configure_logging=False, log_to_driver=False)
    check_resources(spec, resources if resources is not None else ray.cluster_resources())
    from study.phases._slots import live_nodes, trial_slots

    # what the cluster can reach (an autoscaler's maximum), else the nodes up now
    slots = trial_slots(spec, [resources] if resources is not None else live_nodes())
    if storage_path and "://" not in storage_path:  # a shared folder (NFS mount)
        storage_path = str(Path(storage_path).expanduser().resolve())
    storage = (f"{storage_path.rstrip('/')}/{spec.name}" if storage_path
               else str((study_dir / "ray").resolve()))

    client = tracking.client_for(tracking_uri)
    exp_id = tracking.experiment_for(client, spec.name)
    state_path = study_dir / STATE_FILE
    state = json.loads(state_path.read_text()) if resume and state_path.is_file() else {}
    tags = run_tags(spec, data)
    parent = state.get("parent_run_id")
    prefix = state.get("optuna_study_prefix", spec.name)
    salt = state.get("seed_salt", "")
    trials = state.get("search_trials")  # a re-study's own budget (kept on --resume)
    if parent is None:
        parent_tags = {**tags, **(restudy.tags() if restudy else {})}
        parent = tracking.start_parent_run(client, exp_id, tags=parent_tags,
                                           run_name=f"{spec.name}-{spec.fingerprint()[:8]}")
        prefix = f"{spec.name}@{parent[:8]}" if restudy else spec.name
        salt = restudy.previous_run_id if restudy else ""
        trials = restudy.trials if restudy else None
        logger = tracking.RunLogger(client, parent)
        logger.params(spec.flat_dict())
        logger.artifact_json("study_spec.json", spec.public_dict())
        logger.tags({"optuna_study_prefix": prefix})
        logger.flush()
        state_path.write_text(json.dumps({"parent_run_id": parent,
                                          "optuna_study_prefix": prefix, "seed_salt": salt,
                                          "search_trials": trials}))
    else:
        client.update_run(parent, status="RUNNING")
        logger = tracking.RunLogger(client, parent)
    echo(f"MLflow: {tracking.ui_url(tracking_uri, exp_id, parent)}  (the study's runs: "
         f"{tracking.ui_url(tracking_uri, exp_id)})")

    login = driver_login()  # trials on other nodes log in with it (study.tracking._login)
    if login is not None:
        login.apply()       # and so does this driver (a credentials file alone is not read
                            # by MLflow's client)

    def context(phase: str) -> _trial.TrialContext:  # external sets: evaluation trials only
        return _trial.TrialContext(spec=spec, phase=phase, rois=data.rois,  # type: ignore[arg-type]
                                   splits=data.splits, tracking_uri=tracking_uri,
                                   experiment_id=exp_id, parent_run_id=parent, tags=tags,
                                   external=data.external, login=login)
    status = "FAILED"
    report = False  # also built when the study FAILED for want of a variant's evaluations
    quick = None    # the view-level summary, printed only where the report's Table 1 is not
    try:
        _, rows = _phases.run_phases(spec, context("search"), study_dir, resume=resume,
                                     storage=storage, study_prefix=prefix,
                                     warm_start=restudy.warm_start if restudy else None,
                                     seed_salt=salt, trials=trials,
                                     slots=max_concurrent_trials or slots)
        table = table1(rows)
        quick = format_table1(table)
        logger.artifact_json("table1.json", table.to_dict(orient="records"))
        tracking.log_table1(logger, table)
        missing = sorted({(v, k) for v in spec.variants for k in range(spec.splits.total)}
                         - {(r["variant"], r["split"]) for r in rows})
        if missing:
            echo("missing evaluations: " + ", ".join(f"{v} split {k}" for v, k in missing))
            logger.tags({"missing_evaluations": ";".join(f"{v}/{k}" for v, k in missing)})
        logger.flush()
        never = never_evaluated(spec, rows)
        if never:
            raise StudyIncomplete(never)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except Exception as e:
        from study.scheduling._restudy import failure_reason

        logger.tags({"failure_reason": failure_reason(f"{type(e).__name__}: {e}")})
        report = isinstance(e, StudyIncomplete)  # what did run is still worth a report
        raise
    finally:
        # what trials on this machine could not deliver at their end (the server was away):
        # delivered now, before their runs would be taken for dangling
        try:
            tracking.replay_spilled(only_uri=tracking_uri, wait_s=10)
        except Exception as e:  # noqa: BLE001 - the spill files stay for a later replay
            log.warning("spilled MLflow data not replayed yet: %s", e)
        _replay_on_other_nodes(tracking_uri, login, echo)
        tracking.close_dangling_runs(client, exp_id, parent,
                                     status="KILLED" if status != "FAILED" else "FAILED")
        logger.finish(status)  # type: ignore[arg-type]
        page = None
        if status == "FINISHED" or report:
            # after the parent has ended: the report shows its final status
            page = build_report(tracking_uri, spec.name, parent, study_dir, echo)
        if page is None and quick is not None:
            echo(quick)
            try:
                tracking.log_once(client, parent, tracking.table1_metrics(table))
            except Exception as e:  # noqa: BLE001 - table1.json holds the same
                log.warning("Table 1 metrics not logged to the parent run: %s", e)
        if quick is not None and spec.search.mode == "shared":
            echo("Note: shared search (one split searched, its best reused on every split) — "
                 "these estimates are optimistic.")
    return StudyOutcome(parent, exp_id, table, rows)


def _replay_on_other_nodes(tracking_uri: str, login: Any, echo: Any) -> None:
    """The other nodes' spills (machines where no further trial started), delivered before
    the study's runs are closed; a node whose spills stay is named with its folder."""
    from study.cluster._spills import left_behind, replay_on_nodes

    try:
        for line in left_behind(replay_on_nodes(tracking_uri, login)):
            echo(f"warning: {line}")
    except Exception as e:  # noqa: BLE001 - the spill files stay for a later replay
        log.warning("spilled MLflow data on the other nodes not replayed: %s", e)


class StudyIncomplete(RuntimeError):
    """A declared variant has no evaluation run at all: Table 1 lacks a row the space asked
    for, so the execution ends FAILED (the report of what did run is still written)."""

    def __init__(self, variants: list[str]) -> None:
        self.variants = variants
        super().__init__(f"variant(s) {', '.join(variants)} never evaluated (every trial "
                         "failed; see the FAILED child runs' failure_reason)")


def never_evaluated(spec: StudySpec, rows: list[dict]) -> list[str]:
    """The declared variants without a single finished evaluation run, in the space's order."""
    done = {r["variant"] for r in rows}
    return [v for v in spec.variants if v not in done]


def build_report(tracking_uri: str, study: str, parent: str, study_dir: Path,
                 echo: Any = print) -> Path | None:
    """The dashboards report (tables, ROC curves, statistics, HTML) rebuilt from MLflow into
    ``study_dir/report`` and logged to the parent run, whose description and ``table1.*``
    metrics become its Table 1 (``dashboards.report.publish``); its Table 1 in brief printed.
    A report that cannot be built is a warning, never a failed study: it can be rebuilt later
    from MLflow alone, with the command printed."""
    out = study_dir / "report"
    try:
        from dashboards.report import ReportConfig, make_report

        result = make_report(ReportConfig(study=study, tracking_uri=tracking_uri, out_dir=out,
                                          run_id=parent, during_study=True))
    except Exception as e:  # noqa: BLE001 - the study's runs are safe in MLflow either way
        log.warning("report not built: %s", e, exc_info=True)
        echo(f"report: not built ({e}); rebuild it with: " + shlex.join([
            "python", "-m", "dashboards.report", "--study", study, "--tracking-uri",
            tracking_uri, "--run", parent, "--out", str(out)]))
        return None
    from dashboards.build import brief_table1
    from dashboards.formats import plain

    title, shown = brief_table1(result.computed)
    echo(f"{title}\n{plain(shown, names=2)}")
    echo(f"report: {result.written.html}"
         + (" (also in the parent run's artifacts, report/)" if result.logged else ""))
    return result.written.html


def run_tags(spec: StudySpec, data: StudyData) -> dict[str, str]:
    """Provenance of a study execution: data and split fingerprints, code, versions, device."""
    import mlflow
    import optuna
    import ray
    import torch

    tags = {
        "study": spec.name, "spec_fingerprint": spec.fingerprint(),
        "data_fingerprint": data.rois.fingerprint,
        "split_fingerprints": ",".join(s.fingerprint for s in data.splits),
        "split_mode": spec.splits.mode, "search_mode": spec.search.mode,
        "git_commit": _git_commit(), "python": platform.python_version(),
        "torch": torch.__version__, "ray": ray.__version__, "optuna": optuna.__version__,
        "mlflow": mlflow.__version__,
        "device": "cuda" if spec.resources.gpus > 0 else f"cpu ({platform.processor() or 'cpu'})",
        **{f"external_fingerprint.{name}": rois.fingerprint
           for name, rois in data.external.items()},
    }
    from study._preflight import weights_tags

    tags.update(weights_tags(spec))  # SHA-256 of the ImageNet weights file the variants load
    return tags


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"

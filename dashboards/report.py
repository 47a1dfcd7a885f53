"""``python -m dashboards.report``: rebuild a study's tables, ROC curves, statistics and HTML
report from MLflow, log them as artifacts (``report/``) on the study's parent run, and set its
Table 1 (at the unit of analysis, with CIs) as that run's description and ``table1.*`` metrics.

Examples::

    python -m dashboards.report --study quick
    python -m dashboards.report --study paper --tracking-uri http://mlflow:5000 --out reports/
    python -m dashboards.report --study quick --run 3f2a...   # one execution, not the newest
    python -m dashboards.report --smoke-test --out /tmp/report  # synthetic runs, no server

Without ``--tracking-uri``: ``$MLFLOW_TRACKING_URI``, else the managed server of ``runs/``
(``python -m study.server status --runs-dir runs``).

Exit status: 0 report written (also for a partial study: the report says what is missing),
2 bad arguments, no such study, ``--run`` not an execution of the study, no server.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported on use: ``--help`` answers in well under 2 s
    from mlflow.tracking import MlflowClient

    from dashboards import build
    from dashboards._load import StudyRuns

log = logging.getLogger(__name__)
ARTIFACT_PATH = "report"


@dataclass(frozen=True)
class ReportConfig:
    """What to report and where.

    Attributes:
        study: MLflow experiment (study name).
        tracking_uri: MLflow tracking server.
        out_dir: local folder for the report; its files are also logged to the parent run.
        run_id: the parent run of one execution; None = the newest.
        n_boot / seed: bootstrap resamples (>= 2000 for the CIs the tables print) and seed.
        log_artifacts: upload the folder to the parent run under ``report/``.
        during_study: made by the launcher before it ends the parent run (RUNNING is fine).
        smoke_test: synthetic runs (``dashboards._demo``) instead of MLflow; nothing logged.
    """

    study: str
    tracking_uri: str
    out_dir: Path
    run_id: str | None = None
    n_boot: int = 2000
    seed: int = 0
    log_artifacts: bool = True
    during_study: bool = False
    smoke_test: bool = False

    def __post_init__(self) -> None:
        if not self.study.strip():
            raise ValueError("--study must name a study (an MLflow experiment)")
        if self.n_boot < 1:
            raise ValueError(f"--n-boot must be >= 1, got {self.n_boot}")


@dataclass(frozen=True)
class ReportResult:
    written: build.Written
    computed: build.Computed
    logged: bool


class ServerUnreachable(ConnectionError):
    """The tracking server does not answer (checked in seconds, before MLflow's own retries,
    which take minutes)."""


def make_report(config: ReportConfig) -> ReportResult:
    """Load the study from MLflow, compute, draw, write, and log the folder to the parent run.

    Raises:
        ServerUnreachable: an http(s) tracking URI whose ``/health`` does not answer.
        StudyNotFound: no such study, or no execution of it.
    """
    from mlflow.tracking import MlflowClient

    from dashboards import build, external
    from dashboards._load import load_study

    if config.smoke_test:
        from dashboards._demo import demo_runs

        computed = build.compute(demo_runs(config.seed), n_boot=config.n_boot, seed=config.seed)
        return ReportResult(build.write(computed, config.out_dir), computed, False)
    if config.tracking_uri.startswith("http") and not _healthy(config.tracking_uri):
        raise ServerUnreachable(f"no MLflow server answers at {config.tracking_uri} "
                                "(GET /health); start one with: python -m study.server start")
    client = MlflowClient(tracking_uri=config.tracking_uri)
    runs = load_study(client, config.study, config.run_id, during_study=config.during_study)
    computed = build.compute(runs, n_boot=config.n_boot, seed=config.seed,
                             previous=_previous(client, runs))
    computed = external.attach(client, computed, n_boot=config.n_boot, seed=config.seed)
    written = build.write(computed, config.out_dir)
    logged = False
    if config.log_artifacts:
        try:
            client.log_artifacts(runs.parent_run_id, str(config.out_dir), ARTIFACT_PATH)
            if computed.restudy is not None:
                client.set_tag(runs.parent_run_id, "verdict", computed.restudy.verdict)
                client.set_tag(runs.parent_run_id, "restudy_savings",
                               computed.restudy.savings_line)
            logged = True
            publish(client, computed, written.html)
        except Exception as e:  # noqa: BLE001 - the local report stands without the upload
            log.warning("could not log the report to run %s: %s", runs.parent_run_id, e)
    return ReportResult(written, computed, logged)


def publish(client: MlflowClient, computed: build.Computed, html: Path) -> None:
    """The report's Table 1 on its parent run, where a user of the MLflow UI lands: the
    description (Table 1 in brief, verdict, warnings, a link to the report) and the
    ``table1.<variant>.*`` metrics (the runs table's columns), in one request each."""
    from dashboards.about import study_warnings
    from dashboards.build import brief_table1
    from dashboards.formats import markdown
    from study import tracking

    runs = computed.runs
    title, shown = brief_table1(computed)
    url = tracking.ui_url(runs.tracking_uri, runs.experiment_id, runs.parent_run_id)
    link = (f"[report/report.html]({url}".replace(
                tracking.UI_QUERY, f"/artifactPath/{ARTIFACT_PATH}/report.html")
            + f") in this run's Artifacts (local copy: {html})")
    try:
        note = tracking.describe_parent(
            None, report=link, summary=(title, markdown(shown)),
            verdict=computed.restudy.verdict if computed.restudy is not None else None,
            warnings=study_warnings(runs))
        tracking.log_once(client, runs.parent_run_id, table1_metrics(computed),
                          {tracking.NOTE_TAG: note})
    except Exception as e:  # noqa: BLE001 - the report itself stands
        log.warning("Table 1 not set on the parent run %s: %s", runs.parent_run_id, e)


def table1_metrics(computed: build.Computed) -> dict[str, float]:
    """The report's Table 1 as parent-run metrics (at the unit of analysis, a lesion's views
    one case): ``table1.<V>.acc_mean`` with ``acc_ci_low`` / ``acc_ci_high`` (%, the 95 %
    cluster-bootstrap CI), ``acc_std`` (over runs; absent with one run), ``auc`` with
    ``auc_ci_low`` / ``auc_ci_high``, ``time_min``, ``splits``."""
    from dashboards.tables import summary
    from study.tracking import per_variant_metrics

    t1 = computed.tables["table1"]
    brief = summary(t1, computed.tables["table2"]).merge(t1[["variant", "std_pct"]],
                                                         on="variant")
    names = {"accuracy_pct": "acc_mean", "accuracy_ci_low": "acc_ci_low",
             "accuracy_ci_high": "acc_ci_high", "std_pct": "acc_std", "auc_mean": "auc",
             "auc_ci_low": "auc_ci_low", "auc_ci_high": "auc_ci_high", "time_min": "time_min",
             "splits": "splits"}
    return per_variant_metrics(brief, names, "table1")


def _previous(client: MlflowClient, runs: StudyRuns) -> StudyRuns | None:
    """The execution a re-study re-ran (its ``previous_run_id`` tag), or None."""
    from dashboards._load import load_study

    previous = runs.tags.get("previous_run_id")
    if not previous:
        return None
    try:
        return load_study(client, runs.study, previous)
    except Exception as e:  # noqa: BLE001 - the report stands without the comparison
        log.warning("previous execution %s not loaded: %s", previous, e)
        return None


def _healthy(url: str, timeout_s: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout_s) as resp:
            return resp.status == 200
    except (OSError, ValueError):
        return False


def default_tracking_uri(runs_dir: Path = Path("runs")) -> str | None:
    """``$MLFLOW_TRACKING_URI``, else the running managed server of ``runs_dir``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    from study.server import server_status

    status = server_status(runs_dir)
    return status.info.url if status.state == "running" and status.info else None


def _parse(argv: list[str] | None) -> ReportConfig:
    p = argparse.ArgumentParser(
        prog="python -m dashboards.report", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n" + __doc__.split("Examples::")[1].split("Without")[0]
               + "exit status:" + __doc__.split("Exit status:")[1])
    p.add_argument("--study", help="study name (MLflow experiment); required unless "
                                   "--smoke-test")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow server; default $MLFLOW_TRACKING_URI, else the managed server "
                        "of --runs-dir")
    p.add_argument("--runs-dir", default="runs", type=Path,
                   help="where the managed MLflow server lives (default: runs)")
    p.add_argument("--out", default=None, type=Path,
                   help="output folder (default: <runs-dir>/<study>/report)")
    p.add_argument("--run", default=None, help="parent run id of one execution (default: "
                                               "the newest)")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap / fANOVA seed (0)")
    p.add_argument("--no-log", action="store_true",
                   help="do not upload the report to the parent run")
    p.add_argument("--smoke-test", action="store_true",
                   help="build the whole report from synthetic runs (no MLflow server) into "
                        "--out (default: a new temporary folder)")
    a = p.parse_args(argv)
    if a.smoke_test:
        out = a.out or Path(tempfile.mkdtemp(prefix="tlstudy-report-smoke-"))
        return ReportConfig(study="smoke-test", tracking_uri="", out_dir=out,
                            n_boot=a.n_boot, seed=a.seed, log_artifacts=False,
                            smoke_test=True)
    if not a.study:
        p.error("--study is required (or --smoke-test)")
    uri = a.tracking_uri or default_tracking_uri(a.runs_dir)
    if uri is None:
        p.error("no tracking server: pass --tracking-uri, set MLFLOW_TRACKING_URI, or start "
                f"one with: python -m study.server start --runs-dir {a.runs_dir}")
    try:
        return ReportConfig(study=a.study, tracking_uri=uri,
                            out_dir=a.out or a.runs_dir / a.study / "report", run_id=a.run,
                            n_boot=a.n_boot, seed=a.seed, log_artifacts=not a.no_log)
    except ValueError as e:
        p.error(str(e))
        raise  # unreachable: p.error exits


class BadRun(LookupError):
    """``--run`` names no run, or a run that is not an execution (parent run) of the study."""


def check_run(client: MlflowClient, study: str, run_id: str) -> None:
    """Raise ``BadRun`` (one line) unless ``run_id`` is a parent run of ``study``."""
    from mlflow.exceptions import MlflowException

    from study.tracking import PARENT_TAG

    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise BadRun(f"--run {run_id}: no such run at {client.tracking_uri}; list the study's "
                     f"executions in the MLflow UI or leave --run out (the newest)") from None
    exp = client.get_experiment(run.info.experiment_id)
    if exp.name != study:
        raise BadRun(f"--run {run_id} is a run of study {exp.name!r}, not {study!r}")
    parent = run.data.tags.get(PARENT_TAG)
    if parent:
        raise BadRun(f"--run {run_id} is a trial run ({run.data.tags.get('phase', '?')} "
                     f"{run.data.tags.get('variant', '')}), not an execution of the study; its "
                     f"execution is --run {parent}")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    config = _parse(argv)
    from dashboards._load import StudyNotFound

    try:
        if config.run_id and not config.smoke_test:
            if config.tracking_uri.startswith("http") and not _healthy(config.tracking_uri):
                raise ServerUnreachable(f"no MLflow server answers at {config.tracking_uri} "
                                        "(GET /health); start one with: python -m study.server "
                                        "start")
            from mlflow.tracking import MlflowClient

            check_run(MlflowClient(tracking_uri=config.tracking_uri), config.study,
                      config.run_id)
        result = make_report(config)
    except (StudyNotFound, ServerUnreachable, BadRun) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    runs = result.computed.runs
    print(f"report: {result.written.html}")
    print(f"study {runs.study}, parent run {runs.parent_run_id} ({runs.parent_status})"
          + (f", logged to its artifacts under {ARTIFACT_PATH}/" if result.logged else ""))
    for line in runs.problems:
        print(f"missing: {line}")
    if result.computed.restudy is not None:
        print(f"verdict: {result.computed.restudy.verdict}")
        print(f"warm start: {result.computed.restudy.savings_line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Where a user lands, tried as a user would: ``study.launch --smoke-test`` in a terminal
(a pseudo-terminal), then the MLflow UI in headless Chromium, the commands the launcher
suggests pasted as printed, and optuna-dashboard on the study's Optuna storage.

One smoke study (a few minutes on two cores) serves every test here; all are ``slow``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests._pty import run_in_pty
from tests.dashboards.test_html import _chromium, chromium  # noqa: F401 - fixture

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
STUDY = "landing"
#: Lines that are other libraries talking, not the launcher (the study's own warnings, e.g.
#: a run it had to end, are not chatter).
CHATTER = re.compile(r"A new study created|View run|View experiment|RAY_AUTH_MODE|"
                     r"Token authentication|(INFO|WARNING|ERROR)\W+(ray|optuna|mlflow|alembic|"
                     r"urllib3|tune|train)|\s(INFO|WARNING) \S+\.py:\d+ --|"
                     r"(Future|User|Deprecation|Experimental)Warning|"
                     r"Traceback|== Status ==|Trial .* (started|completed)", re.IGNORECASE)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def launched(tmp_path_factory, mlflow_server):
    runs = tmp_path_factory.mktemp("landing") / "runs"
    argv = [sys.executable, "-m", "study.launch", "--smoke-test", "--study", STUDY,
            "--runs-dir", str(runs), "--tracking-uri", mlflow_server]
    result = run_in_pty(argv, cwd=ROOT, env=_env(), timeout_s=900)
    assert result.returncode == 0, result.text
    return argv, runs, mlflow_server, result


def _line(result, prefix: str) -> str:
    found = [x for _, x in result.lines if x.startswith(prefix)]
    assert found, f"no line starting {prefix!r} in:\n{result.text}"
    return found[-1]


def _paste(command: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a suggested ``python -m ...`` command as printed (with this interpreter)."""
    argv = shlex.split(command)
    assert argv[:2] == ["python", "-m"], command
    return subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True,
                          cwd=ROOT, env=_env(), timeout=timeout)


def test_terminal_is_quiet_informative_and_answers_at_once(launched):
    _, _, _, result = launched
    first_t, first = result.lines[0]
    assert first_t < 2.0, (first_t, first)
    noisy = [x for _, x in result.lines if CHATTER.search(x)]
    assert not noisy, noisy
    headers = [x for _, x in result.lines if x.startswith("== ")]
    assert headers == ["== search: 6 trials ==", "== evaluate: 2 trials =="]
    status = [x for _, x in result.lines if x.startswith("search ")]
    assert any("ETA" in x and "best val_loss" in x for x in status)
    assert any(x.startswith("Table 1") for _, x in result.lines)


def test_mlflow_opens_on_the_runs_table_and_the_parent_shows_table1(launched, chromium,  # noqa: F811
                                                                    tmp_path):
    _, _, uri, result = launched
    line = _line(result, "MLflow: ")
    parent_url, runs_url = re.findall(r"(http[^\s)]+)", line)
    assert "workflowType=machine_learning" in parent_url
    dom = _chromium(chromium, tmp_path, "--virtual-time-budget=25000", "--dump-dom",
                    runs_url)
    text = re.sub(r"<[^>]+>", " ", dom)
    assert "Runs" in text and "matching runs" in text and f"{STUDY}-" in text
    assert "Token Usage" not in text and "No data available" not in text  # not GenAI's view
    dom = _chromium(chromium, tmp_path, "--virtual-time-budget=25000", "--dump-dom",
                    parent_url)
    assert "Description" in dom and "Table 1" in dom and "report/report.html" in dom
    assert re.search(r"Metrics \((\d+)\)", dom) and "table1.FE.acc_mean" in dom
    for name, url in (("mlflow_runs.png", runs_url), ("mlflow_parent.png", parent_url)):
        shot = tmp_path / name
        _chromium(chromium, tmp_path, "--window-size=1600,1400", "--virtual-time-budget=25000",
                  f"--screenshot={shot}", url)
        assert shot.stat().st_size > 10_000
        if os.environ.get("TLSTUDY_KEEP_SCREENSHOTS"):  # refresh the README's pictures
            shutil.copy(shot, ROOT / "docs" / name)


def test_the_parent_run_carries_table1_as_metrics_and_a_description(launched):
    from study.tracking import NOTE_TAG, client_for

    _, runs, uri, _ = launched
    state = json.loads((runs / STUDY / "state.json").read_text())
    parent = client_for(uri).get_run(state["parent_run_id"])
    assert parent.info.status == "FINISHED"
    for v in ("FE", "FTED"):   # the report's Table 1: at the unit of analysis, with CIs
        assert {f"table1.{v}.{m}" for m in ("acc_mean", "acc_ci_low", "acc_ci_high", "auc",
                                           "auc_ci_low", "auc_ci_high")} <= set(
            parent.data.metrics)
        assert (parent.data.metrics[f"table1.{v}.acc_ci_low"]
                <= parent.data.metrics[f"table1.{v}.acc_mean"]
                <= parent.data.metrics[f"table1.{v}.acc_ci_high"])
    assert not any(k.startswith("table1_views.") for k in parent.data.metrics)
    note = parent.data.tags[NOTE_TAG]
    assert "| FE |" in note and "artifactPath/report/report.html" in note
    assert "synthetic data" in note  # the warning a reader must see


def test_pasted_report_hint_works_and_a_bad_run_is_one_line(launched):
    from study.tracking import child_runs, client_for

    _, runs, uri, result = launched
    hint = _line(result, "rebuild the report: ").removeprefix("rebuild the report: ")
    done = _paste(hint)
    assert done.returncode == 0, done.stderr
    assert "report.html" in done.stdout
    bad = _paste(f"{hint} --run deadbeef")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "deadbeef" in bad.stderr and "Traceback" not in bad.stderr
    client = client_for(uri)
    parent = json.loads((runs / STUDY / "state.json").read_text())["parent_run_id"]
    exp = client.get_experiment_by_name(STUDY).experiment_id
    child = child_runs(client, exp, parent, phase="evaluate")[0].info.run_id
    wrong = _paste(f"{hint} --run {child}")
    assert wrong.returncode == 2 and len(wrong.stderr.strip().splitlines()) == 1
    assert f"--run {parent}" in wrong.stderr  # names the execution to use instead


def test_optuna_dashboard_reads_the_study_and_links_trials_to_mlflow(launched):
    pytest.importorskip("optuna_dashboard")
    from study.tracking import client_for

    _, runs, uri, _ = launched
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).parent / "optuna-dashboard"
    proc = subprocess.Popen([str(exe), f"sqlite:///{runs / STUDY / 'optuna.db'}", "--host",
                             "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        studies = None
        deadline = time.monotonic() + 60
        while studies is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/api/studies", timeout=5) as r:
                    studies = json.load(r)["study_summaries"]
            except OSError:
                time.sleep(0.5)
        assert studies, "optuna-dashboard did not answer"
        fe = next(s for s in studies if s["study_name"] == f"{STUDY}/FE/split0")
        with urllib.request.urlopen(f"{base}/api/studies/{fe['study_id']}", timeout=10) as r:
            detail = json.load(r)
        assert detail["objective_names"] == ["best_val_loss"]
        assert len(detail["trials"]) == 3
        for trial in detail["trials"]:
            attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
            assert attrs["mlflow_url"].startswith(uri) and attrs["mlflow_run_id"] in attrs[
                "mlflow_url"]
            run = client_for(uri).get_run(attrs["mlflow_run_id"])
            assert run.data.tags["trial"] == attrs["tune_trial_id"]
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def test_relaunch_and_schedule_hints_work_when_pasted(launched):
    argv, runs, uri, _ = launched
    again = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=_env(),
                           timeout=300)
    assert again.returncode == 0 and "already ran" in again.stdout, again.stderr
    hint = re.search(r"python -m study\.schedule run .*--force", again.stdout).group(0)
    assert f"--runs-dir {runs}" in hint and f"--tracking-uri {uri}" in hint
    # the space recorded with the study is found by its name (no --space: not quick.yaml)
    by_name = subprocess.run([sys.executable, "-m", "study.launch", "--study", STUDY,
                              "--runs-dir", str(runs), "--tracking-uri", uri],
                             capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=300)
    assert by_name.returncode == 0 and "already ran" in by_name.stdout, by_name.stderr
    done = _paste(hint)  # a forced re-study: a second smoke execution
    assert done.returncode == 0, done.stderr[-3000:]
    assert "verdict:" in done.stdout

"""An interrupted study (Ctrl-C mid-search) resumed with --resume: nothing lost, nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import optuna
import pytest

from search_spaces import load_spec
from study.tracking import child_runs, experiment_for
from tests._procs import wait_for_output


def _launch(args, log):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "study.launch", "--smoke-test", *args],
                            stdout=log, stderr=subprocess.STDOUT, env=env)


@pytest.mark.slow
def test_resume_after_ctrl_c_completes_without_duplicates(tmp_path, mlflow_server,
                                                          mlflow_client):
    name = "resume-e2e"
    args = ["--runs-dir", str(tmp_path / "runs"), "--study", name,
            "--tracking-uri", mlflow_server]
    first_log = tmp_path / "first.log"
    with first_log.open("w") as log:
        proc = _launch(args, log)
        wait_for_output(first_log, "search   2/6 done", proc, timeout_s=300)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=300)
    text = first_log.read_text()
    assert rc == 130, text
    assert "continue with: python -m study.launch" in text and "--resume" in text
    assert "Table 1" not in text
    exp = experiment_for(mlflow_client, name)
    parents = [r for r in mlflow_client.search_runs([exp])
               if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "KILLED"
    assert not child_runs(mlflow_client, exp, parents[0].info.run_id, status="RUNNING")

    with (tmp_path / "second.log").open("w") as log:
        rc = _launch([*args, "--resume"], log).wait(timeout=600)
    text = (tmp_path / "second.log").read_text()
    assert rc == 0, text
    assert "Table 1" in text
    spec = load_spec("smoke")
    parents = [r for r in mlflow_client.search_runs([exp])
               if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # the same execution
    runs = child_runs(mlflow_client, exp, parents[0].info.run_id)
    search = [r for r in runs if r.data.tags["phase"] == "search"]
    evaluate = [r for r in runs if r.data.tags["phase"] == "evaluate"]
    assert len(search) == len({r.data.tags["trial"] for r in search})  # one run per trial
    assert len(evaluate) == len(spec.variants)
    assert all(r.info.status in ("FINISHED", "KILLED") for r in runs)
    storage = f"sqlite:///{tmp_path / 'runs' / name / 'optuna.db'}"
    for v in spec.variants:
        trials = optuna.load_study(study_name=f"{name}/{v}/split0", storage=storage).trials
        states = {t.state for t in trials}
        assert states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
        assert len(trials) == spec.search.trials  # the budget, no trial lost or run twice

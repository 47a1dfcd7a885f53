"""End to end: the smoke study on a real local Ray and a real MLflow server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
from sklearn.metrics import roc_auc_score

from search_spaces import load_spec, shipped_path
from study.tracking import child_runs


def _scratch() -> set[Path]:
    from study.phases._trial import SCRATCH_PREFIX

    return set(Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"))


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory, ray_local, mlflow_server):
    from study.run import run_study

    spec = load_spec("smoke").with_name("smoke-e2e")
    root = tmp_path_factory.mktemp("runs")
    lines: list[str] = []
    before = _scratch()
    outcome = run_study(spec, root / spec.name, mlflow_server, echo=lines.append)
    return spec, root / spec.name, outcome, lines, _scratch() - before


def test_smoke_study_logs_every_trial_to_mlflow(smoke_study, mlflow_client):
    spec, study_dir, outcome, lines, _ = smoke_study
    parent = mlflow_client.get_run(outcome.parent_run_id)
    assert parent.info.status == "FINISHED"
    for tag in ("data_fingerprint", "split_fingerprints", "git_commit", "torch",
                "spec_fingerprint"):
        assert parent.data.tags[tag]
    assert parent.data.params["backbone"] == "efficientnet_lite0"
    assert parent.data.params.keys() == spec.flat_dict().keys()  # none rejected by MLflow
    runs = child_runs(mlflow_client, outcome.experiment_id, outcome.parent_run_id)
    assert all(r.info.status in ("FINISHED", "KILLED", "FAILED") for r in runs)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    search = [r for r in runs if r.data.tags["phase"] == "search"]
    evaluate = [r for r in runs if r.data.tags["phase"] == "evaluate"]
    assert len(search) == len(spec.variants) * spec.search.trials  # one run per trial, no dupes
    assert len({r.data.tags["trial"] for r in search}) == len(search)
    assert sorted(r.data.tags["variant"] for r in evaluate) == sorted(spec.variants)
    for r in search + evaluate:
        assert r.data.tags["role.base_lr"] == "scientific"
        history = mlflow_client.get_metric_history(r.info.run_id, "val_loss")
        assert [m.step for m in history] == list(range(1, len(history) + 1))
    fted = next(r for r in evaluate if r.data.tags["variant"] == "FTED")
    assert fted.data.tags["role.lam"] == "scientific" and "regime.lam" in fted.data.params
    for r in evaluate:
        assert {"test_acc", "test_auc", "wall_time_s"} <= r.data.metrics.keys()
        names = {a.path for a in mlflow_client.list_artifacts(r.info.run_id)}
        assert {"lr_table.json", "test_predictions.json", "val_predictions.json",
                "roc.json"} <= names
        local = mlflow_client.download_artifacts(r.info.run_id, "test_predictions.json",
                                                 str(study_dir))
        with open(local) as fh:
            pred = json.load(fh)
        # the logged AUC is reproducible from the logged per-sample predictions
        assert roc_auc_score(pred["label"], pred["p_malignant"]) == pytest.approx(
            r.data.metrics["test_auc"], abs=1e-9)
        assert all(s.startswith("s") and "patient" not in s for s in pred["sample_id"])
        assert len(pred["cluster"]) == len(pred["patient"]) == len(pred["sample_id"])
        assert all(c.startswith("l") for c in pred["cluster"])  # anonymous lesion ids
        assert len(set(pred["cluster"])) < len(pred["sample_id"])  # views share their lesion
        # at the validation Youden threshold (+inf, unlogged, when validation shows no skill)
        assert {"test_sensitivity", "test_specificity"} <= r.data.metrics.keys()
    assert list(outcome.table["variant"]) == list(spec.variants)
    assert any(line.startswith("Table 1") for line in lines)


def test_the_printed_table1_is_the_reports_a_lesion_one_case_each_figure_with_its_ci(
        smoke_study, mlflow_client):
    import pandas as pd

    spec, study_dir, outcome, lines, _ = smoke_study
    (text,) = [line for line in lines if line.startswith("Table 1")]
    assert "unit of analysis: lesion" in text and "95% cluster-bootstrap CI" in text
    assert not any("every view a case" in line for line in lines)  # no view-level summary
    table1 = pd.read_csv(study_dir / "report" / "tables" / "table1.csv")
    table2 = pd.read_csv(study_dir / "report" / "tables" / "table2.csv")
    rows = {row.split()[0]: row for row in text.splitlines()[2:]}
    assert sorted(rows) == sorted(spec.variants)
    for v in spec.variants:
        a = table1[table1["variant"] == v].iloc[0]
        b = table2[(table2["model"] == v) & (table2["source"] == "this study")].iloc[0]
        views = pd.read_csv(study_dir / "report" / "tables" / "views.csv")
        # a lesion's two views are one case: fewer cases per run than test views
        assert a["unit"] == "lesion" and a["cases"] < views[views["variant"] == v]["cases"].max()
        assert (f"{a['accuracy_pct']:.2f} [{a['accuracy_ci_low']:.2f}, "
                f"{a['accuracy_ci_high']:.2f}]") in rows[v]
        assert f"{b['auc_mean']:.3f} [{b['auc_ci_low']:.3f}, {b['auc_ci_high']:.3f}]" in rows[v]
    # and the parent run shows the same table, not the view-level one: description, metrics
    parent = mlflow_client.get_run(outcome.parent_run_id).data
    for v in spec.variants:
        a = table1[table1["variant"] == v].iloc[0]
        b = table2[(table2["model"] == v) & (table2["source"] == "this study")].iloc[0]
        assert parent.metrics[f"table1.{v}.acc_mean"] == pytest.approx(a["accuracy_pct"])
        assert parent.metrics[f"table1.{v}.acc_ci_high"] == pytest.approx(a["accuracy_ci_high"])
        assert parent.metrics[f"table1.{v}.auc_ci_low"] == pytest.approx(b["auc_ci_low"])
    note = parent.tags["mlflow.note.content"]
    assert "unit of analysis: lesion" in note and "quick summary" not in note
    for v in spec.variants:
        a = table1[table1["variant"] == v].iloc[0]
        assert f"| {v} | lesion | {a['accuracy_pct']:.2f} [" in note


def test_asha_stopped_trials_are_pruned_in_optuna_and_killed_in_mlflow(smoke_study,
                                                                       mlflow_client):
    spec, study_dir, outcome, *_ = smoke_study
    storage = f"sqlite:///{study_dir / 'optuna.db'}"
    runs = child_runs(mlflow_client, outcome.experiment_id, outcome.parent_run_id,
                      phase="search")
    killed = [r for r in runs if r.info.status == "KILLED"]
    assert all(r.data.tags.get("stop_reason") == "pruned" for r in killed)
    states = []
    for v in spec.variants:
        study = optuna.load_study(study_name=f"{spec.name}/{v}/split0", storage=storage)
        assert len(study.trials) == spec.search.trials
        states += [t.state for t in study.trials]
        for t in study.trials:
            if t.state == optuna.trial.TrialState.PRUNED:
                assert max(t.intermediate_values) < spec.search.asha.max_epochs
            else:
                assert t.state == optuna.trial.TrialState.COMPLETE
    assert states.count(optuna.trial.TrialState.PRUNED) == len(killed)


def test_bad_space_file_is_refused_before_ray_starts(tmp_path):
    bad = tmp_path / "bad.yaml"
    text = shipped_path("smoke").read_text()
    bad.write_text(text.replace("variants: [FE, FTED]", "variants: [FE, XFT]"))
    done = subprocess.run([sys.executable, "-m", "study.launch", "--space", str(bad),
                           "--runs-dir", str(tmp_path / "runs"), "--tracking-uri",
                           "http://127.0.0.1:9"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "bad.yaml: variants[1]" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()


def test_second_launch_of_a_finished_study_runs_nothing(smoke_study, mlflow_server,
                                                        mlflow_client, capsys, tmp_path):
    from study.launch import main

    spec, study_dir, outcome, *_ = smoke_study
    before = len(mlflow_client.search_runs([outcome.experiment_id]))
    args = ["--study", spec.name, "--runs-dir", str(study_dir.parent),
            "--tracking-uri", mlflow_server]
    assert main(["--smoke-test", *args]) == 0
    assert "already ran" in capsys.readouterr().out
    # another version of the space under the same name is refused, not mixed in
    changed = tmp_path / "smoke.yaml"
    changed.write_text(shipped_path("smoke").read_text().replace("trials: 3", "trials: 4"))
    assert main(["--space", str(changed), *args]) == 2
    assert "another version of study" in capsys.readouterr().err
    assert len(mlflow_client.search_runs([outcome.experiment_id])) == before


def test_launch_while_the_study_runs_elsewhere_is_refused_naming_the_holder(
        tmp_path, mlflow_server, mlflow_client, capsys):
    """A second launcher (or a scheduled re-study) must not 'continue' an execution another
    process is driving: the study lock is taken before anything is looked at or started."""
    from study.launch import main
    from study.scheduling._lock import StudyLock

    runs = tmp_path / "runs"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from study.scheduling._lock import StudyLock;"
        "StudyLock(Path(sys.argv[1]), command='study.launch --smoke-test').acquire();"
        "print('locked', flush=True); time.sleep(120)"), str(runs / "smoke-locked")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        rc = main(["--smoke-test", "--study", "smoke-locked", "--runs-dir", str(runs),
                   "--tracking-uri", mlflow_server])
        err = capsys.readouterr().err
        assert rc == 3, err
        assert f"pid {holder.pid}" in err and "study.launch --smoke-test" in err
        assert mlflow_client.get_experiment_by_name("smoke-locked") is None  # nothing ran
        assert not (runs / "data").exists()
    finally:
        holder.kill()
        holder.wait()
    with StudyLock(runs / "smoke-locked"):  # the kernel dropped the dead holder's lock
        pass


def test_full_disk_before_any_trial_is_named_and_leaves_nothing_half_written(
        tmp_path, mlflow_server, mlflow_client):
    """The runs folder on a file system too small for the synthetic dataset: the launcher says
    the disk is full and what to do, with no traceback; once there is room, the same folder
    gives the whole dataset (the partial one was not taken for complete)."""
    from study.phases._data import prepare_data
    from tests._disk import small_disk

    with small_disk(tmp_path / "runs", "4m") as runs:
        done = subprocess.run([sys.executable, "-m", "study.launch", "--smoke-test",
                               "--study", "smoke-full", "--runs-dir", str(runs),
                               "--tracking-uri", mlflow_server],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 1, done.stderr[-3000:]
        assert "no space left on the device holding" in done.stderr, done.stderr[-3000:]
        assert "run the same command again" in done.stderr
        assert "Traceback" not in done.stderr
        assert mlflow_client.get_experiment_by_name("smoke-full") is None   # no trial started
        assert not list(runs.rglob("bcdr_f03_outlines.csv"))   # the completeness marker
        subprocess.run(["mount", "-o", "remount,size=256m", str(runs)], check=True)
        data = prepare_data(load_spec("smoke"), runs)
        assert data.counts["patients"] == 24
        assert not list(runs.rglob("*.tmp*"))                   # no temporary file left


def test_trials_leave_no_checkpoint_folder_behind(smoke_study):
    """Each trial trains in a local folder of checkpoints (tens to hundreds of MB); Tune can end
    a worker while its trial waits in its last report, so no ``finally`` runs there: the
    folder goes before that report, and what ended workers leave is swept after each phase."""
    *_, left = smoke_study
    alive = []
    for folder in left:
        pid = int(folder.name.split("-")[2])
        try:
            os.kill(pid, 0)
            alive.append(folder)
        except ProcessLookupError:
            pass
    assert sorted(left) == sorted(alive), "folders of ended trial workers were left behind"


def test_sweep_removes_the_folders_of_ended_workers_only(tmp_path):
    from study.phases._trial import SCRATCH_PREFIX, sweep_scratch

    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()                                             # a pid that is gone
    dead = tmp_path / f"{SCRATCH_PREFIX}{ended.pid}-abc"
    live = tmp_path / f"{SCRATCH_PREFIX}{os.getpid()}-def"
    other = tmp_path / "tlstudy-trial-notapid-x"
    for folder in (dead, live, other):
        folder.mkdir()
        (folder / "checkpoint.pt").write_bytes(b"\0" * 1024)
    assert sweep_scratch(tmp_path) == [dead]
    assert not dead.exists() and live.exists() and other.exists()


def test_tune_keeps_only_what_can_be_used_of_the_checkpoints(smoke_study):
    """A finished search's trial checkpoints are dropped (results are in MLflow); each
    evaluation trial keeps one checkpoint: its last, with the weights that were tested."""
    spec, study_dir, *_ = smoke_study
    trials = [d for d in (study_dir / "ray" / "study").iterdir() if d.is_dir()]
    phase = {d: json.loads((d / "params.json").read_text())["phase"] for d in trials}
    search = [d for d in trials if phase[d] == "search"]
    assert len(search) == len(spec.variants) * spec.search.trials
    assert not [c for d in search for c in d.glob("checkpoint_*")]
    evaluate = [d for d in trials if phase[d] == "evaluate"]
    assert len(evaluate) == len(spec.variants)
    for trial in evaluate:
        kept = list(trial.glob("checkpoint_*"))
        assert len(kept) == 1, kept                         # not one per epoch
        assert list(kept[0].glob("best-e*.pt")) and (kept[0] / "checkpoint.pt").is_file()


def test_without_a_report_the_quick_summary_is_shown_and_the_printed_command_rebuilds_it(
        tmp_path, ray_local, mlflow_server, mlflow_client):
    """The report cannot be written (a file stands where its folder goes): the study still
    finishes, prints the view-level quick summary (labelled so) and the command that rebuilds
    the report; pasted once the file is gone, that command writes the report and puts its
    Table 1 on the parent run."""
    import shlex

    from study.run import run_study

    spec = load_spec("smoke").with_name("smoke-noreport")
    study_dir = tmp_path / "runs dir" / spec.name          # a space: the hint must quote
    study_dir.mkdir(parents=True)
    (study_dir / "report").write_text("in the way\n")
    lines: list[str] = []
    outcome = run_study(spec, study_dir, mlflow_server, echo=lines.append)
    text = "\n".join(lines)
    assert "Table 1 (quick summary: every view a case" in text
    (hint,) = [line for line in lines if line.startswith("report: not built")]
    command = hint.split("rebuild it with: ", 1)[1]
    parent = mlflow_client.get_run(outcome.parent_run_id).data
    assert parent.metrics["table1_views.FE.acc_mean"] == pytest.approx(
        outcome.table.set_index("variant").loc["FE", "accuracy_%"])
    assert not any(k.startswith("table1.") for k in parent.metrics)
    assert "quick summary" in parent.tags["mlflow.note.content"]

    (study_dir / "report").unlink()                         # the cause mended; pasted as is
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "dashboards.report"]
    done = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert (study_dir / "report" / "report.html").is_file()
    parent = mlflow_client.get_run(outcome.parent_run_id).data
    assert {f"table1.{v}.acc_ci_low" for v in spec.variants} <= set(parent.metrics)
    assert "unit of analysis: lesion" in parent.tags["mlflow.note.content"]

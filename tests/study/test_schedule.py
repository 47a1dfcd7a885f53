"""Scheduled re-studies: change detection, lock, crontab round trip, warm start, the comparison
statistics, and (slow) two executions on synthetic data whose second dataset adds patients."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from study.schedule import main as schedule_main
from study.scheduling import _cron as cron
from study.scheduling._lock import StudyLock, StudyLocked
from study.scheduling._restudy import Current, Execution, decide, previous_values

SMOKE_SYNTH = {"seed": 0, "width": 360, "height": 584, "radius_range": (8.0, 24.0)}


def _execution(run_id: str, status: str = "FINISHED", *, t: int = 0, data: str = "d" * 16,
               code: str = "c" * 40, space: str = "s" * 16, **tags: str) -> Execution:
    return Execution(run_id, status, t, {"data_fingerprint": data, "git_commit": code,
                                         "spec_fingerprint": space, **tags},
                     {"search.trials": "3"})


CURRENT = Current("d" * 16, "c" * 40, "s" * 16, {"search.trials": 3})


# ----------------------------------------------------------------------------- change detection


def test_nothing_changed_is_skipped_with_a_one_line_reason():
    d = decide(CURRENT, [_execution("a" * 32, t=2), _execution("b" * 32, t=1)])
    assert not d.run and d.previous.run_id == "a" * 32
    assert d.reason.startswith("nothing changed since aaaaaaaa") and "\n" not in d.reason


@pytest.mark.parametrize("field, changed, text", [
    ("data", "data", "data changed (dddddddd -> 0000"),
    ("code", "code", "code changed (cccccccc -> 0000"),
    ("space", "space", "search space changed (ssssssss -> 0000"),
])
def test_each_change_is_named(field, changed, text):
    current = Current(**{**CURRENT.__dict__, field: "0" * 16})
    d = decide(current, [_execution("a" * 32)])
    assert d.run and d.changed == (changed,) and d.trigger == "changed"
    assert text in d.reason


def test_a_changed_space_names_its_keys():
    current = Current("d" * 16, "c" * 40, "t" * 16, {"search.trials": 5})
    d = decide(current, [_execution("a" * 32)])
    assert "search.trials" in d.reason


def test_a_failed_last_execution_is_retried_and_builds_on_the_last_finished():
    history = [_execution("f" * 32, "FAILED", t=2, failure_reason="DatasetError: gone"),
               _execution("a" * 32, t=1)]
    d = decide(CURRENT, history)
    assert d.run and d.trigger == "retry" and d.changed == ("retry",)
    assert d.previous.run_id == "a" * 32 and "FAILED (DatasetError: gone)" in d.reason


def test_first_execution_and_force():
    assert decide(CURRENT, []).trigger == "first"
    d = decide(CURRENT, [_execution("a" * 32)], force=True)
    assert d.run and d.trigger == "forced" and d.reason.startswith("--force: nothing changed")


def test_previous_values_are_typed_and_kept_inside_the_current_space():
    from search_spaces import load_spec

    spec = load_spec("smoke")
    params = {"regime.base_lr": "0.00123", "regime.lam": "7.5", "batch_size": "16"}
    assert previous_values(params, spec.params_for("FTED")) == {"base_lr": 0.00123}


def test_failure_reasons_keep_paths_and_image_names_out_of_mlflow():
    from study.scheduling._restudy import failure_reason

    text = failure_reason("DatasetError: /data/QZXDIR/BCDR-F03: image P_QZXPAT_1.tif unreadable")
    assert text == "DatasetError: <path>: image <file> unreadable"


# ----------------------------------------------------------------------------- lock


def test_lock_refuses_a_second_holder_and_says_who_holds_it(tmp_path):
    with StudyLock(tmp_path / "s", command="first"):
        with pytest.raises(StudyLocked) as e:
            StudyLock(tmp_path / "s").acquire()
        holder = e.value.holder
        assert holder.pid is not None and holder.host and holder.command == "first"
        assert f"pid {holder.pid}" in str(e.value)
    StudyLock(tmp_path / "s").acquire().release()  # released: free again


def test_a_concurrent_scheduled_run_exits_non_zero(tmp_path):
    runs = tmp_path / "runs"
    with StudyLock(runs / "smoke", command="the first execution"):
        done = subprocess.run(
            [sys.executable, "-m", "study.schedule", "run", "--study", "smoke", "--runs-dir",
             str(runs), "--tracking-uri", "http://127.0.0.1:9"],
            capture_output=True, text=True, timeout=180)
    assert done.returncode == 3, done.stderr
    assert "already running" in done.stderr and "the first execution" in done.stderr
    assert "Traceback" not in done.stderr


# ----------------------------------------------------------------------------- cron


def test_cron_install_list_remove_round_trip(tmp_path, capsys):
    tab = tmp_path / "crontab"
    tab.write_text("MAILTO=me@example.org\n5 4 * * * /usr/bin/backup\n")
    base = ["--crontab", str(tab), "--runs-dir", str(tmp_path / "runs")]
    assert schedule_main(["install", "--study", "smoke", "--cron", "0 3 * * 1", *base]) == 0
    assert schedule_main(["install", "--study", "quick", "--cron", "30 2 1 * *", *base]) == 0
    # installing again replaces the study's entry
    assert schedule_main(["install", "--study", "smoke", "--cron", "0 4 * * 1-5",
                          "--restudy-trials", "2", *base]) == 0
    entries = cron.entries(tab.read_text())
    assert [(e.study, e.schedule) for e in entries] == [("quick", "30 2 1 * *"),
                                                       ("smoke", "0 4 * * 1-5")]
    smoke = entries[1].command
    assert "-m study.schedule run --study smoke --space smoke" in smoke
    assert f"--runs-dir {tmp_path / 'runs'}" in smoke and "schedule.log 2>&1" in smoke
    assert "--restudy-trials 2" in smoke
    capsys.readouterr()
    assert schedule_main(["list", "--crontab", str(tab)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [ln.split("\t")[:2] for ln in listed] == [["quick", "30 2 1 * *"],
                                                     ["smoke", "0 4 * * 1-5"]]
    assert schedule_main(["remove", "--study", "smoke", "--crontab", str(tab)]) == 0
    assert schedule_main(["remove", "--study", "smoke", "--crontab", str(tab)]) == 1
    text = tab.read_text()
    assert "MAILTO=me@example.org\n5 4 * * * /usr/bin/backup\n" in text  # others kept
    assert [e.study for e in cron.entries(text)] == ["quick"]


@pytest.mark.parametrize("expr", ["0 3 * *", "61 3 * * 1", "0 3 * * mon-x", "* * 0 * *"])
def test_bad_cron_expressions_are_refused(expr, tmp_path, capsys):
    rc = schedule_main(["install", "--study", "smoke", "--cron", expr, "--crontab",
                        str(tmp_path / "tab")])
    assert rc == 2 and "cron expression" in capsys.readouterr().err
    assert not (tmp_path / "tab").exists()


@pytest.mark.parametrize("expr, calendar", [
    ("0 3 * * 1", "Mon *-*-* 03:00:00"), ("30 2 1 * *", "*-*-01 02:30:00"),
    ("*/15 * * * 1-5", "Mon..Fri *-*-* *:00/15:00"), ("@daily", "daily")])
def test_systemd_calendar_from_cron(expr, calendar):
    assert cron.on_calendar(expr) == calendar


def test_cluster_install_prints_a_systemd_timer_and_a_cronjob(tmp_path, capsys):
    tab = tmp_path / "tab"
    rc = schedule_main(["install", "--study", "smoke", "--cron", "0 3 * * 1", "--cluster",
                        "ray_cluster.yaml", "--crontab", str(tab)])
    out = capsys.readouterr().out
    assert rc == 0 and not tab.exists()  # printed, not installed
    assert "OnCalendar=Mon *-*-* 03:00:00" in out
    assert "--cluster %h/ray_bootstrap_config.yaml" in out
    assert "kind: CronJob" in out and "concurrencyPolicy: Forbid" in out


# ----------------------------------------------------------------------------- warm start


def test_warm_start_configs_are_asked_first_and_count_against_the_budget(tmp_path):
    from study.phases._grouped import Group, GroupedOptunaSearcher

    def suggest(trial):
        return {"lr": trial.suggest_float("lr", 1e-4, 1.0, log=True)}

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    searcher = GroupedOptunaSearcher(
        [Group("A", 0, 3, suggest), Group("B", 0, 3, suggest)], storage_url=storage,
        study_prefix="toy@1234abcd", seed=0, max_epochs=2,
        warm_start={"A/split0": [{"lr": 0.0123}]}, study_attrs={"mlflow_parent_run_id": "p"})
    assert searcher.started("A/split0") == 0  # enqueued, not asked yet
    configs = [searcher.suggest(f"t{i}") for i in range(6)]
    assert searcher.suggest("t6") == "FINISHED"
    first_a = next(c for c in configs if c["variant"] == "A")
    assert first_a["lr"] == 0.0123 and first_a["optuna_trial"] == 0
    study = optuna.load_study(study_name="toy@1234abcd/A/split0", storage=storage)
    assert study.trials[0].params == {"lr": 0.0123}
    assert study.trials[0].user_attrs["warm_start"] is True
    assert study.user_attrs["mlflow_parent_run_id"] == "p"
    assert len(study.trials) == 3  # the warm start used one trial of the budget


def test_a_salted_searcher_does_not_replay_the_previous_proposals(tmp_path):
    from study.phases._grouped import Group, GroupedOptunaSearcher

    def suggest(trial):
        return {"lr": trial.suggest_float("lr", 1e-4, 1.0, log=True)}

    def first_three(prefix: str, salt: str) -> list[float]:
        s = GroupedOptunaSearcher([Group("A", 0, 3, suggest)], seed=0, max_epochs=2,
                                  storage_url=f"sqlite:///{tmp_path / 'o.db'}",
                                  study_prefix=prefix, seed_salt=salt)
        return [s.suggest(f"t{i}")["lr"] for i in range(3)]

    assert first_three("a", "") == first_three("b", "")  # seeded: reproducible
    assert first_three("c", "prev-run-id") != first_three("d", "")


# ----------------------------------------------------------------------------- comparison


def _cases(y: np.ndarray, p: np.ndarray, views: int = 1) -> pd.DataFrame:
    """One run's test cases at the lesion unit, as ``units.combine`` makes them; ``views``
    copies of every lesion's view first (its CC and MLO saying the same)."""
    from dashboards import units

    n = len(y)
    pred = pd.DataFrame({
        "variant": "FE", "split": 0, "seed": 0,
        "sample_id": [f"s{i}-{k}" for i in range(n) for k in range(views)],
        "cluster": [f"l{i}" for i in range(n) for _ in range(views)],
        "patient": [f"p{i}" for i in range(n) for _ in range(views)],
        "label": np.repeat(y, views), "p_malignant": np.repeat(p, views)})
    return units.combine(pred, "lesion")


def test_delta_over_runs_paired_identical_is_zero_and_a_clear_gain_is_significant():
    from dashboards.restudy import delta_over_runs

    rng = np.random.default_rng(0)
    y = np.r_[np.ones(40, int), np.zeros(40, int)]
    weak = np.clip(0.5 + 0.1 * (y - 0.5) + rng.normal(0, 0.2, 80), 0, 1)
    strong = np.clip(0.5 + 0.8 * (y - 0.5) + rng.normal(0, 0.05, 80), 0, 1)
    same = delta_over_runs(_cases(y, weak), _cases(y, weak), paired=True, n_boot=500)
    assert same["acc"].delta == 0 and same["auc"].delta == 0 and same["auc"].p_value == 1.0
    assert same["auc"].low == same["auc"].high == 0     # one draw weighs both executions
    gain = delta_over_runs(_cases(y, weak), _cases(y, strong), paired=False, n_boot=1000,
                           seed=1)
    assert gain["acc"].after == 1.0 and gain["auc"].after == 1.0
    assert gain["auc"].low > 0 and gain["auc"].p_value < 0.01
    assert gain["acc"].low <= gain["acc"].delta <= gain["acc"].high


def test_a_lesions_two_views_are_one_case_in_the_restudy_delta():
    """Seen twice (CC and MLO), a lesion still counts once: the delta and its CI are those
    of one view per lesion; counted as two cases the CI would shrink by about √2."""
    from dashboards.restudy import delta_over_runs

    rng = np.random.default_rng(3)
    y = np.r_[np.ones(30, int), np.zeros(30, int)]
    before = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.25, 60), 0, 1)
    after = np.clip(0.5 + 0.4 * (y - 0.5) + rng.normal(0, 0.25, 60), 0, 1)
    one = delta_over_runs(_cases(y, before), _cases(y, after), paired=True, n_boot=800)
    two = delta_over_runs(_cases(y, before, views=2), _cases(y, after, views=2), paired=True,
                          n_boot=800)
    for m in ("acc", "auc"):
        assert (two[m].delta, two[m].low, two[m].high, two[m].p_value) == pytest.approx(
            (one[m].delta, one[m].low, one[m].high, one[m].p_value))
        assert one[m].high > one[m].low


def _log_execution(client, exp: str, accs: dict[str, float], *, previous: str | None = None,
                   ids: str = "s") -> str:
    """A FINISHED parent with one FINISHED evaluation run per variant on split 0, whose 100
    test predictions give exactly ``accs[variant]`` accuracy (errors on both classes)."""
    from study import tracking

    tags = {"study": "known", "data_fingerprint": ids * 8}
    if previous:
        tags |= {"previous_run_id": previous, "changed": "data"}
    parent = tracking.start_parent_run(client, exp, tags=tags)
    y = np.r_[np.ones(50, int), np.zeros(50, int)]
    for v, acc in accs.items():
        wrong = round((1 - acc) * 50)
        p = np.where(y == 1, 0.9, 0.1)
        p[:wrong] = 0.2          # missed malignant
        p[50:50 + wrong] = 0.8   # false alarms
        run = tracking.start_child_run(client, exp, parent, phase="evaluate", variant=v,
                                       split=0, trial=f"e-{v}",
                                       params={"regime.base_lr": 0.01})
        client.log_metric(run, "test_acc", acc)
        client.log_metric(run, "test_auc", 0.9)
        client.log_text(run, json.dumps({"sample_id": [f"{ids}{i}" for i in range(100)],
                                         "p_malignant": p.tolist(), "label": y.tolist()}),
                        "test_predictions.json")
        client.set_terminated(run, "FINISHED")
    client.set_terminated(parent, "FINISHED")
    return parent


def test_report_compares_with_the_previous_execution_and_logs_the_verdict(mlflow_client,
                                                                          mlflow_server,
                                                                          tmp_path):
    from dashboards.report import ReportConfig, make_report
    from study.tracking import experiment_for

    name = f"restudy-known-{time.time_ns()}"
    exp = experiment_for(mlflow_client, name)
    first = _log_execution(mlflow_client, exp, {"FE": 0.70, "FTED": 0.90})
    second = _log_execution(mlflow_client, exp, {"FE": 0.96, "FTED": 0.90}, previous=first,
                            ids="t")
    result = make_report(ReportConfig(study=name, tracking_uri=mlflow_server,
                                      out_dir=tmp_path / "report", run_id=second, n_boot=500))
    c = result.computed.restudy
    assert c is not None and c.previous_run_id == first
    assert c.ranking_before == ("FTED", "FE") and c.ranking_after == ("FE", "FTED")
    d = c.deltas.set_index("variant")
    assert d.loc["FE", "acc_delta"] == pytest.approx(0.26)
    assert d.loc["FTED", "acc_delta"] == pytest.approx(0.0)
    assert not d.loc["FE", "paired"]  # other samples: unpaired
    assert d.loc["FE", "significant"] and not d.loc["FTED", "significant"]
    assert c.verdict.startswith("FTED no longer best: FE now best by mean accuracy "
                                "(96.0 % vs 90.0 %)")
    assert "significant: FE accuracy +26.0 pp" in c.verdict
    tags = mlflow_client.get_run(second).data.tags
    assert tags["verdict"] == c.verdict
    page = (tmp_path / "report" / "report.html").read_text()
    assert 'id="restudy"' in page and "FTED no longer best" in page
    assert json.loads((tmp_path / "report" / "summary.json").read_text())["restudy"][
        "previous_run_id"] == first
    # the same execution again: paired, unchanged
    third = _log_execution(mlflow_client, exp, {"FE": 0.96, "FTED": 0.90}, previous=second,
                           ids="t")
    again = make_report(ReportConfig(study=name, tracking_uri=mlflow_server,
                                     out_dir=tmp_path / "r3", run_id=third,
                                     n_boot=500)).computed.restudy
    assert again.deltas["paired"].all()
    assert again.verdict == ("conclusion unchanged: FE still best; no significant change "
                             "(bootstrap, Holm, 5 %)")


# ----------------------------------------------------------------------------- run once


def _write_data(path: Path, patients: int) -> Path:
    from trainables.datasets.synthetic import SynthConfig, write_synthetic_bcdr

    if path.exists():
        shutil.rmtree(path)
    write_synthetic_bcdr(path, SynthConfig(patients=patients, **SMOKE_SYNTH))
    return path


def test_unchanged_study_is_skipped_and_a_failed_start_is_recorded(tmp_path, mlflow_server,
                                                                   mlflow_client, capsys):
    from study import tracking
    from study.phases._data import prepare_data
    from study.run import _git_commit
    from study.scheduling._run import ScheduledRun, load_scheduled_spec, run_once

    name = f"sched-skip-{time.time_ns()}"
    data = _write_data(tmp_path / "data", 24)
    cfg = ScheduledRun(study=name, space="smoke", runs_dir=tmp_path / "runs", data=data,
                       data_format="bcdr", tracking_uri=mlflow_server)
    spec = load_scheduled_spec(cfg)
    fp = prepare_data(spec, tmp_path / "runs").rois.fingerprint
    exp = tracking.experiment_for(mlflow_client, name)
    parent = tracking.start_parent_run(mlflow_client, exp, tags={
        "data_fingerprint": fp, "git_commit": _git_commit(),
        "spec_fingerprint": spec.fingerprint()})
    mlflow_client.set_terminated(parent, "FINISHED")
    lines: list[str] = []
    assert run_once(cfg, echo=lines.append, err=lines.append) == 0
    if "code changed" not in " ".join(lines):  # unless someone committed meanwhile
        assert lines == [f"skip {name}: nothing changed since {parent[:8]} (data {fp[:8]}, "
                         f"code {_git_commit()[:8]}, space {spec.fingerprint()[:8]})"]
        assert len(mlflow_client.search_runs([exp])) == 1  # nothing started
    # data that cannot be read: a FAILED parent says why, and the next run retries
    bad = ScheduledRun(study=name, space="smoke", runs_dir=tmp_path / "runs",
                       data=tmp_path / "nowhere", data_format="bcdr",
                       tracking_uri=mlflow_server)
    assert run_once(bad, echo=lines.append, err=lines.append) == 2
    failed = [r for r in mlflow_client.search_runs([exp]) if r.info.status == "FAILED"]
    reason = failed[0].data.tags["failure_reason"]
    assert len(failed) == 1 and reason.startswith("data: ") and str(tmp_path) not in reason
    from study.scheduling._restudy import executions

    d = decide(Current(fp, _git_commit(), spec.fingerprint()), executions(mlflow_client, name))
    assert d.run and d.trigger == "retry" and d.previous.run_id == parent


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_two_executions_second_adds_patients(tmp_path, ray_local, mlflow_server,
                                             mlflow_client):
    from study.run import _git_commit
    from study.scheduling._restudy import executions
    from study.scheduling._run import ScheduledRun, run_once

    name = f"sched-e2e-{time.time_ns()}"
    data = _write_data(tmp_path / "data", 24)
    cfg = ScheduledRun(study=name, space="smoke", runs_dir=tmp_path / "runs", data=data,
                       data_format="bcdr", tracking_uri=mlflow_server, restudy_trials=2)
    first_lines: list[str] = []
    t0 = time.monotonic()
    assert run_once(cfg, echo=first_lines.append, err=first_lines.append) == 0, first_lines
    first_s = time.monotonic() - t0
    [first] = executions(mlflow_client, name)
    assert first.status == "FINISHED" and "previous_run_id" not in first.tags

    _write_data(data, 32)  # the dataset grows: other fingerprint
    lines: list[str] = []
    t0 = time.monotonic()
    assert run_once(cfg, echo=lines.append, err=lines.append) == 0, lines
    second_s = time.monotonic() - t0
    second = executions(mlflow_client, name)[0]
    assert second.status == "FINISHED" and second.run_id != first.run_id
    assert second.tags["previous_run_id"] == first.run_id
    assert "data" in second.tags["changed"].split(",") and second.tags["restudy_trials"] == "2"
    assert second.tags["data_fingerprint"] != first.tags["data_fingerprint"]
    assert any(ln.startswith(f"run {name}: data changed") for ln in lines), lines

    # warm start: each group's first trial is the previous execution's best of that group
    storage = f"sqlite:///{tmp_path / 'runs' / name / 'optuna.db'}"
    prefix = second.tags["optuna_study_prefix"]
    assert prefix == f"{name}@{second.run_id[:8]}"
    evals = mlflow_client.search_runs(
        [mlflow_client.get_experiment_by_name(name).experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{first.run_id}' and tags.phase = 'evaluate'")
    for r in evals:
        v = r.data.tags["variant"]
        study = optuna.load_study(study_name=f"{prefix}/{v}/split0", storage=storage)
        t0_params = study.trials[0].params
        assert t0_params["base_lr"] == pytest.approx(float(r.data.params["regime.base_lr"]))
        if v == "FTED":
            assert t0_params["lam"] == pytest.approx(float(r.data.params["regime.lam"]))
        assert study.trials[0].user_attrs["warm_start"] is True
        assert len(study.trials) == 2  # the re-study's budget, warm start included
        # the first execution's study is untouched
        assert len(optuna.load_study(study_name=f"{name}/{v}/split0",
                                     storage=storage).trials) == 3

    # the comparison: tag, printed line, HTML section
    verdict = mlflow_client.get_run(second.run_id).data.tags["verdict"]
    assert verdict.startswith(("conclusion unchanged", "FTED no longer best",
                               "FE no longer best"))
    assert f"verdict: {verdict}" in lines
    savings = mlflow_client.get_run(second.run_id).data.tags["restudy_savings"]
    page = (tmp_path / "runs" / name / "report" / "report.html").read_text()
    assert 'id="restudy"' in page and first.run_id in page
    print(f"\nfirst execution {first_s:.0f} s, re-study {second_s:.0f} s; {savings}")

    # unchanged now: skipped (unless the code moved under the test)
    if _git_commit() == second.tags["git_commit"]:
        more: list[str] = []
        assert run_once(cfg, echo=more.append, err=more.append) == 0
        assert more[0].startswith(f"skip {name}: nothing changed since {second.run_id[:8]}")
        assert len(executions(mlflow_client, name)) == 2


def test_a_ray_client_address_is_refused_with_what_to_give_instead(capsys):
    from study.schedule import parse_args

    with pytest.raises(SystemExit) as exit_:
        parse_args(["run", "--study", "smoke", "--ray-address", "ray://head:10001"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Ray Client cannot run a study" in err and "HOST:6379" in err
    assert parse_args(["run", "--study", "smoke", "--ray-address", "10.0.0.5:6379"]
                      ).ray_address == "10.0.0.5:6379"

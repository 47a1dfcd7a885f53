"""The report of a study logged with known values to a real MLflow server (see known_study.py
for the values and the hand-computed expectations)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score, roc_curve

from dashboards import stats, tables
from dashboards._load import StudyNotFound, load_study
from dashboards.literature import PAPER_TABLE2, REPORTED
from study.tracking import child_runs

from .known_study import predictions


def _lesions(variant: str, split: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels, mean P(malignant)) per lesion of a split, by hand from the known views."""
    pred = predictions(variant, split)
    y, p = np.array(pred["label"]), np.array(pred["p_malignant"])
    return y[::2], (p[::2] + p[1::2]) / 2  # views 2i and 2i+1 are lesion i


def _acc(y, p):
    return float(((p >= 0.5).astype(int) == y).mean())


SPLITS_DONE = {"FE": [0, 1, 2], "FTED": [0, 1, 2], "RI": [0, 1]}


def test_table1_from_known_values(known_report):
    t = known_report.computed.tables["table1"].set_index("variant")
    assert list(t.index) == ["RI", "FE", "1FT", "FTED"]  # the paper's order
    assert set(t["unit"]) == {"lesion"}
    fe, fted, ri = t.loc["FE"], t.loc["FTED"], t.loc["RI"]
    assert (fe.time_min, fe.epochs, fe.splits, fe.seeds, fe.cases) == pytest.approx(
        (11.0, 12.0, 3, 1, 30))
    assert (fted.time_min, fted.epochs) == pytest.approx((25.0, 20.0))
    # RI: split 2 FAILED, so 2 splits, (50 + 60) / 2 min
    assert (ri.time_min, ri.epochs, ri.splits) == pytest.approx((55.0, 35.0, 2))
    for v, done in SPLITS_DONE.items():
        accs = [_acc(*_lesions(v, k)) for k in done]  # lesion-level, by hand
        assert t.loc[v, "accuracy_pct"] == pytest.approx(100 * np.mean(accs))
        assert t.loc[v, "std_pct"] == pytest.approx(100 * np.std(accs, ddof=1))
        bal = [balanced_accuracy_score(y, (p >= 0.5).astype(int))
               for y, p in (_lesions(v, k) for k in done)]
        assert t.loc[v, "balanced_accuracy_pct"] == pytest.approx(100 * np.mean(bal))
        assert t.loc[v, "accuracy_ci_low"] <= t.loc[v, "accuracy_pct"] <= (
            t.loc[v, "accuracy_ci_high"])
        assert np.isnan(t.loc[v, "std_seeds_pct"])  # one seed: no seed variance to show
    assert t.loc["1FT"].splits == 0 and np.isnan(t.loc["1FT"].accuracy_pct)
    assert not [c for c in t.columns if "paper" in c]  # literature is not mixed in
    reported = tables.table1_reported().set_index("variant")
    assert reported.loc["FTED"].accuracy_pct == 97.50 and reported.loc["FE"].time_min == 59.1
    assert all("reported, not reproduced" in s for s in reported["source"])
    md = (known_report.written.out_dir / "tables" / "table1.md").read_text()
    assert f"| FE | lesion | {fe.accuracy_pct:.2f} [{fe.accuracy_ci_low:.2f}, " in md


def test_view_and_lesion_level_tables_differ_and_each_is_reproduced(known_study, known_report,
                                                                    mlflow_client, tmp_path):
    name, parent = known_study
    runs = known_report.computed.runs
    evaluated = child_runs(mlflow_client, runs.experiment_id, parent, phase="evaluate",
                           status="FINISHED")
    assert len(evaluated) == 8
    view_aucs: dict[str, list[float]] = {}
    for r in evaluated:
        local = mlflow_client.download_artifacts(r.info.run_id, "test_predictions.json",
                                                 str(tmp_path))
        with open(local) as fh:
            pred = json.load(fh)
        auc = roc_auc_score(pred["label"], pred["p_malignant"])
        assert auc == pytest.approx(r.data.metrics["test_auc"], abs=1e-12)  # logged: views
        view_aucs.setdefault(r.data.tags["variant"], []).append(auc)
    t2 = known_report.computed.tables["table2"].set_index("model")
    views = known_report.computed.tables["views"].set_index("variant")
    for v, done in SPLITS_DONE.items():
        lesion_aucs = [roc_auc_score(*_lesions(v, k)) for k in done]
        assert t2.loc[v, "unit"] == "lesion"
        assert t2.loc[v, "auc_mean"] == pytest.approx(np.mean(lesion_aucs), abs=1e-12)
        assert t2.loc[v, "auc_std"] == pytest.approx(np.std(lesion_aucs, ddof=1), abs=1e-12)
        assert t2.loc[v, "test_samples"] == 30 * len(done)  # lesions, not views
        assert views.loc[v, "auc_mean"] == pytest.approx(np.mean(view_aucs[v]), abs=1e-12)
        assert views.loc[v, "cases"] == 60 * len(done)
        assert views.loc[v, "auc_mean"] != pytest.approx(t2.loc[v, "auc_mean"], abs=1e-4)
        assert t2.loc[v, "auc_ci_low"] <= t2.loc[v, "auc_mean"] <= t2.loc[v, "auc_ci_high"]


def test_table2_ci_is_a_cluster_bootstrap_of_the_printed_mean(known_report):
    """Independent computation: resample lesions (stratified) with the same weights, expand
    each run's lesions by their multiplicity, sklearn's AUC per run, mean over runs, the
    2.5/97.5 percentiles."""
    t2 = known_report.computed.tables["table2"].set_index("model")
    lesions = {}  # cluster id -> label, over every split of the study
    for v, done in SPLITS_DONE.items():
        for k in done:
            pred = predictions(v, k)
            lesions.update(zip(pred["cluster"], pred["label"], strict=True))
    ids = sorted(lesions)
    weights = stats.cluster_weights(np.array([lesions[c] for c in ids]), 2000, seed=0)
    column = {c: i for i, c in enumerate(ids)}
    for v in ("FE", "RI"):
        boot = np.zeros(2000)
        for k in SPLITS_DONE[v]:
            y, p = _lesions(v, k)
            cols = [column[c] for c in predictions(v, k)["cluster"][::2]]
            for b in range(2000):
                reps = weights[b, cols].astype(int)
                boot[b] += roc_auc_score(np.repeat(y, reps), np.repeat(p, reps))
        boot /= len(SPLITS_DONE[v])
        lo, hi = np.quantile(boot, [0.025, 0.975])
        assert (t2.loc[v, "auc_ci_low"], t2.loc[v, "auc_ci_high"]) == pytest.approx(
            (lo, hi), abs=1e-12)


def test_table2_puts_the_literature_below_the_study_marked_as_reported(known_report):
    t2 = known_report.computed.tables["table2"]
    study_rows = t2[t2["source"] != REPORTED]
    lit = t2[t2["source"] == REPORTED]
    assert list(study_rows["model"]) == ["RI", "FE", "1FT", "FTED"]
    assert lit.index.min() > study_rows.index.max()
    assert list(lit["model"]) == [r.model for r in PAPER_TABLE2]
    assert lit.set_index("model").loc["Pérez et al., 2014", "auc_mean"] == 0.8562
    md = (known_report.written.out_dir / "tables" / "table2.md").read_text()
    assert md.index("| FTED |") < md.index(REPORTED) < md.index("Pérez et al., 2014 |")
    assert "| 0.8562 |" in md  # reported values as printed in the paper
    tex = (known_report.written.out_dir / "tables" / "table2.tex").read_text()
    assert tex.count(r"\midrule") == 2 and r"\toprule" in tex
    csv = pd.read_csv(known_report.written.out_dir / "tables" / "table2.csv")
    assert len(csv) == 10 and set(csv["source"]) == {"this study", REPORTED}


def test_delong_at_lesion_level_against_the_declared_reference(known_report):
    d = known_report.computed.tables["delong"]
    assert set(d["reference"]) == {"FTED"}  # declared in the space, not the best on test
    row = d[(d["variant"] == "FE") & (d["split"] == "0")].iloc[0]
    y, fe = _lesions("FE", 0)
    _, fted = _lesions("FTED", 0)
    ref_auc, ref_var = _delong_reference(y, fe, fted)
    assert (row.auc, row.auc_reference) == pytest.approx(ref_auc, abs=1e-12)
    assert row.se == pytest.approx(np.sqrt(ref_var), rel=1e-9) and row.n == 30
    combined = d[d["split"] == "all"].set_index("variant")
    assert combined.loc["FE", "n"] == 90 and combined.loc["RI", "n"] == 60
    assert combined["p_holm"].notna().all()
    paired = known_report.computed.tables["paired"]
    acc = paired[paired["metric"] == "test_acc"].set_index("variant")
    diff = np.mean([_acc(*_lesions("FE", k)) - _acc(*_lesions("FTED", k)) for k in range(3)])
    assert acc.loc["FE", "mean_diff_pct"] == pytest.approx(100 * diff)
    assert acc.loc["FE", "splits"] == 3 and acc.loc["RI", "splits"] == 2
    assert set(paired["test"]) == {"paired t (disjoint folds)"}  # k-fold: disjoint tests
    page = known_report.written.html.read_text()
    assert "reference of every comparison: FTED (declared in the space file" in page
    assert "unit of analysis: the lesion" in page


def _delong_reference(y, a, b):
    """DeLong by its pairwise definition (placement values), independently of dashboards."""
    out_auc, comps = [], []
    for s in (a, b):
        pos, neg = s[y == 1], s[y == 0]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        out_auc.append(psi.mean())
        comps.append((psi.mean(axis=1), psi.mean(axis=0)))
    m, n = (y == 1).sum(), (y == 0).sum()
    v10 = np.cov(np.vstack([comps[0][0], comps[1][0]]))
    v01 = np.cov(np.vstack([comps[0][1], comps[1][1]]))
    cov = v10 / m + v01 / n
    return tuple(out_auc), cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]


def test_operating_points_use_validation_thresholds_only(known_report):
    op = known_report.computed.tables["operating_points"]
    assert set(op["variant"]) == {"FE", "FTED"}  # RI logged no validation predictions
    fe = op[(op["variant"] == "FE") & (op["threshold"] == "Youden (validation)")].iloc[0]
    sens = []
    for k in range(3):
        val = predictions("FE", k, "val")
        vy, vp = np.array(val["label"])[::2], np.array(val["p_malignant"])
        vp = (vp[::2] + vp[1::2]) / 2
        fpr, tpr, thr = roc_curve(vy, vp, drop_intermediate=False)
        j = tpr - fpr
        t = thr[np.flatnonzero(j == j.max())[0]]  # highest threshold of max J
        y, p = _lesions("FE", k)
        sens.append(float((p[y == 1] >= t).mean()))
    assert fe.sensitivity == pytest.approx(np.mean(sens))
    assert fe.sensitivity_low <= fe.sensitivity <= fe.sensitivity_high


def test_search_view_and_compute_from_known_values(known_report):
    cost = known_report.computed.tables["compute"].set_index(["variant", "phase"])
    fe = cost.loc[("FE", "search")]
    # 3 pruned trials of 100 s + 6 of 400 s; each pruned one would have run 3 more epochs
    assert (fe.trials, fe.pruned, fe.hours, fe.cpu_hours) == pytest.approx((9, 3, 0.75, 1.5))
    assert (fe.asha_saved_hours, fe.asha_saved_pct) == pytest.approx((0.25, 25.0))
    assert cost.loc[("FTED", "search")].asha_saved_hours == 0
    assert cost.loc[("FE", "evaluate")].hours == pytest.approx((600 + 660 + 720) / 3600)
    imp = known_report.computed.tables["importance"]
    # one searched hyperparameter: importance 1.000 by construction, so not shown; said why
    assert imp[imp["variant"] == "FE"].empty
    assert any(n.startswith("FE: importance not computed: one searched hyperparameter")
               for n in known_report.computed.notes)
    fted = imp[imp["variant"] == "FTED"]
    assert set(fted["param"]) == {"base_lr", "lam"} and fted["importance"].sum() == (
        pytest.approx(1.0))
    assert (fted["trials"] == 12).all()
    prog = known_report.computed.progress
    fe0 = prog[(prog["variant"] == "FE") & (prog["split"] == 0)]
    assert fe0["best"].tolist() == pytest.approx([0.4, 0.3, 0.3])  # lr 1e-4, 1e-3, pruned
    assert fe0["pruned"].tolist() == [False, False, True]
    assert len(known_report.computed.fted) == 12


def test_missing_and_partial_evaluations_are_reported(known_report):
    problems = known_report.computed.runs.problems
    assert any(p.startswith("RI split 2: its evaluation run is FAILED") for p in problems)
    assert any(p.startswith("1FT: no finished evaluation run") for p in problems)
    summary = json.loads(known_report.written.summary.read_text())
    assert summary["problems"] == list(problems)
    page = known_report.written.html.read_text()
    assert "RI split 2: its evaluation run is FAILED" in page and "Missing or partial" in page


def test_every_output_is_written_and_logged_to_the_parent_run(known_study, known_report,
                                                              mlflow_client):
    w = known_report.written
    for name in ("table1", "table2", "delong", "paired", "operating_points", "calibration",
                 "importance", "compute"):
        assert {p.suffix for p in w.tables[name]} == {".csv", ".md", ".tex"}
    for name in ("roc", "reliability", "search_progress", "importance", "fted_lambda_lr",
                 "compute"):
        png, svg = w.figures[name]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and b"<svg" in svg.read_bytes()
    assert known_report.logged
    _, parent = known_study
    top = {a.path for a in mlflow_client.list_artifacts(parent, "report")}
    assert {"report/report.html", "report/summary.json", "report/tables",
            "report/figures"} <= top
    figs = {a.path for a in mlflow_client.list_artifacts(parent, "report/figures")}
    assert {"report/figures/roc.png", "report/figures/roc.svg"} <= figs


def test_partial_study_without_spec_or_predictions_still_reports(mlflow_client, tmp_path):
    from dashboards import build
    from study import tracking

    exp = tracking.experiment_for(mlflow_client, "dash-partial")
    parent = tracking.start_parent_run(mlflow_client, exp, tags={"study": "dash-partial"})
    rid = tracking.start_child_run(mlflow_client, exp, parent, phase="evaluate",
                                   variant="FE", split=0, trial="e0")
    log = tracking.RunLogger(mlflow_client, rid)
    log.metrics(3, {"test_acc": 0.8, "wall_time_s": 120.0, "epochs_run": 3})
    log.finish("FINISHED", wait_s=30)  # no test_predictions.json; parent left RUNNING
    runs = load_study(mlflow_client, "dash-partial")
    text = " ".join(runs.problems)
    assert "study_spec.json is missing" in text and "is RUNNING" in text
    assert "FE split 0: test_predictions.json missing" in text
    c = build.compute(runs, n_boot=50)
    fe = c.tables["table1"].set_index("variant").loc["FE"]
    # no predictions: no lesion-level accuracy (the logged view-level 0.8 is not passed off as
    # one); the run's time still shows
    assert np.isnan(fe.accuracy_pct) and fe.time_min == pytest.approx(2.0)
    assert c.roc_curves.empty and c.tables["delong"].empty
    w = build.write(c, tmp_path / "partial")
    assert "no data" in (tmp_path / "partial" / "figures" / "roc.svg").read_text()
    assert "test_predictions.json missing" in w.html.read_text()
    with pytest.raises(StudyNotFound, match="no MLflow experiment named"):
        load_study(mlflow_client, "dash-no-such-study")
    mlflow_client.set_terminated(parent, "KILLED")


def test_cli_reports_a_study_and_refuses_an_unknown_one(known_study, mlflow_server, tmp_path,
                                                        capsys):
    from dashboards.report import main

    name, parent = known_study
    args = ["--tracking-uri", mlflow_server, "--no-log", "--n-boot", "200"]
    done = subprocess.run([sys.executable, "-m", "dashboards.report", *args, "--study", name,
                           "--run", parent, "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"report: {tmp_path / 'report.html'}" in done.stdout
    assert "missing: 1FT: no finished evaluation run" in done.stdout
    assert main([*args, "--study", "no-such-study-xyz"]) == 2
    assert "no MLflow experiment named 'no-such-study-xyz'" in capsys.readouterr().err
    assert main(["--tracking-uri", "http://127.0.0.1:9", "--study", name]) == 2
    assert "no MLflow server answers" in capsys.readouterr().err


def test_launcher_hook_builds_and_logs_the_report(known_study, mlflow_server, mlflow_client,
                                                  tmp_path):
    from study.run import build_report

    name, parent = known_study
    lines: list[str] = []
    page = build_report(mlflow_server, name, parent, tmp_path, echo=lines.append)
    assert page == tmp_path / "report" / "report.html" and page.is_file()
    table, where = lines
    assert table.startswith("Table 1 (unit of analysis: lesion;")
    import pandas as pd

    fe = pd.read_csv(page.parent / "tables" / "table1.csv").set_index("variant").loc["FE"]
    assert (f"{fe['accuracy_pct']:.2f} [{fe['accuracy_ci_low']:.2f}, "
            f"{fe['accuracy_ci_high']:.2f}]") in table.splitlines()[3]   # RI, FE, ...
    assert where == f"report: {page} (also in the parent run's artifacts, report/)"
    assert build_report("http://127.0.0.1:9", "x", "y", tmp_path / "b", lines.append) is None
    assert lines[-1].startswith("report: not built")


def test_smoke_test_builds_the_whole_report_without_a_server(tmp_path, capsys):
    from dashboards.literature import PAPER_ORDER
    from dashboards.report import main

    assert main(["--smoke-test", "--out", str(tmp_path), "--n-boot", "200"]) == 0
    assert f"report: {tmp_path / 'report.html'}" in capsys.readouterr().out
    t1 = pd.read_csv(tmp_path / "tables" / "table1.csv")
    assert list(t1["variant"]) == list(PAPER_ORDER) and (t1["splits"] == 5).all()
    assert (tmp_path / "figures" / "roc.svg").is_file()
    assert "the numbers mean nothing" in (tmp_path / "report.html").read_text()


def test_the_first_screen_says_what_the_study_is_and_what_to_read_first(known_report):
    from dataclasses import replace

    from dashboards.about import about_rows, study_warnings

    runs = known_report.computed.runs
    rows = dict(about_rows(runs))
    assert rows["status"].startswith(runs.parent_status)
    assert rows["model"].startswith("efficientnet_lite0, ImageNet weights")
    assert "variants RI, FE, 1FT, FTED" in rows["model"]
    assert rows["splits"].startswith(f"{runs.n_splits}-fold cross-validation (disjoint test "
                                     "folds), inner validation")
    assert "3 trials per variant × split, ASHA up to 4 epochs" in rows["budgets"]
    assert "up to 40 epochs" in rows["budgets"]
    warnings = study_warnings(runs)
    assert any(w.startswith("never evaluated: 1FT") for w in warnings)
    page = known_report.written.html.read_text()
    head = page[:page.index('id="tables"')]  # all of it before Table 1
    assert 'id="about"' in head and "never evaluated: 1FT" in head
    # a synthetic dataset and unpretrained transfer variants are banners too
    spec = {**runs.spec, "pretrained": False, "allow_unpretrained": True,
            "dataset": {"format": "bcdr", "path": "<redacted>",
                        "synthetic": {"patients": 24, "seed": 0}}}
    other = replace(runs, spec=spec)
    text = " ".join(study_warnings(other))
    assert "synthetic data" in text and "FE, 1FT, FTED started from random initialisation" in text
    assert dict(about_rows(other))["data"].startswith("synthetic lesions (24 patients")


def test_compute_is_shown_with_units():
    from dashboards.formats import duration

    assert [duration(h) for h in (0.00738, 0.5, 12.46, float("nan"))] == [
        "27 s", "30.0 min", "12.5 h", "–"]

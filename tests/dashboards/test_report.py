"""The report of a study logged with known values to a real MLflow server (see known_study.py
for the values and the hand-computed expectations)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from dashboards import stats, tables
from dashboards._load import StudyNotFound, load_study
from dashboards.literature import PAPER_TABLE2, REPORTED
from study.tracking import child_runs

from .known_study import predictions


def test_table1_from_known_values(known_report):
    t = known_report.computed.tables["table1"].set_index("variant")
    assert list(t.index) == ["RI", "FE", "1FT", "FTED"]  # the paper's order
    fe, fted, ri = t.loc["FE"], t.loc["FTED"], t.loc["RI"]
    assert (fe.accuracy_pct, fe.std_pct, fe.time_min, fe.epochs, fe.splits) == pytest.approx(
        (85.0, 5.0, 11.0, 12.0, 3))
    assert (fted.accuracy_pct, fted.std_pct, fted.time_min, fted.epochs) == pytest.approx(
        (92.5, 2.5, 25.0, 20.0))
    # RI: split 2 FAILED, so 2 splits: 72.5 %, std of (70, 75) = 3.5355, (50 + 60) / 2 min
    assert (ri.accuracy_pct, ri.std_pct, ri.time_min, ri.epochs, ri.splits) == pytest.approx(
        (72.5, np.sqrt(12.5), 55.0, 35.0, 2))
    assert t.loc["1FT"].splits == 0 and np.isnan(t.loc["1FT"].accuracy_pct)
    assert not [c for c in t.columns if "paper" in c]  # literature is not mixed in
    reported = tables.table1_reported().set_index("variant")
    assert reported.loc["FTED"].accuracy_pct == 97.50 and reported.loc["FE"].time_min == 59.1
    assert all("reported, not reproduced" in s for s in reported["source"])


def test_logged_aucs_are_reproduced_from_logged_predictions(known_study, known_report,
                                                            mlflow_client, tmp_path):
    name, parent = known_study
    runs = known_report.computed.runs
    evaluated = child_runs(mlflow_client, runs.experiment_id, parent, phase="evaluate",
                           status="FINISHED")
    assert len(evaluated) == 8
    per_variant: dict[str, list[float]] = {}
    for r in evaluated:
        local = mlflow_client.download_artifacts(r.info.run_id, "test_predictions.json",
                                                 str(tmp_path))
        with open(local) as fh:
            pred = json.load(fh)
        auc = roc_auc_score(pred["label"], pred["p_malignant"])
        assert auc == pytest.approx(r.data.metrics["test_auc"], abs=1e-12)
        per_variant.setdefault(r.data.tags["variant"], []).append(auc)
    t2 = known_report.computed.tables["table2"].set_index("model")
    for v, aucs in per_variant.items():
        assert t2.loc[v, "auc_mean"] == pytest.approx(np.mean(aucs), abs=1e-12)
        assert t2.loc[v, "auc_std"] == pytest.approx(np.std(aucs, ddof=1), abs=1e-12)
        pooled = runs.predictions[runs.predictions["variant"] == v]
        pooled_auc = roc_auc_score(pooled["label"], pooled["p_malignant"])
        assert t2.loc[v, "auc_ci_low"] <= pooled_auc <= t2.loc[v, "auc_ci_high"]
    assert t2.loc["FE", "accuracy_pct"] == pytest.approx(85.0)


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


def test_delong_rows_are_computed_on_each_splits_shared_samples(known_report):
    d = known_report.computed.tables["delong"]
    assert set(d["reference"]) == {"FTED"}  # the best mean AUC
    row = d[(d["variant"] == "FE") & (d["split"] == "0")].iloc[0]
    fe, fted = predictions("FE", 0), predictions("FTED", 0)
    assert fe["sample_id"] == fted["sample_id"]
    ref = stats.delong_test(np.array(fe["label"]), np.array(fe["p_malignant"]),
                            np.array(fted["p_malignant"]))
    assert (row.auc, row.auc_reference, row.se, row.p_value, row.n) == pytest.approx(
        (ref.auc_a, ref.auc_b, ref.se, ref.p_value, 60))
    combined = d[d["split"] == "all"].set_index("variant")
    assert combined.loc["FE", "n"] == 180 and combined.loc["RI", "n"] == 120
    assert combined["p_holm"].notna().all()
    paired = known_report.computed.tables["paired"].set_index("variant")
    assert paired.loc["FE", "mean_diff_pct"] == pytest.approx(-7.5)
    assert paired.loc["FE", "splits"] == 3 and paired.loc["RI", "splits"] == 2


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
    assert c.tables["table1"].set_index("variant").loc["FE", "accuracy_pct"] == 80.0
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
    assert lines == [f"report: {page} (also in the parent run's artifacts, report/)"]
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
    assert rows["splits"].startswith(f"{runs.n_splits} outer split(s), repeated hold-out")
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

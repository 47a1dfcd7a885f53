"""The parent run as the home page of a study execution: Table 1 as metrics and description,
the experiment's kind, the UI addresses; a declared variant never evaluated fails the study."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from search_spaces import load_spec, shipped_path
from study import tracking
from study.phases._report import table1
from study.run import never_evaluated

ROOT = Path(__file__).resolve().parents[2]
ROWS = [{"variant": v, "split": k, "test_acc": acc, "test_auc": auc, "wall_time_s": 60.0}
        for v, k, acc, auc in (("FE", 0, 0.9, 0.95), ("FE", 1, 0.8, 0.85),
                               ("FTED", 0, 0.7, 0.75))]


def test_the_view_level_quick_table_becomes_metrics_named_as_such():
    metrics = tracking.table1_metrics(table1(ROWS))
    assert not any(k.startswith("table1.") for k in metrics)   # those are the report's
    assert metrics["table1_views.FE.acc_mean"] == pytest.approx(85.0)
    assert metrics["table1_views.FE.acc_std"] == pytest.approx(7.0711, abs=1e-3)
    assert metrics["table1_views.FE.auc"] == pytest.approx(0.90)
    assert metrics["table1_views.FTED.splits"] == 1
    assert metrics["table1_views.FTED.acc_std"] == 0.0
    assert metrics["table1_views.FE.time_min"] == pytest.approx(1.0)


def test_description_holds_table1_verdict_warnings_and_the_report_link():
    note = tracking.describe_parent(table1(ROWS), report="[report](http://x/report.html)",
                                    verdict="FTED still best", warnings=["synthetic data"])
    assert "| FE | 85.00 | 7.07 | 0.900 | 1.00 | 2 |" in note
    assert "**Re-study verdict:** FTED still best" in note
    assert "**Warning:** synthetic data" in note and "http://x/report.html" in note
    assert "quick summary" in note and "every view a case" in note   # before the report
    empty = tracking.describe_parent(table1([]))
    assert "no variant evaluated" in empty


def test_once_the_report_exists_the_description_is_its_table1_with_cis():
    body = ("| Variant | Unit | Accuracy (%) [95% CI] |\n|---|---|---|\n"
            "| FE | lesion | 80.00 [70.00, 90.00] |\n")
    note = tracking.describe_parent(table1(ROWS), summary=("Table 1 (unit of analysis: lesion)",
                                                           body), verdict="FTED still best")
    assert "**Table 1 (unit of analysis: lesion)**" in note
    assert "| FE | lesion | 80.00 [70.00, 90.00] |" in note
    assert "85.00" not in note and "quick summary" not in note      # the view-level figures
    assert "**Re-study verdict:** FTED still best" in note


def test_ui_addresses_open_the_model_training_view():
    assert tracking.ui_url("http://h:5000/", "3") == (
        "http://h:5000/#/experiments/3?workflowType=machine_learning")
    assert tracking.ui_url("http://h:5000", "3", "abc") == (
        "http://h:5000/#/experiments/3/runs/abc?workflowType=machine_learning")


def test_experiments_are_tagged_as_model_training(mlflow_client):
    exp = tracking.experiment_for(mlflow_client, "kind-tag-study")
    tags = mlflow_client.get_experiment(exp).tags
    assert tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    plain = mlflow_client.create_experiment("kind-tag-older")  # made before the tag existed
    assert tracking.experiment_for(mlflow_client, "kind-tag-older") == plain
    assert mlflow_client.get_experiment(plain).tags[tracking.EXPERIMENT_KIND_TAG] == (
        "custom_model_development")


def test_never_evaluated_lists_declared_variants_without_a_row_in_space_order():
    spec = load_spec("quick")
    rows = [{"variant": "FE"}, {"variant": "RI"}]
    assert never_evaluated(spec, rows) == ["1FT", "2FT", "3FT", "AllFT", "FTED"]
    assert never_evaluated(spec, [{"variant": v} for v in spec.variants]) == []


@pytest.mark.slow
def test_a_study_whose_variants_never_ran_ends_failed_with_exit_1(tmp_path, mlflow_server,
                                                                   mlflow_client):
    """Weights that exist but are not weights: past the pre-flight, every trial fails."""
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a state dict")
    space = tmp_path / "junk.yaml"
    space.write_text(shipped_path("smoke").read_text().replace(
        "backbone: efficientnet_lite0", f"backbone: efficientnet_lite0\nweights: {junk}"))
    runs = tmp_path / "runs"
    done = subprocess.run([sys.executable, "-m", "study.launch", "--space", str(space),
                           "--study", "never-evaluated", "--runs-dir", str(runs),
                           "--tracking-uri", mlflow_server], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=900)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "FE, FTED never evaluated" in done.stderr and "Traceback" not in done.stderr
    exp = mlflow_client.get_experiment_by_name("never-evaluated").experiment_id
    parents = [r for r in mlflow_client.search_runs([exp])
               if tracking.PARENT_TAG not in r.data.tags]
    assert [p.info.status for p in parents] == ["FAILED"]
    assert "FE, FTED never evaluated" in parents[0].data.tags["failure_reason"]
    assert (runs / "never-evaluated" / "report" / "report.html").is_file()


def test_table1_frame_is_what_the_metrics_read():
    assert list(table1(ROWS).columns) == ["variant", "accuracy_%", "std_%", "time_min", "auc",
                                          "splits"]
    assert isinstance(table1(ROWS), pd.DataFrame)


@pytest.mark.parametrize("variant", ["RI", "FE", "FTED"])
def test_trial_params_are_what_the_regime_uses_with_effective_values(variant):
    from study.phases._trial import _flat_params
    from trainables.config import TrainConfig

    spec = load_spec("smoke")
    raw = spec.trial_config("FTED", {"base_lr": 0.01, "lam": 3.0}) if variant == "FTED" else (
        {**spec.trial_config("FE", {"base_lr": 0.01}), "regime": {"variant": variant}})
    params = _flat_params(TrainConfig.from_dict(raw), {"optuna_trial": 2})
    assert ("regime.lam" in params) == (variant == "FTED")
    assert ("regime.momentum" in params) == (variant != "RI")  # RI trains with Adam
    assert params["regime.base_lr"] is not None  # the rate in effect, default resolved
    assert params["device"] == "cpu"
    assert params["bf16"] is False and params["channels_last"] is False  # CUDA only
    assert params["pretrained"] is (variant != "RI") and params["optuna_trial"] == 2

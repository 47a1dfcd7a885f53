"""Seeds and split designs in the tables: both sources of variance, the seed-aware DeLong rows,
and the corrected resampled t-test where test sets overlap (synthetic StudyRuns, no server)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from dashboards import comparisons, tables
from dashboards._demo import demo_runs


def _with_second_seed(scheme: str = "kfold"):
    runs = demo_runs(0, n_splits=3)
    rng = np.random.default_rng(7)

    def again(df: pd.DataFrame, jitter: bool) -> pd.DataFrame:
        two = df.copy()
        two["seed"] = 1
        if jitter:  # another initialisation: other probabilities for the same cases
            p = two["p_malignant"].to_numpy()
            two["p_malignant"] = np.clip(p + rng.normal(0, 0.15, len(p)), 0.001, 0.999)
        return pd.concat([df, two], ignore_index=True)

    ev = runs.evaluations.copy()
    ev2 = ev.copy()
    ev2["seed"], ev2["run_id"], ev2["start_time"] = 1, ev2["run_id"] + "-s1", 100
    spec = dict(runs.spec)
    spec["splits"] = {**spec["splits"], "scheme": scheme, "test_fraction": 0.2}
    return dataclasses.replace(
        runs, spec=spec, evaluations=pd.concat([ev, ev2], ignore_index=True),
        predictions=again(runs.predictions, True),
        val_predictions=again(runs.val_predictions, False))


def test_spread_separates_splits_from_seeds():
    per_run = pd.Series({(0, 0): 0.8, (0, 1): 0.9, (1, 0): 0.6, (1, 1): 0.7})
    std_all, std_splits, std_seeds = tables._spread(per_run)
    assert std_all == pytest.approx(np.std([0.8, 0.9, 0.6, 0.7], ddof=1))
    assert std_splits == pytest.approx(np.std([0.85, 0.65], ddof=1))
    assert std_seeds == pytest.approx(np.std([0.8, 0.9], ddof=1))


def test_table1_reports_mean_over_splits_and_seeds_with_both_variances():
    runs = _with_second_seed()
    assert len(runs.finished_evaluations) == 2 * len(demo_runs(0, n_splits=3).evaluations)
    t = tables.table1(runs, n_boot=200).set_index("variant")
    assert (t["seeds"] == 2).all() and (t["splits"] == 3).all()
    assert t["std_seeds_pct"].notna().all() and t["std_splits_pct"].notna().all()
    cases = tables.study_cases(runs, n_boot=10)[1]
    fe = cases[cases["variant"] == "FE"]
    accs = [((g["p_malignant"] >= 0.5).astype(int) == g["label"]).mean()
            for _, g in fe.groupby(["split", "seed"])]
    assert len(accs) == 6 and t.loc["FE", "accuracy_pct"] == pytest.approx(100 * np.mean(accs))
    d = comparisons.delong_table(runs)
    assert {"0/seed 0", "0/seed 1", "all"} <= set(d["split"])
    assert (d.loc[d["split"] == "all", "n"] == 90).all()  # 3 folds × 30 lesions, seeds once


@pytest.mark.parametrize(("scheme", "test"), [("kfold", "paired t (disjoint folds)"),
                                              ("repeated",
                                               "corrected resampled t (Nadeau-Bengio)")])
def test_paired_tests_name_the_t_test_the_design_needs(scheme, test):
    runs = _with_second_seed(scheme)
    paired = comparisons.paired_table(runs)
    assert set(paired["test"]) == {test}
    assert set(paired["reference"]) == {"FTED"} and paired["splits"].eq(3).all()


def test_the_brief_table1_pairs_each_variants_accuracy_and_auc_with_their_cis():
    from dashboards.formats import display, plain

    runs = demo_runs(0, n_splits=3)
    t1, t2 = tables.table1(runs, n_boot=200), tables.table2(runs, n_boot=200)
    brief = tables.summary(t1, t2)
    assert list(brief["variant"]) == list(t1["variant"])     # no literature row
    own = t2[t2["source"] == tables.THIS_STUDY].set_index("model")
    for r in brief.itertuples():
        assert r.auc_mean == own.loc[r.variant, "auc_mean"]
        assert r.auc_ci_low <= r.auc_mean <= r.auc_ci_high
        assert r.accuracy_ci_low <= r.accuracy_pct <= r.accuracy_ci_high
    text = plain(display("summary", brief), names=2).splitlines()
    assert text[0].split()[:2] == ["Variant", "Unit"]
    widths = {len(line) for line in text}
    assert len(text) == len(brief) + 1
    for line, r in zip(text[1:], brief.itertuples(), strict=True):
        assert line.startswith(f"{r.variant} ")
        assert f"{r.accuracy_pct:.2f} [{r.accuracy_ci_low:.2f}, {r.accuracy_ci_high:.2f}]" in line
        assert f"{r.auc_mean:.3f} [{r.auc_ci_low:.3f}, {r.auc_ci_high:.3f}]" in line
    assert max(widths) - min(widths) <= 2       # columns aligned (right-stripped lines)

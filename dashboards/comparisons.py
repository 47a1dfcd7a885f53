"""Study-level statistics as DataFrames: each variant against the best one (DeLong per split and
combined; paired t-test and Wilcoxon over splits with Holm's correction), operating points with
bootstrap CIs, and calibration. The maths is in ``dashboards.stats``; this module picks the
samples and the reference variant from a :class:`~dashboards._load.StudyRuns`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dashboards import stats
from dashboards._load import StudyRuns, variant_order

DELONG_COLUMNS = ("variant", "reference", "split", "auc", "auc_reference", "diff", "se", "z",
                  "p_value", "p_holm", "n")
PAIRED_COLUMNS = ("variant", "reference", "metric", "splits", "mean_diff_pct", "t_p",
                  "t_p_holm", "wilcoxon_p", "wilcoxon_p_holm")
OPERATING_COLUMNS = ("variant", "sens_at_90spec", "sens_at_90spec_low", "sens_at_90spec_high",
                     "spec_at_90sens", "spec_at_90sens_low", "spec_at_90sens_high", "n")
CALIBRATION_COLUMNS = ("variant", "brier", "ece", "n")


def split_aucs(runs: StudyRuns) -> pd.DataFrame:
    """AUC of every (variant, split) recomputed from the logged predictions."""
    rows = [{"variant": v, "split": k, "auc": stats.auc(g["label"].to_numpy(),
                                                         g["p_malignant"].to_numpy())}
            for (v, k), g in runs.predictions.groupby(["variant", "split"])]
    return pd.DataFrame(rows, columns=["variant", "split", "auc"])


def best_variant(values: pd.DataFrame, column: str) -> str | None:
    """The variant with the highest mean ``column`` (ties: the earlier in paper order)."""
    if values.empty:
        return None
    means = values.groupby("variant")[column].mean().dropna()
    if means.empty:
        return None
    order = variant_order(means.index)
    return max(order, key=lambda v: (means[v], -order.index(v)))


def delong_table(runs: StudyRuns) -> pd.DataFrame:
    """DeLong test of each variant against the best by mean AUC, on each split's shared test
    samples (matched by sample id), then combined over splits (``split == "all"``,
    inverse-variance weighted). Holm-adjusted p-values over the combined tests."""
    pred = runs.predictions
    ref = best_variant(split_aucs(runs), "auc")
    rows: list[dict] = []
    if ref is None:
        return pd.DataFrame(columns=list(DELONG_COLUMNS))
    for v in variant_order(pred["variant"].unique()):
        if v == ref:
            continue
        per_split = []
        for k in sorted(set(pred.loc[pred["variant"] == v, "split"])):
            a = pred[(pred["variant"] == v) & (pred["split"] == k)]
            b = pred[(pred["variant"] == ref) & (pred["split"] == k)]
            both = a.merge(b, on="sample_id", suffixes=("", "_ref"))
            y = both["label"].to_numpy()
            if len(both) < 4 or min(y.sum(), len(y) - y.sum()) < 2:
                continue
            r = stats.delong_test(y, both["p_malignant"].to_numpy(),
                                  both["p_malignant_ref"].to_numpy())
            per_split.append(r)
            rows.append(_delong_row(v, ref, str(k), r))
        if per_split:
            rows.append(_delong_row(v, ref, "all", stats.combine_delong(per_split)))
    df = pd.DataFrame(rows, columns=list(DELONG_COLUMNS))
    combined = df["split"] == "all"
    df.loc[combined, "p_holm"] = stats.holm(df.loc[combined, "p_value"].to_numpy())
    return df


def _delong_row(v: str, ref: str, split: str, r: stats.DelongResult) -> dict:
    return {"variant": v, "reference": ref, "split": split, "auc": r.auc_a,
            "auc_reference": r.auc_b, "diff": r.diff, "se": r.se, "z": r.z,
            "p_value": r.p_value, "p_holm": np.nan, "n": r.n}


def paired_table(runs: StudyRuns) -> pd.DataFrame:
    """Paired t-test and Wilcoxon signed-rank test of each variant's test accuracy against the
    best variant's (by mean accuracy) over the splits both finished; p-values Holm-adjusted
    over the variants, per test."""
    ev = runs.finished_evaluations[["variant", "split", "test_acc"]]
    ref = best_variant(ev, "test_acc")
    rows = []
    if ref is None:
        return pd.DataFrame(columns=list(PAIRED_COLUMNS))
    wide = ev.pivot(index="split", columns="variant", values="test_acc")
    for v in variant_order(ev["variant"].unique()):
        if v == ref:
            continue
        pair = wide[[v, ref]].dropna()
        t_p, w_p = stats.paired_tests(pair[v].to_numpy(), pair[ref].to_numpy())
        rows.append({"variant": v, "reference": ref, "metric": "test_acc", "splits": len(pair),
                     "mean_diff_pct": float((pair[v] - pair[ref]).mean() * 100)
                     if len(pair) else np.nan,
                     "t_p": t_p, "wilcoxon_p": w_p})
    df = pd.DataFrame(rows, columns=list(PAIRED_COLUMNS))
    df["t_p_holm"] = stats.holm(df["t_p"].to_numpy()) if len(df) else []
    df["wilcoxon_p_holm"] = stats.holm(df["wilcoxon_p"].to_numpy()) if len(df) else []
    return df


def operating_points_table(runs: StudyRuns, *, n_boot: int = 2000, seed: int = 0,
                           at: float = 0.9) -> pd.DataFrame:
    """Sensitivity at ``at`` specificity and specificity at ``at`` sensitivity on the pooled
    predictions of each variant, with 95 % stratified-bootstrap CIs."""
    rows = []
    for v, g in _pooled(runs):
        y, p = g["label"].to_numpy(), g["p_malignant"].to_numpy()
        if not 0 < y.sum() < len(y):
            continue
        b = stats.bootstrap_metrics(y, p, n_boot=n_boot, seed=seed, at=at)
        rows.append({"variant": v, "n": len(y),
                     **{f"{name}{sfx}": d[key] for key, name in
                        (("sens_at_spec", "sens_at_90spec"), ("spec_at_sens", "spec_at_90sens"))
                        for sfx, d in (("", b.estimate), ("_low", b.low), ("_high", b.high))}})
    return pd.DataFrame(rows, columns=list(OPERATING_COLUMNS))


def calibration_table(runs: StudyRuns, bins: int = 10) -> pd.DataFrame:
    """Brier score and expected calibration error (``bins`` equal-width bins), pooled."""
    rows = [{"variant": v, "brier": stats.brier(g["label"], g["p_malignant"]),
             "ece": stats.ece(g["label"], g["p_malignant"], bins), "n": len(g)}
            for v, g in _pooled(runs)]
    return pd.DataFrame(rows, columns=list(CALIBRATION_COLUMNS))


def reliability_bins(runs: StudyRuns, bins: int = 10) -> pd.DataFrame:
    """Reliability-diagram bins per variant (pooled): variant, low, high, count,
    mean_predicted, fraction_positive."""
    frames = [pd.DataFrame({"variant": v, **stats.reliability(g["label"], g["p_malignant"],
                                                               bins)})
              for v, g in _pooled(runs)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["variant", "low", "high", "count", "mean_predicted", "fraction_positive"])


def _pooled(runs: StudyRuns) -> list[tuple[str, pd.DataFrame]]:
    pred = runs.predictions
    return [(v, pred[pred["variant"] == v]) for v in variant_order(pred["variant"].unique())]

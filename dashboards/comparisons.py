"""Study-level statistics as DataFrames, at the space's unit of analysis (``dashboards.units``):
each variant against the space's declared reference (``compare.reference``; never the best on
test) by DeLong per run and combined, and by paired tests over splits (paired t-test, or
Nadeau & Bengio's corrected resampled t-test where test sets overlap; Wilcoxon; Holm's
correction); operating points at thresholds chosen on each run's validation cases; and
calibration. Every mean over runs carries the cluster-bootstrap CI of that mean. The maths is in
``dashboards.stats``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dashboards import stats, units
from dashboards._load import StudyRuns, variant_order

DELONG_COLUMNS = ("variant", "reference", "split", "auc", "auc_reference", "diff", "se", "z",
                  "p_value", "p_holm", "n")
PAIRED_COLUMNS = ("variant", "reference", "metric", "test", "splits", "mean_diff_pct", "t_p",
                  "t_p_holm", "wilcoxon_p", "wilcoxon_p_holm")
OPERATING_COLUMNS = ("variant", "threshold", "sensitivity", "sensitivity_low",
                     "sensitivity_high", "specificity", "specificity_low", "specificity_high",
                     "runs")
CALIBRATION_COLUMNS = ("variant", "brier", "brier_low", "brier_high", "ece", "n")
#: Operating points and the validation threshold each uses.
THRESHOLDS = {"youden": "Youden (validation)", "spec90": "90% specificity (validation)",
              "sens90": "90% sensitivity (validation)"}


def reference_of(runs: StudyRuns) -> str | None:
    """The declared reference variant of this study (see ``units.declared_reference``)."""
    return units.declared_reference(runs.spec, list(runs.variants))


def split_aucs(runs: StudyRuns, unit: str | None = None) -> pd.DataFrame:
    """AUC of every (variant, split, seed) run at the unit of analysis."""
    cases = units.combine(runs.predictions, unit or units.analysis_unit(runs.spec))
    rows = [{"variant": v, "split": k, "seed": s,
             "auc": stats.auc(g["label"].to_numpy(), g["p_malignant"].to_numpy())}
            for (v, k, s), g in cases.groupby(["variant", "split", "seed"])]
    return pd.DataFrame(rows, columns=["variant", "split", "seed", "auc"])


def delong_table(runs: StudyRuns, unit: str | None = None) -> pd.DataFrame:
    """DeLong's test of each variant against the declared reference on each run's shared test
    cases (matched by case id, views combined at the unit of analysis), one row per split
    (``"k"``, or ``"k/seed s"`` with several seeds), then combined over splits (``"all"``,
    inverse-variance weighted; with several seeds a split's difference and SE are their means
    over seeds). Holm-adjusted over the combined tests."""
    cases = units.combine(runs.predictions, unit or units.analysis_unit(runs.spec))
    ref = reference_of(runs)
    rows: list[dict] = []
    if ref is None or ref not in set(cases["variant"]):
        return pd.DataFrame(columns=list(DELONG_COLUMNS))
    several_seeds = cases.groupby("split")["seed"].nunique().max() > 1
    for v in variant_order(cases["variant"].unique()):
        if v == ref:
            continue
        per_split: dict[int, list[stats.DelongResult]] = {}
        for (k, s), a in cases[cases["variant"] == v].groupby(["split", "seed"]):
            b = cases[(cases["variant"] == ref) & (cases["split"] == k) & (cases["seed"] == s)]
            both = a.merge(b, on="unit", suffixes=("", "_ref"))
            y = both["label"].to_numpy()
            if len(both) < 4 or min(y.sum(), len(y) - y.sum()) < 2:
                continue
            r = stats.delong_test(y, both["p_malignant"].to_numpy(),
                                  both["p_malignant_ref"].to_numpy())
            per_split.setdefault(int(k), []).append(r)
            rows.append(_delong_row(v, ref, f"{k}/seed {s}" if several_seeds else str(k), r))
        if per_split:
            rows.append(_delong_row(v, ref, "all", stats.combine_delong(
                [_seed_mean(rs) for rs in per_split.values()])))
    df = pd.DataFrame(rows, columns=list(DELONG_COLUMNS))
    combined = df["split"] == "all"
    df.loc[combined, "p_holm"] = stats.holm(df.loc[combined, "p_value"].to_numpy())
    return df


def _seed_mean(results: list[stats.DelongResult]) -> stats.DelongResult:
    """One split's seeds as one result: mean AUCs, difference and SE (the seeds share their
    test cases, so their SEs are not combined as if independent)."""
    if len(results) == 1:
        return results[0]
    diff = float(np.mean([r.diff for r in results]))
    se = float(np.mean([r.se for r in results]))
    z = diff / se if se > 0 else 0.0
    p = float(2 * stats.sps.norm.sf(abs(z))) if se > 0 else (1.0 if diff == 0 else 0.0)
    return stats.DelongResult(float(np.mean([r.auc_a for r in results])),
                              float(np.mean([r.auc_b for r in results])), diff, se, z, p,
                              results[0].n)


def _delong_row(v: str, ref: str, split: str, r: stats.DelongResult) -> dict:
    return {"variant": v, "reference": ref, "split": split, "auc": r.auc_a,
            "auc_reference": r.auc_b, "diff": r.diff, "se": r.se, "z": r.z,
            "p_value": r.p_value, "p_holm": np.nan, "n": r.n}


def paired_table(runs: StudyRuns, unit: str | None = None) -> pd.DataFrame:
    """Each variant's per-split accuracy and AUC (at the unit of analysis, mean over seeds)
    against the declared reference's, over the splits both finished: a paired t-test when the
    test folds are disjoint (one k-fold), Nadeau & Bengio's corrected resampled t-test when
    test sets overlap (repeated hold-out, repeated k-fold; column ``test`` says which), and
    Wilcoxon's signed-rank test; p-values Holm-adjusted over the variants, per metric and test."""
    unit = unit or units.analysis_unit(runs.spec)
    cases = units.combine(runs.predictions, unit)
    design = units.split_design(runs.spec)
    ref = reference_of(runs)
    if ref is None or ref not in set(cases["variant"]):
        return pd.DataFrame(columns=list(PAIRED_COLUMNS))
    per_run = []
    for (v, k, s), g in cases.groupby(["variant", "split", "seed"]):
        y, p = g["label"].to_numpy(), g["p_malignant"].to_numpy()
        per_run.append({"variant": v, "split": k, "seed": s,
                        "test_acc": float(((p >= 0.5).astype(int) == y).mean()),
                        "test_auc": stats.auc(y, p)})
    df = pd.DataFrame(per_run).groupby(["variant", "split"])[["test_acc", "test_auc"]].mean()
    test = ("corrected resampled t (Nadeau-Bengio)" if design.overlapping
            else "paired t (disjoint folds)")
    frames = []
    for metric in ("test_acc", "test_auc"):
        wide = df[metric].unstack("variant")
        rows = []
        for v in variant_order(wide.columns):
            if v == ref:
                continue
            pair = wide[[v, ref]].dropna()
            t_p, w_p = stats.paired_tests(pair[v].to_numpy(), pair[ref].to_numpy())
            if design.overlapping:
                t_p = stats.corrected_t_test(pair[v].to_numpy(), pair[ref].to_numpy(),
                                             design.test_train_ratio)
            rows.append({"variant": v, "reference": ref, "metric": metric, "test": test,
                         "splits": len(pair),
                         "mean_diff_pct": float((pair[v] - pair[ref]).mean() * 100)
                         if len(pair) else np.nan, "t_p": t_p, "wilcoxon_p": w_p})
        part = pd.DataFrame(rows, columns=list(PAIRED_COLUMNS))
        part["t_p_holm"] = stats.holm(part["t_p"].to_numpy()) if len(part) else []
        part["wilcoxon_p_holm"] = stats.holm(part["wilcoxon_p"].to_numpy()) if len(part) else []
        frames.append(part)
    return pd.concat(frames, ignore_index=True)


def operating_points_table(runs: StudyRuns, *, n_boot: int = 2000, seed: int = 0,
                           unit: str | None = None) -> pd.DataFrame:
    """Test sensitivity and specificity at thresholds chosen on each run's **validation**
    cases (Youden; 90 % specificity; 90 % sensitivity), at the unit of analysis: mean over runs
    with the cluster-bootstrap CI of that mean. Runs without logged validation predictions are
    left out (no threshold may come from the test set)."""
    unit = unit or units.analysis_unit(runs.spec)
    cases = units.combine(runs.predictions, unit)
    resampler = units.Resampler.for_cases(cases, n_boot, seed)
    val = units.combine(runs.val_predictions, unit)
    rows = []
    for v in variant_order(cases["variant"].unique()):
        thresholds = units.validation_thresholds(val[val["variant"] == v])
        c = cases[cases["variant"] == v]
        for name, label in THRESHOLDS.items():
            known = thresholds[name]
            if not known:
                continue
            c_known = c[[(int(k), int(s)) in known for k, s in zip(c["split"], c["seed"],
                                                                    strict=True)]]
            sens = units.mean_over_runs(c_known, units.at_thresholds(known, "sens"), resampler)
            spec = units.mean_over_runs(c_known, units.at_thresholds(known, "spec"), resampler)
            rows.append({"variant": v, "threshold": label, "sensitivity": sens.value,
                         "sensitivity_low": sens.low, "sensitivity_high": sens.high,
                         "specificity": spec.value, "specificity_low": spec.low,
                         "specificity_high": spec.high, "runs": len(sens.per_run)})
    return pd.DataFrame(rows, columns=list(OPERATING_COLUMNS))


def calibration_table(runs: StudyRuns, bins: int = 10, *, n_boot: int = 2000, seed: int = 0,
                      unit: str | None = None) -> pd.DataFrame:
    """Brier score (mean over runs, cluster-bootstrap CI of that mean) and expected
    calibration error (``bins`` equal-width bins, mean over runs), at the unit of analysis."""
    cases = units.combine(runs.predictions, unit or units.analysis_unit(runs.spec))
    resampler = units.Resampler.for_cases(cases, n_boot, seed)
    rows = []
    for v in variant_order(cases["variant"].unique()):
        c = cases[cases["variant"] == v]
        b = units.mean_over_runs(c, units.brier, resampler)
        eces = [stats.ece(g["label"], g["p_malignant"], bins)
                for _, g in c.groupby(list(units.RUN_KEYS))]
        rows.append({"variant": v, "brier": b.value, "brier_low": b.low, "brier_high": b.high,
                     "ece": float(np.mean(eces)), "n": int(c["unit"].nunique())})
    return pd.DataFrame(rows, columns=list(CALIBRATION_COLUMNS))


def reliability_bins(runs: StudyRuns, bins: int = 10, unit: str | None = None) -> pd.DataFrame:
    """Reliability-diagram bins per variant over all runs' test cases at the unit of analysis
    (a figure, not a statistic): variant, low, high, count, mean_predicted,
    fraction_positive."""
    cases = units.combine(runs.predictions, unit or units.analysis_unit(runs.spec))
    frames = [pd.DataFrame({"variant": v, **stats.reliability(g["label"], g["p_malignant"],
                                                               bins)})
              for v, g in ((v, cases[cases["variant"] == v])
                           for v in variant_order(cases["variant"].unique()))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["variant", "low", "high", "count", "mean_predicted", "fraction_positive"])

"""The paper's tables rebuilt from the evaluation runs' logged test predictions.

Table 1: accuracy and balanced accuracy per variant at the space's unit of analysis (a
lesion's views combined by default, see ``dashboards.units``), each the mean over runs
(splits × seeds) with the 95 % cluster-bootstrap CI of that mean; std over all runs, over
splits (of the seed means) and over seeds (within a split); time and epochs. Table 2: AUC the
same way, literature rows below, marked as reported. ``views``: the view-level numbers
(every view a case), secondary and labelled so.

Functions return DataFrames; ``dashboards.formats`` writes them as Markdown, CSV and LaTeX.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dashboards import literature, units
from dashboards._load import StudyRuns, variant_order

TABLE1_COLUMNS = ("variant", "unit", "accuracy_pct", "accuracy_ci_low", "accuracy_ci_high",
                  "balanced_accuracy_pct", "balanced_ci_low", "balanced_ci_high", "std_pct",
                  "std_splits_pct", "std_seeds_pct", "time_min", "epochs", "splits", "seeds",
                  "cases")
TABLE1_REPORTED_COLUMNS = ("variant", "source", "accuracy_pct", "std_pct", "time_min")
TABLE2_COLUMNS = ("model", "source", "unit", "accuracy_pct", "auc_mean", "auc_std",
                  "auc_ci_low", "auc_ci_high", "test_samples")
SUMMARY_COLUMNS = ("variant", "unit", "accuracy_pct", "accuracy_ci_low", "accuracy_ci_high",
                   "auc_mean", "auc_ci_low", "auc_ci_high", "time_min", "splits")
VIEWS_COLUMNS = ("variant", "unit", "accuracy_pct", "accuracy_ci_low", "accuracy_ci_high",
                 "auc_mean", "auc_ci_low", "auc_ci_high", "cases")
THIS_STUDY = "this study"


def table1_from_frame(evaluations: pd.DataFrame, variants: list[str] | None = None
                      ) -> pd.DataFrame:
    """The logged view-level ``test_acc`` per variant (mean, sample std over runs), mean wall
    time in minutes, mean epochs, runs: the launcher's quick summary, not the report's
    Table 1 (which combines views and carries CIs, :func:`table1`)."""
    ev = evaluations
    names = variant_order(list(variants or []) + list(ev["variant"]))
    rows = []
    for v in names:
        sub = ev[ev["variant"] == v]
        acc = sub["test_acc"].to_numpy(dtype=float) * 100
        epochs = (sub["epochs_run"].to_numpy(dtype=float) if "epochs_run" in sub
                  else np.array([np.nan]))
        rows.append({
            "variant": v, "unit": "view",
            "accuracy_pct": acc.mean() if len(acc) else np.nan,
            "std_pct": (acc.std(ddof=1) if len(acc) > 1 else 0.0) if len(acc) else np.nan,
            "time_min": sub["wall_time_s"].mean() / 60 if len(sub) else np.nan,
            "epochs": np.nanmean(epochs) if len(sub) and np.isfinite(epochs).any() else np.nan,
            "splits": sub["split"].nunique() if len(sub) else 0,
        })
    return pd.DataFrame(rows, columns=list(TABLE1_COLUMNS))


def table1_reported() -> pd.DataFrame:
    """The paper's Table 1 as it reported it (Inception-v3, 5 runs on BCDR-F03): literature,
    kept apart from the reproduced numbers and marked as reported, not reproduced."""
    rows = [{"variant": r.variant, "source": f"{literature.SOURCE}, {literature.REPORTED}",
             "accuracy_pct": r.accuracy_pct, "std_pct": r.std_pct, "time_min": r.time_min}
            for r in literature.PAPER_TABLE1]
    return pd.DataFrame(rows, columns=list(TABLE1_REPORTED_COLUMNS))


def study_cases(runs: StudyRuns, unit: str | None = None, *, n_boot: int = 2000,
                seed: int = 0) -> tuple[str, pd.DataFrame, units.Resampler]:
    """(unit, test cases at that unit, the study's cluster resampler)."""
    unit = unit or units.analysis_unit(runs.spec)
    cases = units.combine(runs.predictions, unit)
    return unit, cases, units.Resampler.for_cases(cases, n_boot, seed)


def _spread(per_run: pd.Series) -> tuple[float, float, float]:
    """(std over all runs, std over splits of the seed means, mean std over seeds within a
    split), in the metric's unit; sample std (ddof=1), NaN where there is only one."""
    if per_run.empty:
        return np.nan, np.nan, np.nan
    df = per_run.rename("m").rename_axis(["split", "seed"]).reset_index()
    allstd = df["m"].std(ddof=1) if len(df) > 1 else np.nan
    means = df.groupby("split")["m"].mean()
    splits = means.std(ddof=1) if len(means) > 1 else np.nan
    within = df.groupby("split")["m"].std(ddof=1).dropna()
    return float(allstd), float(splits), float(within.mean()) if len(within) else np.nan


def table1(runs: StudyRuns, *, n_boot: int = 2000, seed: int = 0,
           unit: str | None = None) -> pd.DataFrame:
    """Table 1 at the space's unit of analysis (see the module docstring); ``variants``
    without results get a row of NaN and 0 splits so that the gap shows."""
    unit, cases, resampler = study_cases(runs, unit, n_boot=n_boot, seed=seed)
    ev = runs.finished_evaluations
    rows = []
    for v in variant_order(list(runs.variants) + list(ev["variant"])):
        sub = ev[ev["variant"] == v]
        c = cases[cases["variant"] == v]
        acc = units.mean_over_runs(c, units.accuracy, resampler)
        bal = units.mean_over_runs(c, units.balanced_accuracy, resampler)
        std_all, std_splits, std_seeds = _spread(acc.per_run)
        epochs = sub["epochs_run"].to_numpy(dtype=float)
        rows.append({
            "variant": v, "unit": unit,
            "accuracy_pct": 100 * acc.value, "accuracy_ci_low": 100 * acc.low,
            "accuracy_ci_high": 100 * acc.high, "balanced_accuracy_pct": 100 * bal.value,
            "balanced_ci_low": 100 * bal.low, "balanced_ci_high": 100 * bal.high,
            "std_pct": 100 * std_all, "std_splits_pct": 100 * std_splits,
            "std_seeds_pct": 100 * std_seeds,
            "time_min": sub["wall_time_s"].mean() / 60 if len(sub) else np.nan,
            "epochs": np.nanmean(epochs) if np.isfinite(epochs).any() else np.nan,
            "splits": int(c["split"].nunique()),
            "seeds": int(c.groupby("split")["seed"].nunique().max()) if len(c) else 0,
            "cases": int(c.groupby(list(units.RUN_KEYS)).size().mean()) if len(c) else 0,
        })
    return pd.DataFrame(rows, columns=list(TABLE1_COLUMNS))


def table2(runs: StudyRuns, *, n_boot: int = 2000, seed: int = 0,
           unit: str | None = None) -> pd.DataFrame:
    """Table 2: per variant the mean over runs of the test AUC at the unit of analysis, its
    std over runs and the 95 % cluster-bootstrap CI of that mean, the mean accuracy, the
    number of distinct test cases; then the paper's Table 2 rows, ``source`` saying they are
    reported, not reproduced."""
    unit, cases, resampler = study_cases(runs, unit, n_boot=n_boot, seed=seed)
    ev = runs.finished_evaluations
    rows = []
    for v in variant_order(list(runs.variants) + list(ev["variant"])):
        c = cases[cases["variant"] == v]
        a = units.mean_over_runs(c, units.auc, resampler)
        acc = units.mean_over_runs(c, units.accuracy, resampler)
        per_run = a.per_run.dropna()
        rows.append({"model": v, "source": THIS_STUDY, "unit": unit,
                     "accuracy_pct": 100 * acc.value, "auc_mean": a.value,
                     "auc_std": per_run.std(ddof=1) if len(per_run) > 1 else np.nan,
                     "auc_ci_low": a.low, "auc_ci_high": a.high,
                     "test_samples": int(c["unit"].nunique())})
    for lit in literature.PAPER_TABLE2:
        rows.append({"model": lit.model, "source": literature.REPORTED, "unit": np.nan,
                     "accuracy_pct": np.nan if lit.accuracy_pct is None else lit.accuracy_pct,
                     "auc_mean": np.nan if lit.auc is None else lit.auc,
                     "auc_std": np.nan, "auc_ci_low": np.nan, "auc_ci_high": np.nan,
                     "test_samples": np.nan})
    return pd.DataFrame(rows, columns=list(TABLE2_COLUMNS))


def views_table(runs: StudyRuns, *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Secondary: accuracy and AUC with every **view** a case (the pre-issue numbers), CIs
    still from the lesion-cluster bootstrap (views of a lesion are resampled together)."""
    cases = units.combine(runs.predictions, "view")
    resampler = units.Resampler.for_cases(cases, n_boot, seed)
    rows = []
    for v in variant_order(list(runs.variants)):
        c = cases[cases["variant"] == v]
        acc = units.mean_over_runs(c, units.accuracy, resampler)
        a = units.mean_over_runs(c, units.auc, resampler)
        rows.append({"variant": v, "unit": "view", "accuracy_pct": 100 * acc.value,
                     "accuracy_ci_low": 100 * acc.low, "accuracy_ci_high": 100 * acc.high,
                     "auc_mean": a.value, "auc_ci_low": a.low, "auc_ci_high": a.high,
                     "cases": int(c["unit"].nunique())})
    return pd.DataFrame(rows, columns=list(VIEWS_COLUMNS))


def summary(table1: pd.DataFrame, table2: pd.DataFrame) -> pd.DataFrame:
    """Table 1's accuracy beside Table 2's AUC, each with its 95 % cluster-bootstrap CI, at
    the unit of analysis, with time and splits: what the launcher prints at a study's end and
    the parent run's description shows (this study's rows only; no literature)."""
    own = table2[table2["source"] == THIS_STUDY].set_index("model")
    out = table1.join(own[["auc_mean", "auc_ci_low", "auc_ci_high"]], on="variant")
    return out[list(SUMMARY_COLUMNS)].reset_index(drop=True)

"""The paper's tables rebuilt from the evaluation runs: Table 1 (accuracy, std, time) and
Table 2 (AUC with a bootstrap CI, literature rows below, marked as reported).

Functions return DataFrames; ``dashboards.formats`` writes them as Markdown, CSV and LaTeX.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dashboards import literature, stats
from dashboards._load import StudyRuns, variant_order

TABLE1_COLUMNS = ("variant", "accuracy_pct", "std_pct", "time_min", "epochs", "splits")
TABLE1_REPORTED_COLUMNS = ("variant", "source", "accuracy_pct", "std_pct", "time_min")
TABLE2_COLUMNS = ("model", "source", "accuracy_pct", "auc_mean", "auc_std", "auc_ci_low",
                  "auc_ci_high", "test_samples")
THIS_STUDY = "this study"


def table1_from_frame(evaluations: pd.DataFrame, variants: list[str] | None = None
                      ) -> pd.DataFrame:
    """Table 1 from one row per (variant, split) evaluation with ``test_acc`` (0..1),
    ``wall_time_s`` and, if present, ``epochs_run``.

    Per variant: mean test accuracy %, its sample std % over splits (ddof=1; 0 with one split),
    mean wall time in minutes, mean epochs, number of splits (the paper's reported values are
    a table of their own, :func:`table1_reported`). Rows in the paper's order; ``variants``
    adds rows (NaN, 0 splits) for variants without results so that a gap shows."""
    ev = evaluations
    names = variant_order(list(variants or []) + list(ev["variant"]))
    rows = []
    for v in names:
        sub = ev[ev["variant"] == v]
        acc = sub["test_acc"].to_numpy(dtype=float) * 100
        epochs = (sub["epochs_run"].to_numpy(dtype=float) if "epochs_run" in sub
                  else np.array([np.nan]))
        rows.append({
            "variant": v,
            "accuracy_pct": acc.mean() if len(acc) else np.nan,
            "std_pct": (acc.std(ddof=1) if len(acc) > 1 else 0.0) if len(acc) else np.nan,
            "time_min": sub["wall_time_s"].mean() / 60 if len(sub) else np.nan,
            "epochs": np.nanmean(epochs) if len(sub) and np.isfinite(epochs).any() else np.nan,
            "splits": len(sub),
        })
    return pd.DataFrame(rows, columns=list(TABLE1_COLUMNS))


def table1_reported() -> pd.DataFrame:
    """The paper's Table 1 as it reported it (Inception-v3, 5 runs on BCDR-F03): literature,
    kept apart from the reproduced numbers and marked as reported, not reproduced."""
    rows = [{"variant": r.variant, "source": f"{literature.SOURCE}, {literature.REPORTED}",
             "accuracy_pct": r.accuracy_pct, "std_pct": r.std_pct, "time_min": r.time_min}
            for r in literature.PAPER_TABLE1]
    return pd.DataFrame(rows, columns=list(TABLE1_REPORTED_COLUMNS))


def table1(runs: StudyRuns) -> pd.DataFrame:
    """Table 1 of one study execution (finished evaluation runs only)."""
    return table1_from_frame(runs.finished_evaluations, list(runs.variants))


def table2(runs: StudyRuns, *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Table 2: per variant mean test accuracy %, AUC mean ± std over splits (each split's AUC
    recomputed from its logged predictions) and a 95 % stratified-bootstrap CI over the pooled
    per-sample predictions of all splits; then the paper's Table 2 rows, ``source`` saying they
    are reported, not reproduced."""
    ev = runs.finished_evaluations
    pred = runs.predictions
    rows = []
    for v in variant_order(list(runs.variants) + list(ev["variant"])):
        acc = ev.loc[ev["variant"] == v, "test_acc"].to_numpy(dtype=float) * 100
        pv = pred[pred["variant"] == v]
        split_aucs = [stats.auc(g["label"].to_numpy(), g["p_malignant"].to_numpy())
                      for _, g in pv.groupby("split")]
        row = {"model": v, "source": THIS_STUDY,
               "accuracy_pct": acc.mean() if len(acc) else np.nan,
               "auc_mean": np.mean(split_aucs) if split_aucs else np.nan,
               "auc_std": np.std(split_aucs, ddof=1) if len(split_aucs) > 1 else np.nan,
               "auc_ci_low": np.nan, "auc_ci_high": np.nan, "test_samples": len(pv)}
        y = pv["label"].to_numpy()
        if len(pv) and 0 < y.sum() < len(y):
            boot = stats.bootstrap_metrics(y, pv["p_malignant"].to_numpy(), n_boot=n_boot,
                                           seed=seed)
            row["auc_ci_low"], row["auc_ci_high"] = boot.low["auc"], boot.high["auc"]
        rows.append(row)
    for lit in literature.PAPER_TABLE2:
        rows.append({"model": lit.model, "source": literature.REPORTED,
                     "accuracy_pct": np.nan if lit.accuracy_pct is None else lit.accuracy_pct,
                     "auc_mean": np.nan if lit.auc is None else lit.auc,
                     "auc_std": np.nan, "auc_ci_low": np.nan, "auc_ci_high": np.nan,
                     "test_samples": np.nan})
    return pd.DataFrame(rows, columns=list(TABLE2_COLUMNS))

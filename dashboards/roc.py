"""ROC curves like the paper's Figure 2: per variant, the mean over runs (splits × seeds) of
each run's ROC curve interpolated on a common false-positive-rate grid, with a ±1 std band.

Each run's curve is recomputed from its logged per-sample predictions (scikit-learn's
``roc_curve``) at the unit of analysis (pass ``units.combine(predictions, unit)``), so the
figure shows exactly what the AUC column says.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from dashboards import stats
from dashboards._load import variant_order

GRID_POINTS = 101
MEAN_ROC_COLUMNS = ("variant", "fpr", "tpr_mean", "tpr_std", "tpr_low", "tpr_high")


def _runs(predictions: pd.DataFrame) -> list[str]:
    """A run is a (split, seed); older predictions have splits only."""
    return ["split", "seed"] if "seed" in predictions else ["split"]


def interpolated_tpr(y: np.ndarray, p: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """One split's ROC curve as TPR on ``grid`` (FPR values in [0, 1]).

    Where the curve is vertical (several TPRs at one FPR) the highest TPR is taken, as the
    ROC convex step does."""
    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)
    # np.interp needs increasing x: keep, for each FPR, the last (highest) TPR
    last = np.r_[fpr[1:] != fpr[:-1], True]
    return np.interp(grid, fpr[last], tpr[last])


def mean_roc(predictions: pd.DataFrame, grid_points: int = GRID_POINTS) -> pd.DataFrame:
    """Per variant: mean and std (ddof=1; 0 with one split) of the splits' TPR on a common FPR
    grid, and the band mean ± std clipped to [0, 1]. Columns ``MEAN_ROC_COLUMNS``."""
    grid = np.linspace(0.0, 1.0, grid_points)
    frames = []
    for v in variant_order(predictions["variant"].unique()):
        curves = []
        for _, g in predictions[predictions["variant"] == v].groupby(_runs(predictions)):
            y = g["label"].to_numpy()
            if 0 < y.sum() < len(y):
                curves.append(interpolated_tpr(y, g["p_malignant"].to_numpy(), grid))
        if not curves:
            continue
        c = np.vstack(curves)
        mean = c.mean(axis=0)
        std = c.std(axis=0, ddof=1) if len(c) > 1 else np.zeros_like(mean)
        frames.append(pd.DataFrame({"variant": v, "fpr": grid, "tpr_mean": mean,
                                    "tpr_std": std, "tpr_low": np.clip(mean - std, 0, 1),
                                    "tpr_high": np.clip(mean + std, 0, 1)}))
    if not frames:
        return pd.DataFrame(columns=list(MEAN_ROC_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def auc_summary(predictions: pd.DataFrame) -> pd.DataFrame:
    """Per variant: mean and std (ddof=1) of the per-run AUCs, number of runs (legend)."""
    rows = []
    for v in variant_order(predictions["variant"].unique()):
        aucs = [stats.auc(g["label"].to_numpy(), g["p_malignant"].to_numpy())
                for _, g in predictions[predictions["variant"] == v].groupby(_runs(predictions))]
        aucs = [a for a in aucs if np.isfinite(a)]
        rows.append({"variant": v, "auc_mean": np.mean(aucs) if aucs else np.nan,
                     "auc_std": np.std(aucs, ddof=1) if len(aucs) > 1 else 0.0,
                     "splits": len(aucs)})
    return pd.DataFrame(rows, columns=["variant", "auc_mean", "auc_std", "splits"])

"""Figures drawn from the DataFrames that ``roc``, ``comparisons`` and ``search_view`` compute.

Each ``plot_*`` takes its DataFrame and an optional matplotlib ``Axes`` (a new figure when
None) and returns the Axes; nothing is computed here. Figures are built with
``matplotlib.figure.Figure`` (no pyplot global state), so this works headless and in threads.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter

from dashboards._load import variant_order
from dashboards.literature import PAPER_ORDER

_COLOURS = ("#7f7f7f", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#d62728")


def colour(variant: str) -> str:
    """A fixed colour per variant (FTED red, RI grey) so that figures agree."""
    if variant in PAPER_ORDER:
        return _COLOURS[PAPER_ORDER.index(variant)]
    return f"C{zlib.crc32(variant.encode()) % 10}"


def _axes(ax: Axes | None, size: tuple[float, float] = (6.0, 5.0)) -> Axes:
    if ax is not None:
        return ax
    return Figure(figsize=size, layout="constrained").add_subplot()


def _empty(ax: Axes, what: str) -> Axes:
    ax.text(0.5, 0.5, f"no data: {what}", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return ax


def plot_roc(curves: pd.DataFrame, aucs: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Mean ROC per variant with its ±1 std band, AUC mean ± std in the legend, the chance
    diagonal (``roc.mean_roc`` and ``roc.auc_summary``)."""
    ax = _axes(ax, (6.0, 5.5))
    if curves.empty:
        return _empty(ax, "no test predictions")
    summary = aucs.set_index("variant")
    for v in variant_order(curves["variant"].unique()):
        c = curves[curves["variant"] == v]
        fpr = np.r_[0.0, c["fpr"]]
        s = summary.loc[v]
        label = (f"{v} (AUC {s['auc_mean']:.3f} ± {s['auc_std']:.3f}, {int(s['splits'])} "
                 f"run{'s' if s['splits'] != 1 else ''})")
        ax.plot(fpr, np.r_[0.0, c["tpr_mean"]], color=colour(v), lw=1.8, label=label)
        ax.fill_between(fpr, np.r_[0.0, c["tpr_low"]], np.r_[0.0, c["tpr_high"]],
                        color=colour(v), alpha=0.15, lw=0)
    ax.plot([0, 1], [0, 1], ls="--", color="0.5", lw=1, label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False positive rate (1 − specificity)",
           ylabel="True positive rate (sensitivity)",
           title="ROC on the test sets (mean over runs ± 1 std)")
    ax.set_aspect("equal")
    ax.legend(loc="lower right", fontsize=7.5)
    return ax


def plot_reliability(bins: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Reliability diagram: fraction malignant against mean predicted P(malignant) per bin,
    over all runs' test cases (``comparisons.reliability_bins``), perfect calibration dashed."""
    ax = _axes(ax, (5.5, 5.0))
    if bins.empty:
        return _empty(ax, "no test predictions")
    for v in variant_order(bins["variant"].unique()):
        b = bins[(bins["variant"] == v) & (bins["count"] > 0)]
        ax.plot(b["mean_predicted"], b["fraction_positive"], marker="o", ms=3,
                color=colour(v), label=v)
    ax.plot([0, 1], [0, 1], ls="--", color="0.5", lw=1, label="perfect")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted P(malignant)",
           ylabel="fraction malignant", title="Reliability (test cases of all runs)")
    ax.legend(fontsize=7.5)
    return ax


def plot_best_so_far(progress: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Best validation loss against trials run, one line per variant (mean over its splits'
    searches), pruned trials as crosses (``search_view.best_so_far``)."""
    ax = _axes(ax, (6.0, 4.5))
    if progress.empty:
        return _empty(ax, "no search runs")
    for v in variant_order(progress["variant"].unique()):
        p = progress[progress["variant"] == v]
        mean = p.groupby("trial_number")["best"].mean()
        ax.plot(mean.index, mean.to_numpy(), marker="o", ms=3, color=colour(v), label=v)
        pr = p[p["pruned"]]
        ax.scatter(pr["trial_number"], pr["value"], marker="x", s=14, color=colour(v),
                   alpha=0.6)
    ax.set(xlabel="trials run (per search)", ylabel="best validation loss so far",
           title="Search progress (× = trial stopped by ASHA, its partial loss)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=7.5)
    return ax


def plot_importance(imp: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Optuna fANOVA importance per variant and hyperparameter, grouped bars."""
    ax = _axes(ax, (6.0, 4.0))
    if imp.empty:
        return _empty(ax, "too few completed search trials for importances")
    variants = variant_order(imp["variant"].unique())
    params = sorted(imp["param"].unique())
    width = 0.8 / len(params)
    for i, name in enumerate(params):
        vals = [imp[(imp["variant"] == v) & (imp["param"] == name)]["importance"].sum()
                for v in variants]
        ax.bar(np.arange(len(variants)) + (i - (len(params) - 1) / 2) * width, vals, width,
               label=name)
    ax.set_xticks(np.arange(len(variants)), variants)
    ax.set(ylim=(0, 1.05), ylabel="importance (fANOVA)",
           title="Hyperparameter importance (Optuna fANOVA)")
    ax.legend(fontsize=7.5)
    return ax


def plot_fted_scatter(points: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """FTED search trials in the (base LR, λ) plane, coloured by their best validation loss;
    pruned trials hollow."""
    ax = _axes(ax, (6.0, 4.5))
    if points.empty:
        return _empty(ax, "no FTED search runs")
    done, pr = points[~points["pruned"]], points[points["pruned"]]
    vmin, vmax = np.nanmin(points["value"]), np.nanmax(points["value"])
    sc = ax.scatter(done["base_lr"], done["lam"], c=done["value"], cmap="viridis_r",
                    vmin=vmin, vmax=vmax, s=36, edgecolors="k", linewidths=0.4,
                    label="ran to its end")
    if len(pr):
        ax.scatter(pr["base_lr"], pr["lam"], facecolors="none", edgecolors="0.4", s=36,
                   label="stopped by ASHA")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # a narrow range labels every minor tick
    ax.set(xlabel="base learning rate t0", ylabel="λ (decay toward the input)",
           title="FTED search: λ × base LR")
    ax.figure.colorbar(sc, ax=ax, label="best validation loss")
    ax.legend(fontsize=7.5)
    return ax


def plot_cost(cost: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Hours per variant, search and evaluation stacked, and what ASHA saved (hatched)."""
    ax = _axes(ax, (6.0, 4.0))
    if cost.empty:
        return _empty(ax, "no runs")
    variants = variant_order(cost["variant"].unique())
    x = np.arange(len(variants))

    def get(phase: str, col: str) -> np.ndarray:
        c = cost[cost["phase"] == phase].set_index("variant")[col]
        return np.array([float(c.get(v, 0.0)) for v in variants])

    search, evaluate = get("search", "hours"), get("evaluate", "hours")
    saved = np.nan_to_num(get("search", "asha_saved_hours"))
    ax.bar(x, search, label="search", color="#1f77b4")
    ax.bar(x, evaluate, bottom=search, label="evaluation", color="#ff7f0e")
    ax.bar(x, saved, bottom=search + evaluate, label="saved by ASHA", color="none",
           edgecolor="#1f77b4", hatch="//")
    ax.set_xticks(x, variants)
    ax.set(ylabel="wall-clock hours (trial time)", title="Compute per variant")
    ax.legend(fontsize=7.5)
    return ax


def save(ax: Axes, out_dir: Path, stem: str) -> list[Path]:
    """Write the Axes' figure as ``stem.png`` (150 dpi) and ``stem.svg``; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.svg"]
    fig = ax.get_figure(root=True)
    assert isinstance(fig, Figure)
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1])
    return paths

"""The unit of analysis and the cluster bootstrap every table shares.

A lesion is seen in two views (CC and MLO); the views are not independent cases. By default
(``analysis.unit: lesion``) the views of one lesion are combined into one case by their **mean
P(malignant)** before any metric; ``patient`` combines a patient's views of one class (a
patient with a benign and a malignant lesion gives two cases); ``view`` keeps every view a
case (the secondary, view-level table).

Every number the report prints about test predictions is a **mean over runs** (each
evaluation run is one split × one training seed) of that run's metric on its test cases, and
its CI is a **cluster bootstrap of that same mean**: clusters (lesions; patients for
``unit: patient``) are resampled with replacement, stratified by class, once for the whole
study, each drawn cluster weighing its multiplicity in every run that tested it (so overlapping
test sets of repeated hold-out and the seeds of one split share draws), and the mean over runs
is recomputed per resample; the 2.5 and 97.5 percentiles make the 95 % interval.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from dashboards import stats

UNITS = ("lesion", "patient", "view")
RUN_KEYS = ("split", "seed")
UNIT_COLUMNS = ("variant", "split", "seed", "unit", "cluster", "label", "p_malignant", "views")
#: metric(run key, labels (n,), scores (n,), case weights (B, n)) -> (B,)
Metric = Callable[[tuple[int, int], np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def analysis_unit(spec: dict[str, Any] | None) -> str:
    """The space's ``analysis.unit`` (``lesion`` when the spec does not say)."""
    unit = ((spec or {}).get("analysis") or {}).get("unit", "lesion")
    return unit if unit in UNITS else "lesion"


def declared_reference(spec: dict[str, Any] | None, variants: list[str]) -> str | None:
    """The space's ``compare.reference``; without one, FTED if present, else the last variant
    listed — fixed before any result is seen, never the best on test."""
    ref = ((spec or {}).get("compare") or {}).get("reference")
    if ref:
        return str(ref)
    if not variants:
        return None
    return "FTED" if "FTED" in variants else variants[-1]


@dataclass(frozen=True)
class Design:
    """How the outer splits were made: ``kfold`` (disjoint test folds, ``repeats`` times) or
    ``repeated`` hold-out; ``test_train_ratio`` is n_test / n_train for the corrected t-test."""

    scheme: str
    repeats: int
    test_train_ratio: float

    @property
    def overlapping(self) -> bool:
        """Test sets overlap between splits (repeated hold-out, or repeated k-fold)."""
        return self.scheme != "kfold" or self.repeats > 1


def split_design(spec: dict[str, Any] | None) -> Design:
    s = (spec or {}).get("splits") or {}
    scheme = s.get("scheme", "repeated")  # specs written before k-fold was the default
    k = int(s.get("n_splits", 5))
    if scheme == "kfold":
        return Design("kfold", int(s.get("repeats", 1)), 1 / max(1, k - 1))
    tf = float(s.get("test_fraction", 0.2))
    return Design("repeated", 1, tf / (1 - tf))


def combine(pred: pd.DataFrame, unit: str) -> pd.DataFrame:
    """Per-view predictions (``variant, split, seed, sample_id, cluster, patient, label,
    p_malignant``) as cases of ``unit``: one row per (variant, split, seed, case) with the
    mean P(malignant) of its views, its label, its bootstrap ``cluster`` and its view count.
    Ids stay the anonymous ones logged."""
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
    if pred.empty:
        return pd.DataFrame(columns=list(UNIT_COLUMNS))
    df = pred.copy()
    if "seed" not in df:
        df["seed"] = 0
    if unit == "view":
        df["unit"], df["views"] = df["sample_id"], 1
        return df[list(UNIT_COLUMNS)].reset_index(drop=True)
    if unit == "lesion":
        df["unit"] = df["cluster"]
    else:
        df["unit"] = df["patient"].astype(str) + ":" + df["label"].astype(str)
        df["cluster"] = df["patient"]
    out = (df.groupby(["variant", "split", "seed", "unit"], sort=True)
           .agg(cluster=("cluster", "first"), label=("label", "max"),
                p_malignant=("p_malignant", "mean"), views=("sample_id", "size"))
           .reset_index())
    return out[list(UNIT_COLUMNS)]


@dataclass(frozen=True, eq=False)
class Resampler:
    """Stratified cluster-bootstrap weights shared by every variant and run of a study.

    Attributes:
        clusters: the clusters' anonymous ids (C,), sorted.
        weights: (n_boot, C) multiplicities (``stats.cluster_weights``).
    """

    clusters: np.ndarray
    weights: np.ndarray
    level: float = 0.95

    @classmethod
    def for_cases(cls, cases: pd.DataFrame, n_boot: int = 2000, seed: int = 0,
                  level: float = 0.95) -> Resampler:
        """Weights over every cluster tested in ``cases`` (a cluster's class: malignant when
        any of its cases is)."""
        labels = cases.groupby("cluster")["label"].max().sort_index()
        return cls(labels.index.to_numpy(dtype=str),
                   stats.cluster_weights(labels.to_numpy(), n_boot, seed), level)

    @property
    def n_boot(self) -> int:
        return int(self.weights.shape[0])

    def case_weights(self, clusters: np.ndarray) -> np.ndarray:
        """(n_boot, n) weights of cases belonging to ``clusters`` (n,)."""
        idx = np.searchsorted(self.clusters, np.asarray(clusters).astype(str))
        return self.weights[:, idx]


@dataclass(frozen=True)
class Estimate:
    """A mean over runs with the cluster-bootstrap percentile CI of that mean."""

    value: float
    low: float
    high: float
    per_run: pd.Series  # (split, seed) -> the run's metric


def mean_over_runs(cases: pd.DataFrame, metric: Metric, resampler: Resampler) -> Estimate:
    """``metric`` of each run (split × seed) of one variant's ``cases``, their mean, and the
    percentile CI of that mean over the resampler's cluster draws."""
    per_run, boot_mean = resampled_mean(cases, metric, resampler)
    if boot_mean is None:
        return Estimate(np.nan, np.nan, np.nan, per_run)
    low, high = stats.percentile_ci(boot_mean, resampler.level)
    return Estimate(float(np.nanmean(per_run)) if per_run.notna().any() else np.nan,
                    low, high, per_run)


def resampled_mean(cases: pd.DataFrame, metric: Metric, resampler: Resampler
                   ) -> tuple[pd.Series, np.ndarray | None]:
    """(each run's ``metric``, the mean over runs under each of the resampler's cluster draws
    (n_boot,); None without any run)."""
    values, boots = {}, []
    for key, g in cases.groupby(list(RUN_KEYS), sort=True):
        y = g["label"].to_numpy(dtype=int)
        p = g["p_malignant"].to_numpy(dtype=float)
        run = (int(key[0]), int(key[1]))
        values[run] = float(metric(run, y, p, np.ones((1, len(y))))[0])
        boots.append(metric(run, y, p, resampler.case_weights(g["cluster"].to_numpy())))
    per_run = pd.Series(values, dtype=float)
    if not boots:
        return per_run, None
    with warnings.catch_warnings():  # a resample without any case of a run: NaN, skipped
        warnings.simplefilter("ignore", RuntimeWarning)
        return per_run, np.nanmean(np.vstack(boots), axis=0)


# ----------------------------------------------------------------------------- metrics


def accuracy(_: tuple[int, int], y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Accuracy at P(malignant) >= 0.5 (the argmax decision; no threshold is fitted)."""
    return stats.weighted_accuracy(y, p, w, 0.5)


def balanced_accuracy(_: tuple[int, int], y: np.ndarray, p: np.ndarray,
                      w: np.ndarray) -> np.ndarray:
    """(sensitivity + specificity) / 2 at P(malignant) >= 0.5."""
    sens, spec = stats.weighted_rates(y, p, w, 0.5)
    return (sens + spec) / 2


def auc(_: tuple[int, int], y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    return stats.weighted_auc(y, p, w)


def brier(_: tuple[int, int], y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    return stats.weighted_brier(y, p, w)


def at_thresholds(thresholds: dict[tuple[int, int], float], which: str) -> Metric:
    """Sensitivity (``which="sens"``) or specificity at each run's own threshold (chosen on
    that run's validation cases)."""
    def metric(run: tuple[int, int], y: np.ndarray, p: np.ndarray,
               w: np.ndarray) -> np.ndarray:
        sens, spec = stats.weighted_rates(y, p, w, thresholds.get(run, np.nan))
        return sens if which == "sens" else spec
    return metric


# ----------------------------------------------------------------------------- thresholds


def validation_thresholds(val_cases: pd.DataFrame, at: float = 0.9
                          ) -> dict[str, dict[tuple[int, int], float]]:
    """Per run (split, seed), thresholds picked on its **validation** cases only: ``youden``
    (max sensitivity + specificity - 1), ``spec90`` (the lowest threshold with specificity
    >= ``at``), ``sens90`` (the highest with sensitivity >= ``at``). Malignant = p >= t."""
    out: dict[str, dict[tuple[int, int], float]] = {"youden": {}, "spec90": {}, "sens90": {}}
    for key, g in val_cases.groupby(list(RUN_KEYS), sort=True):
        run = (int(key[0]), int(key[1]))
        y = g["label"].to_numpy(dtype=int)
        p = g["p_malignant"].to_numpy(dtype=float)
        pos, neg = p[y == 1], p[y == 0]
        if not len(pos) or not len(neg):
            continue
        cand = np.unique(np.r_[p, np.inf])
        sens = (pos[None, :] >= cand[:, None]).mean(axis=1)
        spec = (neg[None, :] < cand[:, None]).mean(axis=1)
        j = sens + spec - 1
        out["youden"][run] = float(cand[len(j) - 1 - int(np.argmax(j[::-1]))])  # ties: highest
        ok = spec >= at - 1e-12
        out["spec90"][run] = float(cand[ok].min()) if ok.any() else np.inf
        ok = sens >= at - 1e-12
        out["sens90"][run] = float(cand[ok].max()) if ok.any() else -np.inf
    return out

"""Statistics on test predictions and per-split results: pure functions of arrays.

* ROC AUC and DeLong's test for two correlated AUCs on the same samples (DeLong, DeLong &
  Clarke-Pearson 1988, in Sun & Xu's 2014 mid-rank form, O(n log n)), and an inverse-variance
  combination of per-split DeLong differences.
* Stratified bootstrap (positives and negatives resampled separately, seeded) of AUC,
  sensitivity at a fixed specificity and specificity at a fixed sensitivity, with percentile CIs.
* Cluster bootstrap: clusters (lesions or patients) resampled with replacement, stratified by
  class, as multiplicity weights shared by every run of a study, so that the CI of a mean over
  splits × seeds is a percentile interval of that same mean (views of one lesion are never
  treated as independent cases).
* Paired comparisons across splits (paired t-test, Wilcoxon signed-rank, and Nadeau & Bengio's
  corrected resampled t-test for overlapping test sets) with Holm's step-down correction.
* Calibration: Brier score, expected calibration error, reliability-diagram bins.

Labels are 0/1 (1 = malignant), scores are P(malignant); a higher score means "more malignant".
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

__all__ = [
    "BootstrapResult", "DelongResult", "auc", "bootstrap_metrics", "brier", "cluster_weights",
    "combine_delong", "corrected_t_test", "delong_cov", "delong_test", "ece", "holm",
    "paired_tests", "percentile_ci", "reliability", "sens_at_spec", "spec_at_sens",
    "weighted_accuracy", "weighted_auc", "weighted_brier", "weighted_rates",
]


def _split(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    if y.shape != p.shape[-1:]:
        raise ValueError(f"labels {y.shape} and scores {p.shape} differ in length")
    if not set(np.unique(y)) <= {0, 1}:
        raise ValueError("labels must be 0/1")
    return p[..., y == 1], p[..., y == 0]


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney; ties count one half); NaN when a class is absent."""
    pos, neg = _split(y, p)
    if not len(pos) or not len(neg):
        return math.nan
    return float(_auc_rows(pos[None], neg[None])[0])


def _auc_rows(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUC of each row: pos (B, m), neg (B, n) -> (B,)."""
    m, n = pos.shape[1], neg.shape[1]
    ranks = sps.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    return (ranks[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)


# ----------------------------------------------------------------------------- DeLong


def delong_cov(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (k,) and their DeLong covariance (k, k) for k score vectors (k, N) on one sample.

    Structural components from mid-ranks (Sun & Xu 2014): V10_i = (Tz_i - Tx_i) / n for the m
    positives, V01_j = 1 - (Tz_j - Ty_j) / m for the n negatives; cov = S10 / m + S01 / n."""
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    pos, neg = _split(y, scores)
    m, n = pos.shape[1], neg.shape[1]
    if m < 2 or n < 2:
        raise ValueError(f"DeLong needs at least 2 positives and 2 negatives, got {m} and {n}")
    tx = sps.rankdata(pos, axis=1)
    ty = sps.rankdata(neg, axis=1)
    tz = sps.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    aucs = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


@dataclass(frozen=True)
class DelongResult:
    """DeLong's test of AUC(a) - AUC(b) on the same samples (two-sided)."""

    auc_a: float
    auc_b: float
    diff: float       # auc_a - auc_b
    se: float
    z: float
    p_value: float
    n: int

    def ci(self, level: float = 0.95) -> tuple[float, float]:
        """Normal CI of the difference."""
        q = sps.norm.ppf(0.5 + level / 2)
        return self.diff - q * self.se, self.diff + q * self.se


def _z_p(diff: float, var: float) -> tuple[float, float, float]:
    if not var > 0:
        # identical rankings (or both perfect): no evidence of a difference
        return 0.0, (0.0 if diff == 0 else math.inf), 1.0 if diff == 0 else 0.0
    se = math.sqrt(var)
    z = diff / se
    return se, z, float(2 * sps.norm.sf(abs(z)))


def delong_test(y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray) -> DelongResult:
    """DeLong's paired test of two models' AUCs on the same samples (same order)."""
    aucs, cov = delong_cov(y, np.vstack([p_a, p_b]))
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se, z, p = _z_p(diff, var)
    return DelongResult(float(aucs[0]), float(aucs[1]), diff, se, z, p, len(np.asarray(y)))


def combine_delong(results: list[DelongResult]) -> DelongResult:
    """Fixed-effect (inverse-variance) combination of per-split DeLong differences.

    Assumes independent splits: exact for disjoint test sets (k-fold); with repeated random
    splits test sets overlap and the combined SE is optimistic. Splits with zero variance
    (identical rankings) carry no weight; if all have zero variance the difference is their
    mean and p = 1 when it is 0."""
    if not results:
        raise ValueError("nothing to combine")
    weighted = [r for r in results if r.se > 0]
    n = sum(r.n for r in results)
    mean_a = float(np.mean([r.auc_a for r in results]))
    mean_b = float(np.mean([r.auc_b for r in results]))
    if not weighted:
        diff = float(np.mean([r.diff for r in results]))
        se, z, p = _z_p(diff, 0.0)
        return DelongResult(mean_a, mean_b, diff, se, z, p, n)
    w = np.array([1 / r.se ** 2 for r in weighted])
    d = np.array([r.diff for r in weighted])
    diff = float((w * d).sum() / w.sum())
    se, z, p = _z_p(diff, float(1 / w.sum()))
    return DelongResult(mean_a, mean_b, diff, se, z, p, n)


# ----------------------------------------------------------------------------- operating points


def _k(fraction: float, count: int) -> int:
    return max(1, math.ceil(fraction * count - 1e-9))


def sens_at_spec(pos: np.ndarray, neg: np.ndarray, spec: float = 0.9) -> np.ndarray:
    """Highest sensitivity over thresholds whose specificity is >= ``spec``, per row.

    pos (..., m), neg (..., n) scores; "malignant" means score > t. The best threshold is the
    k-th smallest negative score (k = ceil(spec * n)): everything at or below it is called
    benign."""
    neg_sorted = np.sort(neg, axis=-1)
    t = neg_sorted[..., _k(spec, neg.shape[-1]) - 1]
    return (pos > t[..., None]).mean(axis=-1)


def spec_at_sens(pos: np.ndarray, neg: np.ndarray, sens: float = 0.9) -> np.ndarray:
    """Highest specificity over thresholds whose sensitivity is >= ``sens``, per row
    ("malignant" means score >= t, t the k-th largest positive score, k = ceil(sens * m))."""
    pos_desc = -np.sort(-pos, axis=-1)
    t = pos_desc[..., _k(sens, pos.shape[-1]) - 1]
    return (neg < t[..., None]).mean(axis=-1)


# ----------------------------------------------------------------------------- bootstrap


@dataclass(frozen=True)
class BootstrapResult:
    """Point estimates and percentile CIs of AUC, sens@spec and spec@sens."""

    estimate: dict[str, float]
    low: dict[str, float]
    high: dict[str, float]
    n_boot: int
    level: float


def bootstrap_metrics(y: np.ndarray, p: np.ndarray, *, n_boot: int = 2000, seed: int = 0,
                      level: float = 0.95, at: float = 0.9,
                      chunk: int = 250) -> BootstrapResult:
    """Stratified bootstrap: each resample draws m positives from the positives and n negatives
    from the negatives (with replacement), so every resample has both classes. Returns the
    full-sample estimates and ``level`` percentile intervals of ``auc``, ``sens_at_spec`` and
    ``spec_at_sens`` (at ``at``). Seeded: same inputs, same intervals."""
    pos, neg = _split(y, p)
    if not len(pos) or not len(neg):
        raise ValueError("the bootstrap needs both classes")
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    rng = np.random.default_rng(seed)
    names = ("auc", "sens_at_spec", "spec_at_sens")
    draws: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        bp = pos[rng.integers(0, len(pos), size=(b, len(pos)))]
        bn = neg[rng.integers(0, len(neg), size=(b, len(neg)))]
        draws["auc"].append(_auc_rows(bp, bn))
        draws["sens_at_spec"].append(sens_at_spec(bp, bn, at))
        draws["spec_at_sens"].append(spec_at_sens(bp, bn, at))
    est = {"auc": auc(y, p), "sens_at_spec": float(sens_at_spec(pos, neg, at)),
           "spec_at_sens": float(spec_at_sens(pos, neg, at))}
    alpha = (1 - level) / 2
    low, high = {}, {}
    for k in names:
        values = np.concatenate(draws[k])
        low[k], high[k] = (float(q) for q in np.quantile(values, [alpha, 1 - alpha]))
    return BootstrapResult(est, low, high, n_boot, level)


# ----------------------------------------------------------------------------- cluster bootstrap


def cluster_weights(cluster_labels: np.ndarray, n_boot: int = 2000,
                    seed: int = 0) -> np.ndarray:
    """Multiplicities ``(n_boot, C)`` of C clusters in ``n_boot`` stratified resamples.

    Each resample draws, with replacement, as many clusters of each class as there are
    (``cluster_labels``: 0/1 per cluster, e.g. 1 when any of its cases is malignant), so every
    resample keeps the class mix; a cluster drawn k times weighs k in every run that tested it.
    Seeded: same labels, same weights."""
    labels = np.asarray(cluster_labels).astype(int)
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    rng = np.random.default_rng(seed)
    w = np.zeros((n_boot, len(labels)), dtype=np.float64)
    rows = np.arange(n_boot)[:, None]
    for c in (0, 1):
        members = np.flatnonzero(labels == c)
        if not len(members):
            continue
        drawn = members[rng.integers(0, len(members), size=(n_boot, len(members)))]
        np.add.at(w, (np.broadcast_to(rows, drawn.shape), drawn), 1.0)
    return w


def weighted_auc(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """AUC of each row of case weights ``w`` (B, N) (a case of weight k counts k times; ties
    one half): (B,). NaN where a class has zero weight."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    w = np.atleast_2d(np.asarray(w, dtype=float))
    pos, neg = p[y == 1], p[y == 0]
    k = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    wp, wn = w[:, y == 1], w[:, y == 0]
    num = np.einsum("bi,ij,bj->b", wp, k, wn)
    den = wp.sum(axis=1) * wn.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def weighted_rates(y: np.ndarray, p: np.ndarray, w: np.ndarray,
                   threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(sensitivity, specificity) per row of case weights when calling ``p >= threshold``
    malignant: two (B,) arrays (NaN where a class has zero weight or the threshold is NaN)."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    w = np.atleast_2d(np.asarray(w, dtype=float))
    if np.isnan(threshold):
        nan = np.full(len(w), np.nan)
        return nan, nan.copy()
    called = p >= threshold
    wp, wn = w[:, y == 1], w[:, y == 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = (wp * called[y == 1]).sum(axis=1) / wp.sum(axis=1)
        spec = (wn * ~called[y == 0]).sum(axis=1) / wn.sum(axis=1)
    return sens, spec


def weighted_accuracy(y: np.ndarray, p: np.ndarray, w: np.ndarray,
                      threshold: float = 0.5) -> np.ndarray:
    """Accuracy per row of case weights at ``p >= threshold``: (B,) (NaN for zero weight)."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    w = np.atleast_2d(np.asarray(w, dtype=float))
    correct = ((p >= threshold).astype(int) == y).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w * correct).sum(axis=1) / w.sum(axis=1)


def weighted_brier(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Brier score per row of case weights: (B,)."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    w = np.atleast_2d(np.asarray(w, dtype=float))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w * (p - y) ** 2).sum(axis=1) / w.sum(axis=1)


def percentile_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates (NaN replicates ignored; NaN if none)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return math.nan, math.nan
    alpha = (1 - level) / 2
    lo, hi = np.quantile(v, [alpha, 1 - alpha])
    return float(lo), float(hi)


# ----------------------------------------------------------------------------- paired tests


def corrected_t_test(a: np.ndarray, b: np.ndarray, test_train_ratio: float) -> float:
    """Two-sided p of Nadeau & Bengio's (2003) corrected resampled t-test of a - b over J
    paired splits whose test sets overlap (repeated hold-out, repeated k-fold): the variance
    of the mean difference is ``(1/J + n_test/n_train) s²`` instead of ``s²/J``; t has J - 1
    degrees of freedom. NaN with fewer than 2 pairs or zero variance (1.0 if all d = 0)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    d = d[np.isfinite(d)]
    if len(d) < 2:
        return math.nan
    if np.allclose(d, 0):
        return 1.0
    var = float(np.var(d, ddof=1))
    if not var > 0:
        return math.nan
    t = float(d.mean()) / math.sqrt((1 / len(d) + test_train_ratio) * var)
    return float(2 * sps.t.sf(abs(t), len(d) - 1))



def holm(p_values: list[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error), NaNs left as NaN."""
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    running = 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[idx]))
        out[idx] = running
    return out


def paired_tests(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sided p-values (paired t-test, Wilcoxon signed-rank) of a - b over paired splits.

    NaN when there are fewer than 2 pairs (and the t-test's when every difference is the same
    non-zero value); 1.0 when every difference is zero. With 5 splits
    the exact Wilcoxon test cannot go below p = 0.0625."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = a - b
    if len(d) < 2:
        return math.nan, math.nan
    if np.allclose(d, 0):
        return 1.0, 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # identical non-zero differences: t is infinite, the test says nothing useful
        t_p = (float(sps.ttest_rel(a, b).pvalue) if np.std(d) > 1e-12 * max(1.0, np.abs(d).max())
               else math.nan)
        try:
            w_p = float(sps.wilcoxon(a, b).pvalue)
        except ValueError:
            w_p = math.nan
    return t_p, w_p


# ----------------------------------------------------------------------------- calibration


def brier(y: np.ndarray, p: np.ndarray) -> float:
    """Mean squared error of P(malignant) against the 0/1 label."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    return float(np.mean((p - y) ** 2))


def reliability(y: np.ndarray, p: np.ndarray, bins: int = 10) -> dict[str, np.ndarray]:
    """Equal-width bins over [0, 1] (1.0 in the last): per bin its edges, ``count``,
    ``mean_predicted`` and ``fraction_positive`` (NaN for an empty bin)."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1], right=False), 0, bins - 1)
    count = np.bincount(idx, minlength=bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(idx, weights=p, minlength=bins) / count
        frac = np.bincount(idx, weights=y, minlength=bins) / count
    return {"low": edges[:-1], "high": edges[1:], "count": count, "mean_predicted": mean_p,
            "fraction_positive": frac}


def ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: sum over bins of (bin share) x |mean P - fraction positive|."""
    r = reliability(y, p, bins)
    ok = r["count"] > 0
    gap = np.abs(r["mean_predicted"][ok] - r["fraction_positive"][ok])
    return float((r["count"][ok] / r["count"].sum() * gap).sum())

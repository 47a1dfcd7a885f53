"""Binary classification metrics on malignancy probabilities: pure numpy functions.

Every function takes ``labels`` ``(N,)`` in {0, 1} (1 = malignant, the positive class) and
``scores`` ``(N,)`` float, the predicted probability of malignancy. AUC is the Mann-Whitney
statistic (ties count one half), equal to scikit-learn's ``roc_auc_score``; with a single class
present it is undefined and returned as NaN rather than raised, so a tiny validation split never
crashes a trial.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class RocCurve:
    """ROC curve points, one per distinct score threshold, from (0, 0) to (1, 1).

    Attributes:
        fpr: ``(K,)`` false positive rate = 1 - specificity, non-decreasing.
        tpr: ``(K,)`` true positive rate = sensitivity, non-decreasing.
        thresholds: ``(K,)`` predict malignant when ``score >= threshold``; the first is ``+inf``.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-ready lists (``inf`` stays a float; json writes it as ``Infinity``)."""
        return {"fpr": self.fpr.tolist(), "tpr": self.tpr.tolist(),
                "thresholds": self.thresholds.tolist()}


@dataclass(frozen=True)
class YoudenPoint:
    """The ROC point maximising Youden's J = sensitivity + specificity - 1."""

    threshold: float
    sensitivity: float
    specificity: float

    @property
    def j(self) -> float:
        return self.sensitivity + self.specificity - 1.0


def _check(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).astype(np.int64).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in length")
    if labels.size and not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 (benign) or 1 (malignant)")
    return labels, scores


def accuracy(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> float:
    """Fraction correct when predicting malignant for ``score >= threshold`` (NaN if empty).

    With a 2-way softmax, ``p(malignant) >= 0.5`` is the argmax decision (ties go malignant).
    """
    labels, scores = _check(labels, scores)
    if labels.size == 0:
        return float("nan")
    return float(np.mean((scores >= threshold).astype(np.int64) == labels))


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: Mann-Whitney U / (n_pos n_neg), ties 1/2; NaN if one class."""
    labels, scores = _check(labels, scores)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(scores)
    u = ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``, tied values sharing their average rank."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # Start of each run of equal values in sorted order.
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], xs.size]
    avg = (starts + ends + 1) / 2.0  # mean of 1-based ranks starts+1 .. ends
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> RocCurve:
    """ROC points at every distinct score (like scikit-learn's with ``drop_intermediate=False``).

    With a single class present, the undefined rate is NaN throughout.
    """
    labels, scores = _check(labels, scores)
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last_of_run = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1] if s.size else []
    last_of_run = np.asarray(last_of_run, dtype=np.int64)
    tp = np.cumsum(y)[last_of_run]
    fp = (last_of_run + 1) - tp
    tp = np.r_[0, tp].astype(np.float64)
    fp = np.r_[0, fp].astype(np.float64)
    n_pos, n_neg = tp[-1], fp[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = tp / n_pos if n_pos else np.full_like(tp, np.nan)
        fpr = fp / n_neg if n_neg else np.full_like(fp, np.nan)
    thresholds = np.r_[np.inf, s[last_of_run]]
    return RocCurve(fpr=fpr, tpr=tpr, thresholds=thresholds)


def youden_point(labels: np.ndarray, scores: np.ndarray) -> YoudenPoint:
    """Threshold maximising sensitivity + specificity - 1 (first, i.e. highest, on ties).

    NaN fields when only one class is present.
    """
    roc = roc_curve(labels, scores)
    j = roc.tpr - roc.fpr
    if roc.tpr.size == 0 or np.isnan(j).all():
        return YoudenPoint(float("nan"), float("nan"), float("nan"))
    k = int(np.nanargmax(j))
    return YoudenPoint(threshold=float(roc.thresholds[k]), sensitivity=float(roc.tpr[k]),
                       specificity=float(1.0 - roc.fpr[k]))


def rates_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[float, float]:
    """(sensitivity, specificity) when predicting malignant for ``score >= threshold``; a rate
    whose class is absent, or a NaN threshold, gives NaN. Use a threshold chosen on other data
    (validation) to report test rates."""
    labels, scores = _check(labels, scores)
    if np.isnan(threshold):
        return float("nan"), float("nan")
    called = scores >= threshold
    pos, neg = labels == 1, labels == 0
    sens = float(called[pos].mean()) if pos.any() else float("nan")
    spec = float((~called[neg]).mean()) if neg.any() else float("nan")
    return sens, spec

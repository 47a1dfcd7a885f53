"""Metrics against scikit-learn's reference implementation and at their edges."""

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from trainables.metrics import accuracy, roc_auc, roc_curve, youden_point


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", [False, True])
def test_auc_and_roc_match_sklearn(seed, ties):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 60)
    y[:2] = (0, 1)
    s = rng.random(60) + 0.3 * y
    if ties:
        s = np.round(s, 1)
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    roc = roc_curve(y, s)
    fpr, tpr, thr = sk_roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(roc.fpr, fpr)
    np.testing.assert_allclose(roc.tpr, tpr)
    np.testing.assert_allclose(roc.thresholds[1:], thr[1:])
    assert roc.thresholds[0] == np.inf


def test_perfect_and_inverted_and_constant_scores():
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc(y, [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert roc_auc(y, [0.5] * 4) == 0.5
    p = youden_point(y, [0.1, 0.2, 0.8, 0.9])
    assert (p.sensitivity, p.specificity, p.threshold, p.j) == (1.0, 1.0, 0.8, 1.0)


def test_youden_picks_max_j():
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.4, 0.6, 0.35, 0.7, 0.8])
    p = youden_point(y, s)
    roc = roc_curve(y, s)
    assert p.j == pytest.approx(np.max(roc.tpr - roc.fpr))
    # At threshold 0.7: sensitivity 2/3, specificity 1 -> J = 2/3 (best here).
    assert (p.threshold, p.sensitivity, p.specificity) == (0.7, pytest.approx(2 / 3), 1.0)


def test_single_class_is_nan_not_error():
    assert math.isnan(roc_auc([1, 1, 1], [0.2, 0.5, 0.9]))
    assert math.isnan(youden_point([0, 0], [0.2, 0.3]).sensitivity)
    assert accuracy([1, 1, 1], [0.2, 0.5, 0.9]) == pytest.approx(2 / 3)
    assert math.isnan(accuracy([], []))


def test_accuracy_threshold_and_validation():
    assert accuracy([0, 1], [0.5, 0.5]) == 0.5  # 0.5 predicts malignant
    with pytest.raises(ValueError, match="0 \\(benign\\) or 1"):
        accuracy([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="differ in length"):
        roc_auc([0, 1], [0.1])

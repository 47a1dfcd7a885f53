"""No test-set choice: the threshold behind ``test_sensitivity`` / ``test_specificity`` comes
from the validation predictions of the tested weights; test labels only get counted."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from trainables._epoch import StepSettings
from trainables._trial_state import derive_seeds
from trainables.metrics import rates_at, youden_point
from trainables.regimes import RegimeConfig, build_model
from trainables.train import _evaluate_test

from .test_train import ROIS, SIDE, SPLIT, config

CPU = torch.device("cpu")


def _evaluate(rois):
    cfg = config("FE", regime=RegimeConfig("FE", head_hidden=32))
    torch.manual_seed(derive_seeds(cfg.seed)["init"])
    model = build_model(cfg.backbone, cfg.regime, input_size=SIDE).eval()
    settings = StepSettings(input_size=SIDE, device=CPU, bf16=False, channels_last=False)
    return _evaluate_test(model, rois, SPLIT, cfg, settings, CPU)


def _with_labels(at: np.ndarray, labels: np.ndarray):
    new = ROIS.labels.copy()
    new[at] = labels
    return dataclasses.replace(ROIS, labels=new)


def test_shuffling_test_labels_leaves_the_threshold_and_predictions_unchanged():
    base = _evaluate(ROIS)
    rng = np.random.default_rng(0)
    shuffled = _evaluate(_with_labels(SPLIT.test, rng.permutation(ROIS.labels[SPLIT.test])))
    flipped = _evaluate(_with_labels(SPLIT.test, 1 - ROIS.labels[SPLIT.test]))
    for other in (shuffled, flipped):
        assert other["val_youden_threshold"] == base["val_youden_threshold"]
        assert other["test_probs"] == base["test_probs"]
        # the test rates are counts at the validation threshold, nothing else
        ids = list(other["test_probs"])
        y = np.array([other["test_labels"][s] for s in ids])
        p = np.array([other["test_probs"][s] for s in ids])
        sens, spec = rates_at(y, p, base["val_youden_threshold"])
        assert (other["test_sensitivity"], other["test_specificity"]) == (sens, spec)
    assert not any(k.startswith("test_") and "threshold" in k for k in base)


def test_the_threshold_is_the_youden_point_of_the_validation_predictions():
    base = _evaluate(ROIS)
    ids = list(base["val_probs"])
    assert ids == ROIS.sample_ids[SPLIT.val].tolist()
    y = np.array([base["val_labels"][s] for s in ids])
    p = np.array([base["val_probs"][s] for s in ids])
    assert base["val_youden_threshold"] == youden_point(y, p).threshold
    # and validation labels do move it (flipped labels: the Youden point of the mirrored ROC)
    flipped = _evaluate(_with_labels(SPLIT.val, 1 - ROIS.labels[SPLIT.val]))
    assert flipped["val_youden_threshold"] == youden_point(1 - y, p).threshold


def test_rates_at_a_threshold_by_hand():
    y = [0, 0, 1, 1, 1]
    p = [0.1, 0.6, 0.4, 0.7, 0.9]
    assert rates_at(y, p, 0.5) == (2 / 3, 0.5)
    assert rates_at(y, p, 0.0) == (1.0, 0.0)
    assert all(math.isnan(r) for r in rates_at(y, p, float("nan")))
    assert math.isnan(rates_at([1, 1], [0.2, 0.8], 0.5)[1])

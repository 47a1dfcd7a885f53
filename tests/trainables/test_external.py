"""External validation inside a trial: best-validation weights, tested once, nothing else moved."""

from __future__ import annotations

import numpy as np
import pytest

from tests.trainables.test_train import ROIS, SPLIT, config, make_rois
from trainables._roiset import RoiSet
from trainables.external import anonymous_lesion_ids
from trainables.train import run_trial


@pytest.fixture(scope="module")
def trials(tmp_path_factory):
    cfg = config("FE", max_epochs=2, seed=1)
    test_copy = ROIS.subset(SPLIT.test)  # the split's own test ROIs under other ids
    test_copy = RoiSet(test_copy.images, test_copy.labels, test_copy.patients,
                       test_copy.lesions, np.char.add("x", test_copy.sample_ids.astype(str)),
                       "copy-fp")
    other = make_rois(20, seed=5)
    other = RoiSet(other.images.astype(np.uint16) * 200, other.labels, other.patients,
                   other.lesions, other.sample_ids, "other-fp")  # 16-bit, another dataset
    plain = run_trial(cfg, ROIS, SPLIT, checkpoint_dir=tmp_path_factory.mktemp("a"),
                      phase="evaluate")
    with_ext = run_trial(cfg, ROIS, SPLIT, checkpoint_dir=tmp_path_factory.mktemp("b"),
                         phase="evaluate", external={"copy": test_copy, "other": other})
    return plain, with_ext, test_copy, other


def test_external_sets_use_the_best_validation_weights(trials):
    plain, result, test_copy, other = trials
    copy = result.external["copy"]
    test_ids = ROIS.sample_ids[SPLIT.test].tolist()
    assert [copy.probs[f"x{s}"] for s in test_ids] == pytest.approx(
        [result.test_probs[s] for s in test_ids], abs=1e-6)
    assert copy.acc == pytest.approx(result.test_acc) and copy.auc == pytest.approx(
        result.test_auc)
    ext = result.external["other"]
    assert set(ext.probs) == set(other.sample_ids.tolist())
    assert 0.0 <= ext.acc <= 1.0 and 0.0 <= ext.auc <= 1.0 and np.isfinite(ext.loss)
    assert ext.fingerprint == "other-fp"
    assert set(ext.metrics("other")) == {"external_other_acc", "external_other_auc",
                                         "external_other_loss"}


def test_external_sets_change_nothing_else(trials):
    plain, result, _, _ = trials
    assert plain.external is None
    assert result.test_probs == pytest.approx(plain.test_probs)
    assert result.best_epoch == plain.best_epoch
    assert result.partition_passes == plain.partition_passes  # the test set read once


def test_search_trials_never_see_external_sets(tmp_path):
    result = run_trial(config("FE", max_epochs=1), ROIS, SPLIT, checkpoint_dir=tmp_path,
                       phase="search", external={"other": make_rois(8, seed=2)})
    assert result.external is None and result.test_probs is None


def test_lesion_ids_are_anonymous_and_stable(trials):
    _, result, _, other = trials
    preds = result.external["other"].predictions()
    assert set(preds) == {"sample_id", "lesion_id", "p_malignant", "label", "fingerprint"}
    ids = anonymous_lesion_ids(other)
    assert list(ids) == list(anonymous_lesion_ids(other))
    assert not set(ids) & set(other.lesions.tolist())
    assert len(set(ids)) == len(set(other.lesions.tolist()))

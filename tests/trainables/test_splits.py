"""Split properties: no patient crosses partitions, stratification, stability (property-based)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainables._roiset import RoiSet
from trainables.balance import balance_index, balance_rois
from trainables.splits import SplitConfig, split_indices

PINNED_KFOLD = [  # sklearn 1.9's StratifiedGroupKFold, seed 0
    'e4209b794f6cb42be7908b25', '94b402b06cad65771f46b0f9', '744ad7bb50b4900f3a5beddd',
    '4ed5cb3dbc5bc71c27032c2f', 'a2c8462eebb59f12f3cdc7c5']


@st.composite
def cohorts(draw):
    """Patients with 1–4 lesion views each; labels per view (mixed patients allowed)."""
    n_patients = draw(st.integers(10, 80))
    sizes = draw(st.lists(st.integers(1, 4), min_size=n_patients, max_size=n_patients))
    patients, labels = [], []
    for p, size in enumerate(sizes):
        base = draw(st.integers(0, 1))
        mixed = draw(st.booleans()) and size > 1
        for v in range(size):
            patients.append(f"P{p:03d}")
            labels.append(base if not (mixed and v == size - 1) else 1 - base)
    return np.array(labels), np.array(patients, dtype=object)


def _max_group_class_count(labels, patients):
    counts = {}
    for lab, pat in zip(labels, patients, strict=True):
        counts[(pat, lab)] = counts.get((pat, lab), 0) + 1
    return max(counts.values())


@settings(max_examples=60, deadline=None)
@given(cohorts(), st.integers(0, 2**16), st.sampled_from(["repeated", "kfold"]))
def test_no_patient_in_two_partitions_and_classes_stratified(cohort, seed, scheme):
    labels, patients = cohort
    splits = split_indices(labels, patients, SplitConfig(n_splits=5, seed=seed, scheme=scheme))
    assert len(splits) == 5
    slack = _max_group_class_count(labels, patients)
    for s in splits:
        parts = [set(patients[s.train]), set(patients[s.val]), set(patients[s.test])]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        everything = np.sort(np.concatenate([s.train, s.val, s.test]))
        np.testing.assert_array_equal(everything, np.arange(len(labels)))
        for c in (0, 1):
            n_c = (labels == c).sum()
            assert abs((labels[s.test] == c).sum() - 0.2 * n_c) <= slack
            n_tv = (labels[s.trainval] == c).sum()
            assert abs((labels[s.val] == c).sum() - 0.2 * n_tv) <= slack
    if scheme == "kfold":
        tests = np.concatenate([s.test for s in splits])
        assert len(tests) == len(set(tests.tolist()))  # disjoint test parts


def test_single_image_groups_are_stratified_within_one():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 101)
    for s in split_indices(labels, np.arange(101).astype(str)):
        for c in (0, 1):
            assert abs((labels[s.test] == c).sum() - 0.2 * (labels == c).sum()) <= 1


@settings(max_examples=25, deadline=None)
@given(cohorts(), st.randoms(use_true_random=False))
def test_assignment_is_stable_under_reordering(cohort, random):
    labels, patients = cohort
    order = list(range(len(labels)))
    random.shuffle(order)
    order = np.array(order)
    a = split_indices(labels, patients, SplitConfig(seed=7))
    b = split_indices(labels[order], patients[order], SplitConfig(seed=7))
    for sa, sb in zip(a, b, strict=True):
        assert sa.fingerprint == sb.fingerprint
        assert set(patients[sa.test]) == set(patients[order][sb.test])
        assert set(patients[sa.val]) == set(patients[order][sb.val])


def test_seed_changes_the_assignment_and_fingerprints_are_distinct():
    labels = np.repeat(np.arange(60) % 2, 2)
    patients = np.repeat(np.arange(60), 2).astype(str)
    a = split_indices(labels, patients, SplitConfig(seed=0))
    b = split_indices(labels, patients, SplitConfig(seed=1))
    assert [s.fingerprint for s in a] != [s.fingerprint for s in b]
    assert len({s.fingerprint for s in a}) == 5
    # pinned: the same data and seed give this assignment on any machine
    again = split_indices(labels, patients, SplitConfig(seed=0))
    assert [s.fingerprint for s in a] == [s.fingerprint for s in again]


def test_image_mode_warns_and_may_split_a_patient(caplog):
    labels = np.repeat(np.arange(50) % 2, 2)
    patients = np.repeat(np.arange(50), 2).astype(str)
    with caplog.at_level(logging.WARNING, logger="trainables.splits"):
        splits = split_indices(labels, patients, SplitConfig(mode="image", seed=0))
    assert "leak" in caplog.text.lower() or "optimistic" in caplog.text
    crossed = sum(bool(set(patients[s.test]) & set(patients[s.trainval])) for s in splits)
    assert crossed > 0


@pytest.mark.parametrize("kwargs,match", [
    ({"n_splits": 0}, "n_splits"), ({"test_fraction": 1.0}, "test_fraction"),
    ({"val_fraction": 0}, "val_fraction"), ({"mode": "lesion"}, "split mode"),
    ({"scheme": "kfold", "n_splits": 1}, "kfold needs"),
    ({"repeats": 0}, "repeats"), ({"scheme": "repeated", "repeats": 2}, "repeats > 1"),
])
def test_bad_split_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SplitConfig(**kwargs)


# --------------------------------------------------------------------------- default k-fold


def _cohort(n_patients: int = 90, seed: int = 0):
    """Patients with 1–3 lesions, each lesion seen in two views (CC, MLO)."""
    rng = np.random.default_rng(seed)
    labels, patients, lesions = [], [], []
    for p in range(n_patients):
        for le in range(int(rng.integers(1, 4))):
            y = int(rng.random() < 0.4)
            for _view in ("CC", "MLO"):
                labels.append(y)
                patients.append(f"P{p:03d}")
                lesions.append(f"P{p:03d}/L{le}")
    return np.array(labels), np.array(patients, dtype=object), np.array(lesions, dtype=object)


def test_default_is_kfold_with_disjoint_test_folds_covering_every_patient_once():
    labels, patients, lesions = _cohort()
    config = SplitConfig()
    assert config.scheme == "kfold" and config.total == 5
    splits = split_indices(labels, patients, config)
    assert len(splits) == 5
    tests = np.concatenate([s.test for s in splits])
    np.testing.assert_array_equal(np.sort(tests), np.arange(len(labels)))  # each view once
    tested = [p for s in splits for p in sorted(set(patients[s.test]))]
    assert sorted(tested) == sorted(set(patients))  # every patient in exactly one test fold
    for s in splits:
        for part in (s.train, s.val, s.test):  # a lesion's views stay together
            inside = set(lesions[part])
            outside = set(lesions[np.setdiff1d(np.arange(len(labels)), part)])
            assert not inside & outside
        # class-stratified: each fold's malignant share near the whole set's
        assert abs(labels[s.test].mean() - labels.mean()) < 0.1


def test_kfold_fingerprints_are_stable_and_pinned():
    labels, patients, _ = _cohort()
    a = split_indices(labels, patients, SplitConfig(seed=0))
    b = split_indices(labels[::-1], patients[::-1], SplitConfig(seed=0))
    assert [s.fingerprint for s in a] == [s.fingerprint for s in b]
    assert len({s.fingerprint for s in a}) == 5
    c = split_indices(labels, patients, SplitConfig(seed=1))
    assert [s.fingerprint for s in a] != [s.fingerprint for s in c]
    assert [s.fingerprint for s in a] == PINNED_KFOLD  # same data, seed: same folds anywhere


def test_repeated_kfold_repeats_disjoint_folds_with_new_shuffles():
    labels, patients, _ = _cohort()
    splits = split_indices(labels, patients, SplitConfig(n_splits=3, repeats=2, seed=0))
    assert [s.index for s in splits] == list(range(6))
    for r in range(2):
        folds = splits[3 * r:3 * r + 3]
        np.testing.assert_array_equal(np.sort(np.concatenate([s.test for s in folds])),
                                      np.arange(len(labels)))
    first = {frozenset(patients[s.test]) for s in splits[:3]}
    second = {frozenset(patients[s.test]) for s in splits[3:]}
    assert first != second


def test_kfold_needs_a_patient_per_fold():
    with pytest.raises(ValueError, match="patients"):
        split_indices(np.array([0, 1, 0]), np.array(["a", "b", "c"]), SplitConfig(n_splits=5))


# --------------------------------------------------------------------------- balance


def test_undersample_keeps_whole_lesions_balanced_seeded_and_order_free():
    labels, patients, lesions = _cohort(seed=2)
    keep = balance_index(labels, lesions, "undersample", seed=0)
    kept_lesions = {le: labels[lesions == le][0] for le in set(lesions[keep])}
    assert sum(kept_lesions.values()) * 2 == len(kept_lesions)  # as many malignant as benign
    n_malignant = len(set(lesions[labels == 1]))
    assert len(kept_lesions) == 2 * min(n_malignant, len(set(lesions)) - n_malignant)
    for le in kept_lesions:  # a kept lesion keeps both its views
        assert (lesions[keep] == le).sum() == (lesions == le).sum()
    np.testing.assert_array_equal(keep, balance_index(labels, lesions, "undersample", seed=0))
    assert set(lesions[keep]) != set(lesions[balance_index(labels, lesions, "undersample", 1)])
    order = np.random.default_rng(0).permutation(len(labels))
    again = balance_index(labels[order], lesions[order], "undersample", seed=0)
    assert set(lesions[order][again]) == set(lesions[keep])
    np.testing.assert_array_equal(balance_index(labels, lesions, "none"),
                                  np.arange(len(labels)))


def test_balanced_roi_set_has_its_own_fingerprint():
    labels, patients, lesions = _cohort(n_patients=20)
    n = len(labels)
    rois = RoiSet(np.zeros((n, 8, 8), np.uint8), labels, patients, lesions,
                  np.array([f"s{i}" for i in range(n)], dtype=object), "f" * 32)
    assert balance_rois(rois, "none") is rois
    a, b = balance_rois(rois, "undersample", 0), balance_rois(rois, "undersample", 1)
    assert a.fingerprint not in (rois.fingerprint, b.fingerprint)
    assert a.fingerprint == balance_rois(rois, "undersample", 0).fingerprint
    assert a.labels.sum() * 2 < len(a) + 2  # views of balanced lesions: about half malignant
    with pytest.raises(ValueError, match="balance must be"):
        balance_index(labels, lesions, "oversample")

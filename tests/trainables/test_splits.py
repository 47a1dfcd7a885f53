"""Split properties: no patient crosses partitions, stratification, stability (property-based)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainables.splits import SplitConfig, split_indices


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
    ({"scheme": "kfold", "n_splits": 6}, "kfold needs"),
])
def test_bad_split_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SplitConfig(**kwargs)

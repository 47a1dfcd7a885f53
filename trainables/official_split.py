"""``splits.mode: official``: the dataset's own published train/test partition (CBIS-DDSM).

One outer split: its test part is every sample the dataset files under ``test``; its inner
validation part is drawn from the ``train`` samples by the usual patient-grouped, stratified,
seeded assignment (:func:`trainables.splits.split_indices`). Results are then comparable with
papers that report on the official test set. A patient the dataset lists on both sides (CBIS-DDSM
splits masses and calcifications separately) is a leak the dataset made: it is reported, and
the split refuses to run unless ``allow_shared_patients``.
"""

from __future__ import annotations

import hashlib

import numpy as np

from trainables.records import DatasetError
from trainables.splits import Split, SplitConfig, split_indices


def official_split(labels: np.ndarray, patients: np.ndarray, subsets: np.ndarray, *,
                   val_fraction: float = 0.2, seed: int = 0,
                   allow_shared_patients: bool = False) -> Split:
    """The official split as positions: ``subsets[i]`` is ``"train"`` or ``"test"``."""
    labels = np.asarray(labels, dtype=np.int64)
    patients = np.asarray(patients).astype(str)
    subsets = np.asarray(subsets, dtype=object)
    if len(subsets) != len(labels) or len(patients) != len(labels):
        raise ValueError(f"{len(labels)} labels, {len(patients)} patients, {len(subsets)} "
                         "subsets")
    unknown = sorted({str(s) for s in subsets} - {"train", "test"})
    if unknown:
        raise DatasetError(f"splits.mode: official needs every sample in the dataset's train or "
                           f"test set; found {unknown} (only cbis-ddsm publishes its split)")
    is_test = subsets == "test"
    if not is_test.any() or is_test.all():
        raise DatasetError("splits.mode: official needs samples in both the official train and "
                           "test sets")
    shared = set(patients[is_test]) & set(patients[~is_test])
    if shared and not allow_shared_patients:
        raise DatasetError(f"{len(shared)} patient(s) are in both the official train and test "
                           "sets: their samples would leak between them")
    train_pos = np.flatnonzero(~is_test)
    inner = split_indices(labels[train_pos], patients[train_pos],
                          SplitConfig(n_splits=1, test_fraction=val_fraction, seed=seed,
                                      scheme="repeated"))[0]
    train, val = np.sort(train_pos[inner.trainval]), np.sort(train_pos[inner.test])
    test = np.flatnonzero(is_test)
    h = hashlib.blake2b(digest_size=16)
    for name, part in (("train", train), ("val", val), ("test", test)):
        h.update(name.encode() + b":" + ",".join(sorted(set(patients[part]))).encode())
    return Split(0, train, val, test, h.hexdigest())

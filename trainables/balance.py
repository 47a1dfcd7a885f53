"""Class balance of the ROI set: ``none`` (all lesions) or ``undersample`` (the paper's
balanced subset: it used 300 benign + 300 malignant lesion ROIs).

Undersampling keeps every lesion of the minority class and a seeded random subset of as many
lesions of the majority class; a lesion is kept or dropped with all its views (a balanced view
count would split lesions). The choice depends only on (lesion keys, labels, seed), not on the
input order, and the balanced set's fingerprint covers it (``fingerprint`` of the source set +
policy + seed), so a cache or a split fingerprint never confuses the two sets.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import numpy as np

from trainables._roiset import RoiSet

Balance = Literal["none", "undersample"]
BALANCES: tuple[str, ...] = ("none", "undersample")


def balance_index(labels: np.ndarray, lesions: np.ndarray, policy: Balance = "none",
                  seed: int = 0) -> np.ndarray:
    """Sorted positions of the views to keep under ``policy``.

    ``labels`` ``(N,)`` 0/1 per view, ``lesions`` ``(N,)`` lesion keys (views of one lesion
    share a key and a label)."""
    labels = np.asarray(labels, dtype=np.int64)
    if policy not in BALANCES:
        raise ValueError(f"balance must be one of {', '.join(BALANCES)}, got {policy!r}")
    if policy == "none":
        return np.arange(len(labels))
    keys, inverse = np.unique(np.asarray(lesions).astype(str), return_inverse=True)
    lesion_label = np.zeros(len(keys), dtype=np.int64)
    lesion_label[inverse] = labels
    if np.any(lesion_label[inverse] != labels):
        raise ValueError("views of one lesion carry different labels; cannot balance lesions")
    rng = np.random.default_rng([seed, 3])
    per_class = [np.flatnonzero(lesion_label == c) for c in (0, 1)]
    n_keep = min(len(g) for g in per_class)
    kept = np.zeros(len(keys), dtype=bool)
    for group in per_class:
        kept[group[np.sort(rng.permutation(len(group))[:n_keep])]] = True
    return np.flatnonzero(kept[inverse])


def balance_rois(rois: RoiSet, policy: Balance = "none", seed: int = 0) -> RoiSet:
    """``rois`` balanced by ``policy`` (the same object for ``"none"``), fingerprinted."""
    if policy == "none":
        return rois
    index = balance_index(rois.labels, rois.lesions, policy, seed)
    sub = rois.subset(index)
    digest = hashlib.blake2b(f"{rois.fingerprint}|balance={policy}|seed={seed}".encode(),
                             digest_size=16).hexdigest()
    return RoiSet(sub.images, sub.labels, sub.patients, sub.lesions, sub.sample_ids, digest)

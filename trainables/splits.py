"""Leakage-safe outer/inner splits: grouped by patient, stratified by label, seeded.

No patient (hence no lesion, no view of it) is in two partitions of a split. The assignment
depends only on (patient ids, labels, seed): it is the same on any machine and for any input
order. ``mode="image"`` reproduces the paper's image-level protocol, where views of one lesion
can fall in train and test, and logs a leakage warning.

Stratification is greedy over patients (largest first, seeded random order among equals), then
refined by single-patient moves: each class's count in a part ends within one patient's worth
of images of its target ``fraction × class count`` (within ±1 when every group holds a single
image).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np

from trainables._roiset import RoiSet

log = logging.getLogger(__name__)

SplitMode = Literal["patient", "image"]
Scheme = Literal["repeated", "kfold"]


@dataclass(frozen=True, eq=False)
class Split:
    """One outer split as integer positions into a :class:`~trainables.RoiSet`.

    ``train`` is the inner-train part and ``val`` the inner validation part; together they are
    the split's train+val part. ``test`` is touched once per evaluation run.
    """

    index: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    fingerprint: str

    @property
    def trainval(self) -> np.ndarray:
        return np.sort(np.concatenate([self.train, self.val]))


@dataclass(frozen=True)
class SplitConfig:
    """``n_splits`` outer splits of ``test_fraction`` test (the paper: 5 × 80/20), and an inner
    validation part of ``val_fraction`` of train+val. ``scheme="repeated"`` draws each outer
    split independently (repeated hold-out, as the paper); ``"kfold"`` makes the test parts
    disjoint (every sample tested once; needs ``n_splits × test_fraction ≤ 1``)."""

    n_splits: int = 5
    test_fraction: float = 0.2
    val_fraction: float = 0.2
    seed: int = 0
    mode: SplitMode = "patient"
    scheme: Scheme = "repeated"

    def __post_init__(self) -> None:
        if not isinstance(self.n_splits, int) or self.n_splits < 1:
            raise ValueError(f"n_splits must be a positive integer, got {self.n_splits!r}")
        for name in ("test_fraction", "val_fraction"):
            v = getattr(self, name)
            if not 0.0 < v < 1.0:
                raise ValueError(f"{name} must be strictly between 0 and 1, got {v!r}")
        if self.mode not in ("patient", "image"):
            raise ValueError(f"split mode must be 'patient' or 'image', got {self.mode!r}")
        if self.scheme not in ("repeated", "kfold"):
            raise ValueError(f"scheme must be 'repeated' or 'kfold', got {self.scheme!r}")
        if self.scheme == "kfold" and self.n_splits * self.test_fraction > 1.0 + 1e-9:
            raise ValueError(f"kfold needs n_splits × test_fraction ≤ 1, got "
                             f"{self.n_splits} × {self.test_fraction}")


def make_splits(rois: RoiSet, config: SplitConfig = SplitConfig()) -> list[Split]:
    """The outer splits of a ROI set (each with its inner validation part)."""
    return split_indices(rois.labels, rois.patients, config)


def split_indices(labels: np.ndarray, patients: np.ndarray,
                  config: SplitConfig = SplitConfig()) -> list[Split]:
    """Pure split assignment from per-sample labels and patient ids."""
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    if len(patients) != n:
        raise ValueError(f"{len(patients)} patient ids for {n} labels")
    if config.mode == "image":
        log.warning("image-level split: views of one lesion and lesions of one patient can "
                    "fall in both train and test (the paper's protocol); test estimates are "
                    "optimistic. Use mode='patient' unless reproducing the paper.")
        groups = np.array([f"#{i}" for i in range(n)], dtype=object)
    else:
        groups = np.asarray(patients).astype(str).astype(object)
    names, inverse = np.unique(groups.astype(str), return_inverse=True)  # sorted: order-free
    n_classes = int(labels.max()) + 1 if n else 1
    counts = np.zeros((len(names), n_classes), dtype=np.int64)
    np.add.at(counts, (inverse, labels), 1)
    splits = []
    taken = np.zeros(len(names), dtype=bool)  # kfold: groups already used as test
    for k in range(config.n_splits):
        rng = np.random.default_rng([config.seed, k, 0])
        if config.scheme == "kfold":
            remaining = config.n_splits - k
            avail = ~taken
            frac = 1.0 / remaining if config.n_splits * config.test_fraction >= 1 - 1e-9 \
                else config.test_fraction / max(1e-12, 1 - k * config.test_fraction)
            test_g = _stratified_pick(counts, avail, min(frac, 1.0), rng)
            taken |= test_g
        else:
            test_g = _stratified_pick(counts, np.ones(len(names), bool), config.test_fraction, rng)
        rest = ~test_g
        inner_rng = np.random.default_rng([config.seed, k, 1])
        val_g = _stratified_pick(counts, rest, config.val_fraction, inner_rng)
        train_g = rest & ~val_g
        part = np.select([train_g, val_g, test_g], [0, 1, 2], default=-1)[inverse]
        train, val, test = (np.flatnonzero(part == p) for p in (0, 1, 2))
        splits.append(Split(k, train, val, test, _fingerprint(names, train_g, val_g, test_g)))
    return splits


def _stratified_pick(counts: np.ndarray, eligible: np.ndarray, fraction: float,
                     rng: np.random.Generator) -> np.ndarray:
    """Pick eligible groups so that per-class totals approach ``fraction`` of the eligible ones.

    Largest groups first (random order among equals), each taken when it brings the per-class
    totals closer to the targets (squared distance); then single-group toggles are applied
    while one improves the fit, so that no one patient moved in or out would do better.
    """
    target = fraction * counts[eligible].sum(axis=0)
    candidates = np.flatnonzero(eligible)
    shuffled = candidates[rng.permutation(len(candidates))]
    order = shuffled[np.argsort(-counts[shuffled].sum(axis=1), kind="stable")]
    picked = np.zeros(len(counts), dtype=bool)
    total = np.zeros(counts.shape[1], dtype=np.float64)

    def cost(t: np.ndarray) -> float:
        return float(((t - target) ** 2).sum())

    for g in order:
        if cost(total + counts[g]) < cost(total):
            picked[g] = True
            total = total + counts[g]
    for _ in range(len(order)):  # local search; converges in a few passes
        improved = False
        for g in order:
            new = total - counts[g] if picked[g] else total + counts[g]
            if cost(new) < cost(total) - 1e-9:
                picked[g] = not picked[g]
                total = new
                improved = True
        if not improved:
            break
    return picked


def _fingerprint(names: np.ndarray, *parts: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=12)
    for part in parts:
        h.update("\n".join(names[part]).encode() + b"\0\0")
    return h.hexdigest()

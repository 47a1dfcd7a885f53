"""Leakage-safe outer/inner splits: grouped by patient, stratified by label, seeded.

No patient (hence no lesion, no view of it) is in two partitions of a split. The assignment
depends only on (patient ids, labels, seed): it is the same on any machine and for any input
order. ``mode="image"`` reproduces the paper's image-level protocol, where views of one lesion
can fall in train and test, and logs a leakage warning.

Outer splits, by ``scheme``:

* ``"kfold"`` (default): patient-grouped, class-stratified k-fold (scikit-learn's
  ``StratifiedGroupKFold``, shuffled with a seed derived from ``seed`` and the repeat): the
  ``n_splits`` test folds of a repeat are disjoint and cover every patient exactly once;
  ``repeats = R`` repeats it with R different shuffles (repeated k-fold, ``n_splits × R``
  splits, split ``r·k + f`` is fold ``f`` of repeat ``r``). ``test_fraction`` is not used
  (each fold is ``1 / n_splits``).
* ``"repeated"``: repeated hold-out, each split an independent ``test_fraction`` draw (the
  paper's protocol); test sets overlap between splits, so comparisons over splits need the
  corrected resampled t-test (Nadeau & Bengio 2003).

The inner validation part (and the repeated hold-out's test part) is picked greedily over
patients (largest first, seeded random order among equals), then refined by single-patient
moves: each class's count in a part ends within one patient's worth of images of its target
``fraction × class count`` (within ±1 when every group holds a single image).
"""

from __future__ import annotations

import hashlib
import logging
import warnings
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
    """Outer splits and an inner validation part of ``val_fraction`` of each train+val part.

    ``scheme="kfold"`` (default): ``n_splits`` disjoint, patient-grouped, class-stratified test
    folds, the whole k-fold ``repeats`` times with different shuffles (``n_splits × repeats``
    splits; ``test_fraction`` unused). ``"repeated"``: ``n_splits`` independent hold-out draws
    of ``test_fraction`` test (the paper: 5 × 80/20); test sets overlap."""

    n_splits: int = 5
    test_fraction: float = 0.2
    val_fraction: float = 0.2
    seed: int = 0
    mode: SplitMode = "patient"
    scheme: Scheme = "kfold"
    repeats: int = 1

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
        if self.scheme == "kfold" and self.n_splits < 2:
            raise ValueError(f"kfold needs n_splits >= 2 folds, got {self.n_splits} (one "
                             "hold-out split: scheme='repeated', n_splits=1)")
        if not isinstance(self.repeats, int) or self.repeats < 1:
            raise ValueError(f"repeats must be a positive integer, got {self.repeats!r}")
        if self.repeats > 1 and self.scheme != "kfold":
            raise ValueError("repeats > 1 needs scheme='kfold' (repeated hold-out: raise "
                             "n_splits instead)")

    @property
    def total(self) -> int:
        """Number of outer splits: ``n_splits × repeats`` for k-fold, else ``n_splits``."""
        return self.n_splits * self.repeats if self.scheme == "kfold" else self.n_splits


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
    if config.scheme == "kfold":
        test_groups = _kfold_test_groups(counts, inverse, labels, config)
    else:
        test_groups = [_stratified_pick(counts, np.ones(len(names), bool), config.test_fraction,
                                        np.random.default_rng([config.seed, k, 0]))
                       for k in range(config.n_splits)]
    splits = []
    for k, test_g in enumerate(test_groups):
        rest = ~test_g
        inner_rng = np.random.default_rng([config.seed, k, 1])
        val_g = _stratified_pick(counts, rest, config.val_fraction, inner_rng)
        train_g = rest & ~val_g
        part = np.select([train_g, val_g, test_g], [0, 1, 2], default=-1)[inverse]
        train, val, test = (np.flatnonzero(part == p) for p in (0, 1, 2))
        splits.append(Split(k, train, val, test, _fingerprint(names, train_g, val_g, test_g)))
    return splits


def _kfold_test_groups(counts: np.ndarray, inverse: np.ndarray, labels: np.ndarray,
                       config: SplitConfig) -> list[np.ndarray]:
    """Boolean group masks of the test folds, repeat by repeat (``StratifiedGroupKFold``).

    scikit-learn sees the groups by their sorted names (``inverse``), so the folds do not
    depend on the input order; each repeat is shuffled with a seed derived from
    ``(seed, repeat)``."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(counts)
    if n_groups < config.n_splits:
        raise ValueError(f"{config.n_splits}-fold split of {n_groups} patients: need at least "
                         "one patient per fold")
    out = []
    for r in range(config.repeats):
        state = int(np.random.SeedSequence([config.seed, r, 2]).generate_state(1)[0])
        folds = StratifiedGroupKFold(config.n_splits, shuffle=True, random_state=state)
        with warnings.catch_warnings():  # "least populated class has fewer than n_splits"
            warnings.simplefilter("ignore", UserWarning)
            for _, test in folds.split(np.zeros(len(labels)), labels, inverse):
                mask = np.zeros(n_groups, dtype=bool)
                mask[inverse[test]] = True
                out.append(mask)
    return out


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

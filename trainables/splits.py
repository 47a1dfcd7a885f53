"""Leakage-safe outer/inner splits (patient-grouped, stratified, seeded). Filled in by issue 2."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Split:
    """One outer split as integer positions into a :class:`~trainables.RoiSet`.

    ``train`` is the inner-train part and ``val`` the inner validation part; together they are the
    split's train+val part. ``test`` is touched once per evaluation run.
    """

    index: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    fingerprint: str

    @property
    def trainval(self) -> np.ndarray:
        return np.sort(np.concatenate([self.train, self.val]))

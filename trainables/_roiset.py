"""The in-memory ROI set every trial trains on."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass(frozen=True, eq=False)
class RoiSet:
    """Extracted lesion ROIs, one per lesion view, ready for training.

    Attributes:
        images: ``(N, S, S)`` uint8 or uint16 raw grey levels (global contrast normalisation is
            applied on the fly, per image, by the trainable).
        labels: ``(N,)`` int64, 0 = benign, 1 = malignant.
        patients: ``(N,)`` str, patient id (never logged; use ``sample_ids``).
        lesions: ``(N,)`` str, dataset-unique lesion key.
        sample_ids: ``(N,)`` str, salted hash of the source image and lesion: safe to log.
        fingerprint: hex digest of the source files' contents and the ROI settings.
    """

    images: np.ndarray
    labels: np.ndarray
    patients: np.ndarray
    lesions: np.ndarray
    sample_ids: np.ndarray
    fingerprint: str

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.ndim != 3 or self.images.shape[1] != self.images.shape[2]:
            raise ValueError(f"images must be (N, S, S), got {self.images.shape}")
        for name in ("labels", "patients", "lesions", "sample_ids"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries, images {n}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        """ROI side in pixels."""
        return int(self.images.shape[1])

    def subset(self, index: np.ndarray) -> RoiSet:
        """The ROIs at ``index`` (integer positions), same fingerprint."""
        index = np.asarray(index, dtype=np.int64)
        return RoiSet(self.images[index], self.labels[index], self.patients[index],
                      self.lesions[index], self.sample_ids[index], self.fingerprint)

    def cluster_ids(self, level: Literal["lesion", "patient"]) -> np.ndarray:
        """``(N,)`` str: an anonymous id of each view's lesion (``"l…"``) or patient (``"p…"``),
        safe to log like ``sample_ids``.

        The same kind of keyed hash as the sample ids (BLAKE2b keyed with this set's
        content-derived fingerprint): equal within a ROI set for the views of one lesion
        (patient), not reversible to a patient id without the data."""
        raw = self.lesions if level == "lesion" else self.patients
        key = bytes.fromhex(self.fingerprint)[:64]
        names, inverse = np.unique(np.asarray(raw).astype(str), return_inverse=True)
        hashed = np.array([level[0] + hashlib.blake2b(f"{level}|{n}".encode(), key=key,
                                                      digest_size=8).hexdigest()
                           for n in names], dtype=object)
        return hashed[inverse]

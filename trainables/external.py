"""External validation: a trained model tested once on another dataset (same ROI protocol).

A study trained on one dataset (say BCDR) and tested on another (INbreast, CBIS-DDSM) measures
how far its results travel — what reviewers of medical-imaging papers ask for. The evaluation
phase calls :func:`evaluate_external` with the trial's best-validation weights, once per
external set, after its own test pass; nothing of the external set informs any choice.

Predictions are keyed by the external ROI set's anonymous ``sample_id`` and carry an anonymous
``lesion_id`` (a keyed hash of the lesion key, the key being the set's content fingerprint), so
the analysis can combine a lesion's views and resample lesions without seeing patient ids.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from trainables._epoch import StepSettings, predict
from trainables._partition import Partition
from trainables._roiset import RoiSet
from trainables.head import Classifier
from trainables.metrics import accuracy, roc_auc


@dataclass(frozen=True)
class ExternalResult:
    """One external set's pass: view-level loss/accuracy (threshold 0.5)/AUC and predictions.

    ``probs``, ``labels`` and ``lesion_ids`` are keyed by ``sample_id``; ``fingerprint`` is the
    external ROI set's (source files + ROI settings)."""

    fingerprint: str
    loss: float
    acc: float
    auc: float
    probs: dict[str, float]
    labels: dict[str, int]
    lesion_ids: dict[str, str]

    def metrics(self, name: str) -> dict[str, float]:
        """``external_<name>_{acc,auc,loss}`` for logging."""
        return {f"external_{name}_acc": self.acc, f"external_{name}_auc": self.auc,
                f"external_{name}_loss": self.loss}

    def predictions(self) -> dict[str, object]:
        """Column form, as logged: ``sample_id``, ``lesion_id``, ``p_malignant``, ``label``."""
        ids = list(self.probs)
        return {"sample_id": ids, "lesion_id": [self.lesion_ids[s] for s in ids],
                "p_malignant": [self.probs[s] for s in ids],
                "label": [self.labels[s] for s in ids], "fingerprint": self.fingerprint}


def anonymous_lesion_ids(rois: RoiSet) -> np.ndarray:
    """``(N,)`` str: a keyed hash of each sample's lesion key (key: the set's fingerprint)."""
    key = hashlib.blake2b(rois.fingerprint.encode(), digest_size=32).digest()
    return np.array(["l" + hashlib.blake2b(str(lesion).encode(), key=key,
                                           digest_size=8).hexdigest()
                     for lesion in rois.lesions], dtype=object)


def evaluate_external(model: Classifier, rois: RoiSet, *, batch_size: int,
                      settings: StepSettings, device: torch.device) -> ExternalResult:
    """One evaluation pass of ``model`` (eval mode, no augmentation) over all of ``rois``."""
    part = Partition.from_rois("external", rois, np.arange(len(rois)), device)
    loss, probs = predict(model, part, batch_size=batch_size, settings=settings)
    labels = part.labels_np
    ids = part.sample_ids.tolist()
    lesions = anonymous_lesion_ids(rois).tolist()
    return ExternalResult(
        fingerprint=rois.fingerprint, loss=float(loss), acc=accuracy(labels, probs),
        auc=roc_auc(labels, probs),
        probs=dict(zip(ids, probs.tolist(), strict=True)),
        labels=dict(zip(ids, labels.tolist(), strict=True)),
        lesion_ids=dict(zip(ids, lesions, strict=True)))

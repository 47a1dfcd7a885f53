"""A partition (train, val or test) of the ROI set, resident on the training device."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from trainables._roiset import RoiSet


def device_images(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """``(N, S, S)`` raw grey levels as a device tensor: uint8 stays uint8, uint16 → int32.

    (uint16 tensors have only partial operator support in torch, notably on CUDA; int32 holds
    every 16-bit value exactly.)
    """
    if images.dtype == np.uint8:
        t = torch.from_numpy(np.ascontiguousarray(images))
    elif images.dtype == np.uint16:
        t = torch.from_numpy(np.ascontiguousarray(images).astype(np.int32))
    else:
        raise TypeError(f"ROI images must be uint8 or uint16 raw grey levels, got {images.dtype}")
    return t.to(device, non_blocking=True)


@dataclass(eq=False)
class Partition:
    """The ROIs of one partition on the device, and how often they were read.

    Attributes:
        name: ``"train"``, ``"val"`` or ``"test"``.
        images: ``(N, S, S)`` uint8 or int32 raw grey levels, on the device.
        labels: ``(N,)`` int64 on the device.
        sample_ids: ``(N,)`` str, the ROI set's anonymised ids (safe to log).
        passes: complete passes made over this partition (training epochs or evaluations);
            the trial's guarantee that the test set is read exactly once is counted here.
        features: cached backbone features ``(N, C, h, w)`` for a frozen backbone, or ``None``.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    sample_ids: np.ndarray
    passes: int = 0
    features: torch.Tensor | None = None

    @classmethod
    def from_rois(cls, name: str, rois: RoiSet, index: np.ndarray,
                  device: torch.device) -> Partition:
        index = np.asarray(index, dtype=np.int64)
        return cls(name=name, images=device_images(rois.images[index], device),
                   labels=torch.from_numpy(rois.labels[index].astype(np.int64)).to(device),
                   sample_ids=np.asarray(rois.sample_ids[index]).astype(str))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def labels_np(self) -> np.ndarray:
        return self.labels.cpu().numpy()

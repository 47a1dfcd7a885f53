"""Batched, per-sample preprocessing and augmentation on the device (no DataLoader).

A batch of raw grey ROIs goes through, all on the batch's device:

1. ``to float`` — ``(B, S, S)`` uint8/int32 raw grey levels → ``(B, 1, S, S)`` float32;
2. ``resize`` — to the model's input size when it differs (bilinear, antialiased when shrinking);
3. ``gcn`` — global contrast normalisation, per image: subtract its mean, divide by its standard
   deviation (the paper's step 2);
4. ``warp`` (training only) — one random affine transform *per sample* (the paper's step 3, as
   Keras' ``ImageDataGenerator(width_shift_range=0.25, height_shift_range=0.25,
   rotation_range=40, horizontal_flip=True)`` draws it): rotation uniform in ±40°, horizontal and
   vertical shifts each uniform in ±0.25 of the side, a horizontal flip with probability 1/2;
   pixels from outside the ROI repeat the nearest edge (Keras' default ``fill_mode="nearest"``).

The transforms are a ``(B, 2, 3)`` stack of matrices fed to one ``affine_grid``/``grid_sample``
call, so every sample gets its own draw (a single draw per batch is the trap this avoids), and all
draws come from one explicit ``torch.Generator`` whose state a checkpoint can save.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentParams:
    """Ranges of the random per-sample transform.

    Attributes:
        max_shift: largest horizontal/vertical shift, as a fraction of the side (paper: 0.25).
        max_rotation_deg: rotation drawn uniformly in ``[-max, +max]`` degrees (paper: 40).
        hflip: flip horizontally with probability 1/2 (paper: yes).
    """

    max_shift: float = 0.25
    max_rotation_deg: float = 40.0
    hflip: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_shift < 1.0:
            raise ValueError(f"max_shift must be in [0, 1) (a fraction of the side), "
                             f"got {self.max_shift}")
        if not 0.0 <= self.max_rotation_deg <= 180.0:
            raise ValueError(f"max_rotation_deg must be in [0, 180], got {self.max_rotation_deg}")


def gcn(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Global contrast normalisation per sample: ``(x - mean) / std`` over each image's pixels.

    Args:
        x: ``(B, C, H, W)`` float.
        eps: floor on the standard deviation, so a flat image maps to zeros instead of NaN.
    """
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True, correction=0)
    return (x - mean) / std.clamp_min(eps)


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, C, H, W)`` float → ``(B, C, size, size)``; identity when already that size."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    shrink = size < max(x.shape[-2:])
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=shrink)


def random_affine(n: int, params: AugmentParams, generator: torch.Generator,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """``(n, 2, 3)`` float32 matrices for ``F.affine_grid``, one independent draw per sample.

    Each maps output to input coordinates (normalised to [-1, 1]): rotation by ``a``, a mirror of
    the x axis when flipped, then a translation ``2 * shift`` (the normalised side is 2 long).

    Args:
        generator: the only source of randomness; must live on ``device``.
    """
    device = torch.device(device) if device is not None else generator.device
    u = torch.rand(n, 4, generator=generator, device=device)  # angle, shift x, shift y, flip
    angle = (2.0 * u[:, 0] - 1.0) * math.radians(params.max_rotation_deg)
    tx = (2.0 * u[:, 1] - 1.0) * params.max_shift * 2.0
    ty = (2.0 * u[:, 2] - 1.0) * params.max_shift * 2.0
    flip = torch.where(u[:, 3] < 0.5, -1.0, 1.0) if params.hflip else torch.ones_like(angle)
    cos, sin = torch.cos(angle), torch.sin(angle)
    return torch.stack([
        torch.stack([cos * flip, -sin, tx], dim=1),
        torch.stack([sin * flip, cos, ty], dim=1),
    ], dim=1)


def warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Apply per-sample affine maps: ``(B, C, H, W)`` float, ``(B, 2, 3)`` → ``(B, C, H, W)``."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def prepare_batch(raw: torch.Tensor, size: int, *, augment: AugmentParams | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Raw ROIs → model-ready images.

    Args:
        raw: ``(B, S, S)`` uint8 or int32 raw grey levels, on the target device.
        size: the model's input side in pixels.
        augment: ranges of the random transform; ``None`` (evaluation) leaves images unwarped.
        generator: required with ``augment``; on ``raw``'s device.

    Returns:
        ``(B, 1, size, size)`` float32, zero mean and unit variance per image before the warp.
    """
    x = resize(raw.unsqueeze(1).to(torch.float32), size)
    x = gcn(x)
    if augment is not None:
        if generator is None:
            raise ValueError("augmentation needs an explicit torch.Generator")
        x = warp(x, random_affine(x.shape[0], augment, generator, x.device))
    return x

"""One training epoch and one evaluation pass over a device-resident :class:`Partition`.

The model is a ``trainables.head.Classifier`` (``model.backbone`` then ``model.head``, logits
out). When the backbone is entirely frozen (variant FE) it runs without autograd, and a
partition with cached ``features`` skips it altogether.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from trainables._partition import Partition
from trainables.augment import AugmentParams, prepare_batch
from trainables.head import Classifier


@dataclass(frozen=True)
class StepSettings:
    """How batches are formed and run (speed switches included).

    Attributes:
        input_size: model input side in px.
        device: where the partitions and the model live.
        bf16: bf16 autocast (only honoured on CUDA).
        channels_last: channels-last inputs (only honoured on CUDA).
    """

    input_size: int
    device: torch.device
    bf16: bool = False
    channels_last: bool = False

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.bf16 and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def images(self, raw: torch.Tensor, augment: AugmentParams | None,
               generator: torch.Generator | None) -> torch.Tensor:
        x = prepare_batch(raw, self.input_size, augment=augment, generator=generator)
        if self.channels_last and self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def backbone_frozen(model: Classifier) -> bool:
    """Whether no backbone parameter trains (then it runs without autograd, features cacheable)."""
    return not any(p.requires_grad for p in model.backbone.parameters())


def _features(model: Classifier, x: torch.Tensor, frozen: bool) -> torch.Tensor:
    if frozen:
        with torch.no_grad():
            return model.backbone(x)
    return model.backbone(x)


def train_epoch(model: Classifier, optimizer: torch.optim.Optimizer, part: Partition, *,
                batch_size: int, settings: StepSettings, augment: AugmentParams | None,
                aug_generator: torch.Generator, shuffle_generator: torch.Generator) -> float:
    """One pass over ``part`` in a shuffled order; returns the mean training loss.

    A final batch of a single sample is skipped (BatchNorm cannot train on one sample).
    """
    model.train()
    frozen = backbone_frozen(model)
    n = len(part)
    order = torch.randperm(n, generator=shuffle_generator).to(part.labels.device)
    total = torch.zeros((), dtype=torch.float32, device=part.labels.device)  # (MPS: no f64)
    seen = 0
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        if idx.numel() < 2:
            continue
        y = part.labels[idx]
        with settings.autocast():
            if part.features is not None:
                feats = part.features[idx]
            else:
                x = settings.images(part.images[idx], augment, aug_generator)
                feats = _features(model, x, frozen)
            logits = model.head(feats)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * idx.numel()
        seen += idx.numel()
    part.passes += 1
    return float(total.item() / max(seen, 1))


@torch.no_grad()
def predict(model: Classifier, part: Partition, *, batch_size: int,
            settings: StepSettings) -> tuple[float, np.ndarray]:
    """Evaluation pass (eval mode, no augmentation): mean loss and ``(N,)`` p(malignant)."""
    model.eval()
    losses, probs = [], []
    for start in range(0, len(part), batch_size):
        sl = slice(start, start + batch_size)
        with settings.autocast():
            if part.features is not None:
                feats = part.features[sl]
            else:
                feats = model.backbone(settings.images(part.images[sl], None, None))
            logits = model.head(feats).float()
        losses.append(F.cross_entropy(logits, part.labels[sl], reduction="sum"))
        probs.append(logits.softmax(-1)[:, 1])
    part.passes += 1
    loss = float(torch.stack(losses).sum().item() / max(len(part), 1))
    return loss, torch.cat(probs).cpu().numpy().astype(np.float64)


@torch.no_grad()
def cache_features(model: Classifier, part: Partition, *, batch_size: int,
                   settings: StepSettings) -> None:
    """Compute the frozen backbone's features of ``part`` once (no augmentation).

    Only valid while the backbone is frozen with its normalisation in eval mode (variant FE).
    """
    model.backbone.eval()
    out = []
    for start in range(0, len(part), batch_size):
        with settings.autocast():
            x = settings.images(part.images[start:start + batch_size], None, None)
            out.append(model.backbone(x))
    part.features = torch.cat(out)

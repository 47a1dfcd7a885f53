"""The paper's classification head, and the model = backbone + head.

Head (paper, Figure 1): flatten -> dense -> dense -> dropout(0.5) -> softmax layer, i.e.::

    (N, C, h, w) -> pool -> (N, F) -> Linear(F, hidden) -> ReLU -> Linear(hidden, hidden)
                 -> ReLU -> Dropout(p) -> Linear(hidden, n_classes) -> (N, n_classes) logits

``pool="flatten"`` keeps the whole map (F = C·h·w; the paper keeps Inception's 8 × 8 × 2048
map, F = 131,072, so the head is tied to the input size it was built for);
``pool="avg"`` is global average pooling (F = C, any input size). The softmax itself is left to
the loss (``cross_entropy``) and to evaluation (``logits.softmax(-1)``).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from .backbones import Backbone, Block
from .backbones._base import frozen_norm_aware_train

if TYPE_CHECKING:
    from .regimes import RegimeConfig

logger = logging.getLogger(__name__)

Pool = Literal["flatten", "avg"]
POOLS: tuple[str, ...] = ("flatten", "avg")
HEAD_BLOCK = "head"


class Head(nn.Module):
    """Flatten/avg-pool -> dense -> dense -> dropout -> logits (see module docstring).

    Args:
        in_shape: (C, h, w) of the backbone's feature map.
        hidden: width of both dense layers.
        pool: ``"flatten"`` (paper) or ``"avg"`` (global average pooling).
        dropout: drop probability before the output layer (paper 0.5).
        n_classes: number of logits (2: benign, malignant).
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        *,
        hidden: int = 256,
        pool: Pool = "flatten",
        dropout: float = 0.5,
        n_classes: int = 2,
    ) -> None:
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        c, h, w = in_shape
        self.in_shape = (int(c), int(h), int(w))
        in_features = c * h * w if pool == "flatten" else c
        pooling: nn.Module = nn.Flatten()
        if pool == "avg":
            pooling = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.layers = nn.Sequential(
            OrderedDict(
                pool=pooling,
                fc1=nn.Linear(in_features, hidden),
                act1=nn.ReLU(inplace=True),
                fc2=nn.Linear(hidden, hidden),
                act2=nn.ReLU(inplace=True),
                drop=nn.Dropout(dropout),
                logits=nn.Linear(hidden, n_classes),
            )
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) -> (N, n_classes) logits."""
        return self.layers(features)


class Classifier(nn.Module):
    """Backbone + head: (N, 1|3, S, S) float32 -> (N, n_classes) logits.

    Grey input (one channel) is replicated to RGB by the backbone. ``regime`` records how the
    model was built (``trainables.regimes.build_model``), so its learning-rate plan can be
    derived from the model alone. Frozen normalisation layers stay in eval mode across
    ``.train()``.
    """

    def __init__(
        self,
        backbone: Backbone,
        head: Head,
        *,
        input_size: int,
        regime: RegimeConfig | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.input_size = input_size
        self.regime = regime

    @property
    def blocks(self) -> list[Block]:
        """The backbone's block map followed by the head (block ``"head"``)."""
        return [*self.backbone.blocks, Block(HEAD_BLOCK, self.head)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1|3, S, S) float32 -> (N, n_classes) logits (no softmax)."""
        return self.head(self.backbone(x))

    def train(self, mode: bool = True) -> Classifier:
        """As ``nn.Module.train``, but frozen normalisation layers stay in eval mode."""
        frozen_norm_aware_train(self, mode)
        return self

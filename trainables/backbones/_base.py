"""What every backbone is: an ordered block map over a feature extractor.

A :class:`Backbone` maps images to a feature map::

    (N, 1, H, W) or (N, 3, H, W) float32  ->  (N, C, h, w) float32

Grey-level input (one channel) is replicated to the three RGB channels inside
:meth:`Backbone.forward` (a zero-copy ``expand``), so callers can feed grey ROIs directly.
Inputs are expected on the scale of ImageNet-normalised tensors (about zero mean, unit
variance per image, e.g. the paper's global contrast normalisation); backbones whose weights
expect another convention convert inside (``input_transform``).

The **block map** is the ordered list of named blocks from input to output (``.blocks``);
fine-tuning regimes freeze and schedule by block, and ``trainables.inspect`` reports by block.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

logger = logging.getLogger(__name__)

#: Attribute set on a normalisation module by :func:`mark_frozen_norm`; such a module stays in
#: eval mode (running statistics neither used from the batch nor updated) across ``.train()``.
FROZEN_NORM_ATTR = "_tlstudy_frozen_norm"

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm1d/2d/3d, SyncBatchNorm, InstanceNorm, timm BNAct
    nn.GroupNorm,
    nn.LayerNorm,
)


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights are not on this machine; the message says which file and where."""


@dataclass(frozen=True, eq=False)
class Block:
    """One named block of a block map (e.g. ``Mixed_7c``); ``module`` holds its layers."""

    name: str
    module: nn.Module

    @property
    def num_params(self) -> int:
        """Number of scalar parameters (trainable or not)."""
        return sum(p.numel() for p in self.module.parameters())

    @property
    def parameterised(self) -> bool:
        """Whether the block has parameters at all (pooling blocks do not)."""
        return any(True for _ in self.module.parameters())


def is_norm(module: nn.Module) -> bool:
    """Whether ``module`` is a normalisation layer (BatchNorm & co., GroupNorm, LayerNorm)."""
    return isinstance(module, NORM_TYPES)


def mark_frozen_norm(module: nn.Module) -> None:
    """Put a normalisation module in eval mode for good (see :data:`FROZEN_NORM_ATTR`)."""
    setattr(module, FROZEN_NORM_ATTR, True)
    module.train(False)


def keep_frozen_norms_in_eval(root: nn.Module) -> None:
    """Return every marked normalisation module under ``root`` to eval mode."""
    for module in root.modules():
        if getattr(module, FROZEN_NORM_ATTR, False):
            module.training = False


def frozen_norm_aware_train(module: nn.Module, mode: bool) -> None:
    """``nn.Module.train`` followed by :func:`keep_frozen_norms_in_eval` (shared by models)."""
    nn.Module.train(module, mode)
    keep_frozen_norms_in_eval(module)


def to_rgb(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) -> (N, 3, H, W) by channel replication (a view); (N, 3, H, W) unchanged."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(
            f"expected images of shape (N, 1, H, W) or (N, 3, H, W), got {tuple(x.shape)}"
        )
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


class Backbone(nn.Module):
    """A feature extractor with a block map.

    Args:
        name: registry name, e.g. ``"inception_v3"``.
        blocks: ``(name, module)`` pairs, input to output; run in sequence by ``forward``.
        num_features: channels C of the output feature map.
        input_size: default (square) input side in pixels, e.g. 299.
        min_input_size: smallest side the architecture accepts, in pixels.
        input_transform: module applied to the 3-channel input before the first block
            (e.g. Inception's conversion to the [-1, 1] convention of its weights).
    """

    def __init__(
        self,
        name: str,
        blocks: Sequence[tuple[str, nn.Module]],
        *,
        num_features: int,
        input_size: int,
        min_input_size: int,
        input_transform: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.backbone_name = name
        self.num_features = num_features
        self.input_size = input_size
        self.min_input_size = min_input_size
        self.input_transform = input_transform if input_transform is not None else nn.Identity()
        self.body = nn.Sequential(OrderedDict(blocks))

    @property
    def blocks(self) -> list[Block]:
        """The block map, ordered from input to output."""
        return [Block(name, module) for name, module in self.body.named_children()]

    def check_input_size(self, size: int) -> None:
        """Raise ``ValueError`` if a square ``size`` px input is too small for this backbone."""
        if size < self.min_input_size:
            raise ValueError(
                f"{self.backbone_name} needs inputs of at least {self.min_input_size} px, "
                f"got {size} px; raise the ROI/input size"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1|3, H, W) float -> (N, num_features, h, w) float."""
        x = to_rgb(x)
        self.check_input_size(min(x.shape[-2:]))
        return self.body(self.input_transform(x))

    @torch.no_grad()
    def feature_shape(self, input_size: int) -> tuple[int, int, int]:
        """(C, h, w) of the feature map for a square ``input_size`` px input.

        Runs one (1, 3, input_size, input_size) zero image through the network in eval mode
        (exact for any architecture); training flags are restored afterwards.
        """
        self.check_input_size(input_size)
        flags = [(m, m.training) for m in self.modules()]
        param = next(self.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None else torch.float32
        try:
            nn.Module.train(self, False)
            out = self(torch.zeros(1, 3, input_size, input_size, device=device, dtype=dtype))
        finally:
            for module, flag in flags:
                module.training = flag
        _, c, h, w = out.shape
        return int(c), int(h), int(w)

    def train(self, mode: bool = True) -> Backbone:
        """As ``nn.Module.train``, but frozen normalisation layers stay in eval mode."""
        frozen_norm_aware_train(self, mode)
        return self

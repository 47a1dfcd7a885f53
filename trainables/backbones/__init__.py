"""Backbone registry: ``create_backbone(name)`` and the block maps of every backbone.

Adding a backbone (e.g. a ResNet) is one small file defining ``NAME``, ``INPUT_SIZE`` and
``create(*, pretrained, weights) -> Backbone``, plus one line in :data:`_MODULES`.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from . import efficientnet_lite0, inception_v3
from ._base import (
    Backbone,
    Block,
    WeightsNotFoundError,
    is_norm,
    keep_frozen_norms_in_eval,
    mark_frozen_norm,
    to_rgb,
)

__all__ = [
    "Backbone",
    "Block",
    "WeightsNotFoundError",
    "available_backbones",
    "create_backbone",
    "default_input_size",
    "is_norm",
    "keep_frozen_norms_in_eval",
    "mark_frozen_norm",
    "to_rgb",
    "weights_path",
]

_MODULES: dict[str, ModuleType] = {m.NAME: m for m in (efficientnet_lite0, inception_v3)}


def available_backbones() -> list[str]:
    """Registered backbone names, sorted."""
    return sorted(_MODULES)


def _module(name: str) -> ModuleType:
    try:
        return _MODULES[name]
    except KeyError:
        raise ValueError(
            f"unknown backbone {name!r}; available: {', '.join(available_backbones())}"
        ) from None


def default_input_size(name: str) -> int:
    """The backbone's native input side in px (299 Inception-v3, 224 EfficientNet-Lite0)."""
    return int(_module(name).INPUT_SIZE)


def create_backbone(
    name: str, *, pretrained: bool = True, weights: str | Path | None = None
) -> Backbone:
    """Build backbone ``name``; ImageNet weights if ``pretrained`` (or from ``weights``).

    Raises:
        ValueError: unknown name.
        WeightsNotFoundError: weights requested but absent (the message says how to stage them).
    """
    return _module(name).create(pretrained=pretrained, weights=weights)


def weights_path(name: str, weights: str | Path | None = None) -> Path:
    """The file ``create_backbone(name, pretrained=True, weights=weights)`` loads.

    Raises:
        ValueError: unknown name.
        WeightsNotFoundError: the file is absent (the message says how to stage it).
    """
    return Path(_module(name).weights_path(weights))

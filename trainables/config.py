"""One frozen configuration for a training trial; defaults are the paper's protocol.

Paper (Chougrad et al. 2017, §3): up to 90 epochs, batch 128, Adam for training from scratch and
SGD momentum 0.9 when fine-tuning (the optimiser and the base learning rates live in
:class:`~trainables.regimes.RegimeConfig`), learning rate divided by 10 when the validation loss
stops improving, early stopping on validation loss with patience 15, augmentation by shifts of up
to 0.25, rotations of up to 40° and horizontal flips, global contrast normalisation.

Not stated by the paper, so documented choices here:

* ``plateau_patience=10`` — Keras' ``ReduceLROnPlateau`` default (the paper used Keras).
* Early stopping restores the best weights (as Keras' ``restore_best_weights=True``) before the
  test evaluation.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from trainables.augment import AugmentParams

if TYPE_CHECKING:
    from trainables.regimes import RegimeConfig

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a trial's outcome (plus a few switches that only change speed).

    Attributes:
        regime: which parts train and at what rate (variant, base LR, λ, head…).
        backbone: registry name (``"inception_v3"`` for the paper, ``"efficientnet_lite0"`` on CPU).
        input_size: model input side in px; ``None`` = the ROI side (the paper crops 299 px ROIs
            for Inception-v3's 299 px input). ROIs of another size are resized on the device.
        pretrained: load ImageNet weights (ignored for variant RI, which is random init).
        weights: explicit weights file for the backbone, else its default location.
        max_epochs: the epoch budget (paper: 90).
        batch_size: training batch (paper: 128).
        eval_batch_size: batch for validation/test passes; ``None`` = ``batch_size``.
        plateau_factor / plateau_patience: LR × factor after that many epochs without a lower
            validation loss.
        early_stopping_patience: stop after that many epochs without a lower validation loss
            (paper: 15); ``None`` disables early stopping.
        restore_best: evaluate the test set with the best-validation-loss weights.
        augment: random per-sample transforms during training (paper: yes).
        max_shift / max_rotation_deg / hflip: their ranges (see :mod:`trainables.augment`).
        seed: seeds model init, shuffling, augmentation and dropout.
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        threads: CPU threads for torch (``torch.set_num_threads``); ``None`` leaves it alone.
        bf16: bf16 autocast (CUDA only; CPU runs stay float32 and bit-reproducible).
        channels_last: channels-last memory format (CUDA only).
        cudnn_benchmark: let cuDNN pick the fastest kernels (CUDA only).
        checkpoint_every / checkpoint_interval_s / checkpoint_at: when the checkpoint is
            written. Always at the end, when told to stop, and at the epochs in
            ``checkpoint_at`` (the study passes ASHA's rungs); otherwise every
            ``checkpoint_every`` epochs once ``checkpoint_interval_s`` seconds have passed since
            the last write. Defaults (1, 0, ()) write every epoch, so a trial resumes from any
            epoch; a time budget saves the writes where epochs are short (the paper profile on
            a GPU: a sub-second epoch).
    """

    regime: RegimeConfig
    backbone: str = "inception_v3"
    input_size: int | None = None
    pretrained: bool = True
    weights: str | None = None
    max_epochs: int = 90
    batch_size: int = 128
    eval_batch_size: int | None = None
    plateau_factor: float = 0.1
    plateau_patience: int = 10
    early_stopping_patience: int | None = 15
    restore_best: bool = True
    augment: bool = True
    max_shift: float = 0.25
    max_rotation_deg: float = 40.0
    hflip: bool = True
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    bf16: bool = True
    channels_last: bool = True
    cudnn_benchmark: bool = True
    checkpoint_every: int = 1
    checkpoint_interval_s: float = 0.0
    checkpoint_at: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"TrainConfig: {msg}")

        # Searchers may hand over numpy scalars; keep plain Python values (checkpoints load
        # with weights_only=True, which refuses numpy objects).
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.generic):
                object.__setattr__(self, f.name, value.item())
        need(not isinstance(self.regime, dict),
             "regime must be a RegimeConfig; use TrainConfig.from_dict for plain dicts")
        from trainables.backbones import available_backbones

        need(self.backbone in available_backbones(),
             f"backbone {self.backbone!r} is not registered; available: {available_backbones()}")
        need(self.input_size is None or self.input_size >= 16,
             f"input_size must be None (the ROI side) or >= 16 px, got {self.input_size}")
        need(self.max_epochs >= 1, f"max_epochs must be >= 1, got {self.max_epochs}")
        need(self.batch_size >= 2,
             f"batch_size must be >= 2 (BatchNorm needs 2 samples), got {self.batch_size}")
        need(self.eval_batch_size is None or self.eval_batch_size >= 1,
             f"eval_batch_size must be None or >= 1, got {self.eval_batch_size}")
        need(0.0 < self.plateau_factor < 1.0,
             f"plateau_factor must be in (0, 1), got {self.plateau_factor}")
        need(self.plateau_patience >= 0,
             f"plateau_patience must be >= 0 epochs, got {self.plateau_patience}")
        need(self.early_stopping_patience is None or self.early_stopping_patience >= 1,
             f"early_stopping_patience must be None (off) or >= 1 epoch, "
             f"got {self.early_stopping_patience}")
        need(bool(_DEVICE.match(self.device)),
             f"device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        need(self.checkpoint_every >= 1,
             f"checkpoint_every must be >= 1 epoch, got {self.checkpoint_every}")
        need(self.checkpoint_interval_s >= 0,
             f"checkpoint_interval_s must be >= 0 s, got {self.checkpoint_interval_s}")
        object.__setattr__(self, "checkpoint_at",
                           tuple(sorted({int(e) for e in self.checkpoint_at})))
        need(self.threads is None or self.threads >= 1,
             f"threads must be None or >= 1, got {self.threads}")
        need(isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0,
             f"seed must be a non-negative int, got {self.seed!r}")
        self.augment_params  # noqa: B018 -- validates the ranges

    @property
    def augment_params(self) -> AugmentParams:
        """The augmentation ranges as :class:`AugmentParams` (validated)."""
        try:
            return AugmentParams(self.max_shift, self.max_rotation_deg, self.hflip)
        except ValueError as e:
            raise ValueError(f"TrainConfig: {e}") from None

    @property
    def eval_batch(self) -> int:
        return self.eval_batch_size or self.batch_size

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of Python values (the regime as a dict), for logs and checkpoints."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error that names them."""
        from trainables.regimes import RegimeConfig

        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"TrainConfig: unknown keys {unknown}; known: {sorted(names)}")
        d = dict(d)
        if "regime" not in d:
            raise ValueError("TrainConfig: 'regime' is required (a RegimeConfig or its dict)")
        regime = d.pop("regime")
        if isinstance(regime, dict):
            try:
                regime = RegimeConfig(**regime)
            except TypeError as e:
                raise ValueError(f"TrainConfig: regime: {e}") from None
        return cls(regime=regime, **d)


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars turned into Python ones, recursively through dicts/lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value

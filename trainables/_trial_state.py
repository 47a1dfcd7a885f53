"""The mutable state of a running trial: what a checkpoint saves and restores.

Kept apart from the loop so that "everything the next epoch depends on" is one list, in one
place: model (the tensors training changes — parameters that train and BatchNorm statistics of
trained blocks; the rest is rebuilt from the seed and the pretrained file, whose SHA-256 the
checkpoint records), optimiser (momentum/Adam moments, current
rates), plateau scheduler, early stopping, the RNGs, and the bookkeeping (epoch, history, best
weights file, elapsed time, finished-or-not). Miss one and a resumed run silently diverges; the
resume test in ``tests/trainables/test_train.py`` checks it bit-exactly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables import checkpoint as ckpt
from trainables._early_stopping import EarlyStopping
from trainables.backbones import weights_path
from trainables.config import TrainConfig
from trainables.head import Classifier
from trainables.regimes import build_model, make_optimizer, make_plateau_scheduler

logger = logging.getLogger(__name__)


def derive_seeds(seed: int) -> dict[str, int]:
    """Independent seeds for model init/dropout, shuffling and augmentation from one seed."""
    init, shuffle, augment = np.random.SeedSequence(seed).generate_state(3, dtype=np.uint64)
    return {"init": int(init), "shuffle": int(shuffle), "augment": int(augment)}


@dataclass(eq=False)
class TrialState:
    """Model, optimiser, schedule, stopping rule, generators and progress of one trial."""

    model: Classifier
    optimizer: torch.optim.Optimizer
    scheduler: Any
    stopper: EarlyStopping
    generators: dict[str, torch.Generator]
    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    prior_s: float = 0.0
    best_file: str | None = None
    finished: str | None = None
    base: dict[str, Any] = field(default_factory=dict)   # what the frozen part is rebuilt from
    keys: list[str] = field(default_factory=list)        # the state-dict keys training changes
    best_weights: dict[str, torch.Tensor] | None = None  # in memory since the last write
    best_epoch: int = 0                                   # the epoch ``best_weights`` are of

    @classmethod
    def build(cls, config: TrainConfig, input_size: int, device: torch.device) -> TrialState:
        """Fresh state: seeds torch's global generator, then builds the model for the regime."""
        seeds = derive_seeds(config.seed)
        torch.manual_seed(seeds["init"])
        model = build_model(config.backbone, config.regime, input_size=input_size,
                            pretrained=config.pretrained, weights=config.weights)
        model.to(device)
        if config.channels_last and device.type == "cuda":
            model.to(memory_format=torch.channels_last)
        optimizer = make_optimizer(model, config.regime)
        scheduler = make_plateau_scheduler(optimizer, factor=config.plateau_factor,
                                           patience=config.plateau_patience)
        generators = {"shuffle": torch.Generator().manual_seed(seeds["shuffle"]),
                      "augment": torch.Generator(device=device).manual_seed(seeds["augment"])}
        loads_file = config.regime.parsed.pretrained and (config.pretrained
                                                          or config.weights is not None)
        base = ckpt.base_identity(
            config.backbone, weights_path(config.backbone, config.weights) if loads_file else None)
        return cls(model, optimizer, scheduler, EarlyStopping(config.early_stopping_patience),
                   generators, base=base, keys=ckpt.changing_keys(model))

    def changing_state(self) -> dict[str, torch.Tensor]:
        """The model tensors training changes (views of the live ones)."""
        state = self.model.state_dict()
        return {k: state[k] for k in self.keys}

    def payload(self, extra: dict[str, Any], elapsed_s: float, *,
                weights: bool = True) -> dict[str, Any]:
        """The checkpoint contents (``extra``: config and data identity).

        A finished trial trains no more: its checkpoint holds no optimiser, scheduler or RNG
        state, and its weights only when ``weights`` (when what follows, the final evaluation,
        uses the last weights rather than the best-weights file, or none)."""
        out = {
            **extra, "epoch": self.epoch, "base": self.base,
            "early_stopping": self.stopper.state_dict(), "history": self.history,
            "elapsed_s": elapsed_s, "best_file": self.best_file, "finished": self.finished,
        }
        if self.finished is None or weights:
            out["model"] = self.changing_state()
        if self.finished is None:
            out.update(optimizer=self.optimizer.state_dict(),
                       scheduler=self.scheduler.state_dict(), rng=ckpt.rng_state(self.generators))
        return out

    def restore(self, saved: dict[str, Any], path: Path) -> None:
        """Load a :meth:`payload` (after :meth:`build` with the same config): the frozen part
        is the freshly built one, so the checkpoint must come from the same base."""
        ckpt.check_base(saved.get("base"), self.base, path)
        if "model" in saved:
            ckpt.load_changing(self.model, saved["model"], self.keys, path)
        if "optimizer" in saved:  # absent once finished
            self.optimizer.load_state_dict(saved["optimizer"])
            self.scheduler.load_state_dict(saved["scheduler"])
            ckpt.set_rng_state(saved["rng"], self.generators)
        self.stopper.load_state_dict(saved["early_stopping"])
        self.epoch, self.history = int(saved["epoch"]), list(saved["history"])
        self.prior_s, self.best_file = float(saved["elapsed_s"]), saved["best_file"]
        self.finished = saved["finished"]

    def record_best(self, val_loss: float, keep_weights: bool) -> None:
        """Update early stopping with this epoch's loss; keep a copy of the changing weights
        in memory if they are the best (written with the next checkpoint: :meth:`save_best`)."""
        if self.stopper.update(self.epoch, val_loss) and keep_weights:
            self.best_weights = {k: v.detach().clone() for k, v in self.changing_state().items()}
            self.best_epoch = self.epoch

    def save_best(self, directory: Path) -> None:
        """Write the best weights kept in memory, if newer than the file the checkpoint names."""
        if self.best_weights is not None and (
                self.best_file != ckpt.best_file_name(self.best_epoch)):
            self.best_file = ckpt.save_best(directory, self.best_epoch, self.best_weights)

    def load_best(self, directory: Path) -> bool:
        """Put the best weights into the model (from memory, else the file the checkpoint
        names); False if there are none."""
        if self.best_weights is not None:
            ckpt.load_changing(self.model, self.best_weights, self.keys, "best weights")
        elif self.best_file is not None:
            ckpt.load_changing(self.model, ckpt.load_best(directory, self.best_file), self.keys,
                               Path(directory) / self.best_file)
        else:
            return False
        return True

"""The mutable state of a running trial: what a checkpoint saves and restores.

Kept apart from the loop so that "everything the next epoch depends on" is one list, in one
place: model (parameters and BatchNorm statistics), optimiser (momentum/Adam moments, current
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
        return cls(model, optimizer, scheduler, EarlyStopping(config.early_stopping_patience),
                   generators)

    def payload(self, extra: dict[str, Any], elapsed_s: float) -> dict[str, Any]:
        """The checkpoint contents (``extra``: config and data identity)."""
        return {
            **extra, "epoch": self.epoch, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "early_stopping": self.stopper.state_dict(),
            "rng": ckpt.rng_state(self.generators), "history": self.history,
            "elapsed_s": elapsed_s, "best_file": self.best_file, "finished": self.finished,
        }

    def restore(self, saved: dict[str, Any]) -> None:
        """Load a :meth:`payload` (after :meth:`build` with the same config)."""
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.stopper.load_state_dict(saved["early_stopping"])
        ckpt.set_rng_state(saved["rng"], self.generators)
        self.epoch, self.history = int(saved["epoch"]), list(saved["history"])
        self.prior_s, self.best_file = float(saved["elapsed_s"]), saved["best_file"]
        self.finished = saved["finished"]

    def record_best(self, directory: Path, val_loss: float, keep_weights: bool) -> None:
        """Update early stopping with this epoch's loss; write the weights if they are the best."""
        if self.stopper.update(self.epoch, val_loss) and keep_weights:
            self.best_file = ckpt.save_best(directory, self.epoch, self.model.state_dict())

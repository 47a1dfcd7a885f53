"""Early stopping on validation loss (Keras semantics: ``min_delta=0``, ``patience`` epochs)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class EarlyStopping:
    """Tracks the best validation loss; stop after ``patience`` epochs without a lower one.

    ``patience=None`` never stops but still tracks the best epoch (for restoring best weights).
    A NaN loss never counts as an improvement.
    """

    patience: int | None
    best_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0

    def update(self, epoch: int, loss: float) -> bool:
        """Record ``epoch``'s validation loss; returns whether it is a new best."""
        if loss < self.best_loss:  # False for NaN
            self.best_loss, self.best_epoch, self.bad_epochs = float(loss), epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_loss = float(state["best_loss"])
        self.best_epoch = int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])

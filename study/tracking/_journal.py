"""Exactly-once epoch history in MLflow for trials that crash, restart and fall back.

An epoch after whose report Tune may end the trial (an ASHA rung, the last epoch) is sent to
MLflow as soon as it is trained, before Tune has it (so it is in MLflow even when the worker is
torn down right after, as happens to the last trial ASHA stops); the others leave within the
trial logger's send interval (``study.tracking.TRIAL_POLICY``), or, if the worker dies first,
from this journal when the trial restarts. A crash can then leave MLflow and the checkpoint apart,
both ways, and the journal puts them together again. The journal (``epochs.jsonl``, one line
per epoch with its metrics and wall-clock time) lives in the trial's checkpoint directory, so
Tune persists it with every checkpoint. A restarted trial reads it back, drops the epochs past
the checkpoint it restarts from (they will be trained again) and asks MLflow which epochs it
holds:

* MLflow is behind (the worker died before its buffer was delivered): the missing epochs are
  sent from the journal, with their original timestamps;
* MLflow is ahead (the checkpoint of an epoch already logged could not be persisted: a full
  disk, a kill in between): the epochs trained again are not sent a second time; MLflow keeps
  the values of the attempt that was lost (identical on CPU, where training is bit-exact) and
  the run is tagged ``retrained_epochs``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

JOURNAL_FILE = "epochs.jsonl"
STEP_KEY = "epoch"  # the metric every logged epoch has; its history says what MLflow holds


class EpochJournal:
    """The reported epochs of one trial, and how far MLflow has them."""

    def __init__(self, directory: Path, logged: int = 0) -> None:
        self.path = Path(directory) / JOURNAL_FILE
        self.entries: list[dict[str, Any]] = []
        self.logged = logged  # epochs 1..logged are in MLflow

    @classmethod
    def restore(cls, directory: Path, logged: int) -> EpochJournal:
        """The journal of a restored checkpoint directory; ``logged``: the last epoch MLflow
        holds. Epochs after the checkpoint's own are forgotten (they will be trained again)."""
        journal = cls(directory, logged)
        if journal.path.is_file():
            lines = journal.path.read_text().splitlines()
            journal.entries = [json.loads(line) for line in lines if line.strip()]
        if journal.entries:
            saved = int(journal.entries[-1]["checkpoint_epoch"])
            journal.entries = [e for e in journal.entries if e["epoch"] <= saved]
            journal._rewrite()
        return journal

    def record(self, epoch: int, metrics: dict[str, float], checkpoint_epoch: int) -> None:
        """Write the epoch into the directory (before it is sent and its checkpoint reported);
        ``checkpoint_epoch``: the last epoch whose training state is saved in the directory."""
        entry = {"epoch": int(epoch), "checkpoint_epoch": int(checkpoint_epoch),
                 "timestamp_ms": int(time.time() * 1000), "metrics": metrics}
        self.entries.append(entry)
        with self.path.open("a") as f:
            f.write(json.dumps(entry) + "\n")

    def send(self, logger: Any) -> int:
        """Buffer in ``logger`` every epoch MLflow does not hold yet; returns how many."""
        due = [e for e in self.entries if e["epoch"] > self.logged]
        for e in due:  # STEP_KEY last: once MLflow has it, it has the whole epoch (batches
            # are sent in order, each at once)
            values = {k: v for k, v in e["metrics"].items() if k != STEP_KEY}
            values[STEP_KEY] = e["metrics"].get(STEP_KEY, float(e["epoch"]))
            logger.metrics(e["epoch"], values, timestamp_ms=e["timestamp_ms"])
        if due:
            self.logged = due[-1]["epoch"]
        return len(due)

    def checkpoint_epoch(self) -> int:
        """The epoch the directory's checkpoint holds, as last recorded (0: none yet)."""
        return int(self.entries[-1]["checkpoint_epoch"]) if self.entries else 0

    def retrained(self) -> tuple[int, int] | None:
        """After ``restore``: the epochs MLflow holds past the checkpoint (first, last), which
        the trial trains again without sending them twice; None when there are none."""
        saved = self.entries[-1]["epoch"] if self.entries else 0
        return (saved + 1, self.logged) if self.logged > saved else None

    def _rewrite(self) -> None:
        self.path.write_text("".join(json.dumps(e) + "\n" for e in self.entries))


def logged_epochs(client: Any, run_id: str) -> int:
    """The last epoch the run's history holds in MLflow (0 for none)."""
    steps = [m.step for m in client.get_metric_history(run_id, STEP_KEY)]
    return max(steps, default=0)

"""Exactly-once epoch history in MLflow for trials that crash, restart and fall back.

A trial's epochs reach MLflow only once the checkpoint that covers them is in Tune's storage:
an epoch whose checkpoint could not be persisted (a full disk, a killed worker) is trained
again after the restart and must not appear twice, and an epoch that was persisted but not yet
logged when the worker died must not go missing. The journal (``epochs.jsonl``, one line per
reported epoch with its metrics and wall-clock time) lives in the trial's checkpoint directory,
so Tune persists it with every checkpoint; a restarted trial reads it back, drops the epochs
past the checkpoint it restarts from, asks MLflow which epochs it holds and sends the missing
ones with their original timestamps.

One window remains: the epoch at which ASHA stops a trial is sent from the ``SystemExit``
handler, after Tune has its result; if the worker process ends before that delivery (Tune
waits 2 s for a reused worker), that last epoch is missing from the run's history (its status
is then set KILLED by the driver). The tests check the histories of pruned runs too.
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

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / JOURNAL_FILE
        self.entries: list[dict[str, Any]] = []
        self.logged = 0  # epochs 1..logged are in MLflow

    @classmethod
    def restore(cls, directory: Path, logged: int) -> EpochJournal:
        """The journal of a restored checkpoint directory; ``logged``: the last epoch MLflow
        holds. Epochs after the checkpoint's own are forgotten (they will be trained again)."""
        journal = cls(directory)
        if journal.path.is_file():
            lines = journal.path.read_text().splitlines()
            journal.entries = [json.loads(line) for line in lines if line.strip()]
        if journal.entries:
            saved = int(journal.entries[-1]["checkpoint_epoch"])
            journal.entries = [e for e in journal.entries if e["epoch"] <= saved]
            journal._rewrite()
        journal.logged = logged
        return journal

    def record(self, epoch: int, metrics: dict[str, float], checkpoint_epoch: int) -> None:
        """Write the epoch into the directory (before the checkpoint is reported)."""
        entry = {"epoch": int(epoch), "checkpoint_epoch": int(checkpoint_epoch),
                 "timestamp_ms": int(time.time() * 1000), "metrics": metrics}
        self.entries.append(entry)
        with self.path.open("a") as f:
            f.write(json.dumps(entry) + "\n")

    def send(self, logger: Any, *, upto: float) -> int:
        """Buffer in ``logger`` every epoch after ``self.logged`` up to ``upto`` (the epoch whose
        checkpoint Tune now holds; ``inf`` when the trial ends). Returns how many."""
        due = [e for e in self.entries if self.logged < e["epoch"] <= upto]
        for e in due:  # STEP_KEY last: once MLflow has it, it has the whole epoch (batches
            # are sent in order, each at once)
            values = {k: v for k, v in e["metrics"].items() if k != STEP_KEY}
            values[STEP_KEY] = e["metrics"].get(STEP_KEY, float(e["epoch"]))
            logger.metrics(e["epoch"], values, timestamp_ms=e["timestamp_ms"])
        if due:
            self.logged = due[-1]["epoch"]
        return len(due)

    def _rewrite(self) -> None:
        self.path.write_text("".join(json.dumps(e) + "\n" for e in self.entries))


def logged_epochs(client: Any, run_id: str) -> int:
    """The last epoch the run's history holds in MLflow (0 for none)."""
    steps = [m.step for m in client.get_metric_history(run_id, STEP_KEY)]
    return max(steps, default=0)

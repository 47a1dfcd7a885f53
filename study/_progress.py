"""Terminal progress of a Tune phase: trials done / running / pruned / failed and an ETA."""

from __future__ import annotations

import sys
import time
from typing import Any

from ray.tune import Callback


class Progress(Callback):
    """One status line per change: ``search   12/42 done (5 pruned) · 2 running · ETA 3m10s``."""

    def __init__(self, phase: str, total: int) -> None:
        self.phase, self.total = phase, total
        self.done = self.pruned = self.failed = self.running = 0
        self.t0 = time.monotonic()
        self._last = ""

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running += 1
        self._show()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running = max(0, self.running - 1)
        self.done += 1
        if not (trial.last_result or {}).get("trial_done"):
            self.pruned += 1
        self._show()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running = max(0, self.running - 1)
        self.done += 1
        self.failed += 1
        self._show()

    def _show(self) -> None:
        elapsed = time.monotonic() - self.t0
        eta = "-"
        if self.done:
            left = elapsed / self.done * max(0, self.total - self.done)
            eta = f"{int(left // 60)}m{int(left % 60):02d}s"
        extra = []
        if self.pruned:
            extra.append(f"{self.pruned} pruned")
        if self.failed:
            extra.append(f"{self.failed} failed")
        note = f" ({', '.join(extra)})" if extra else ""
        line = (f"{self.phase:<9}{self.done}/{self.total} done{note} · {self.running} running"
                f" · {int(elapsed)}s elapsed · ETA {eta}")
        if line != self._last:
            print(line, file=sys.stdout, flush=True)  # looked up late: Tune pickles callbacks
            self._last = line

    def close(self) -> None:
        self._show()


class PhaseProgress(Callback):
    """One Tune run, two phases: each trial's events go to its phase's :class:`Progress`
    (``trial.config["phase"]``), so search and evaluation keep their own counts and ETA."""

    def __init__(self, phases: dict[str, Progress]) -> None:
        self.phases = phases

    def _of(self, trial: Any) -> Progress:
        return self.phases[trial.config.get("phase", "search")]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._of(trial).on_trial_start(iteration, trials, trial, **info)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._of(trial).on_trial_complete(iteration, trials, trial, **info)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._of(trial).on_trial_error(iteration, trials, trial, **info)

    def close(self) -> None:
        for progress in self.phases.values():
            if progress.total:
                progress.close()

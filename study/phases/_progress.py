"""Terminal progress of a Tune phase: one header, then trials done / running / pruned / failed,
the best validation result so far and an ETA over the rest of the study.

On a terminal the status is one line rewritten in place — with search and evaluation
overlapping in one Tune run, one line holding both phases (``search … | evaluate …``), and a
phase's last status left as a line of its own once it has finished; piped (a log file, CI) it
is a plain line per finished trial. The ETA counts epochs, not trials (a pruned search trial is
short, an evaluation trial long): seconds per epoch since this phase's first trial started
(set-up time left out) × the epochs still to run in this phase and the ones after it
(``later_epochs``).
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from ray.tune import Callback


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


class Progress(Callback):
    """``search   4/6 done (1 pruned) · 2 running · 1m05s · ETA 3m10s · best val_loss 0.412``.

    ``max_epochs``: a trial's epoch budget in this phase (the estimate until one has ended);
    ``later_epochs``: the epoch budget of the phases after this one (the evaluation's, for the
    search), so that the ETA is the study's, not the phase's."""

    inline = True  # on a terminal, writes its own in-place line (not under PhaseProgress)

    def __init__(self, phase: str, total: int, *, max_epochs: int = 1,
                 later_epochs: int = 0) -> None:
        self.phase, self.total = phase, total
        self.max_epochs, self.later_epochs = max(1, max_epochs), max(0, later_epochs)
        self.done = self.pruned = self.failed = self.running = 0
        self.epochs = 0            # epochs reported by any trial of this phase
        self.epochs_done = 0       # epochs of the trials that ended
        self.best_loss = math.inf
        self.best_auc = -math.inf
        self.t0: float | None = None  # the first trial's start (set-up time left out)
        self._last = ""
        self._headed = False

    # ------------------------------------------------------------------ Tune's callbacks

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.t0 is None:
            self.t0 = time.monotonic()
        self.running += 1
        self._show(final=False)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        self.epochs += 1
        loss, auc = result.get("val_loss"), result.get("val_auc")
        if isinstance(loss, (int, float)) and math.isfinite(loss):
            self.best_loss = min(self.best_loss, float(loss))
        if isinstance(auc, (int, float)) and math.isfinite(auc):
            self.best_auc = max(self.best_auc, float(auc))
        self._show(final=False)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial)
        if not (trial.last_result or {}).get("trial_done"):
            self.pruned += 1
        self._show(final=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial)
        self.failed += 1
        self._show(final=True)

    def close(self) -> None:
        self._show(final=True)
        if _tty() and self._headed and self.inline:
            print(flush=True)  # leave the in-place line

    @property
    def finished(self) -> bool:
        return self.done >= self.total and self.running == 0

    # ------------------------------------------------------------------ the line

    def _ended(self, trial: Any) -> None:
        self.running = max(0, self.running - 1)
        self.done += 1
        self.epochs_done += int((trial.last_result or {}).get("training_iteration") or 0)

    def eta_s(self, now: float) -> float | None:
        """Seconds left in this phase and the later ones, or None before any epoch."""
        if self.t0 is None or self.epochs == 0:
            return None
        return (now - self.t0) / self.epochs * (self.epochs_left() + self.later_epochs)

    def epochs_left(self) -> float:
        """Epochs this phase has still to run (ended trials' mean, else the budget, per
        trial not ended, less the epochs running trials have reported)."""
        per_trial = self.epochs_done / self.done if self.done else self.max_epochs
        return max(0.0, (self.total - self.done) * per_trial - (self.epochs - self.epochs_done))

    def line(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        # the best result last: the part a narrow terminal cuts first
        return " · ".join([self.counts(), *self._times(now), *self._best()])

    def counts(self) -> str:
        """``search   4/6 done (1 pruned) · 2 running``."""
        return f"{self.phase:<9}{self.tally()} · {self.running} running"

    def tally(self) -> str:
        """``4/6 done (1 pruned)``."""
        extra = [f"{n} {what}" for n, what in ((self.pruned, "pruned"), (self.failed, "failed"))
                 if n]
        note = f" ({', '.join(extra)})" if extra else ""
        return f"{self.done}/{self.total} done{note}"

    def _best(self) -> list[str]:
        best = []
        if self.best_loss < math.inf:
            best.append(f"best val_loss {self.best_loss:.3f}")
        if self.best_auc > -math.inf:
            best.append(f"val_auc {self.best_auc:.3f}")
        return [", ".join(best)] if best else []

    def _times(self, now: float) -> list[str]:
        eta = self.eta_s(now)
        return [_clock(now - self.t0) if self.t0 is not None else "starting",
                f"ETA {_clock(eta)}" if eta is not None else "ETA -"]

    def _show(self, *, final: bool) -> None:
        out = sys.stdout  # looked up late: Tune pickles callbacks
        if not self._headed:  # on a terminal another phase's in-place line may be showing:
            # the header starts a line of its own (search and evaluation overlap in one run)
            lead = "\r\x1b[K" if _tty() else ""
            print(f"{lead}== {self.phase}: {self.total} trials ==", file=out, flush=True)
            self._headed = True
        line = self.line()
        if _tty():
            if self.inline:
                out.write("\r\x1b[K" + _fit(line))
                out.flush()
        elif final and self._state() != self._last:   # not again for the clock alone (close)
            print(line, file=out, flush=True)
            self._last = self._state()

    def _state(self) -> str:
        return " · ".join([self.counts(), *self._best()])


def _fit(line: str) -> str:
    """``line`` cut to the terminal's width: a wrapped line cannot be rewritten in place."""
    import shutil

    width = shutil.get_terminal_size().columns - 1
    return line if len(line) <= width else line[:max(0, width - 1)] + "…"


def _tty() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


class PhaseProgress(Callback):
    """One Tune run, two phases: each trial's events go to its phase's :class:`Progress`
    (``trial.config["phase"]``), so search and evaluation keep their own counts and ETA. On a
    terminal the phases share one in-place line, ``search … | evaluate …``; a phase that has
    finished leaves its last status as a line of its own."""

    def __init__(self, phases: dict[str, Progress]) -> None:
        self.phases = phases
        for progress in phases.values():
            progress.inline = False
        self._settled: set[str] = set()
        self._showing = False

    def _of(self, trial: Any) -> Progress:
        return self.phases[trial.config.get("phase", "search")]

    def _render(self) -> None:
        if not _tty():
            return
        out = sys.stdout
        active = []
        for name, progress in self.phases.items():
            if not progress._headed:
                continue
            if progress.total and progress.finished:
                if name not in self._settled:
                    out.write("\r\x1b[K" + _fit(progress.line()) + "\n")
                    self._settled.add(name)
                continue
            active.append(progress)
        if len(active) == 1:
            line = active[0].line()
        else:  # ``search 5/6 done | evaluate 0/2 done · 2 running · 0m20s · ETA 0m30s · best…``:
            # each phase's tally, the trials running, the time and the study's ETA, then the
            # search's best result (the part a narrow terminal cuts first)
            line = " | ".join(f"{p.phase} {p.tally()}" for p in active)
            if active:
                running = sum(p.running for p in active)
                line += " · " + " · ".join([f"{running} running", *self._times(),
                                            *active[0]._best()])
        out.write("\r\x1b[K" + _fit(line))
        out.flush()
        self._showing = bool(active)

    def _times(self) -> list[str]:
        """Time since the first trial and the study's ETA: the epochs every phase has still
        to run at the rate of all epochs so far."""
        now = time.monotonic()
        starts = [p.t0 for p in self.phases.values() if p.t0 is not None]
        if not starts:
            return ["starting", "ETA -"]
        epochs = sum(p.epochs for p in self.phases.values())
        eta = ((now - min(starts)) / epochs * sum(p.epochs_left() for p in self.phases.values())
               if epochs else None)
        return [_clock(now - min(starts)), f"ETA {_clock(eta)}" if eta is not None else "ETA -"]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._of(trial).on_trial_start(iteration, trials, trial, **info)
        self._render()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        self._of(trial).on_trial_result(iteration, trials, trial, result, **info)
        self._render()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._of(trial).on_trial_complete(iteration, trials, trial, **info)
        self._render()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._of(trial).on_trial_error(iteration, trials, trial, **info)
        self._render()

    def close(self) -> None:
        for progress in self.phases.values():
            if progress.total:
                progress.close()
        self._render()
        if _tty() and self._showing:
            print(flush=True)  # leave the in-place line (a study interrupted mid-phase)

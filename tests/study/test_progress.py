"""The status line of a phase: one header, best validation so far, an ETA over the study's
remaining epochs (set-up time left out); in place on a terminal, plain lines when piped."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from study.phases._progress import Progress


def _trial(epochs: int, done: bool = True) -> SimpleNamespace:
    return SimpleNamespace(last_result={"training_iteration": epochs, "trial_done": done})


def test_eta_counts_the_epochs_left_here_and_in_later_phases():
    p = Progress("search", 4, max_epochs=3, later_epochs=6)
    assert p.eta_s(100.0) is None  # nothing has run yet
    p.t0 = 10.0
    for _ in range(3):
        p.on_trial_result(0, [], None, {"val_loss": 0.5, "val_auc": 0.8})
    p.on_trial_complete(0, [], _trial(3))
    p.on_trial_result(0, [], None, {"val_loss": 0.4, "val_auc": 0.7})  # a second trial, 1 epoch
    # 4 epochs in 40 s: 10 s each; left: 3 trials × 3 epochs − 1 already run + 6 later = 14
    assert p.eta_s(50.0) == pytest.approx(140.0)
    line = p.line(50.0)
    assert "1/4 done" in line and "best val_loss 0.400, val_auc 0.800" in line
    assert "0m40s" in line and "ETA 2m20s" in line


def test_piped_output_is_a_header_then_one_line_per_finished_trial(capsys):
    p = Progress("evaluate", 2, max_epochs=2)
    p.on_trial_start(0, [], None)
    p.on_trial_result(0, [], None, {"val_loss": 0.3})
    p.on_trial_complete(0, [], _trial(2))
    p.on_trial_start(0, [], None)
    p.on_trial_error(0, [], _trial(0, done=False))
    p.close()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "== evaluate: 2 trials =="
    assert len(lines) == 3 and "1/2 done" in lines[1] and "2/2 done (1 failed)" in lines[2]
    assert "\r" not in "".join(lines)


def test_pruned_trials_are_counted():
    p = Progress("search", 2, max_epochs=4)
    p.on_trial_start(0, [], None)
    p.on_trial_complete(0, [], _trial(1, done=False))
    assert "1/2 done (1 pruned)" in p.line()

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


OVERLAP = """
import sys
from types import SimpleNamespace as NS
sys.path.insert(0, sys.argv[1])
from study.phases._progress import PhaseProgress, Progress

def trial(phase, epochs=2, done=True):
    return NS(config={"phase": phase},
              last_result={"training_iteration": epochs, "trial_done": done})

p = PhaseProgress({"search": Progress("search", 2, max_epochs=2, later_epochs=2),
                   "evaluate": Progress("evaluate", 1, max_epochs=2)})
s1, s2, e1 = trial("search"), trial("search"), trial("evaluate")
p.on_trial_start(0, [], s1)
p.on_trial_result(0, [], s1, {"val_loss": 0.5})
p.on_trial_complete(0, [], s1)
p.on_trial_start(0, [], s2)
p.on_trial_start(0, [], e1)           # the evaluation starts while the search still runs
p.on_trial_result(0, [], e1, {"val_loss": 0.4})
p.on_trial_result(0, [], s2, {"val_loss": 0.3})
p.on_trial_complete(0, [], s2)        # the search has finished; the evaluation goes on
p.on_trial_result(0, [], e1, {"val_loss": 0.2})
p.on_trial_complete(0, [], e1)
p.close()
print("end")
"""


def _overlap_in_pty(folder, columns: int) -> list[str]:
    """The lines ``OVERLAP`` writes to a real pseudo-terminal ``columns`` wide (a line
    rewritten in place counts once per rewrite)."""
    import os
    import sys

    from study.cluster import PROJECT_ROOT
    from tests._pty import run_in_pty

    script = folder / "overlap.py"
    script.write_text(OVERLAP)
    run = run_in_pty([sys.executable, str(script), str(PROJECT_ROOT)], cwd=folder,
                     env={**os.environ, "COLUMNS": str(columns)}, timeout_s=60)
    assert run.returncode == 0, run.text
    return [x for _, x in run.lines]


def test_on_a_terminal_overlapping_phases_share_one_line_and_each_leaves_its_last(tmp_path):
    """In a real pseudo-terminal: while both phases run, every rewrite of the line shows
    both (they no longer take turns on it); a finished phase's last status stays once."""
    lines = _overlap_in_pty(tmp_path, 200)
    assert lines.count("== search: 2 trials ==") == 1
    assert lines.count("== evaluate: 1 trials ==") == 1
    both_from = lines.index("== evaluate: 1 trials ==")
    search_end = next(i for i, x in enumerate(lines) if x.startswith("search   2/2 done"))
    for x in lines[both_from + 1:search_end]:     # both running: one line holds both
        assert x.startswith("search 1/2 done | evaluate 0/1 done · 2 running · ")
        assert "ETA" in x and len(x) <= 199, lines
    assert " | " not in lines[search_end]          # the search's last status, on its own
    assert sum(x.startswith("search   2/2 done") for x in lines) == 1
    after = lines[search_end + 1:]
    assert after and all(x.startswith("evaluate ") or x == "end" for x in after), lines
    assert sum(x.startswith("evaluate 1/1 done") for x in after) == 1


def test_on_a_narrow_terminal_the_line_is_cut_not_wrapped(tmp_path):
    """A line longer than the terminal wraps, and ``\\r`` then rewrites only its last row:
    the status is cut to the width instead."""
    lines = _overlap_in_pty(tmp_path, 60)
    assert max(len(x) for x in lines) == 59 and any(x.endswith("…") for x in lines)
    assert any(x.startswith("search 1/2 done | evaluate 0/1 done") for x in lines)


def test_piped_the_end_of_a_phase_is_not_printed_again_at_close(capsys):
    from study.phases._progress import PhaseProgress

    p = PhaseProgress({"search": Progress("search", 1, max_epochs=1),
                       "evaluate": Progress("evaluate", 1, max_epochs=1)})
    for phase in ("search", "evaluate"):
        t = SimpleNamespace(config={"phase": phase},
                            last_result={"training_iteration": 1, "trial_done": True})
        p.on_trial_start(0, [], t)
        p.on_trial_result(0, [], t, {"val_loss": 0.3})
        p.on_trial_complete(0, [], t)
    for progress in p.phases.values():
        progress.t0 -= 5.0          # later: only the clock has moved
    p.close()
    lines = capsys.readouterr().out.splitlines()
    assert [x.split(" · ")[0] for x in lines] == [
        "== search: 1 trials ==", "search   1/1 done", "== evaluate: 1 trials ==",
        "evaluate 1/1 done"], lines

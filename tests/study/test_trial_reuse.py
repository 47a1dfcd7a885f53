"""A stopped trial that takes longer than Tune's 2 s to end (its MLflow run, over a busy or
logged-in server) no longer costs the next trial its reused actor ("Trainable runner reuse
requires reset_config()"): ``study.phases._trial.allow_slow_finish``, on a real local Ray."""

from __future__ import annotations

import time

import pytest
from ray import tune

from study.phases._trial import allow_slow_finish


def _slow_to_end(config):
    if config["allow"]:
        allow_slow_finish()
    try:
        for i in range(1, 4):
            tune.report({"epoch": i})
    except SystemExit:          # stopped by Tune (a pruned trial): end its run, slowly
        time.sleep(config["end_s"])
        raise


@pytest.mark.parametrize("allow", [False, True])
def test_a_slow_ending_trial_keeps_its_actor_for_the_next(ray_local, tmp_path, allow):
    grid = tune.Tuner(
        tune.with_resources(_slow_to_end, {"cpu": 2}),      # one trial at a time on 2 CPUs
        param_space={"allow": allow, "end_s": 3.5, "i": tune.grid_search([0, 1, 2])},
        tune_config=tune.TuneConfig(reuse_actors=True),
        run_config=tune.RunConfig(name=f"reuse-{allow}", storage_path=str(tmp_path),
                                  stop={"epoch": 1}, verbose=0),
    ).fit()
    errors = [str(r.error) for r in grid if r.error is not None]
    if allow:
        assert errors == []
    else:                       # Tune's default: what the trials met before
        assert any("reset_config" in e for e in errors), errors

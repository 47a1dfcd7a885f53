"""A trial ASHA stops has its MLflow run ended at that moment, by the driver, from Tune's own
events — also when its worker never gets to end it (torn down inside ``report``)."""

from __future__ import annotations

import time

import pytest

ray = pytest.importorskip("ray")
from ray import tune  # noqa: E402

from study import tracking  # noqa: E402
from study.phases._grouped import METRIC, Group, GroupedASHA, GroupedOptunaSearcher  # noqa: E402
from study.phases._run_closer import RunCloser, end_state  # noqa: E402

MAX_EPOCHS = 6
EPOCH_S = 0.4


def _toy(config, uri, exp_id, parent):
    """A trial whose worker never ends its own run (as a worker Tune tore down)."""
    client = tracking.client_for(uri)
    run_id = tracking.start_child_run(client, exp_id, parent, phase="search", variant="A",
                                      split=0, trial=tune.get_context().get_trial_id())
    best = float("inf")
    for epoch in range(1, MAX_EPOCHS + 1):
        time.sleep(EPOCH_S)
        loss = (config["lr"] - 0.3) ** 2 * 10 + 1.0 / epoch
        best = min(best, loss)
        client.log_metric(run_id, "epoch", epoch, step=epoch)
        tune.report({"epoch": epoch, METRIC: best, "mlflow_run_id": run_id, "phase": "search",
                     "trial_done": False})
    client.set_terminated(run_id, "FINISHED")
    tune.report({"epoch": MAX_EPOCHS, METRIC: best, "mlflow_run_id": run_id,
                 "phase": "search", "trial_done": True})


def test_pruned_runs_are_killed_when_asha_stops_them_not_at_the_end(
        tmp_path, ray_local, mlflow_client, mlflow_server):
    exp_id = tracking.experiment_for(mlflow_client, f"closer-{time.time_ns()}")
    parent = tracking.start_parent_run(mlflow_client, exp_id)
    searcher = GroupedOptunaSearcher(
        [Group("A", 0, 8, lambda t: {"lr": t.suggest_float("lr", 0.0, 1.0)})],
        storage_url=f"sqlite:///{tmp_path / 'optuna.db'}", study_prefix="closer", seed=0,
        max_epochs=MAX_EPOCHS)
    closer = RunCloser(mlflow_server, {"search": MAX_EPOCHS})
    tuner = tune.Tuner(
        tune.with_parameters(_toy, uri=mlflow_server, exp_id=exp_id, parent=parent),
        tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=8, metric=METRIC, mode="min",
            max_concurrent_trials=2, reuse_actors=False,
            scheduler=GroupedASHA(max_t=MAX_EPOCHS, grace_period=1, reduction_factor=2)),
        run_config=tune.RunConfig(name="closer", storage_path=str(tmp_path / "ray"), verbose=0,
                                  callbacks=[closer]))
    grid = tuner.fit()
    fit_end_ms = time.time() * 1000
    closer.drain()
    assert not grid.errors

    runs = tracking.child_runs(mlflow_client, exp_id, parent)
    assert len(runs) == 8 and all(r.info.status != "RUNNING" for r in runs)
    pruned = [r for r in runs if r.info.status == "KILLED"]
    assert pruned, "ASHA stopped no trial: nothing was tested"
    assert set(closer.ended) == {r.info.run_id for r in pruned}  # the driver ended them
    for run in pruned:
        assert run.data.tags["stop_reason"] == "pruned"
        last = max(m.timestamp for m in mlflow_client.get_metric_history(run.info.run_id,
                                                                          "epoch"))
        # ended within seconds of its last epoch (the pruning decision), not when Tune ended
        assert run.info.end_time - last < 5_000, (run.info.end_time - last)
    first_pruned_end = min(r.info.end_time for r in pruned)
    assert fit_end_ms - first_pruned_end > 2 * EPOCH_S * 1000  # trials went on long after
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert finished and not set(closer.ended) & {r.info.run_id for r in finished}


@pytest.mark.parametrize("result, error, expected", [
    ({"epoch": 2, "trial_done": False}, False, ("KILLED", "pruned")),
    ({"epoch": 6, "trial_done": False}, False, ("FINISHED", "budget")),
    ({"epoch": 3, "trial_done": True}, False, ("FINISHED", None)),
    ({"epoch": 3}, True, ("FAILED", None)),
])
def test_end_state(result, error, expected):
    assert end_state(result, 6, error) == expected

"""One Tune run, many groups: Optuna per group (RDB storage), ASHA per group, pruned = PRUNED."""

from __future__ import annotations

import optuna
import pytest

ray = pytest.importorskip("ray")
from ray import tune  # noqa: E402

from study.phases._grouped import METRIC, Group, GroupedASHA, GroupedOptunaSearcher  # noqa: E402

MAX_EPOCHS = 4


def toy_trial(config):
    """Loss falls with epochs; group 'B' is far worse than 'A' at every epoch."""
    offset = 0.0 if config["variant"] == "A" else 100.0
    best = float("inf")
    for epoch in range(1, MAX_EPOCHS + 1):
        loss = offset + (config["lr"] - 0.3) ** 2 * 10 + 1.0 / epoch
        best = min(best, loss)
        tune.report({"epoch": epoch, "val_loss": loss, METRIC: best,
                     "trial_done": epoch == MAX_EPOCHS})


def _suggest(trial):
    return {"lr": trial.suggest_float("lr", 0.0, 1.0)}


def test_groups_search_and_prune_independently(tmp_path, ray_local):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    groups = [Group("A", 0, 8, _suggest), Group("B", 0, 8, _suggest)]
    searcher = GroupedOptunaSearcher(groups, storage_url=storage, study_prefix="toy", seed=0,
                                     max_epochs=MAX_EPOCHS)
    scheduler = GroupedASHA(max_t=MAX_EPOCHS, grace_period=1, reduction_factor=2)
    tuner = tune.Tuner(
        toy_trial,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=16,
                                    metric=METRIC, mode="min", max_concurrent_trials=2,
                                    reuse_actors=True),
        run_config=tune.RunConfig(name="toy", storage_path=str(tmp_path / "ray"), verbose=0),
    )
    results = tuner.fit()
    assert len(results) == 16 and not results.errors
    per_group = {}
    for key in ("A/split0", "B/split0"):
        study = optuna.load_study(study_name=f"toy/{key}", storage=storage)
        states = [t.state for t in study.trials]
        per_group[key] = states
        assert len(states) == 8
        assert optuna.trial.TrialState.RUNNING not in states
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
        # ASHA stopped some trials of each group, and Optuna knows them as pruned
        assert pruned and complete
        for t in pruned:
            assert max(t.intermediate_values) < MAX_EPOCHS
    # group B, far worse than A everywhere, still has complete trials: it competed only with B
    assert sum(s == optuna.trial.TrialState.COMPLETE for s in per_group["B/split0"]) >= 1
    # a best configuration per group, read back from the storage
    best_a = searcher.best_params("A/split0")
    assert best_a is not None and 0.0 <= best_a["lr"] <= 1.0

"""Which configuration each (variant, split) evaluates: nested vs shared search."""

from __future__ import annotations

import optuna

from search_spaces import load_spec, spec_from_dict
from study.phases._grouped import GroupedOptunaSearcher
from study.phases._run import best_configs, search_groups


def _spec(mode: str):
    data = load_spec("smoke").to_dict()
    data["splits"]["n_splits"] = 2
    data["search"]["mode"] = mode
    return spec_from_dict(data)


def _fill(searcher: GroupedOptunaSearcher, key: str, values: list[tuple[float, float]]):
    """Tell the group's study COMPLETE trials with (base_lr, objective)."""
    study = searcher.study(key)
    dist = {"base_lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    for lr, loss in values:
        study.enqueue_trial({"base_lr": lr})
        study.tell(study.ask(dist), loss)


def test_nested_search_evaluates_each_splits_own_best(tmp_path):
    spec = _spec("nested")
    assert {(g.variant, g.split) for g in search_groups(spec)} == {
        ("FE", 0), ("FE", 1), ("FTED", 0), ("FTED", 1)}
    searcher = GroupedOptunaSearcher(search_groups(spec), storage_url=f"sqlite:///{tmp_path}/o.db",
                                     study_prefix="t", seed=0, max_epochs=2)
    _fill(searcher, "FE/split0", [(1e-3, 0.5), (2e-3, 0.4)])
    _fill(searcher, "FE/split1", [(3e-3, 0.3), (4e-3, 0.6)])
    configs = best_configs(spec, searcher)
    assert configs[("FE", 0)] == {"base_lr": 2e-3} and configs[("FE", 1)] == {"base_lr": 3e-3}
    # FTED never completed a trial: not evaluated (and the study says so), not guessed
    assert ("FTED", 0) not in configs and ("FTED", 1) not in configs


def test_shared_search_reuses_the_shared_splits_best_everywhere(tmp_path):
    spec = _spec("shared")
    assert {(g.variant, g.split) for g in search_groups(spec)} == {("FE", 0), ("FTED", 0)}
    searcher = GroupedOptunaSearcher(search_groups(spec), storage_url=f"sqlite:///{tmp_path}/o.db",
                                     study_prefix="t", seed=0, max_epochs=2)
    _fill(searcher, "FE/split0", [(1e-3, 0.5), (2e-3, 0.4)])
    configs = best_configs(spec, searcher)
    assert configs[("FE", 0)] == configs[("FE", 1)] == {"base_lr": 2e-3}

"""One Tune run for search and evaluation: a split's evaluation is handed out as soon as its
own search has ended, never before, and exactly once."""

from __future__ import annotations

from ray.tune.search import Searcher

from search_spaces import load_spec, spec_from_dict
from study.phases._grouped import METRIC, GroupedOptunaSearcher
from study.phases._overlap import StudySearcher
from study.phases._run import evaluation_plan, search_groups


def _spec(mode: str = "nested", variants=("FE", "FTED", "RI")):
    data = load_spec("smoke").to_dict()
    data["splits"]["n_splits"] = 2
    data["search"]["mode"] = mode
    data["search"]["trials"] = 2
    data["variants"] = list(variants)
    data["compare"] = {"reference": variants[-1]}
    # RI: nothing to search (its base_lr fixed)
    data["search"]["params"]["base_lr"] = [
        {"role": "scientific", "low": 1e-4, "high": 1e-2, "log": True, "variants": ["FE", "FTED"]},
        {"role": "fixed", "value": 1e-3, "variants": ["RI"]}]
    return spec_from_dict(data)


def _searcher(spec, tmp_path, seeds: int = 1) -> StudySearcher:
    groups = search_groups(spec)
    grouped = GroupedOptunaSearcher(groups, storage_url=f"sqlite:///{tmp_path / 'o.db'}",
                                    study_prefix="t", seed=0, max_epochs=2)
    return StudySearcher(grouped, groups, evaluation_plan(spec), lambda v, k, values: [
        {"variant": v, "split": k, "seed": s, **values} for s in range(seeds)])


def _finish(searcher: StudySearcher, trial_id: str, loss: float = 0.5) -> None:
    searcher.on_trial_complete(trial_id, {METRIC: loss, "epoch": 2, "trial_done": True})


def test_evaluations_follow_their_own_search_and_nothing_else(tmp_path):
    spec = _spec()
    s = _searcher(spec, tmp_path)
    handed: dict[str, dict] = {}
    n = 0

    def ask() -> dict | str | None:
        nonlocal n
        n += 1
        config = s.suggest(f"t{n}")
        if isinstance(config, dict):
            handed[f"t{n}"] = config
        return config

    first = [ask() for _ in range(3)]
    # RI has nothing to search: its two evaluations go out at once, before any search trial
    assert [c["phase"] for c in first[:2]] == ["evaluate", "evaluate"]
    assert {(c["variant"], c["split"]) for c in first[:2]} == {("RI", 0), ("RI", 1)}
    assert first[2]["phase"] == "search"
    while True:  # hand out every search trial
        c = ask()
        if not isinstance(c, dict):
            break
        assert c["phase"] == "search"
    assert c is None  # evaluations still wait for running searches: not FINISHED yet
    searches = {t: c for t, c in handed.items() if c["phase"] == "search"}
    assert len(searches) == 2 * 2 * 2  # 2 variants × 2 splits × 2 trials
    fe0 = [t for t, c in searches.items() if (c["variant"], c["split"]) == ("FE", 0)]
    _finish(s, fe0[0], 0.4)
    assert ask() is None  # FE/split0 has a trial still running
    _finish(s, fe0[1], 0.3)
    ev = ask()
    assert (ev["phase"], ev["variant"], ev["split"]) == ("evaluate", "FE", 0)
    assert ev["base_lr"] == next(handed[t]["base_lr"] for t in fe0[1:])  # the split's best
    assert ask() is None
    for t in searches:
        if t not in fe0:
            _finish(s, t)
    rest = [ask() for _ in range(3)]
    assert {(c["variant"], c["split"]) for c in rest} == {("FE", 1), ("FTED", 0), ("FTED", 1)}
    assert ask() == Searcher.FINISHED


def test_a_search_without_a_completed_trial_is_not_evaluated_and_seeds_multiply(tmp_path):
    spec = _spec(variants=("FE",))
    s = _searcher(spec, tmp_path, seeds=3)
    ids = [f"t{i}" for i in range(4)]
    configs = [s.suggest(t) for t in ids]
    assert all(c["phase"] == "search" for c in configs)
    for t, c in zip(ids, configs, strict=True):
        if c["split"] == 0:
            s.on_trial_complete(t, error=True)  # every split-0 trial crashed
        else:
            _finish(s, t)
    evaluations = [s.suggest(f"e{i}") for i in range(3)]
    assert [(c["split"], c["seed"]) for c in evaluations] == [(1, 0), (1, 1), (1, 2)]
    assert s.skipped == [("FE", 0)]
    assert s.suggest("e3") == Searcher.FINISHED


def test_shared_search_releases_every_split_when_the_shared_split_ends(tmp_path):
    spec = _spec("shared", variants=("FE",))
    s = _searcher(spec, tmp_path)
    ids = ["a", "b"]
    for t in ids:
        assert s.suggest(t)["split"] == 0
    assert s.suggest("c") is None
    for t in ids:
        _finish(s, t)
    got = [s.suggest(t) for t in ("d", "e")]
    assert {(c["phase"], c["split"]) for c in got} == {("evaluate", 0), ("evaluate", 1)}
    assert got[0]["base_lr"] == got[1]["base_lr"]


def test_saved_state_restores_what_was_handed_out(tmp_path):
    spec = _spec(variants=("RI",))
    s = _searcher(spec, tmp_path)
    first = s.suggest("x")
    s.save(str(tmp_path / "state.pkl"))
    again = _searcher(spec, tmp_path)
    again.restore(str(tmp_path / "state.pkl"))
    second = again.suggest("y")
    assert {(first["split"]), second["split"]} == {0, 1}  # not handed out twice
    assert again.suggest("z") == Searcher.FINISHED


def test_a_trial_told_after_tunes_last_save_reports_again_without_error(tmp_path):
    """The driver dies after Optuna was told a trial's end (ASHA stopped it at epoch 1) but
    before Tune saved: resumed, Tune runs that trial again from its checkpoint and it reports
    an epoch Optuna never had. Optuna keeps the end it was told; the report is dropped, not
    raised (a raise ended the resume: found by the PostgreSQL-restart fault test)."""
    import optuna

    spec = _spec(variants=("FE",))
    s = _searcher(spec, tmp_path)
    config = s.suggest("a")
    assert config["phase"] == "search"
    s.on_trial_result("a", {METRIC: 0.6, "epoch": 1})
    s.save(str(tmp_path / "state.pkl"))                    # Tune's last save: "a" running
    s.on_trial_complete("a", {METRIC: 0.6, "epoch": 1})    # pruned, told; the driver dies
    again = _searcher(spec, tmp_path)
    again.restore(str(tmp_path / "state.pkl"))
    again.on_trial_result("a", {METRIC: 0.5, "epoch": 2})   # the rerun goes further
    _finish(again, "a", loss=0.5)
    study = again.grouped.study(next(iter(again.grouped._groups)))
    (trial,) = [t for t in study.trials if t.number == config["optuna_trial"]]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.intermediate_values == {1: 0.6}          # the rerun's epoch not recorded

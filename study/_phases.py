"""The two Tune phases of a study: nested search, then evaluation of each split's best."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from ray import tune

from search_spaces import ParamSpec, StudySpec
from study import _trial
from study._grouped import METRIC, MODE, Group, GroupedASHA, GroupedOptunaSearcher
from study._progress import Progress

log = logging.getLogger(__name__)


def suggest_fn(params: list[ParamSpec]) -> Callable[[optuna.Trial], dict[str, Any]]:
    """Optuna suggestions for a variant's searched hyperparameters."""
    def suggest(trial: optuna.Trial) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for p in params:
            if p.kind == "float":
                out[p.name] = trial.suggest_float(p.name, float(p.low), float(p.high), log=p.log)
            elif p.kind == "int":
                out[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)
            else:
                out[p.name] = trial.suggest_categorical(p.name, list(p.choices or ()))
        return out
    return suggest


def _trainable(ctx: _trial.TrialContext) -> Any:
    r = ctx.spec.resources
    return tune.with_resources(tune.with_parameters(_trial.run, ctx=ctx),
                               {"cpu": r.cpus, "gpu": r.gpus})


def settle(ctx: _trial.TrialContext, timeout_s: float = 30.0) -> None:
    """Wait until the phase's trials have ended their MLflow runs.

    Tune can return while a stopped trial's actor is still ending its run (its stop arrives
    as ``SystemExit`` inside ``report``); without this wait the driver would find the run
    RUNNING and end it as KILLED itself."""
    from study import tracking

    client = tracking.client_for(ctx.tracking_uri)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not tracking.child_runs(client, ctx.experiment_id, ctx.parent_run_id,
                                   status="RUNNING", phase=ctx.phase):
            break
        time.sleep(0.5)
    _trial.sweep_scratch()  # what ended workers left in this machine's temp folder


def _concurrency(spec: StudySpec) -> int:
    """Trials that fit the cluster at once (Tune allows one pending trial per custom searcher
    unless told)."""
    import ray

    have = ray.cluster_resources()
    r = spec.resources
    fits = [have.get("CPU", 0.0) / r.cpus] if r.cpus > 0 else []
    if r.gpus > 0:
        fits.append(have.get("GPU", 0.0) / r.gpus)
    return max(1, int(min(fits))) if fits else 1


def search_groups(spec: StudySpec, trials: int | None = None) -> list[Group]:
    """One group per searched (variant, split); variants with nothing to search get none.
    ``trials``: the budget per group (default the space's ``search.trials``)."""
    return [Group(v, k, trials or spec.search.trials, suggest_fn(spec.params_for(v)))
            for v, k in spec.searches() if spec.params_for(v)]


def run_search(spec: StudySpec, ctx: _trial.TrialContext, study_dir: Path, *,
               resume: bool, storage: str | None = None, study_prefix: str | None = None,
               warm_start: dict[str, list[dict[str, Any]]] | None = None,
               seed_salt: str = "", trials: int | None = None) -> GroupedOptunaSearcher:
    """Search every group in one Tune run. ``study_prefix``: the Optuna study names'
    prefix (default the study's name; a re-study gets its own); ``warm_start``: group key ->
    configurations to evaluate first (the previous execution's best); ``seed_salt``: mixed
    into the TPE seeds (a re-study: the previous run's id, so it proposes other points);
    ``trials``: a re-study's smaller budget per group."""
    groups = search_groups(spec, trials)
    searcher = GroupedOptunaSearcher(
        groups, storage_url=f"sqlite:///{(study_dir / 'optuna.db').resolve()}",
        study_prefix=study_prefix or spec.name, seed=spec.search.seed,
        max_epochs=spec.search.asha.max_epochs, warm_start=warm_start,
        study_attrs={"mlflow_parent_run_id": ctx.parent_run_id,  # optuna-dashboard's links
                     "mlflow_tracking_uri": ctx.tracking_uri,
                     "mlflow_experiment_id": ctx.experiment_id}, seed_salt=seed_salt)
    if not groups:
        return searcher
    asha = spec.search.asha
    scheduler = GroupedASHA(max_t=asha.max_epochs, grace_period=asha.grace_period,
                            reduction_factor=asha.reduction_factor)
    total = sum(max(0, g.budget - searcher.started(g.key)) for g in groups)
    path = storage or str((study_dir / "ray").resolve())  # a folder or a URI (s3://...)
    name = "search"
    progress = Progress("search", total, max_epochs=asha.max_epochs,
                        later_epochs=len(spec.variants) * spec.splits.n_splits
                        * spec.evaluation.max_epochs)
    if resume and tune.Tuner.can_restore(f"{path}/{name}"):
        tuner = tune.Tuner.restore(f"{path}/{name}", trainable=_trainable(ctx),
                                   resume_errored=True)
        progress.close = lambda: None  # type: ignore[method-assign]  # restored: its own
    elif total == 0:
        return searcher
    else:
        tuner = tune.Tuner(
            _trainable(ctx),
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                        num_samples=total, metric=METRIC, mode=MODE,
                                        reuse_actors=True,
                                        max_concurrent_trials=_concurrency(spec)),
            run_config=_run_config(name, path, progress))
    tuner.fit()
    progress.close()
    settle(ctx)
    unfinished = [g.key for g in groups if searcher.unfinished(g.key, g.budget)]
    if unfinished:  # Tune returns normally after Ctrl-C: the searches did not all run out
        raise KeyboardInterrupt(f"search interrupted ({', '.join(unfinished)} unfinished)")
    _drop_checkpoints(path, name)
    return searcher


def _run_config(name: str, path: str, progress: Progress) -> tune.RunConfig:
    """One phase's Tune run: a trial restarts up to twice from its checkpoint; Tune keeps only
    a trial's latest checkpoint (the one it restarts from: every epoch's would take
    ``epochs × checkpoint size`` per trial, 11 GB for quick.yaml)."""
    return tune.RunConfig(name=name, storage_path=path, verbose=0, callbacks=[progress],
                          failure_config=tune.FailureConfig(max_failures=2),
                          checkpoint_config=tune.CheckpointConfig(num_to_keep=1))


def _drop_checkpoints(path: str, name: str) -> None:
    """After a search that ran out: its trials' checkpoints serve nothing (results are in
    MLflow, the evaluation trains afresh); Tune's experiment state stays. Local storage only;
    an evaluation trial's checkpoint (holding the tested weights) is kept."""
    if "://" in path:
        return
    freed = 0
    for folder in Path(path, name).glob("*/checkpoint_*"):
        freed += sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        shutil.rmtree(folder, ignore_errors=True)
    if freed:
        log.info("removed the search trials' checkpoints (%.1f GB)", freed / 1e9)


def best_configs(spec: StudySpec, searcher: GroupedOptunaSearcher) -> dict[tuple[str, int], dict]:
    """Each (variant, split)'s configuration to evaluate: its search's best (nested), the
    shared split's best (shared), or the fixed values alone when nothing is searched."""
    out: dict[tuple[str, int], dict] = {}
    for v in spec.variants:
        for k in range(spec.splits.n_splits):
            if not spec.params_for(v):
                out[(v, k)] = {}
                continue
            source = k if spec.search.mode == "nested" else spec.search.shared_split
            best = searcher.best_params(f"{v}/split{source}")
            if best is None:
                log.warning("%s split %d: no search trial completed; not evaluated", v, k)
                continue
            out[(v, k)] = best
    return out


def run_evaluation(spec: StudySpec, ctx: _trial.TrialContext, study_dir: Path,
                   configs: dict[tuple[str, int], dict], *, resume: bool,
                   storage: str | None = None) -> list[dict]:
    """Train each split's best configuration and test it once.

    It trains on the split's inner-train part with early stopping (and the LR plateau) on the
    inner-validation part — the part that decides when to stop cannot also be trained on —
    then evaluates the best-validation weights on the split's test part, once."""
    items = [{"variant": v, "split": k, **values} for (v, k), values in configs.items()]
    path = storage or str((study_dir / "ray").resolve())  # a folder or a URI (s3://...)
    name = "evaluate"
    progress = Progress("evaluate", len(items), max_epochs=spec.evaluation.max_epochs)
    trainable = _trainable(ctx)
    if resume and tune.Tuner.can_restore(f"{path}/{name}"):
        tuner = tune.Tuner.restore(f"{path}/{name}", trainable=trainable, resume_errored=True)
        progress.close = lambda: None  # type: ignore[method-assign]  # restored: its own
    else:
        tuner = tune.Tuner(
            trainable, param_space={"cfg": tune.grid_search(items)},
            tune_config=tune.TuneConfig(reuse_actors=True),
            run_config=_run_config(name, path, progress))
    grid = tuner.fit()
    progress.close()
    settle(ctx)
    if grid.num_terminated + grid.num_errors < len(grid):  # Tune returns normally on Ctrl-C
        raise KeyboardInterrupt("evaluation interrupted")
    rows = []
    for result in grid:
        if result.error is not None or not result.metrics.get("trial_done"):
            log.warning("evaluation trial failed: %s", result.error)
            continue
        cfg = result.config["cfg"]
        rows.append({"variant": cfg["variant"], "split": cfg["split"], **result.metrics})
    return rows

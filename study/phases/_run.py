"""A study's trials in one Tune run: nested search, and each split's best evaluated as soon as
its search has ended (:mod:`study.phases._overlap`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from ray import tune

from search_spaces import ParamSpec, StudySpec
from study.phases import _trial
from study.phases._grouped import METRIC, MODE, Group, GroupedASHA, GroupedOptunaSearcher
from study.phases._overlap import EvalItems, StudySearcher
from study.phases._progress import PhaseProgress, Progress
from study.phases._run_closer import RunCloser
from study.tracking._postgres import optuna_storage_url

log = logging.getLogger(__name__)
RUN_NAME = "study"  # Tune's run (under the storage path): search and evaluation trials


class TrialsFailed(RuntimeError):
    """A phase could not finish because trials failed (not an interruption): the message names
    how many and the first one's error."""


def _failed(phase: str, errors: list) -> TrialsFailed:
    first = str(errors[0]).strip().splitlines()
    reason = " / ".join(line.strip() for line in first[-3:] if line.strip())[:600]
    return TrialsFailed(f"{phase}: {len(errors)} trial(s) failed after their retries; the "
                        f"last lines of the first error: {reason}")


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


def settle(timeout_s: float = 10.0) -> None:
    """After the Tune run: what its ended workers left in this machine's temp folder goes.

    Tune has ended every trial actor when ``fit`` returns, but their processes may take a
    moment to exit; a folder is removed only once its process is gone, so this waits for them
    (bounded: a live trial of another study on this machine keeps its folder). Runs are not
    waited for: they are ended as their trials end
    (:class:`~study.phases._run_closer.RunCloser`)."""
    deadline = time.monotonic() + timeout_s
    while _trial.live_scratch() and time.monotonic() < deadline:
        time.sleep(0.2)
    _trial.sweep_scratch()


def search_groups(spec: StudySpec, trials: int | None = None) -> list[Group]:
    """One group per searched (variant, split); variants with nothing to search get none.
    ``trials``: the budget per group (default the space's ``search.trials``)."""
    return [Group(v, k, trials or spec.search.trials, suggest_fn(spec.params_for(v)))
            for v, k in spec.searches() if spec.params_for(v)]


def evaluation_plan(spec: StudySpec) -> dict[tuple[str, int], str | None]:
    """Each (variant, split) to evaluate, with the search group whose best configuration it
    takes: its own (nested), the shared split's (shared), or ``None`` (nothing searched)."""
    plan: dict[tuple[str, int], str | None] = {}
    for v in spec.variants:
        for k in range(spec.splits.total):
            if not spec.params_for(v):
                plan[(v, k)] = None
            else:
                source = k if spec.search.mode == "nested" else spec.search.shared_split
                plan[(v, k)] = f"{v}/split{source}"
    return plan


def run_phases(spec: StudySpec, ctx: _trial.TrialContext, study_dir: Path, *, resume: bool,
               storage: str | None = None, study_prefix: str | None = None,
               warm_start: dict[str, list[dict[str, Any]]] | None = None,
               seed_salt: str = "", trials: int | None = None, slots: int = 1,
               items: EvalItems | None = None) -> tuple[GroupedOptunaSearcher, list[dict]]:
    """Search every group and evaluate each (variant, split) in one Tune run, an evaluation
    starting as soon as its search has ended (:mod:`study.phases._overlap`). Returns the search's
    Optuna studies and the evaluation rows (variant, split, final metrics).

    Evaluation: each split's best configuration is trained on the split's inner-train part
    with early stopping (and the LR plateau) on the inner-validation part — the part that
    decides when to stop cannot also be trained on — then its best-validation weights are
    tested on the split's test part, once.

    ``study_prefix``: the Optuna study names' prefix (default the study's name; a re-study
    gets its own); ``warm_start``: group key -> configurations to evaluate first (the previous
    execution's best); ``seed_salt``: mixed into the TPE seeds (a re-study: the previous run's
    id, so it proposes other points); ``trials``: a re-study's smaller budget per group;
    ``slots``: trials at once (what the cluster can reach, :mod:`study.phases._slots`); ``items``:
    the evaluation trials of a chosen configuration (default: one per training seed,
    :func:`seed_items`)."""
    items = items or seed_items(spec)
    groups = search_groups(spec, trials)
    grouped = GroupedOptunaSearcher(
        groups, storage_url=optuna_storage_url(study_dir),
        study_prefix=study_prefix or spec.name, seed=spec.search.seed,
        max_epochs=spec.search.asha.max_epochs, warm_start=warm_start,
        study_attrs={"mlflow_parent_run_id": ctx.parent_run_id,  # optuna-dashboard's links
                     "mlflow_tracking_uri": ctx.tracking_uri,
                     "mlflow_experiment_id": ctx.experiment_id}, seed_salt=seed_salt)
    plan = evaluation_plan(spec)
    searcher = StudySearcher(grouped, groups, plan, items)
    asha = spec.search.asha
    scheduler = GroupedASHA(max_t=asha.max_epochs, grace_period=asha.grace_period,
                            reduction_factor=asha.reduction_factor)
    searches = sum(max(0, g.budget - grouped.started(g.key)) for g in groups)
    evaluations = sum(len(items(v, k, {})) for v, k in plan)
    path = storage or str((study_dir / "ray").resolve())  # a folder or a URI (s3://...)
    progress = PhaseProgress({
        "search": Progress("search", searches, max_epochs=asha.max_epochs,
                           later_epochs=evaluations * spec.evaluation.max_epochs),
        "evaluate": Progress("evaluate", evaluations, max_epochs=spec.evaluation.max_epochs)})
    closer = _closer(spec, ctx)
    if resume and tune.Tuner.can_restore(f"{path}/{RUN_NAME}"):
        tuner = tune.Tuner.restore(f"{path}/{RUN_NAME}", trainable=_trainable(ctx),
                                   resume_errored=True)
        progress.close = lambda: None  # type: ignore[method-assign]  # restored: its own
    else:
        tuner = tune.Tuner(
            _trainable(ctx),
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                        num_samples=searches + evaluations, metric=METRIC,
                                        mode=MODE, reuse_actors=True,
                                        max_concurrent_trials=slots),
            run_config=_run_config(RUN_NAME, path, progress, closer))
    grid = tuner.fit()
    closer.drain()
    progress.close()
    settle()
    unfinished = [g.key for g in groups if grouped.unfinished(g.key, g.budget)]
    if unfinished and grid.errors:  # failed trials, not Ctrl-C: say why
        raise _failed("search", grid.errors)
    if unfinished:  # Tune returns normally after Ctrl-C: the searches did not all run out
        raise KeyboardInterrupt(f"search interrupted ({', '.join(unfinished)} unfinished)")
    evaluated = [r for r in grid if (r.config or {}).get("phase") == "evaluate"]
    chosen = best_configs(spec, grouped, warn=False)  # the searcher warned as it went
    skipped = [vk for vk in plan if vk not in chosen]
    expected = evaluations - sum(len(items(v, k, {})) for v, k in skipped)
    cut = len(evaluated) < expected or any(r.error is None and not r.metrics.get("trial_done")
                                           for r in evaluated)
    if cut and grid.errors:  # failed trials, not Ctrl-C: say why
        raise _failed("evaluate", grid.errors)
    if cut:
        raise KeyboardInterrupt("evaluation interrupted")  # Tune returns normally on Ctrl-C
    _drop_checkpoints([r.path for r in grid if (r.config or {}).get("phase") == "search"])
    rows = []
    for result in evaluated:
        if result.error is not None or not result.metrics.get("trial_done"):
            log.warning("evaluation trial failed: %s", result.error)
            continue
        cfg = result.config
        rows.append({"variant": cfg["variant"], "split": cfg["split"], **result.metrics})
    return grouped, rows


def _closer(spec: StudySpec, ctx: _trial.TrialContext) -> RunCloser:
    return RunCloser(ctx.tracking_uri, {"search": spec.search.asha.max_epochs,
                                        "evaluate": spec.evaluation.max_epochs})


def _run_config(name: str, path: str, progress: Any, closer: RunCloser) -> tune.RunConfig:
    """The study's Tune run: a trial restarts up to twice from its checkpoint; Tune keeps only
    a trial's latest checkpoint (the one it restarts from)."""
    return tune.RunConfig(name=name, storage_path=path, verbose=0, callbacks=[closer, progress],
                          failure_config=tune.FailureConfig(max_failures=2),
                          checkpoint_config=tune.CheckpointConfig(num_to_keep=1))


def _drop_checkpoints(trial_paths: list[str]) -> None:
    """After the study: the search trials' checkpoints serve nothing (results are in MLflow,
    the evaluation trained afresh); Tune's experiment state stays. A folder or a URI Tune's
    storage reads (``s3://``, ``gs://``, ``file://``: pyarrow's filesystems, as Tune's); an
    evaluation trial's checkpoint (holding the tested weights) is kept."""
    from pyarrow import fs as pafs

    freed = 0
    for path in trial_paths:
        try:
            filesystem, root = pafs.FileSystem.from_uri(str(path)) if "://" in str(path) \
                else (pafs.LocalFileSystem(), str(Path(path).resolve()))
            found = filesystem.get_file_info(pafs.FileSelector(root, allow_not_found=True))
            for folder in found:
                if folder.type != pafs.FileType.Directory or \
                        not folder.base_name.startswith("checkpoint_"):
                    continue
                inside = filesystem.get_file_info(pafs.FileSelector(folder.path, recursive=True))
                freed += sum(f.size or 0 for f in inside if f.type == pafs.FileType.File)
                filesystem.delete_dir(folder.path)
        except OSError as exc:  # storage unreachable now: the checkpoints stay, said once
            log.warning("could not remove the search checkpoints under %s: %s", path, exc)
    if freed:
        log.info("removed the search trials' checkpoints (%.1f MB)", freed / 1e6)


def best_configs(spec: StudySpec, searcher: GroupedOptunaSearcher, *,
                 warn: bool = True) -> dict[tuple[str, int], dict]:
    """Each (variant, split)'s configuration to evaluate (:func:`evaluation_plan`): its
    search's best (nested), the shared split's best (shared), or the fixed values alone when
    nothing is searched; a (variant, split) whose search completed no trial is left out."""
    out: dict[tuple[str, int], dict] = {}
    for (v, k), key in evaluation_plan(spec).items():
        best = {} if key is None else searcher.best_params(key)
        if best is None:
            if warn:
                log.warning("%s split %d: no search trial completed; not evaluated", v, k)
            continue
        out[(v, k)] = best
    return out


def evaluation_items(spec: StudySpec, configs: dict[tuple[str, int], dict]) -> list[dict]:
    """The evaluation trials: one item per (variant, split) configuration and training seed
    (``evaluation.seeds`` of them: ``train.seed``, ``train.seed + 1``, …), each a dict with
    ``variant``, ``split``, ``seed`` and the configuration's values. The trial trains with the
    item's ``seed`` (``study.phases._trial.train_config``)."""
    items = seed_items(spec)
    return [item for (v, k), values in configs.items() for item in items(v, k, values)]


def seed_items(spec: StudySpec) -> EvalItems:
    """(variant, split, chosen values) -> its evaluation trials, one per training seed."""
    seeds = spec.evaluation.seed_list(spec.train.seed)

    def items(variant: str, split: int, values: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"variant": variant, "split": split, "seed": seed, **values} for seed in seeds]
    return items

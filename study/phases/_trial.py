"""The Ray Tune trainable: one trial of ``trainables.run_trial``, logged to MLflow.

This is the one place where a Tune config dict becomes a :class:`~trainables.config.TrainConfig`.
Per epoch the trial reports its metrics (and its checkpoint) to Tune and sends them, batched,
to its MLflow child run; at the end it logs the final metrics, the per-block learning-rate
table and, in the evaluation phase, ROC points and per-sample test probabilities (keyed by
anonymous sample ids). A trial restarted from its checkpoint (a crash, a lost node, a full
disk, a resumed study) finds its MLflow run id in the checkpoint and keeps logging to the same
run, set RUNNING again and tagged with the worker (``node_id``, ``host``, ``worker_pid``) and the
checkpoint (``restored_from``) it goes on from; each epoch is in its history once
(:mod:`study.tracking._journal`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune

from search_spaces import StudySpec
from search_spaces.spec import Phase
from study.scheduling._restudy import failure_reason
from study.tracking._journal import EpochJournal, logged_epochs
from study.tracking._login import MlflowLogin
from study.tracking._proc import pid_alive
from trainables._roiset import RoiSet
from trainables.config import TrainConfig
from trainables.splits import Split
from trainables.train import run_trial

RUN_ID_FILE = "mlflow_run_id"
SCRATCH_PREFIX = "tlstudy-trial-"  # + worker pid: a trial's local checkpoint folder
RESERVED = ("phase", "variant", "split", "optuna_trial", "seed")


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a study shares (sent once through Ray's object store). ``phase``:
    the default for configs that do not say theirs (``config["phase"]``)."""

    spec: StudySpec
    phase: Phase
    rois: RoiSet
    splits: tuple[Split, ...]
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    tags: dict[str, str]            # data/split fingerprints, versions, ... for child runs
    external: dict[str, RoiSet] = dataclasses.field(default_factory=dict)  # evaluate phase
    login: MlflowLogin | None = None  # the driver's MLflow login, for trials on other nodes


def train_config(config: dict[str, Any], ctx: TrialContext) -> TrainConfig:
    """The Tune config (variant, split, searched values) + the study's settings for the phase.

    CPU threads default to the CPUs the trial was given; an evaluation item's ``seed``
    (``study.phases._run.evaluation_items``) replaces ``train.seed``."""
    values = searched_values(config)
    data = ctx.spec.trial_config(config["variant"], values, phase=phase_of(config, ctx))
    if config.get("seed") is not None:
        data["seed"] = int(config["seed"])
    if data.get("threads") is None:
        data["threads"] = max(1, int(ctx.spec.resources.cpus))
    return TrainConfig.from_dict(data)


def phase_of(config: dict[str, Any], ctx: TrialContext) -> Phase:
    """The trial's phase: its config's (one Tune run holds both), else the context's."""
    return config.get("phase", ctx.phase)  # type: ignore[no-any-return]


def searched_values(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in RESERVED}


def run(config: dict[str, Any], ctx: TrialContext) -> None:
    """Tune function trainable (bind ``ctx`` with ``tune.with_parameters``).

    ``config`` is the searcher's dict: a search or an evaluation trial (``config["phase"]``)."""
    from study import tracking

    ctx = dataclasses.replace(ctx, phase=phase_of(config, ctx))
    if ctx.login is not None:  # a worker node has no credentials of its own (study.tracking._login)
        ctx.login.apply()
    allow_slow_finish()

    cfg = train_config(config, ctx)
    split = ctx.splits[int(config["split"])]
    trial_id = tune.get_context().get_trial_id() or "local"
    sweep_scratch()
    with contextlib.suppress(Exception):  # what earlier trials here could not deliver
        tracking.replay_spilled(only_uri=ctx.tracking_uri, wait_s=0)
    work = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-"))
    try:
        client = tracking.client_for(ctx.tracking_uri)
        where = {**_node_tags(), "worker_pid": str(os.getpid())}  # updated at every (re)start
        restored = tune.get_checkpoint()
        if restored is not None:
            restored.to_directory(str(work))
        run_file = work / RUN_ID_FILE
        if restored is not None and run_file.is_file():
            run_id = run_file.read_text().strip()
            journal = _reopen(client, run_id, work, Path(restored.path).name, where)
        else:
            run_id, reused = tracking.open_child_run(
                client, ctx.experiment_id, ctx.parent_run_id,
                phase=ctx.phase, variant=cfg.regime.variant, split=split.index,
                trial=trial_id, tags={**ctx.tags, **_role_tags(ctx.spec, cfg.regime.variant),
                                      "seed": str(cfg.seed)})
            run_file.write_text(run_id)
            # a run reused after a crash before the first checkpoint may hold epochs already
            journal = EpochJournal(work, logged=logged_epochs(client, run_id) if reused else 0)
        logger = tracking.RunLogger(ctx.tracking_uri, run_id, policy=tracking.TRIAL_POLICY)
        logger.params(_flat_params(cfg, config))  # these and the tags leave with epoch 1's
        logger.tags(where)                        # batch: one request
        journal.send(logger)  # epochs a crash kept from MLflow, if any

        last_epoch, handed = [0], [journal.checkpoint_epoch()]
        # the epochs after whose report Tune may end the trial: its scheduler's rungs, its last
        ends = {*(ctx.spec.search.asha.rungs() if ctx.phase == "search" else ()),
                cfg.max_epochs}

        def reporter(metrics: dict[str, Any]) -> str | None:
            last_epoch[0] = int(metrics["epoch"])
            numeric = {k: float(v) for k, v in metrics.items() if _is_number(v)}
            written = int(metrics["checkpoint_epoch"])
            journal.record(last_epoch[0], numeric, written)
            journal.send(logger)  # sent before Tune has it where the worker may be torn down
            # right after report() (see study/tracking/_journal.py); else within 2 s
            logger.flush(force=last_epoch[0] in ends)
            checkpoint = None     # Tune copies a checkpoint only when one was written
            if written != handed[0]:
                handed[0] = written
                checkpoint = tune.Checkpoint.from_directory(str(work))
            tune.report({**numeric, "trial_done": False, "mlflow_run_id": run_id,
                         "phase": ctx.phase}, checkpoint=checkpoint)
            return None

        try:
            result = run_trial(cfg, ctx.rois, split, reporter=reporter, checkpoint_dir=work,
                               phase=ctx.phase,
                               external=(ctx.external or None) if ctx.phase == "evaluate" else None)
        except SystemExit:
            # Tune ends a trial its scheduler stopped (ASHA) with sys.exit(0) inside report(),
            # after it saw the epoch; stopped at its last epoch it had its whole budget.
            if last_epoch[0] >= cfg.max_epochs:
                logger.tags({"stop_reason": "budget"})
                logger.finish("FINISHED")
            else:
                logger.tags({"stop_reason": "pruned"})
                logger.finish("KILLED")
            raise
        except BaseException as exc:
            if isinstance(exc, Exception):  # why, in the run (e.g. an unreadable checkpoint);
                # paths and file names stay in Tune's error.txt, out of MLflow
                logger.tags({"failure_reason": failure_reason(f"{type(exc).__name__}: {exc}")})
            logger.finish("FAILED")  # Tune may restart it: then RUNNING again, same run
            raise
        final = _final_metrics(result)
        for name, ext in (result.external or {}).items():  # external validation sets
            final.update(ext.metrics(name))
            logger.artifact_json(f"external_{name}_predictions.json", ext.predictions())
        logger.metrics(result.epochs_run, final)
        logger.tags({"stop_reason": result.stop_reason})
        logger.artifact_json("lr_table.json", result.lr_table)
        if result.test_probs is not None:
            logger.artifact_json("test_predictions.json",
                                 predictions_record(ctx.rois, result.test_probs,
                                                    result.test_labels))
            if result.val_probs is not None:  # thresholds are chosen on these, not on test
                logger.artifact_json("val_predictions.json",
                                     predictions_record(ctx.rois, result.val_probs,
                                                        result.val_labels))
            if result.test_roc is not None:
                roc = result.test_roc
                logger.artifact_json("roc.json", {
                    "fpr": [float(v) for v in roc.fpr], "tpr": [float(v) for v in roc.tpr],
                    "thresholds": [float(v) if math.isfinite(v) else None
                                   for v in roc.thresholds]})
        logger.finish("FINISHED")
        # before the last report: Tune may end the worker while that report waits, and then
        # no ``finally`` runs (each trial's folder holds checkpoints: tens to hundreds of MB)
        shutil.rmtree(work, ignore_errors=True)
        tune.report({**final, "epoch": result.epochs_run, "trial_done": True,
                     "mlflow_run_id": run_id, "phase": ctx.phase,
                     "stop_reason": result.stop_reason})
    finally:
        shutil.rmtree(work, ignore_errors=True)


def live_scratch(root: Path | None = None) -> list[Path]:
    """Scratch folders whose worker process is still alive."""
    return [f for f, pid in _scratch(root) if pid is not None and pid_alive(pid)]


def _scratch(root: Path | None) -> list[tuple[Path, int | None]]:
    out = []
    for folder in Path(root or tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*-*"):
        pid = folder.name[len(SCRATCH_PREFIX):].split("-", 1)[0]
        out.append((folder, int(pid) if pid.isdigit() else None))
    return out
def predictions_record(rois: RoiSet, probs: dict[str, float],
                       labels: dict[str, int]) -> dict[str, list]:
    """Per-sample predictions as logged: anonymous ``sample_id``, ``p_malignant``, ``label``
    and the anonymous ``cluster`` (lesion) and ``patient`` ids the report combines views by
    and resamples (``RoiSet.cluster_ids``); never a raw patient id."""
    where = {s: i for i, s in enumerate(rois.sample_ids.astype(str))}
    index = [where[s] for s in probs]
    lesion, patient = rois.cluster_ids("lesion"), rois.cluster_ids("patient")
    return {"sample_id": list(probs), "p_malignant": [float(p) for p in probs.values()],
            "label": [int(labels[s]) for s in probs],
            "cluster": [str(lesion[i]) for i in index],
            "patient": [str(patient[i]) for i in index]}
def allow_slow_finish(seconds: int = 60) -> None:
    """Let a stopped trial end its MLflow run before Tune reuses its actor.

    Tune reuses a trial's actor for the next trial (``reuse_actors``) once the function has
    returned, waiting ``TUNE_FUNCTION_THREAD_TIMEOUT_S`` (default 2 s) for that, then aborts the
    next trial ("Trainable runner reuse requires reset_config()"). A pruned trial ends its run
    after Tune stopped it, and that can take longer over a busy or logged-in server. Tune reads
    the variable in this process when it resets the actor."""
    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", str(seconds))


def sweep_scratch(root: Path | None = None) -> list[Path]:
    """Remove the scratch folders of trials whose worker process is gone (killed, or ended by
    Tune while its trial waited in ``report``) from this machine's temp folder; returns them.
    Folders of live processes are left alone."""
    removed = []
    for folder, pid in _scratch(root):
        if pid is not None and not pid_alive(pid):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _reopen(client: Any, run_id: str, work: Path, checkpoint: str,
            where: dict[str, str]) -> EpochJournal:
    """A trial restarted from its checkpoint: the same run, RUNNING again; its journal squared
    with what MLflow holds (``study.tracking._journal``). Adds the run's new tags to ``where``."""
    journal = EpochJournal.restore(work, logged_epochs(client, run_id))
    where["restored_from"] = checkpoint
    again = journal.retrained()
    if again is not None:  # logged, then their checkpoint was lost
        where["retrained_epochs"] = f"{again[0]}-{again[1]}"
    prior = client.get_run(run_id).data.tags.get("failure_reason")
    if prior is not None:  # it failed, and now goes on: the reason becomes history
        client.set_tag(run_id, "restarted_after", prior)  # (kept before it is deleted)
        client.delete_tag(run_id, "failure_reason")
    client.update_run(run_id, status="RUNNING")
    return journal


def _flat_params(cfg: TrainConfig, config: dict[str, Any]) -> dict[str, Any]:
    """The trial's MLflow params: only what its regime uses, with the values in effect on the
    device it runs on (FTED's ``lam``/``depth``/``granularity`` only for FTED; no SGD momentum
    for RI's Adam; the resolved base LR; bf16 / channels-last / cuDNN benchmark false off
    CUDA; the resolved device)."""
    from trainables.regimes import Kind
    from trainables.train import resolve_device

    regime = dataclasses.asdict(cfg.regime)
    kind = cfg.regime.parsed.kind
    regime["base_lr"] = cfg.regime.lr
    if kind is not Kind.FTED:
        for name in ("lam", "depth", "granularity"):
            regime.pop(name, None)
    if kind is Kind.RI:
        regime.pop("momentum", None)
    params = {f"regime.{k}": v for k, v in regime.items()}
    params.update({k: v for k, v in dataclasses.asdict(cfg).items() if k != "regime"})
    device = resolve_device(cfg.device)
    params["device"] = str(device)
    if device.type != "cuda":
        params.update(bf16=False, channels_last=False, cudnn_benchmark=False)
    if kind is Kind.RI:
        params.pop("weights", None)
    params["pretrained"] = cfg.pretrained and kind is not Kind.RI
    params["optuna_trial"] = config.get("optuna_trial")
    return params


def _node_tags() -> dict[str, str]:
    """Where the trial ran: the Ray node (one id per node, also on one machine) and host."""
    import ray

    return {"node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname()}


def _role_tags(spec: StudySpec, variant: str) -> dict[str, str]:
    """Each hyperparameter's role (scientific / nuisance / fixed) as a ``role.<name>`` tag."""
    return {f"role.{name}": str(role) for name, role in spec.roles_for(variant).items()}


def _final_metrics(result: Any) -> dict[str, float]:
    names = ["best_val_loss", "best_val_acc", "best_val_auc", "wall_time_s", "epochs_run",
             "best_epoch", "test_loss", "test_acc", "test_auc", "test_sensitivity",
             "test_specificity", "val_youden_threshold"]
    out = {}
    for name in names:
        value = getattr(result, name)
        if _is_number(value):
            out[name] = float(value)
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))

"""The trainable: one trial of the paper's protocol in plain PyTorch, resumable and seeded.

:func:`run_trial` trains a backbone + head (built by :mod:`trainables.regimes`) on a split's
inner-train part, validates on its inner-validation part every epoch, reports the epoch to a
caller-supplied ``reporter`` (the study layer wires it to Ray Tune; nothing here imports Ray or
MLflow) and writes a checkpoint of what training changed (see :mod:`trainables.checkpoint`) at
the epochs ``config.checkpoint_at`` names (ASHA's rungs: after the report, so only for a trial
the scheduler lets go on), at the end (before the last report; then without optimiser state, as
nothing trains again), and otherwise at most once per ``config.checkpoint_interval_s`` seconds
(every ``config.checkpoint_every`` epochs). In the ``"evaluate"`` phase it then restores the best
weights and reads the test part exactly once; the ``"search"`` phase never loads the test part
and keeps no best weights (nothing it does would use them).

Data never leaves the device: each partition's raw ROIs sit there as one uint8 (or int32) tensor,
and each batch is gathered, normalised and augmented there (see :mod:`trainables.augment`).

Reproducibility: the seed fixes model initialisation (torch's global generator, also used by
dropout), the shuffling order (a CPU generator) and the augmentation draws (a generator on the
device); all are saved in every checkpoint, so on CPU a trial stopped after any epoch and resumed
finishes with bit-identical metrics. Note that :func:`run_trial` seeds torch's global generator
and sets the process' torch thread count (``config.threads``): run one trial per process.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from trainables import checkpoint as ckpt
from trainables._epoch import StepSettings, backbone_frozen, cache_features, predict, train_epoch
from trainables._partition import Partition
from trainables._roiset import RoiSet
from trainables._trial_state import TrialState, derive_seeds
from trainables.config import TrainConfig
from trainables.head import Classifier
from trainables.metrics import RocCurve, accuracy, rates_at, roc_auc, roc_curve, youden_point
from trainables.regimes import lr_table
from trainables.splits import Split

logger = logging.getLogger(__name__)

__all__ = ["SPEED_ONLY_FIELDS", "TIMING_KEYS", "Phase", "Reporter", "StopReason", "TrialResult",
           "check_split", "derive_seeds", "lr_by_block", "resolve_device", "run_trial"]

Phase = Literal["search", "evaluate"]
StopReason = Literal["budget", "early_stop", "told_to_stop"]
Reporter = Callable[[dict[str, float]], "str | None"]

#: Config fields that change speed but not results; they may differ when a trial resumes.
SPEED_ONLY_FIELDS = frozenset({"device", "threads", "bf16", "channels_last", "cudnn_benchmark",
                               "eval_batch_size", "checkpoint_every", "checkpoint_at",
                               "checkpoint_interval_s"})
#: Per-epoch metric keys that measure time, not the model (they differ between runs).
TIMING_KEYS = frozenset({"images_per_s", "epoch_time_s", "checkpoint_time_s"})


@dataclass(frozen=True, eq=False)
class TrialResult:
    """What a trial produces, once, at its end.

    Attributes:
        phase: ``"search"`` or ``"evaluate"``.
        stop_reason: ``"budget"`` (ran ``max_epochs``), ``"early_stop"`` (validation loss did not
            improve for ``early_stopping_patience`` epochs) or ``"told_to_stop"`` (the reporter
            returned ``"stop"``).
        epochs_run: completed epochs (across resumes).
        best_epoch: 1-based epoch with the lowest validation loss (0 if none was finite).
        best_val_loss / best_val_acc / best_val_auc: validation metrics of that epoch.
        wall_time_s: seconds spent in this trial, summed over resumed sessions.
        history: the per-epoch metric dicts the reporter received (without ``checkpoint_time_s``).
        lr_table: per-block parameters, trainable parameters and learning-rate range at the start.
        partition_passes: complete passes over each partition during this call (training epochs
            and evaluations); ``"test"`` is 1 in the evaluate phase and absent in the search phase.
        test_*: only for a finished evaluate-phase trial, else ``None``. ``test_probs`` and
            ``test_labels`` are keyed by the ROI set's anonymised ``sample_id``;
            ``test_sensitivity`` / ``test_specificity`` are at ``val_youden_threshold``, the
            Youden point of the *validation* predictions of the tested weights (no threshold
            is chosen on test data).
        val_probs / val_labels: those validation predictions, keyed by ``sample_id`` (evaluate
            phase only), for thresholds the report picks on validation data.
    """

    phase: Phase
    stop_reason: StopReason
    epochs_run: int
    best_epoch: int
    best_val_loss: float
    best_val_acc: float
    best_val_auc: float
    wall_time_s: float
    history: list[dict[str, float]]
    lr_table: list[dict[str, Any]]
    partition_passes: dict[str, int]
    test_loss: float | None = None
    test_acc: float | None = None
    test_auc: float | None = None
    test_sensitivity: float | None = None
    test_specificity: float | None = None
    val_youden_threshold: float | None = None
    test_roc: RocCurve | None = None
    test_probs: dict[str, float] | None = None
    test_labels: dict[str, int] | None = None
    val_probs: dict[str, float] | None = None
    val_labels: dict[str, int] | None = None
    checkpoint_dir: Path | None = field(default=None)
    external: dict[str, Any] | None = None  # name -> trainables.external.ExternalResult

    def final_metrics(self) -> dict[str, float]:
        """The scalar end-of-trial metrics (test ones only when present), for logging."""
        out: dict[str, float] = {
            "epochs_run": self.epochs_run, "best_epoch": self.best_epoch,
            "best_val_loss": self.best_val_loss, "best_val_acc": self.best_val_acc,
            "best_val_auc": self.best_val_auc, "wall_time_s": self.wall_time_s,
        }
        for name in ("test_loss", "test_acc", "test_auc", "test_sensitivity",
                     "test_specificity", "val_youden_threshold"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_split(rois: RoiSet, split: Split, phase: Phase) -> None:
    """Fail before training on empty, out-of-range or overlapping partitions.

    The search phase does not look at ``split.test`` at all.
    """
    parts = {"train": split.train, "val": split.val}
    if phase == "evaluate":
        parts["test"] = split.test
    n = len(rois)
    for name, idx in parts.items():
        idx = np.asarray(idx)
        if idx.size == 0:
            raise ValueError(f"split {split.index}: the {name} partition is empty")
        if idx.min() < 0 or idx.max() >= n:
            raise ValueError(f"split {split.index}: {name} positions outside the ROI set "
                             f"(0..{n - 1}); split and ROI set do not belong together")
    names = list(parts)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if np.intersect1d(parts[a], parts[b]).size:
                raise ValueError(f"split {split.index}: {a} and {b} share ROIs")


def lr_by_block(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """``{"lr/<block>": largest current LR of that block's parameter groups}``."""
    out: dict[str, float] = {}
    for group in optimizer.param_groups:
        key = f"lr/{group.get('block', 'all')}"
        out[key] = max(out.get(key, 0.0), float(group["lr"]))
    return out


def _check_resumable(saved: dict[str, Any], config: TrainConfig, identity: dict[str, Any],
                     directory: Path) -> None:
    now = config.to_dict()
    diff = sorted(k for k in set(now) | set(saved["config"])
                  if k not in SPEED_ONLY_FIELDS and now.get(k) != saved["config"].get(k))
    if diff:
        raise ValueError(f"{directory}: the checkpoint is of a different trial (config fields "
                         f"{diff} differ); use an empty checkpoint directory for a new trial")
    for key, value in identity.items():
        if saved["identity"].get(key) != value:
            raise ValueError(f"{directory}: the checkpoint was written with another {key} "
                             f"({saved['identity'].get(key)!r}, now {value!r})")


def run_trial(config: TrainConfig, rois: RoiSet, split: Split, *,
              reporter: Reporter | None = None, checkpoint_dir: Path | str,
              phase: Phase = "search",
              external: dict[str, RoiSet] | None = None) -> TrialResult:
    """Train one configuration on one split; see the module docstring.

    Args:
        config: the trial's configuration.
        rois: the whole ROI set; only ``split``'s positions are read.
        split: ``train`` trains, ``val`` validates (LR plateau, early stopping, best weights),
            ``test`` is read once at the end of the ``"evaluate"`` phase and never in ``"search"``.
        reporter: called after every epoch (after the last epoch's checkpoint is written;
            another epoch's checkpoint, if due, is written after the call) with the epoch's
            metrics: ``epoch``, ``train_loss``, ``val_loss``, ``val_acc``, ``val_auc``,
            ``lr/<block>`` for every block that trains, ``images_per_s`` (training pass),
            ``epoch_time_s`` (training + validation), ``checkpoint_time_s`` (0 when none was
            written since the previous call), ``checkpoint_epoch`` (the epoch the checkpoint
            on disk holds: an earlier one, except at the end), ``best_val_loss``,
            ``best_epoch``. Returning ``"stop"`` ends the trial
            (``stop_reason="told_to_stop"``, no test pass) after making sure the checkpoint
            holds this epoch; on the trial's last epoch the natural reason (``"budget"``,
            ``"early_stop"``) wins and the trial finishes normally.
        checkpoint_dir: where the checkpoint goes; if it already holds one of this trial, the
            trial resumes from it (a finished trial goes straight to its final evaluation).
        phase: ``"search"`` or ``"evaluate"``.
        external: evaluate phase only: named external validation sets, each tested once with
            the same best-validation weights after the test pass (``TrialResult.external``).

    Raises:
        ValueError: bad phase, a split that does not fit ``rois`` or leaks, or a checkpoint in
            ``checkpoint_dir`` that belongs to another trial.
    """
    if phase not in ("search", "evaluate"):
        raise ValueError(f"phase must be 'search' or 'evaluate', got {phase!r}")
    check_split(rois, split, phase)
    t0 = time.perf_counter()
    directory = Path(checkpoint_dir)
    directory.mkdir(parents=True, exist_ok=True)
    identity = {"rois": rois.fingerprint, "split": split.fingerprint,
                "split_index": split.index, "phase": phase}
    saved = ckpt.load_checkpoint(directory)
    if saved is not None:
        _check_resumable(saved, config, identity, directory)

    device = resolve_device(config.device)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = config.cudnn_benchmark
    state = TrialState.build(config, config.input_size or rois.size, device)
    table = lr_table(state.model, state.optimizer)
    if saved is not None:
        state.restore(saved, directory / ckpt.CHECKPOINT_FILE)
        logger.info("resuming from %s after epoch %d", directory, state.epoch)
    else:
        logger.info("trial start: %s %s, %d train / %d val ROIs, lr table %s", config.backbone,
                    config.regime.variant, len(split.train), len(split.val), table)

    settings = StepSettings(input_size=state.model.input_size, device=device, bf16=config.bf16,
                            channels_last=config.channels_last)
    train = Partition.from_rois("train", rois, split.train, device)
    val = Partition.from_rois("val", rois, split.val, device)
    if backbone_frozen(state.model) and state.finished is None:
        cache_features(state.model, val, batch_size=config.eval_batch, settings=settings)
        if not config.augment:
            cache_features(state.model, train, batch_size=config.eval_batch, settings=settings)

    last_write = [time.perf_counter()]
    keep_best = config.restore_best and phase == "evaluate"  # the search never tests

    def save() -> float:
        t = time.perf_counter()
        state.save_best(directory)  # before the checkpoint that names it
        ckpt.save_checkpoint(directory, state.payload(
            {"config": config.to_dict(), "identity": identity},
            elapsed_s=state.prior_s + time.perf_counter() - t0,
            weights=phase == "evaluate" and not (keep_best and state.best_file is not None)))
        last_write[0] = time.perf_counter()
        return last_write[0] - t

    def due() -> bool:
        return (state.epoch in config.checkpoint_at
                or (state.epoch % config.checkpoint_every == 0 and
                    time.perf_counter() - last_write[0] >= config.checkpoint_interval_s))

    # The last epoch's checkpoint is written before its report; any other after its report,
    # once the reporter let the trial go on (a trial its scheduler stops at a rung writes
    # nothing there), and the caller sees it at the next report (``checkpoint_epoch``).
    told_to_stop, saved_epoch, t_save = False, state.epoch, 0.0
    while state.finished is None and not told_to_stop:
        metrics = _epoch(state, train, val, config, settings, keep_best=keep_best)
        if state.finished is not None:
            t_save, saved_epoch = t_save + save(), state.epoch
        if reporter is not None:
            answer = reporter({**metrics, "checkpoint_time_s": t_save,
                               "checkpoint_epoch": saved_epoch})
            told_to_stop = answer == "stop" and state.finished is None
        t_save = 0.0
        if told_to_stop:
            if saved_epoch != state.epoch:
                save()
        elif state.finished is None and due():
            t_save, saved_epoch = save(), state.epoch

    stop_reason: StopReason = state.finished or "told_to_stop"  # type: ignore[assignment]
    test: dict[str, Any] = {}
    if stop_reason != "told_to_stop" and phase == "evaluate":
        _restore_best(state, config, directory)
        test = _evaluate_test(state.model, rois, split, config, settings, device)
        if external:
            from trainables.external import evaluate_external

            test["external"] = {name: evaluate_external(
                state.model, ext, batch_size=config.eval_batch, settings=settings,
                device=device) for name, ext in external.items()}
    best = next((h for h in state.history if h["epoch"] == state.stopper.best_epoch), None)
    return TrialResult(
        phase=phase, stop_reason=stop_reason, epochs_run=state.epoch,
        best_epoch=state.stopper.best_epoch,
        best_val_loss=best["val_loss"] if best else math.nan,
        best_val_acc=best["val_acc"] if best else math.nan,
        best_val_auc=best["val_auc"] if best else math.nan,
        wall_time_s=state.prior_s + time.perf_counter() - t0, history=state.history,
        lr_table=table, partition_passes={"train": train.passes, "val": val.passes,
                                          **test.pop("passes", {})},
        checkpoint_dir=directory, **test)


def _epoch(state: TrialState, train: Partition, val: Partition, config: TrainConfig,
           settings: StepSettings, *, keep_best: bool) -> dict[str, float]:
    """Train and validate one epoch; update schedule, early stopping and (``keep_best``) the
    best weights."""
    state.epoch += 1
    lrs = lr_by_block(state.optimizer)  # the rates this epoch trains at
    t_epoch = time.perf_counter()
    train_loss = train_epoch(
        state.model, state.optimizer, train, batch_size=config.batch_size, settings=settings,
        augment=config.augment_params if config.augment else None,
        aug_generator=state.generators["augment"],
        shuffle_generator=state.generators["shuffle"])
    t_train = time.perf_counter() - t_epoch
    val_loss, val_probs = predict(state.model, val, batch_size=config.eval_batch,
                                  settings=settings)
    state.scheduler.step(val_loss)
    state.record_best(val_loss, keep_weights=keep_best)
    labels = val.labels_np
    metrics: dict[str, float] = {
        "epoch": state.epoch, "train_loss": train_loss, "val_loss": val_loss,
        "val_acc": accuracy(labels, val_probs), "val_auc": roc_auc(labels, val_probs), **lrs,
        "images_per_s": len(train) / t_train, "epoch_time_s": time.perf_counter() - t_epoch,
        "best_val_loss": state.stopper.best_loss, "best_epoch": state.stopper.best_epoch,
    }
    state.history.append(metrics)
    if state.stopper.should_stop:
        state.finished = "early_stop"
    elif state.epoch >= config.max_epochs:
        state.finished = "budget"
    logger.info("epoch %d: train_loss %.4f val_loss %.4f val_acc %.3f val_auc %.3f %.1f img/s",
                state.epoch, train_loss, val_loss, metrics["val_acc"], metrics["val_auc"],
                metrics["images_per_s"])
    return metrics


def _restore_best(state: TrialState, config: TrainConfig, directory: Path) -> None:
    if config.restore_best and not state.load_best(directory):
        logger.warning("no finite validation loss in %d epochs: keeping the last weights",
                       state.epoch)


def _evaluate_test(model: Classifier, rois: RoiSet, split: Split, config: TrainConfig,
                   settings: StepSettings, device: torch.device) -> dict[str, Any]:
    """The one pass over the test partition and its metrics (as ``TrialResult`` fields).

    The Youden threshold comes from the validation predictions of the same (tested) weights
    and is only applied to the test predictions: test labels choose nothing."""
    val = Partition.from_rois("val", rois, split.val, device)
    _, val_probs = predict(model, val, batch_size=config.eval_batch, settings=settings)
    threshold = youden_point(val.labels_np, val_probs).threshold
    test = Partition.from_rois("test", rois, split.test, device)
    loss, probs = predict(model, test, batch_size=config.eval_batch, settings=settings)
    labels = test.labels_np
    sensitivity, specificity = rates_at(labels, probs, threshold)
    logger.info("test: %d ROIs, loss %.4f", len(test), loss)
    return {
        "test_loss": loss, "test_acc": accuracy(labels, probs), "test_auc": roc_auc(labels, probs),
        "test_sensitivity": sensitivity, "test_specificity": specificity,
        "val_youden_threshold": threshold, "test_roc": roc_curve(labels, probs),
        "test_probs": dict(zip(test.sample_ids.tolist(), probs.tolist(), strict=True)),
        "test_labels": dict(zip(test.sample_ids.tolist(), labels.tolist(), strict=True)),
        "val_probs": dict(zip(val.sample_ids.tolist(), val_probs.tolist(), strict=True)),
        "val_labels": dict(zip(val.sample_ids.tolist(), val.labels_np.tolist(), strict=True)),
        "passes": {"test": test.passes},
    }

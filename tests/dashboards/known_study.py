"""A study with known values, logged to a real MLflow server through ``study.tracking`` in the
layout the launcher writes — so the dashboards' numbers can be checked by hand.

Spec: variants RI, FE, 1FT, FTED; 3 splits; search budget 4 epochs; 2 CPUs per trial.

Evaluation runs (test_acc, wall_time_s, epochs_run per split 0, 1, 2):
    FE:   0.80 0.85 0.90 | 600 660 720 s | 10 12 14   -> 85.00 %, std 5.00, 11.0 min, 12 ep
    FTED: 0.90 0.95 0.925| 1200 1500 1800 | 20 20 20  -> 92.50 %, std 2.50, 25.0 min, 20 ep
    RI:   0.70 0.75 (split 2 FAILED) | 3000 3600 | 30 40 -> 72.50 %, std 3.5355, 55 min, 35 ep
    1FT:  no run at all
Test predictions: 60 views per split = 30 lesions (12 malignant) seen in two views, two lesions
per patient; a view's P(malignant) is its lesion's score plus view noise, so view-level and
lesion-level AUCs differ. FE and FTED runs also log validation predictions (40 views).
Search runs: FE 3 trials per split (one pruned after 1 epoch, lasting 100 s; two run 4 epochs
in 400 s), FTED 4 trials per split (4 epochs, 500 s each, none pruned).
    FE search: 2700 s = 0.75 h; ASHA saved 3 × (4 - 1) × 100 s = 0.25 h = 25 % of 1.0 h.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from study import tracking

SPLITS = 3
N_TEST = 60
N_MALIGNANT = 24
EVAL = {  # variant -> per split (test_acc, wall_time_s, epochs_run, status)
    "FE": [(0.80, 600, 10, "FINISHED"), (0.85, 660, 12, "FINISHED"),
           (0.90, 720, 14, "FINISHED")],
    "FTED": [(0.90, 1200, 20, "FINISHED"), (0.95, 1500, 20, "FINISHED"),
             (0.925, 1800, 20, "FINISHED")],
    "RI": [(0.70, 3000, 30, "FINISHED"), (0.75, 3600, 40, "FINISHED"),
           (None, None, None, "FAILED")],
}
SEPARATION = {"RI": 0.6, "FE": 1.5, "FTED": 2.5}  # larger = better AUC


def spec_dict(name: str) -> dict:
    return {
        "name": name, "description": "known values", "variants": ["RI", "FE", "1FT", "FTED"],
        "splits": {"n_splits": SPLITS, "test_fraction": 0.2, "val_fraction": 0.2, "seed": 0,
                   "mode": "patient", "scheme": "kfold", "repeats": 1},
        "analysis": {"unit": "lesion"}, "compare": {"reference": "FTED"},
        "backbone": "efficientnet_lite0",
        "search": {"mode": "nested", "trials": 3, "seed": 0, "metric": "val_loss",
                   "asha": {"grace_period": 1, "reduction_factor": 2, "max_epochs": 4},
                   "params": {
                       "base_lr": {"role": "scientific", "low": 1e-4, "high": 1e-2,
                                   "log": True},
                       "lam": {"role": "scientific", "low": 0.0, "high": 6.0,
                               "variants": ["FTED"]},
                       "momentum": {"role": "fixed", "value": 0.9}}},
        "evaluation": {"max_epochs": 40, "early_stopping_patience": 5},
        "resources": {"cpus": 2, "gpus": 0},
    }


def predictions(variant: str, split: int, part: str = "test") -> dict:
    """Deterministic P(malignant) for the split's test (or validation) views: two views per
    lesion, two lesions per patient (same ids for every variant of a split)."""
    n = N_TEST if part == "test" else 40
    rng = np.random.default_rng(1000 * split + sum(map(ord, variant)) + (part == "val"))
    lesion_label = np.r_[np.ones(N_MALIGNANT // 2, int), np.zeros((n - N_MALIGNANT) // 2, int)]
    if part == "val":
        lesion_label = np.r_[np.ones(8, int), np.zeros(12, int)]
    lesion_score = SEPARATION[variant] * (lesion_label - 0.5) * 2 + rng.normal(0, 1.0, n // 2)
    score = np.repeat(lesion_score, 2) + rng.normal(0, 0.8, n)
    p = 1 / (1 + np.exp(-score))
    tag = "s" if part == "test" else "v"
    return {"sample_id": [f"{tag}{split:02d}{i:03d}" for i in range(n)],
            "p_malignant": p.round(6).tolist(), "label": np.repeat(lesion_label, 2).tolist(),
            "cluster": [f"l{tag}{split:02d}{i // 2:03d}" for i in range(n)],
            "patient": [f"p{tag}{split:02d}{i // 4:03d}" for i in range(n)]}


def _terminate(client, run_id: str, status: str, seconds: float) -> None:
    start = client.get_run(run_id).info.start_time
    client.set_terminated(run_id, status=status, end_time=start + int(seconds * 1000))


def log_known_study(client, name: str, *, with_spec: bool = True) -> str:
    """Log the study; returns the parent run id."""
    exp = tracking.experiment_for(client, name)
    tags = {"study": name, "spec_fingerprint": "f" * 16, "data_fingerprint": "d" * 16,
            "split_fingerprints": "a1,b2,c3", "split_mode": "patient",
            "search_mode": "nested", "git_commit": "0123abc", "python": "3.11",
            "torch": "2.14.1", "ray": "2.60.0", "optuna": "5.0.0", "mlflow": "3.17.2",
            "device": "cpu (test)"}
    parent = tracking.start_parent_run(client, exp, tags=tags, run_name=f"{name}-known")
    plog = tracking.RunLogger(client, parent)
    plog.params({"backbone": "efficientnet_lite0", "splits.n_splits": SPLITS})
    if with_spec:
        plog.artifact_json("study_spec.json", spec_dict(name))
    plog.flush(wait_s=30)
    for variant, rows in EVAL.items():
        for split, (acc, wall, epochs, status) in enumerate(rows):
            rid = tracking.start_child_run(client, exp, parent, phase="evaluate",
                                           variant=variant, split=split, trial=f"e{split}",
                                           params={"regime.base_lr": 1e-3})
            log = tracking.RunLogger(client, rid)
            if status == "FAILED":
                log.metrics(1, {"val_loss": 0.7, "epoch": 1})
                log.finish("FAILED", wait_s=30)
                continue
            pred = predictions(variant, split)
            test_auc = roc_auc_score(pred["label"], pred["p_malignant"])
            for e in range(1, epochs + 1):
                log.metrics(e, {"val_loss": 1.0 / e, "epoch": e})
            log.metrics(epochs, {"test_acc": acc, "test_auc": test_auc, "wall_time_s": wall,
                                 "epochs_run": epochs, "best_val_loss": 1.0 / epochs})
            log.tags({"stop_reason": "early_stop"})
            log.artifact_json("test_predictions.json", pred)
            if variant in ("FE", "FTED"):
                log.artifact_json("val_predictions.json", predictions(variant, split, "val"))
            log.finish("FINISHED", wait_s=30)
    for split in range(SPLITS):
        for t in range(3):
            _search_run(client, exp, parent, "FE", split, t, lr=10 ** (-4 + t),
                        lam=None, pruned=(t == 2))
        for t in range(4):
            _search_run(client, exp, parent, "FTED", split, t, lr=10 ** (-3.5 + 0.5 * t),
                        lam=1.5 * t, pruned=False)
    plog.finish("FINISHED", wait_s=30)
    return parent


def _search_run(client, exp: str, parent: str, variant: str, split: int, t: int, *,
                lr: float, lam: float | None, pruned: bool) -> None:
    params = {"regime.base_lr": lr, "optuna_trial": t}
    if lam is not None:
        params["regime.lam"] = lam
    rid = tracking.start_child_run(client, exp, parent, phase="search", variant=variant,
                                   split=split, trial=f"{variant}{split}{t}", params=params)
    log = tracking.RunLogger(client, rid)
    epochs = 1 if pruned else 4
    value = 0.3 + abs(np.log10(lr) + 3) * 0.1 + (0.02 * lam if lam is not None else 0.0)
    value = value + (0.5 if pruned else 0.0)
    for e in range(1, epochs + 1):
        log.metrics(e, {"val_loss": value, "best_val_loss": value, "epoch": e})
    if pruned:
        log.tags({"stop_reason": "pruned"})
        log.finish("KILLED", wait_s=30)
        _terminate(client, rid, "KILLED", 100)
    else:
        seconds = 400 if variant == "FE" else 500
        log.metrics(epochs, {"wall_time_s": seconds, "epochs_run": epochs})
        log.tags({"stop_reason": "budget"})
        log.finish("FINISHED", wait_s=30)

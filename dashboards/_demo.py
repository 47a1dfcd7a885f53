"""Synthetic study runs for ``python -m dashboards.report --smoke-test``: the whole report
(compute, draw, write) without an MLflow server, on made-up numbers that say so on the page.

Seven variants × five folds like the paper, 60 test views per split (30 lesions seen in two
views; same ids for every variant of a split) and 40 validation views, P(malignant) drawn so
that the AUCs fall in the paper's order, times near
the paper's Table 1, six search trials per (variant, split) with some stopped by ASHA.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dashboards._load import EVAL_COLUMNS, SEARCH_COLUMNS, StudyRuns
from dashboards.literature import PAPER_ORDER, paper_table1

SEPARATION = {"RI": 0.7, "FE": 1.5, "1FT": 1.7, "2FT": 2.1, "3FT": 1.9, "AllFT": 1.5,
              "FTED": 2.3}
SMOKE_NOTE = ("synthetic runs made by --smoke-test, not read from MLflow: the numbers mean "
              "nothing")


def demo_runs(seed: int = 0, n_splits: int = 5, n_test: int = 60, trials: int = 6,
              max_epochs: int = 8) -> StudyRuns:
    """A complete, made-up study execution (see the module docstring)."""
    rng = np.random.default_rng(seed)
    paper = paper_table1()
    evals, preds, searches = [], [], []
    vals = []
    for k in range(n_splits):
        label = np.repeat((rng.random(n_test // 2) < 0.45).astype(int), 2)  # two views
        ids = [f"s{k}{i:03d}" for i in range(n_test)]
        lesions = [f"l{k}{i // 2:03d}" for i in range(n_test)]
        patients = [f"p{k}{i // 4:03d}" for i in range(n_test)]
        val_label = np.repeat((rng.random(20) < 0.45).astype(int), 2)
        for v in PAPER_ORDER:
            lesion_effect = np.repeat(rng.normal(0, 0.8, n_test // 2), 2)
            score = SEPARATION[v] * (2 * label - 1) + lesion_effect + rng.normal(0, 1.0, n_test)
            p = 1 / (1 + np.exp(-score))
            run_id = f"demo-{v}-{k}"
            preds.append(pd.DataFrame({"variant": v, "split": k, "seed": 0, "run_id": run_id,
                                       "sample_id": ids, "cluster": lesions,
                                       "patient": patients, "p_malignant": p, "label": label}))
            val_score = SEPARATION[v] * (2 * val_label - 1) + rng.normal(0, 1.3, 40)
            vals.append(pd.DataFrame({"variant": v, "split": k, "seed": 0, "run_id": run_id,
                                      "sample_id": [f"v{k}{i:03d}" for i in range(40)],
                                      "cluster": [f"m{k}{i // 2:03d}" for i in range(40)],
                                      "patient": [f"q{k}{i // 2:03d}" for i in range(40)],
                                      "p_malignant": 1 / (1 + np.exp(-val_score)),
                                      "label": val_label}))
            evals.append({"run_id": run_id, "variant": v, "split": k, "seed": 0,
                          "status": "FINISHED",
                          "stop_reason": "early_stop", "start_time": k,
                          "duration_s": paper[v].time_min * 60,
                          "test_acc": float(((p >= 0.5) == label).mean()),
                          "wall_time_s": paper[v].time_min * 60 * rng.uniform(0.9, 1.1),
                          "epochs_run": float(rng.integers(20, 90))})
            for t in range(trials):
                lr = 10 ** rng.uniform(-5, -2)
                lam = rng.uniform(0, 6) if v == "FTED" else np.nan
                loss = (0.25 + 0.08 * (np.log10(lr) + 3.5) ** 2
                        + (0.02 * (lam - 3) ** 2 if v == "FTED" else 0) + rng.normal(0, 0.02))
                pruned = t > 1 and rng.random() < 0.4
                epochs = int(rng.integers(1, max_epochs // 2 + 1)) if pruned else max_epochs
                hp = {"base_lr": str(lr), **({"lam": str(lam)} if v == "FTED" else {})}
                searches.append({
                    "run_id": f"demo-s-{v}-{k}-{t}", "variant": v, "split": k,
                    "trial": str(t), "optuna_trial": float(t),
                    "status": "KILLED" if pruned else "FINISHED",
                    "stop_reason": "pruned" if pruned else "budget", "start_time": t,
                    "duration_s": 30.0 * epochs, "base_lr": lr, "lam": lam, "hp": hp,
                    "best_val_loss": loss + (0.1 if pruned else 0), "epoch": float(epochs),
                    "wall_time_s": np.nan if pruned else 30.0 * epochs})
    spec = {"name": "smoke-test", "variants": list(PAPER_ORDER),
            "splits": {"n_splits": n_splits, "scheme": "kfold", "repeats": 1,
                       "mode": "patient"},
            "analysis": {"unit": "lesion"}, "compare": {"reference": "FTED"},
            "search": {"mode": "nested", "trials": trials,
                       "asha": {"max_epochs": max_epochs, "grace_period": 1,
                                "reduction_factor": 2},
                       "params": {"base_lr": {"role": "scientific", "low": 1e-5, "high": 1e-2,
                                              "log": True},
                                  "lam": {"role": "scientific", "low": 0.0, "high": 6.0,
                                          "variants": ["FTED"]}}},
            "resources": {"cpus": 4, "gpus": 1}}
    tags = {"study": "smoke-test", "spec_fingerprint": "demo", "data_fingerprint": "demo",
            "split_fingerprints": ",".join(f"demo{k}" for k in range(n_splits)),
            "split_mode": "patient", "search_mode": "nested", "device": "none (synthetic)"}
    return StudyRuns(
        study="smoke-test", tracking_uri="(none: --smoke-test)", experiment_id="-",
        parent_run_id="-", parent_status="FINISHED", tags=tags, params={}, spec=spec,
        evaluations=pd.DataFrame(evals, columns=list(EVAL_COLUMNS)),
        searches=pd.DataFrame(searches, columns=list(SEARCH_COLUMNS)),
        predictions=pd.concat(preds, ignore_index=True), variants=PAPER_ORDER,
        n_splits=n_splits, problems=(SMOKE_NOTE,),
        val_predictions=pd.concat(vals, ignore_index=True))

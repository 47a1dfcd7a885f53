"""External validation table: each variant's evaluation runs tested on other datasets.

Reads ``external_<name>_predictions.json`` of the finished evaluation runs (one per run and
external set: ``sample_id``, anonymous ``lesion_id``, ``p_malignant``, ``label``). The unit of
analysis is the lesion: a lesion's views are averaged first. Per (external set, variant):

- accuracy at the fixed 0.5 threshold (no threshold is tuned on external data), mean and
  sample std over the evaluation runs (one per outer split), with a 95 % stratified bootstrap
  CI over lesions of the split-averaged prediction's accuracy;
- AUC of the split-averaged prediction (the runs' p(malignant) averaged per lesion), with a 95 %
  stratified bootstrap CI over lesions; and the mean AUC over runs.

Marked as external validation everywhere it is shown: these numbers are *not* Table 1/2's
held-out test folds of the study's own dataset.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dashboards import stats

log = logging.getLogger(__name__)

CAPTION = ("External validation (marked as such: other datasets, not the study's own test "
           "folds): each evaluation run's best-validation weights tested once on every "
           "external set. Lesion level (views averaged); accuracy at p ≥ 0.5, mean ± std over "
           "runs; AUC and accuracy of the runs' averaged prediction with 95% stratified "
           "bootstrap CIs over lesions.")
COLUMNS = ("external set", "variant", "runs", "lesions", "benign", "malignant", "acc mean",
           "acc std", "acc (avg pred)", "acc CI low", "acc CI high", "AUC mean",
           "AUC (avg pred)", "AUC CI low", "AUC CI high")
PRED_COLUMNS = ("external", "variant", "split", "run_id", "sample_id", "lesion_id",
                "p_malignant", "label")


def external_names(spec: dict[str, Any] | None) -> list[str]:
    """The external sets a study declared (``evaluation.external[].name``)."""
    items = ((spec or {}).get("evaluation") or {}).get("external") or []
    return [str(e.get("name")) for e in items if isinstance(e, dict) and e.get("name")]


def load_external(client: Any, finished: pd.DataFrame, names: list[str]
                  ) -> tuple[pd.DataFrame, list[str]]:
    """Long-form external predictions of the finished evaluation runs, and what was missing."""
    frames, problems = [], []
    for r in finished.itertuples(index=False):
        for name in names:
            data = _read_json(client, r.run_id, f"external_{name}_predictions.json")
            if not data or not data.get("sample_id"):
                problems.append(f"{r.variant} split {r.split}: external_{name}_predictions.json "
                                "missing — left out of the external validation table")
                continue
            frames.append(pd.DataFrame({
                "external": name, "variant": r.variant, "split": int(r.split),
                "run_id": r.run_id, "sample_id": [str(s) for s in data["sample_id"]],
                "lesion_id": [str(s) for s in data.get("lesion_id", data["sample_id"])],
                "p_malignant": [float(p) for p in data["p_malignant"]],
                "label": [int(y) for y in data["label"]]}))
    if not frames:
        return pd.DataFrame(columns=list(PRED_COLUMNS)), problems
    return pd.concat(frames, ignore_index=True), problems


def lesion_level(preds: pd.DataFrame) -> pd.DataFrame:
    """One row per (external, variant, split, lesion): views' mean p(malignant), the label."""
    return (preds.groupby(["external", "variant", "split", "lesion_id"], as_index=False)
            .agg(p_malignant=("p_malignant", "mean"), label=("label", "max")))


def external_table(preds: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0,
                   variants: list[str] | None = None) -> pd.DataFrame:
    """The table described in the module docstring (pure: DataFrame in, DataFrame out)."""
    if preds.empty:
        return pd.DataFrame(columns=list(COLUMNS))
    lesions = lesion_level(preds)
    rows = []
    order = variants or sorted(lesions["variant"].unique())
    for name in sorted(lesions["external"].unique()):
        for variant in [v for v in order if v in set(lesions["variant"])]:
            d = lesions[(lesions["external"] == name) & (lesions["variant"] == variant)]
            if d.empty:
                continue
            per_run = [((g["p_malignant"] >= 0.5) == (g["label"] == 1)).mean()
                       for _, g in d.groupby("split")]
            aucs = [_auc(g["label"].to_numpy(), g["p_malignant"].to_numpy())
                    for _, g in d.groupby("split")]
            avg = d.groupby("lesion_id", as_index=False).agg(
                p=("p_malignant", "mean"), y=("label", "max"))
            y, p = avg["y"].to_numpy(), avg["p"].to_numpy()
            acc_ci = _bootstrap_acc(y, p, n_boot, seed)
            try:
                boot = stats.bootstrap_metrics(y, p, n_boot=n_boot, seed=seed)
                auc_est, auc_lo, auc_hi = (boot.estimate["auc"], boot.low["auc"],
                                           boot.high["auc"])
            except ValueError:  # one class only
                auc_est = auc_lo = auc_hi = float("nan")
            rows.append({
                "external set": name, "variant": variant, "runs": len(per_run),
                "lesions": len(avg), "benign": int((y == 0).sum()),
                "malignant": int((y == 1).sum()),
                "acc mean": float(np.mean(per_run)),
                "acc std": float(np.std(per_run, ddof=1)) if len(per_run) > 1 else float("nan"),
                "acc (avg pred)": float(((p >= 0.5) == (y == 1)).mean()),
                "acc CI low": acc_ci[0], "acc CI high": acc_ci[1],
                "AUC mean": float(np.nanmean(aucs)) if aucs else float("nan"),
                "AUC (avg pred)": auc_est, "AUC CI low": auc_lo, "AUC CI high": auc_hi})
    return pd.DataFrame(rows, columns=list(COLUMNS)).round(3)


def attach(client: Any, computed: Any, *, n_boot: int = 2000, seed: int = 0) -> Any:
    """``computed`` (a ``dashboards.build.Computed``) with an ``external`` table added when the
    study declared external sets; missing predictions become problems of the report."""
    import dataclasses

    names = external_names(computed.runs.spec)
    if not names:
        return computed
    preds, problems = load_external(client, computed.runs.finished_evaluations, names)
    table = external_table(preds, n_boot=n_boot, seed=seed,
                           variants=list(computed.runs.variants))
    runs = dataclasses.replace(computed.runs,
                               problems=tuple(computed.runs.problems) + tuple(problems))
    return dataclasses.replace(computed, runs=runs,
                               tables={**computed.tables, "external": table})


def html_section(computed: Any, render_table: Any) -> str:
    """The report's external-validation section (empty when the study declared none)."""
    if "external" not in computed.tables:
        return ""
    return ('<h2 id="external">External validation (other datasets — not Tables 1/2\'s '
            "test folds)</h2>" + render_table(computed, "external"))


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    return stats.auc(y, p) if 0 < y.sum() < len(y) else float("nan")


def _bootstrap_acc(y: np.ndarray, p: np.ndarray, n_boot: int, seed: int
                   ) -> tuple[float, float]:
    """95 % stratified bootstrap CI of accuracy at 0.5 (positives, negatives drawn apart)."""
    correct = (p >= 0.5) == (y == 1)
    pos, neg = correct[y == 1], correct[y == 0]
    if not len(pos) or not len(neg):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = ((pos[rng.integers(0, len(pos), (n_boot, len(pos)))].sum(1)
              + neg[rng.integers(0, len(neg), (n_boot, len(neg)))].sum(1)) / len(y))
    lo, hi = np.quantile(draws, [0.025, 0.975])
    return float(lo), float(hi)


def _read_json(client: Any, run_id: str, path: str) -> Any:
    with tempfile.TemporaryDirectory(prefix="tlstudy-ext-") as tmp:
        try:
            local = client.download_artifacts(run_id, path, tmp)
        except Exception as e:  # noqa: BLE001 - absent artifact
            log.debug("artifact %s of %s: %s", path, run_id, e)
            return None
        return json.loads(Path(local).read_text())

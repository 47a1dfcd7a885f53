"""The search, seen from its MLflow runs: best validation loss against trials run, Optuna's
hyperparameter importance, FTED's λ × base LR, and the compute it cost (and ASHA saved).

The objective is what the searcher minimised: ``best_val_loss`` (lowest validation loss of a
trial so far). Trials ASHA stopped (``stop_reason=pruned``, run KILLED) count as trials run,
with their partial best; Optuna's importance uses the trials that ran their course (as Optuna
itself does: pruned trials are not COMPLETE).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd

from dashboards._load import StudyRuns, variant_order

log = logging.getLogger(__name__)

OBJECTIVE = "best_val_loss"
#: Fewest completed search trials of a variant for an importance estimate: fANOVA fits a
#: random forest over the trials; with a handful it ranks noise.
MIN_IMPORTANCE_TRIALS = 10
COST_COLUMNS = ("variant", "phase", "trials", "pruned", "epochs", "hours", "cpu_hours",
                "gpu_hours", "asha_saved_hours", "asha_saved_pct")


def best_so_far(runs: StudyRuns, objective: str = OBJECTIVE) -> pd.DataFrame:
    """Per (variant, split) search: trials in start order, each trial's objective and the best
    so far (minimum). Columns variant, split, trial_number (1..), value, best, pruned."""
    s = runs.searches
    frames = []
    for (v, k), g in s.groupby(["variant", "split"]):
        g = g.sort_values(["optuna_trial", "start_time"], na_position="last")
        value = g[objective].to_numpy(dtype=float)
        best = pd.Series(value).cummin().to_numpy()
        frames.append(pd.DataFrame({"variant": v, "split": k,
                                    "trial_number": np.arange(1, len(g) + 1), "value": value,
                                    "best": best,
                                    "pruned": (g["stop_reason"] == "pruned").to_numpy()}))
    if not frames:
        return pd.DataFrame(columns=["variant", "split", "trial_number", "value", "best",
                                     "pruned"])
    return pd.concat(frames, ignore_index=True)


def searched_params(spec: dict[str, Any] | None, variant: str) -> dict[str, dict[str, Any]]:
    """``{name: declaration}`` of the hyperparameters searched for ``variant`` in the spec
    (``study_spec.json``'s ``search.params``; a list holds per-variant alternatives)."""
    if not spec:
        return {}
    out = {}
    for name, decl in spec.get("search", {}).get("params", {}).items():
        for d in decl if isinstance(decl, list) else [decl]:
            applies = d.get("variants") is None or variant in d["variants"]
            if applies and d.get("role") != "fixed":
                out[name] = d
    return out


def _distribution(decl: dict[str, Any]) -> Any:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )
    if "choices" in decl:
        return CategoricalDistribution(list(decl["choices"]))
    if isinstance(decl["low"], int) and isinstance(decl["high"], int) and not isinstance(
            decl["low"], bool):
        return IntDistribution(decl["low"], decl["high"], log=bool(decl.get("log")))
    return FloatDistribution(float(decl["low"]), float(decl["high"]),
                             log=bool(decl.get("log")))


def _value(raw: str, decl: dict[str, Any]) -> Any:
    if "choices" in decl:
        return next((c for c in decl["choices"] if str(c) == raw), raw)
    return int(float(raw)) if isinstance(decl["low"], int) else float(raw)


def importance(runs: StudyRuns, *, seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """Optuna's fANOVA importance of each searched hyperparameter, per variant, from that
    variant's non-pruned search runs (all splits pooled: one space per variant).

    Only where it means something: at least two searched hyperparameters (with one, fANOVA
    gives it 1.000 by construction) and ``MIN_IMPORTANCE_TRIALS`` completed trials; otherwise
    a note says why not.

    Returns (DataFrame variant, param, importance, trials) and notes on what was skipped."""
    import optuna
    from optuna.trial import create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows, notes = [], []
    s = runs.searches
    for v in variant_order(s["variant"].unique()):
        decls = searched_params(runs.spec, v)
        done = s[(s["variant"] == v) & (s["stop_reason"] != "pruned") & s[OBJECTIVE].notna()]
        if not decls:
            notes.append(f"{v}: no searched hyperparameters in the spec; no importance")
            continue
        if len(decls) < 2:
            notes.append(f"{v}: importance not computed: one searched hyperparameter "
                         f"({', '.join(decls)}) gets importance 1.000 by construction")
            continue
        study = optuna.create_study(direction="minimize")
        dists = {n: _distribution(d) for n, d in decls.items()}
        for r in done.itertuples(index=False):
            if not all(n in r.hp for n in decls):
                continue
            params = {n: _value(r.hp[n], d) for n, d in decls.items()}
            study.add_trial(create_trial(params=params, distributions=dists,
                                         value=float(getattr(r, OBJECTIVE))))
        if len(study.trials) < MIN_IMPORTANCE_TRIALS:
            notes.append(f"{v}: importance not computed: {len(study.trials)} completed search "
                         f"trial(s) of {len(decls)} hyperparameters; it needs at least "
                         f"{MIN_IMPORTANCE_TRIALS}")
            continue
        try:
            imp = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed))
        except (RuntimeError, ValueError) as e:
            notes.append(f"{v}: Optuna could not compute importances ({e})")
            continue
        rows += [{"variant": v, "param": n, "importance": float(x),
                  "trials": len(study.trials)} for n, x in imp.items()]
    return pd.DataFrame(rows, columns=["variant", "param", "importance", "trials"]), notes


def fted_scatter(runs: StudyRuns, variant: str = "FTED") -> pd.DataFrame:
    """FTED's search trials: base_lr, lam, objective, split, pruned."""
    s = runs.searches
    g = s[(s["variant"] == variant) & s["lam"].notna() & s["base_lr"].notna()]
    return pd.DataFrame({"base_lr": g["base_lr"], "lam": g["lam"], "value": g[OBJECTIVE],
                         "split": g["split"], "pruned": g["stop_reason"] == "pruned"}
                        ).reset_index(drop=True)


def _run_seconds(df: pd.DataFrame) -> pd.Series:
    """Training seconds of each run: its logged ``wall_time_s``, else the run's duration."""
    return df["wall_time_s"].where(df["wall_time_s"].notna(), df["duration_s"]).fillna(0.0)


def compute_cost(runs: StudyRuns) -> pd.DataFrame:
    """Hours per variant and phase, CPU-/GPU-hours (hours × the trial's resources from the
    spec), and what ASHA saved, over the search runs that have ended (a RUNNING run's epochs
    are not final):

    * ``asha_saved_pct`` counts epochs: 1 − epochs trained ÷ (budget × search trials), the
      share of the full budget of every search trial that was not trained;
    * ``asha_saved_hours`` prices each pruned trial's untrained epochs at its measured epoch
      time (``epoch_time_s``: training + validation, without the trial's fixed start-up and
      reporting costs), else at its training seconds per epoch.

    Both are upper bounds: early stopping might have ended some trials sooner."""
    spec = runs.spec or {}
    res = spec.get("resources", {})
    cpus, gpus = float(res.get("cpus", math.nan)), float(res.get("gpus", math.nan))
    budget = spec.get("search", {}).get("asha", {}).get("max_epochs")
    rows = []
    for phase, df in (("search", runs.searches), ("evaluate", runs.evaluations)):
        if df.empty:
            continue
        df = df.assign(_s=_run_seconds(df))
        epochs_col = "epoch" if phase == "search" else "epochs_run"
        for v in variant_order(df["variant"].unique()):
            g = df[df["variant"] == v]
            epochs = g[epochs_col].fillna(0.0)
            hours = g["_s"].sum() / 3600
            saved = saved_pct = math.nan
            pruned = g["stop_reason"] == "pruned"
            ended = g["status"] != "RUNNING"
            if phase == "search" and budget and ended.any():
                trained = epochs[ended].clip(upper=budget)
                saved_pct = 100 * float(1 - trained.sum() / (budget * int(ended.sum())))
                measured = g["epoch_time_s"] if "epoch_time_s" in g else pd.Series(
                    np.nan, index=g.index)
                per_epoch = measured.where(measured.notna(), g["_s"] / epochs.where(epochs > 0))
                left = (budget - epochs).clip(lower=0) * per_epoch
                saved = float(left[pruned & ended].sum()) / 3600
            rows.append({"variant": v, "phase": phase, "trials": len(g),
                         "pruned": int(pruned.sum()), "epochs": float(epochs.sum()),
                         "hours": hours, "cpu_hours": hours * cpus, "gpu_hours": hours * gpus,
                         "asha_saved_hours": saved, "asha_saved_pct": saved_pct})
    return pd.DataFrame(rows, columns=list(COST_COLUMNS))

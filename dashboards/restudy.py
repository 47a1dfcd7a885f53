"""A re-study against the execution it re-ran: per-variant deltas of accuracy and AUC with
bootstrap CIs and Holm-adjusted p-values, whether the best variant or the ranking changed, a
one-line verdict, and what the warm start saved in the search.

Two executions of a study are two parent runs in its experiment; the newer one carries
``previous_run_id``. When the data did not change (same test samples in each split, matched by
their anonymous ids) the bootstrap resamples the two executions' predictions *paired*; after a
data change the test sets differ and the executions are resampled independently.

The pure maths (``delta_bootstrap``, ``to_target``) takes arrays; ``compare`` picks them from two
:class:`~dashboards._load.StudyRuns`; ``html_section`` / ``write_tables`` show the result.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from dashboards import stats
from dashboards._load import StudyRuns, variant_order
from dashboards.formats import html_table, markdown

ALPHA = 0.05
DELTA_COLUMNS = ("variant", "acc_before", "acc_after", "acc_delta", "acc_low", "acc_high",
                 "acc_p", "acc_p_holm", "auc_before", "auc_after", "auc_delta", "auc_low",
                 "auc_high", "auc_p", "auc_p_holm", "n_before", "n_after", "paired",
                 "significant")
SAVINGS_COLUMNS = ("variant", "split", "target_loss", "trials_before", "trials_after",
                   "compute_before_s", "compute_after_s", "first_loss_before",
                   "first_loss_after", "best_after")
CAPTIONS = {
    "restudy_deltas": "Change per variant against the previous execution (after − before) on "
                      "the pooled test predictions: accuracy in percentage points and AUC, with "
                      "95% stratified-bootstrap CIs and two-sided bootstrap p-values "
                      "(Holm-adjusted over variants, per metric); paired when both executions "
                      "tested the same samples, independent otherwise.",
    "restudy_savings": "Warm-start savings per search: trials and search compute (sum of the "
                       "trials' run times, s) until the best-so-far validation loss reached the "
                       "previous execution's best for that variant and split. Across a data "
                       "change the target is approximate (other validation samples).",
}


@dataclass(frozen=True)
class Delta:
    """``after − before`` of a metric, with a percentile CI and a bootstrap p-value."""

    before: float
    after: float
    delta: float
    low: float
    high: float
    p_value: float


@dataclass(frozen=True)
class RestudyComparison:
    """What a re-study's report says about the execution it re-ran."""

    previous_run_id: str
    deltas: pd.DataFrame                       # DELTA_COLUMNS
    savings: pd.DataFrame                      # SAVINGS_COLUMNS
    ranking_before: tuple[str, ...]
    ranking_after: tuple[str, ...]
    best_before: str | None
    best_after: str | None
    verdict: str
    savings_line: str
    changed: str = ""
    notes: tuple[str, ...] = field(default=())

    @property
    def significant(self) -> bool:
        return bool(self.deltas["significant"].any()) if len(self.deltas) else False


# ----------------------------------------------------------------------------- maths


def delta_bootstrap(y_before: np.ndarray, p_before: np.ndarray, y_after: np.ndarray,
                    p_after: np.ndarray, *, paired: bool = False, n_boot: int = 2000,
                    seed: int = 0, level: float = 0.95, threshold: float = 0.5
                    ) -> dict[str, Delta]:
    """Accuracy (``p >= threshold`` = malignant) and AUC changes between two sets of test
    predictions, ``after − before``.

    Stratified bootstrap: positives and negatives are resampled separately. ``paired``: the
    two sets score the same samples in the same order (``y_before == y_after``) and one draw of
    indices resamples both; otherwise each set is resampled on its own. The p-value is the
    two-sided bootstrap one, ``min(1, 2·min(P*(δ ≤ 0), P*(δ ≥ 0)))``."""
    yb, pb = np.asarray(y_before).astype(int), np.asarray(p_before, dtype=float)
    ya, pa = np.asarray(y_after).astype(int), np.asarray(p_after, dtype=float)
    if paired and not np.array_equal(yb, ya):
        raise ValueError("paired predictions must have the same labels in the same order")
    rng = np.random.default_rng(seed)
    draws_b = _draws(yb, rng, n_boot)
    draws_a = draws_b if paired else _draws(ya, rng, n_boot)
    out = {}
    for name, fn in (("acc", _acc_rows), ("auc", _auc_rows)):
        est_b = float(fn(yb, pb, None, threshold)[0])
        est_a = float(fn(ya, pa, None, threshold)[0])
        d = fn(ya, pa, draws_a, threshold) - fn(yb, pb, draws_b, threshold)
        d = d[np.isfinite(d)]
        if not len(d):
            out[name] = Delta(est_b, est_a, est_a - est_b, math.nan, math.nan, math.nan)
            continue
        q = (1 - level) / 2
        lo, hi = np.quantile(d, [q, 1 - q])
        p = min(1.0, 2 * min(float(np.mean(d <= 0)), float(np.mean(d >= 0))))
        out[name] = Delta(est_b, est_a, est_a - est_b, float(lo), float(hi), p)
    return out


def _draws(y: np.ndarray, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """(n_boot, N) indices: each row resamples the positives among the positives and the
    negatives among the negatives."""
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    parts = [idx[rng.integers(0, len(idx), size=(n_boot, len(idx)))]
             for idx in (pos, neg) if len(idx)]
    return np.concatenate(parts, axis=1) if parts else np.zeros((n_boot, 0), dtype=int)


def _rows(y: np.ndarray, p: np.ndarray, draws: np.ndarray | None) -> tuple[np.ndarray, ...]:
    idx = np.arange(len(y))[None] if draws is None else draws
    return y[idx], p[idx]


def _acc_rows(y: np.ndarray, p: np.ndarray, draws: np.ndarray | None,
              threshold: float) -> np.ndarray:
    yy, pp = _rows(y, p, draws)
    return np.mean((pp >= threshold).astype(int) == yy, axis=1) if yy.shape[1] else \
        np.full(len(yy), math.nan)


def _auc_rows(y: np.ndarray, p: np.ndarray, draws: np.ndarray | None,
              threshold: float) -> np.ndarray:
    yy, pp = _rows(y, p, draws)
    m = int(yy[0].sum()) if len(yy) else 0
    if m == 0 or m == yy.shape[1]:
        return np.full(len(yy), math.nan)
    # stratified rows keep the class counts: positives and negatives split the same in every row
    order = np.argsort(-yy, axis=1, kind="stable")
    ps = np.take_along_axis(pp, order, axis=1)
    return stats._auc_rows(ps[:, :m], ps[:, m:])


def to_target(losses: np.ndarray, costs: np.ndarray, complete: np.ndarray,
              target: float, rtol: float = 1e-9) -> tuple[float, float]:
    """(trials, summed cost) until a complete trial's loss first reached ``target`` (trials
    in the order they were asked); (nan, nan) if never."""
    total = 0.0
    for i, (loss, cost, ok) in enumerate(zip(losses, costs, complete, strict=True), 1):
        total += float(cost) if np.isfinite(cost) else 0.0
        if ok and np.isfinite(loss) and loss <= target + rtol * max(1.0, abs(target)):
            return float(i), total
    return math.nan, math.nan


# ----------------------------------------------------------------------------- a study


def compare(previous: StudyRuns, current: StudyRuns, *, n_boot: int = 2000,
            seed: int = 0) -> RestudyComparison:
    """The re-study ``current`` against the execution it re-ran, ``previous``."""
    deltas, paired = _deltas(previous, current, n_boot=n_boot, seed=seed)
    before, after = _ranking(previous), _ranking(current)
    savings = savings_table(previous, current)
    notes = []
    if not paired and len(deltas):
        notes.append("the executions tested different samples (the data changed): deltas are "
                     "unpaired and include the change of test set.")
    comparison = RestudyComparison(
        previous.parent_run_id, deltas, savings, before, after,
        before[0] if before else None, after[0] if after else None, "",
        savings_summary(savings), current.tags.get("changed", ""), tuple(notes))
    return _with_verdict(comparison)


def _pooled(runs: StudyRuns, variant: str) -> pd.DataFrame:
    pred = runs.predictions
    return pred[pred["variant"] == variant].sort_values(["split", "sample_id"])


def _deltas(previous: StudyRuns, current: StudyRuns, *, n_boot: int,
            seed: int) -> tuple[pd.DataFrame, bool]:
    common = [v for v in variant_order(current.finished_evaluations["variant"].unique())
              if v in set(previous.finished_evaluations["variant"])]
    rows, all_paired = [], True
    for i, v in enumerate(common):
        b, a = _pooled(previous, v), _pooled(current, v)
        keys_b = list(zip(b["split"], b["sample_id"], strict=True))
        keys_a = list(zip(a["split"], a["sample_id"], strict=True))
        paired = bool(len(b)) and keys_b == keys_a
        all_paired &= paired
        row: dict = {"variant": v, "n_before": len(b), "n_after": len(a), "paired": paired}
        if len(b) and len(a):
            d = delta_bootstrap(b["label"].to_numpy(), b["p_malignant"].to_numpy(),
                                a["label"].to_numpy(), a["p_malignant"].to_numpy(),
                                paired=paired, n_boot=n_boot, seed=seed + i)
            for m in ("acc", "auc"):
                x = d[m]
                row.update({f"{m}_before": x.before, f"{m}_after": x.after,
                            f"{m}_delta": x.delta, f"{m}_low": x.low, f"{m}_high": x.high,
                            f"{m}_p": x.p_value})
        else:  # no predictions: the logged accuracies, no CI
            acc_b = _mean(previous, v, "test_acc")
            acc_a = _mean(current, v, "test_acc")
            auc_b, auc_a = _mean(previous, v, "test_auc"), _mean(current, v, "test_auc")
            row.update({"acc_before": acc_b, "acc_after": acc_a, "acc_delta": acc_a - acc_b,
                        "auc_before": auc_b, "auc_after": auc_a, "auc_delta": auc_a - auc_b})
        rows.append(row)
    df = pd.DataFrame(rows, columns=list(DELTA_COLUMNS))
    for m in ("acc", "auc"):
        p = df[f"{m}_p"].astype(float).to_numpy()
        ok = np.isfinite(p)
        holm = np.full(len(p), np.nan)
        if ok.any():
            holm[ok] = stats.holm(p[ok])
        df[f"{m}_p_holm"] = holm
    df["significant"] = (df["acc_p_holm"] < ALPHA) | (df["auc_p_holm"] < ALPHA)
    return df, all_paired


def _mean(runs: StudyRuns, variant: str, col: str) -> float:
    ev = runs.finished_evaluations
    values = ev.loc[ev["variant"] == variant, col]
    return float(values.mean()) if len(values) else math.nan


def _ranking(runs: StudyRuns) -> tuple[str, ...]:
    """Variants by mean test accuracy over splits (Table 1), best first; ties in paper order."""
    ev = runs.finished_evaluations
    if ev.empty:
        return ()
    means = ev.groupby("variant")["test_acc"].mean()
    order = variant_order(means.index)
    return tuple(sorted(order, key=lambda v: (-means[v], order.index(v))))


def _with_verdict(c: RestudyComparison) -> RestudyComparison:
    from dataclasses import replace

    return replace(c, verdict=verdict(c))


def verdict(c: RestudyComparison) -> str:
    """One line: whether the conclusion (the best variant) holds, what moved, what is
    significant."""
    d = c.deltas.set_index("variant") if len(c.deltas) else None
    if c.best_after is None:
        return "no conclusion: the re-study has no finished evaluation"
    if c.best_before is None:
        return f"{c.best_after} best; the previous execution had no finished evaluation"
    if c.best_before != c.best_after:
        acc = _acc_of(d, c.best_after), _acc_of(d, c.best_before)
        text = (f"{c.best_before} no longer best: {c.best_after} now best by mean accuracy"
                + (f" ({acc[0]:.1f} % vs {acc[1]:.1f} %)" if all(map(math.isfinite, acc))
                   else ""))
    else:
        text = f"conclusion unchanged: {c.best_after} still best"
        common = [v for v in c.ranking_before if v in c.ranking_after]
        after = [v for v in c.ranking_after if v in common]
        if common != after:
            text += f"; ranking changed ({' > '.join(common)} → {' > '.join(after)})"
    sig = [] if d is None else [
        f"{v} {name} {_fmt_delta(m, r)}" for v, r in d.iterrows()
        for m, name in (("acc", "accuracy"), ("auc", "AUC")) if r[f"{m}_p_holm"] < ALPHA]
    text += ("; significant: " + ", ".join(sig)) if sig else \
        "; no significant change (bootstrap, Holm, 5 %)"
    return text


def _acc_of(d: pd.DataFrame | None, v: str) -> float:
    if d is None or v not in d.index:
        return math.nan
    return float(d.loc[v, "acc_after"]) * 100


def _fmt_delta(metric: str, r: pd.Series) -> str:
    k, unit, dp = (100, " pp", 1) if metric == "acc" else (1, "", 3)
    return (f"{r[f'{metric}_delta'] * k:+.{dp}f}{unit} [{r[f'{metric}_low'] * k:+.{dp}f}, "
            f"{r[f'{metric}_high'] * k:+.{dp}f}]")


# ----------------------------------------------------------------------------- savings


def savings_table(previous: StudyRuns, current: StudyRuns) -> pd.DataFrame:
    """Per search (variant, split) of both: trials and compute to reach the previous best."""
    rows = []
    sb, sa = previous.searches, current.searches
    for (v, k), before in sb.groupby(["variant", "split"]):
        after = sa[(sa["variant"] == v) & (sa["split"] == k)]
        if after.empty:
            continue
        before, after = _asked_order(before), _asked_order(after)
        done_b = (before["status"] == "FINISHED").to_numpy()
        done_a = (after["status"] == "FINISHED").to_numpy()
        losses_b = before["best_val_loss"].to_numpy(float)
        if not np.isfinite(losses_b[done_b]).any():
            continue
        target = float(np.nanmin(losses_b[done_b]))
        tb, cb = to_target(losses_b, before["duration_s"].to_numpy(float), done_b, target)
        ta, ca = to_target(after["best_val_loss"].to_numpy(float),
                           after["duration_s"].to_numpy(float), done_a, target)
        la = after["best_val_loss"].to_numpy(float)[done_a]
        rows.append({"variant": v, "split": int(k), "target_loss": target, "trials_before": tb,
                     "trials_after": ta, "compute_before_s": cb, "compute_after_s": ca,
                     "first_loss_before": float(before["best_val_loss"].iloc[0]),
                     "first_loss_after": float(after["best_val_loss"].iloc[0]),
                     "best_after": float(np.nanmin(la)) if len(la) else math.nan})
    df = pd.DataFrame(rows, columns=list(SAVINGS_COLUMNS))
    if len(df):
        order = variant_order(df["variant"].unique())
        df = df.sort_values(["variant", "split"], key=lambda s: s.map(order.index)
                            if s.name == "variant" else s).reset_index(drop=True)
    return df


def _asked_order(searches: pd.DataFrame) -> pd.DataFrame:
    """Trials in the order Optuna handed them out (its trial number, else start time)."""
    return searches.assign(_o=searches["optuna_trial"].fillna(np.inf)).sort_values(
        ["_o", "start_time"]).drop(columns="_o")


def savings_summary(s: pd.DataFrame) -> str:
    """One line: in how many searches the re-study reached the previous best, and the trials
    and compute it took there against the first study's."""
    if s.empty:
        return "no search to compare (nothing searched in both executions)"
    hit = s[s["trials_after"].notna()]
    text = (f"re-study reached the previous best validation loss in {len(hit)} of {len(s)} "
            "searches")
    if len(hit):
        tb, ta = hit["trials_before"].sum(), hit["trials_after"].sum()
        cb, ca = hit["compute_before_s"].sum(), hit["compute_after_s"].sum()
        pct = (1 - ca / cb) * 100 if cb > 0 else math.nan
        saved = ("" if not math.isfinite(pct) else
                 f" ({pct:.0f} % less)" if pct >= 0 else f" ({-pct:.0f} % more)")
        text += (f", after {ta:.0f} trials vs {tb:.0f} (first study); search compute to it "
                 f"{ca:.0f} s vs {cb:.0f} s{saved}")
    return text


# ----------------------------------------------------------------------------- display


def _pct(x: object) -> str:
    return "–" if not _finite(x) else f"{float(x) * 100:.1f}"  # type: ignore[arg-type]


def _num(d: int):
    return lambda x: "–" if not _finite(x) else f"{float(x):.{d}f}"


def _pv(x: object) -> str:
    if not _finite(x):
        return "–"
    return "< 0.001" if float(x) < 0.001 else f"{float(x):.3f}"  # type: ignore[arg-type]


def _finite(x: object) -> bool:
    try:
        return math.isfinite(float(x))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _ci(r: pd.Series, m: str, k: float, d: int) -> str:
    if not _finite(r[f"{m}_low"]):
        return "–"
    return f"[{r[f'{m}_low'] * k:+.{d}f}, {r[f'{m}_high'] * k:+.{d}f}]"


def shown_deltas(df: pd.DataFrame) -> pd.DataFrame:
    rows = [{"Variant": r["variant"], "Acc. before (%)": _pct(r["acc_before"]),
             "Acc. after (%)": _pct(r["acc_after"]),
             "Δ acc. (pp)": "–" if not _finite(r["acc_delta"]) else f"{r['acc_delta'] * 100:+.1f}",
             "95% CI": _ci(r, "acc", 100, 1), "p (Holm)": _pv(r["acc_p_holm"]),
             "AUC before": _num(3)(r["auc_before"]), "AUC after": _num(3)(r["auc_after"]),
             "Δ AUC": "–" if not _finite(r["auc_delta"]) else f"{r['auc_delta']:+.3f}",
             "95% CI ": _ci(r, "auc", 1, 3), "p (Holm) ": _pv(r["auc_p_holm"]),
             "Paired": "yes" if r["paired"] else "no",
             "Significant": "yes" if r["significant"] else "no"}
            for _, r in df.iterrows()]
    return pd.DataFrame(rows)


def shown_savings(df: pd.DataFrame) -> pd.DataFrame:
    rows = [{"Variant": r["variant"], "Split": str(int(r["split"])),
             "Target loss": _num(4)(r["target_loss"]),
             "Trials (first)": _num(0)(r["trials_before"]),
             "Trials (re-study)": _num(0)(r["trials_after"]),
             "Compute s (first)": _num(1)(r["compute_before_s"]),
             "Compute s (re-study)": _num(1)(r["compute_after_s"]),
             "Trial 1 loss (first)": _num(4)(r["first_loss_before"]),
             "Trial 1 loss (re-study)": _num(4)(r["first_loss_after"])}
            for _, r in df.iterrows()]
    return pd.DataFrame(rows)


def write_tables(c: RestudyComparison, out_dir: Path) -> dict[str, list[Path]]:
    """``restudy_deltas`` and ``restudy_savings`` as CSV (raw numbers) and Markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, df, shown in (("restudy_deltas", c.deltas, shown_deltas(c.deltas)),
                            ("restudy_savings", c.savings, shown_savings(c.savings))):
        csv, md = out_dir / f"{name}.csv", out_dir / f"{name}.md"
        df.to_csv(csv, index=False)
        md.write_text((markdown(shown) if len(shown) else "(no rows)\n")
                      + f"\n{CAPTIONS[name]}\n")
        files[name] = [csv, md]
    return files


def html_section(c: RestudyComparison) -> str:
    """The report's "Re-study" section (verdict first)."""
    def table(name: str, shown: pd.DataFrame) -> str:
        body = ("<p><em>no rows</em></p>" if shown.empty
                else html_table(shown, None, table_id=f"table-{name}"))
        return f'{body}\n<p class="caption">{html.escape(CAPTIONS[name])}</p>'

    rank = (f"<p>Ranking by mean accuracy — before: {html.escape(' > '.join(c.ranking_before))}"
            f"; after: {html.escape(' > '.join(c.ranking_after))}.</p>")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in c.notes)
    return "\n".join([
        '<h2 id="restudy">Re-study: comparison with the previous execution</h2>',
        f'<p id="verdict" class="notes"><strong>Verdict:</strong> {html.escape(c.verdict)}</p>',
        f"<p>Previous execution: parent run <code>{html.escape(c.previous_run_id)}</code>"
        + (f"; changed: {html.escape(c.changed)}" if c.changed else "") + ".</p>",
        rank, f"<ul>{notes}</ul>" if notes else "",
        table("restudy_deltas", shown_deltas(c.deltas)),
        f"<h3>Warm start</h3><p>{html.escape(c.savings_line)}.</p>",
        table("restudy_savings", shown_savings(c.savings)),
    ])

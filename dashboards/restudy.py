"""A re-study against the execution it re-ran: per-variant deltas of accuracy and AUC with
bootstrap CIs and Holm-adjusted p-values, whether the best variant or the ranking changed, a
one-line verdict, and what the warm start saved in the search.

Two executions of a study are two parent runs in its experiment; the newer one carries
``previous_run_id``. Each side of a delta is the mean over its runs at the unit of analysis (a
lesion's views combined into one case, ``dashboards.units``), as Table 1 shows it. When the
data did not change (same test cases in each split, matched by their anonymous ids) one
cluster-bootstrap draw weighs both executions (*paired*); after a data change the test sets
differ and the executions are resampled independently.

``delta_over_runs`` takes two executions' cases, ``to_target`` arrays; ``compare`` picks them
from two :class:`~dashboards._load.StudyRuns`; ``html_section`` / ``write_tables`` show the
result.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from dashboards import stats, units
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
    "restudy_deltas": "Change per variant against the previous execution (after − before) of "
                      "the mean over runs at the unit of analysis (a lesion's views one case), "
                      "as in Table 1: accuracy in percentage points and AUC, with 95% "
                      "cluster-bootstrap CIs (lesions resampled, stratified by class) and "
                      "two-sided bootstrap p-values (Holm-adjusted over variants, per metric); "
                      "paired when both executions tested the same cases, independent "
                      "otherwise.",
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


def delta_over_runs(before: pd.DataFrame, after: pd.DataFrame, *, paired: bool,
                    n_boot: int = 2000, seed: int = 0, level: float = 0.95
                    ) -> dict[str, Delta]:
    """Accuracy (at P(malignant) >= 0.5) and AUC changes ``after − before`` between two
    executions' test cases of one variant (``units.combine`` rows at the unit of analysis:
    a lesion's views are already one case). Each side is the mean over its runs, as in
    Table 1; the CI and the two-sided p-value, ``min(1, 2·min(P*(δ ≤ 0), P*(δ ≥ 0)))``, come
    from the stratified cluster bootstrap of that difference of means. ``paired``: the two
    executions tested the same cases, and one draw of clusters weighs both; otherwise each is
    resampled on its own."""
    if paired:
        rb = ra = units.Resampler.for_cases(pd.concat([before, after]), n_boot, seed, level)
    else:
        rb = units.Resampler.for_cases(before, n_boot, seed, level)
        ra = units.Resampler.for_cases(after, n_boot, seed + 1_000_003, level)
    out = {}
    for name, metric in (("acc", units.accuracy), ("auc", units.auc)):
        runs_b, boot_b = units.resampled_mean(before, metric, rb)
        runs_a, boot_a = units.resampled_mean(after, metric, ra)
        est_b = float(np.nanmean(runs_b)) if runs_b.notna().any() else math.nan
        est_a = float(np.nanmean(runs_a)) if runs_a.notna().any() else math.nan
        d = (boot_a - boot_b) if boot_a is not None and boot_b is not None else np.array([])
        d = d[np.isfinite(d)]
        if not len(d):
            out[name] = Delta(est_b, est_a, est_a - est_b, math.nan, math.nan, math.nan)
            continue
        lo, hi = stats.percentile_ci(d, level)
        p = min(1.0, 2 * min(float(np.mean(d <= 0)), float(np.mean(d >= 0))))
        out[name] = Delta(est_b, est_a, est_a - est_b, float(lo), float(hi), p)
    return out


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


def _cases(runs: StudyRuns, variant: str, unit: str) -> pd.DataFrame:
    pred = runs.predictions
    return units.combine(pred[pred["variant"] == variant], unit)


def _keys(cases: pd.DataFrame) -> list[tuple]:
    return sorted(zip(cases["split"], cases["seed"], cases["unit"], cases["label"],
                      strict=True))


def _deltas(previous: StudyRuns, current: StudyRuns, *, n_boot: int,
            seed: int) -> tuple[pd.DataFrame, bool]:
    common = [v for v in variant_order(current.finished_evaluations["variant"].unique())
              if v in set(previous.finished_evaluations["variant"])]
    unit = units.analysis_unit(current.spec)
    rows, all_paired = [], True
    for i, v in enumerate(common):
        b, a = _cases(previous, v, unit), _cases(current, v, unit)
        paired = bool(len(b)) and _keys(b) == _keys(a)
        all_paired &= paired
        row: dict = {"variant": v, "n_before": len(b), "n_after": len(a), "paired": paired}
        if len(b) and len(a):
            d = delta_over_runs(b, a, paired=paired, n_boot=n_boot, seed=seed + i)
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

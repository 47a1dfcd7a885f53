"""A report in three steps: ``compute`` (DataFrames from a StudyRuns), ``draw`` (figures from
those DataFrames), ``write`` (tables as Markdown/CSV/LaTeX, figures as PNG/SVG, one
self-contained HTML page). ``dashboards.report`` chains them and logs the folder to MLflow.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from dashboards import comparisons, external, plots, restudy, roc, search_view, tables
from dashboards._load import StudyRuns
from dashboards.formats import write_table

log = logging.getLogger(__name__)

#: Table name -> caption (also the order in the HTML page).
CAPTIONS = {
    "table1": "Table 1: test accuracy (mean and sample std over splits), mean training time "
              "and epochs per variant, reproduced by this study.",
    "table1_reported": "The paper's Table 1 as reported (Chougrad et al. 2017: Inception-v3, "
                       "BCDR-F03, 5 runs of 80/20 splits, GPU): reported, not reproduced; "
                       "not comparable to the rows above (other data, model, budget).",
    "table2": "Table 2: AUC per variant (mean ± std over splits; 95% stratified-bootstrap CI "
              "over the pooled test predictions), then the paper's Table 2 rows, reported, "
              "not reproduced.",
    "delong": "DeLong test of each variant's AUC against the best variant's, on each split's "
              "shared test samples and combined over splits (inverse-variance weighted; "
              "Holm-adjusted over the combined tests).",
    "paired": "Paired comparison of test accuracy against the best variant over splits "
              "(paired t-test, Wilcoxon signed-rank; Holm-adjusted).",
    "operating_points": "Sensitivity at 90% specificity and specificity at 90% sensitivity "
                        "(pooled test predictions; 95% stratified-bootstrap CIs).",
    "calibration": "Calibration of P(malignant) on the pooled test predictions.",
    "importance": "Hyperparameter importance (Optuna fANOVA over each variant's completed "
                  "search trials, read from MLflow).",
    "compute": "Compute per variant and phase; ASHA saved = what running every pruned trial "
               "to the search budget would have added (upper bound).",
    "external": external.CAPTION,
}
FIGURES = ("roc", "reliability", "search_progress", "importance", "fted_lambda_lr",
           "compute")


@dataclass(frozen=True)
class Computed:
    """Everything a report shows, as DataFrames (no drawing)."""

    runs: StudyRuns
    tables: dict[str, pd.DataFrame]
    roc_curves: pd.DataFrame
    auc_summary: pd.DataFrame
    reliability: pd.DataFrame
    progress: pd.DataFrame
    fted: pd.DataFrame
    notes: tuple[str, ...] = field(default=())
    restudy: restudy.RestudyComparison | None = None  # a re-study against its previous run


def compute(runs: StudyRuns, *, n_boot: int = 2000, seed: int = 0,
            previous: StudyRuns | None = None) -> Computed:
    """All tables and figure data of one study execution (and, given the execution it
    re-ran, ``previous``, the re-study comparison)."""
    imp, imp_notes = search_view.importance(runs, seed=seed)
    t = {
        "table1": tables.table1(runs),
        "table1_reported": tables.table1_reported(),
        "table2": tables.table2(runs, n_boot=n_boot, seed=seed),
        "delong": comparisons.delong_table(runs),
        "paired": comparisons.paired_table(runs),
        "operating_points": comparisons.operating_points_table(runs, n_boot=n_boot, seed=seed),
        "calibration": comparisons.calibration_table(runs),
        "importance": imp,
        "compute": search_view.compute_cost(runs),
    }
    boot = (f"bootstrap CIs: {n_boot} stratified resamples (positives and negatives drawn "
            f"separately), seed {seed}, percentile intervals.")
    return Computed(runs, t, roc.mean_roc(runs.predictions), roc.auc_summary(runs.predictions),
                    comparisons.reliability_bins(runs), search_view.best_so_far(runs),
                    search_view.fted_scatter(runs),
                    (*study_notes(runs), boot, *imp_notes),
                    None if previous is None else restudy.compare(previous, runs,
                                                                  n_boot=n_boot, seed=seed))


def study_notes(runs: StudyRuns) -> list[str]:
    """Caveats a reader must see next to the numbers."""
    notes = []
    if runs.tags.get("search_mode") == "shared":
        notes.append("shared search: one split was searched and its best reused on every "
                     "split — the estimates are optimistic.")
    if runs.tags.get("split_mode") == "image":
        notes.append("image-level splits (the paper's protocol): views of one lesion can be in "
                     "train and test — the estimates are optimistic.")
    if runs.n_splits and runs.n_splits < 6:
        notes.append(f"{runs.n_splits} splits: the exact Wilcoxon test cannot reach p < 0.05 "
                     "with fewer than 6 pairs.")
    scheme = (runs.spec or {}).get("splits", {}).get("scheme", "repeated")
    if scheme != "kfold":
        notes.append("repeated random splits: test sets overlap between splits, so the "
                     "combined DeLong test (which assumes independent splits) is optimistic.")
    return notes


def draw(c: Computed) -> dict[str, object]:
    """Figure name -> matplotlib Axes, in ``FIGURES`` order."""
    return {
        "roc": plots.plot_roc(c.roc_curves, c.auc_summary),
        "reliability": plots.plot_reliability(c.reliability),
        "search_progress": plots.plot_best_so_far(c.progress),
        "importance": plots.plot_importance(c.tables["importance"]),
        "fted_lambda_lr": plots.plot_fted_scatter(c.fted),
        "compute": plots.plot_cost(c.tables["compute"]),
    }


@dataclass(frozen=True)
class Written:
    """Files of a report folder."""

    out_dir: Path
    tables: dict[str, list[Path]]
    figures: dict[str, list[Path]]
    html: Path
    summary: Path

    def all_files(self) -> list[Path]:
        files = [p for ps in self.tables.values() for p in ps]
        files += [p for ps in self.figures.values() for p in ps]
        return [*files, self.html, self.summary]


def write(c: Computed, out_dir: Path) -> Written:
    """Write tables, figures, ``report.html`` and ``summary.json`` (problems, notes, ids)."""
    from dashboards import html

    out_dir.mkdir(parents=True, exist_ok=True)
    table_files = {name: write_table(name, df, out_dir / "tables", CAPTIONS.get(name, ""))
                   for name, df in c.tables.items()}
    fig_files = {name: plots.save(ax, out_dir / "figures", name)  # type: ignore[arg-type]
                 for name, ax in draw(c).items()}
    if c.restudy is not None:
        table_files.update(restudy.write_tables(c.restudy, out_dir / "tables"))
    page = out_dir / "report.html"
    page.write_text(html.render(c, {k: v[0] for k, v in fig_files.items()}))
    summary = out_dir / "summary.json"
    summary.write_text(json.dumps({
        "study": c.runs.study, "parent_run_id": c.runs.parent_run_id,
        "parent_status": c.runs.parent_status, "variants": list(c.runs.variants),
        "n_splits": c.runs.n_splits, "problems": list(c.runs.problems),
        "notes": list(c.notes),
        **({} if c.restudy is None else {"restudy": {
            "previous_run_id": c.restudy.previous_run_id, "verdict": c.restudy.verdict,
            "significant": c.restudy.significant, "savings": c.restudy.savings_line}})},
        indent=2))
    return Written(out_dir, table_files, fig_files, page, summary)

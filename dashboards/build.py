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

from dashboards import comparisons, external, plots, restudy, roc, search_view, tables, units
from dashboards._load import StudyRuns
from dashboards.formats import write_table

log = logging.getLogger(__name__)

#: Table name -> caption (also the order in the HTML page).
CAPTIONS = {
    "table1": "Table 1: test accuracy and balanced accuracy per variant at the unit of "
              "analysis (see the notes): mean over runs (splits × seeds) with the 95% "
              "cluster-bootstrap CI of that mean; std over all runs, over splits (of the "
              "seed means) and over seeds (within a split); mean training time and epochs.",
    "table1_reported": "The paper's Table 1 as reported (Chougrad et al. 2017: Inception-v3, "
                       "BCDR-F03, 5 runs of 80/20 splits, GPU): reported, not reproduced; "
                       "not comparable to the rows above (other data, model, budget).",
    "views": "Secondary, view-level: every view (CC, MLO) counted as a case — not independent; "
             "CIs still resample lesions.",
    "table2": "Table 2: test AUC per variant at the unit of analysis (mean ± std over runs; "
              "95% CI: cluster bootstrap of that mean), then the paper's Table 2 rows, "
              "reported, not reproduced.",
    "delong": "DeLong test of each variant's AUC against the declared reference variant "
              "(compare.reference), per run on shared test cases and combined over splits "
              "(inverse-variance weighted; Holm-adjusted over the combined tests).",
    "paired": "Paired comparison over splits against the declared reference (accuracy and "
              "AUC; the t-test used is named in each row; Wilcoxon signed-rank; Holm-adjusted).",
    "operating_points": "Test sensitivity and specificity at thresholds chosen on each run's "
                        "validation cases (mean over runs; 95% cluster-bootstrap CIs).",
    "calibration": "Calibration of P(malignant) at the unit of analysis: Brier (mean over runs, "
                   "95% cluster-bootstrap CI) and ECE (mean over runs).",
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
    unit = units.analysis_unit(runs.spec)
    cases = units.combine(runs.predictions, unit)
    t = {
        "table1": tables.table1(runs, n_boot=n_boot, seed=seed),
        "table1_reported": tables.table1_reported(),
        "views": tables.views_table(runs, n_boot=n_boot, seed=seed),
        "table2": tables.table2(runs, n_boot=n_boot, seed=seed),
        "delong": comparisons.delong_table(runs),
        "paired": comparisons.paired_table(runs),
        "operating_points": comparisons.operating_points_table(runs, n_boot=n_boot, seed=seed),
        "calibration": comparisons.calibration_table(runs, n_boot=n_boot, seed=seed),
        "importance": imp,
        "compute": search_view.compute_cost(runs),
    }
    clusters = "patients" if unit == "patient" else "lesions"
    boot = (f"bootstrap CIs: {n_boot} cluster resamples ({clusters}, "
            f"stratified by class, the same draws for every variant and run), seed {seed}, "
            "percentile intervals of the printed mean over runs.")
    return Computed(runs, t, roc.mean_roc(cases), roc.auc_summary(cases),
                    comparisons.reliability_bins(runs), search_view.best_so_far(runs),
                    search_view.fted_scatter(runs),
                    (*study_notes(runs), boot, *imp_notes),
                    None if previous is None else restudy.compare(previous, runs,
                                                                  n_boot=n_boot, seed=seed))


def analysis_notes(runs: StudyRuns) -> list[str]:
    """What the numbers are: unit of analysis, what the CIs are of, how the folds were made,
    which variant every comparison is against."""
    unit = units.analysis_unit(runs.spec)
    design = units.split_design(runs.spec)
    ev = runs.finished_evaluations
    seeds = int(ev.groupby(["variant", "split"])["seed"].nunique().max()) if len(ev) else 0
    what = {"lesion": "the lesion: the CC and MLO views of a lesion are combined (mean "
                      "P(malignant)) into one case before any metric",
            "patient": "the patient: a patient's views of one class are combined (mean "
                       "P(malignant)) into one case before any metric",
            "view": "the view: every view is a case (views of one lesion are not "
                    "independent; the CIs still resample lesions)"}[unit]
    folds = (f"patient-grouped, class-stratified {runs.n_splits // max(1, design.repeats)}-fold "
             f"(disjoint test folds, every patient tested once)"
             + (f", repeated {design.repeats}×" if design.repeats > 1 else "")
             if design.scheme == "kfold" else
             "repeated hold-out (independent patient-grouped draws; test sets overlap)")
    t_test = ("the corrected resampled t-test (Nadeau & Bengio 2003), because test sets "
              "overlap between splits" if design.overlapping else
              "the paired t-test over disjoint folds")
    ref = units.declared_reference(runs.spec, list(runs.variants))
    missing_ref = ([f"the declared reference {ref} has no finished evaluation with test "
                    "predictions: no DeLong or paired comparisons (none is made against "
                    "another variant instead)."]
                   if ref is not None and ref not in set(runs.predictions["variant"]) else [])
    return [*missing_ref,
        f"unit of analysis: {what}.",
        "every accuracy, AUC, operating point and Brier score is the mean over runs "
        f"(splits × seeds: {runs.n_splits} split(s) × {seeds} seed(s)); its 95% CI is a "
        "cluster bootstrap of that same mean.",
        f"folds: {folds}; comparisons over splits use {t_test}.",
        f"reference of every comparison: {ref} ("
        + ("declared in the space file, compare.reference"
           if ((runs.spec or {}).get("compare") or {}).get("reference") else
           "the default: FTED when studied, else the last variant listed")
        + "; not chosen on test results).",
        "thresholds (Youden, 90% sensitivity/specificity) are chosen on each run's validation "
        "cases and applied to its test cases; accuracy uses P(malignant) >= 0.5.",
    ]


def study_notes(runs: StudyRuns) -> list[str]:
    """Caveats a reader must see next to the numbers."""
    notes = analysis_notes(runs)
    if runs.tags.get("search_mode") == "shared":
        notes.append("shared search: one split was searched and its best reused on every "
                     "split — the estimates are optimistic.")
    if runs.tags.get("split_mode") == "image":
        notes.append("image-level splits (the paper's protocol): views of one lesion can be in "
                     "train and test — the estimates are optimistic.")
    if runs.n_splits and runs.n_splits < 6:
        notes.append(f"{runs.n_splits} splits: the exact Wilcoxon test cannot reach p < 0.05 "
                     "with fewer than 6 pairs.")
    if units.split_design(runs.spec).overlapping:
        notes.append("test sets overlap between splits, so the combined DeLong test (which "
                     "assumes independent splits) is optimistic.")
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


def brief_table1(c: Computed) -> tuple[str, pd.DataFrame]:
    """(title, rows as strings) of Table 1 in brief: per variant accuracy and AUC at the unit
    of analysis, each with its 95 % cluster-bootstrap CI, time, splits — what the launcher
    prints and the parent run's description shows."""
    from dashboards.formats import display

    t1 = c.tables["table1"]
    unit = ", ".join(sorted({str(u) for u in t1["unit"]})) or units.analysis_unit(c.runs.spec)
    title = f"Table 1 (unit of analysis: {unit}; mean over runs [95% cluster-bootstrap CI])"
    return title, display("summary", tables.summary(t1, c.tables["table2"]))

"""Tables as text: Markdown, CSV, LaTeX and HTML fragments from the computed DataFrames.

``display(name, df)`` turns a computed table into strings with readable headers (each table's
layout is declared once in ``LAYOUTS``); the writers then only lay those strings out. CSV keeps
the raw numbers. Literature rows (``source`` = reported) sit below a rule in every format.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from dashboards.literature import REPORTED


def _f(digits: int) -> Callable[[object], str]:
    def fmt(x: object) -> str:
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return "–"
        if isinstance(x, int | float):
            return f"{x:.{digits}f}"
        return str(x)
    return fmt


def _g(x: object) -> str:
    """3 significant digits (hours: 0.000123 h of a smoke test, 1234 h of a paper study)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{float(x):.3g}"  # type: ignore[arg-type]


def duration(hours: object) -> str:
    """A compute time with its unit: seconds under a minute, minutes under an hour, else
    hours (``26 s``, ``4.4 min``, ``12.5 h``); CPU-/GPU-hours alike (``core-`` prefixed by
    the caller's header)."""
    if hours is None or (isinstance(hours, float) and math.isnan(hours)):
        return "–"
    h = float(hours)  # type: ignore[arg-type]
    if h * 60 < 1:
        return f"{h * 3600:.0f} s"
    if h < 1:
        return f"{h * 60:.1f} min"
    return f"{h:.1f} h"


def _p(x: object) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return "< 0.001" if float(x) < 0.001 else f"{float(x):.3f}"  # type: ignore[arg-type]


def _int(x: object) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return str(int(x))  # type: ignore[call-overload]


def _pm(mean: str, std: str, d: int) -> Callable[[pd.Series], str]:
    """mean ± std; reported (literature) values exactly as the paper prints them."""
    def f(r: pd.Series) -> str:
        m, s = r[mean], r[std]
        if m is None or (isinstance(m, float) and math.isnan(m)):
            return "–"
        if r.get("source") == REPORTED:
            return f"{m:g}"
        return f"{m:.{d}f}" if (s is None or math.isnan(s)) else f"{m:.{d}f} ± {s:.{d}f}"
    return f


def _ci(col: str, d: int) -> Callable[[pd.Series], str]:
    def f(r: pd.Series) -> str:
        est, lo, hi = r[col], r[f"{col}_low"], r[f"{col}_high"]
        if isinstance(est, float) and math.isnan(est):
            return "–"
        return f"{est:.{d}f} [{lo:.{d}f}, {hi:.{d}f}]"
    return f


def _ci_pct(col: str, ci: str, d: int = 2) -> Callable[[pd.Series], str]:
    """``est [low, high]`` from ``col``, ``{ci}_low``, ``{ci}_high``."""
    def f(r: pd.Series) -> str:
        est, lo, hi = r[col], r[f"{ci}_low"], r[f"{ci}_high"]
        if isinstance(est, float) and math.isnan(est):
            return "–"
        if isinstance(lo, float) and math.isnan(lo):
            return f"{est:.{d}f}"
        return f"{est:.{d}f} [{lo:.{d}f}, {hi:.{d}f}]"
    return f


def _ci3(col: str, ci: str) -> Callable[[pd.Series], str]:
    return _ci_pct(col, ci, 3)


def _auc_ci(r: pd.Series) -> str:
    lo, hi = r["auc_ci_low"], r["auc_ci_high"]
    return "–" if (isinstance(lo, float) and math.isnan(lo)) else f"[{lo:.3f}, {hi:.3f}]"


Column = tuple[str, str | Callable[[pd.Series], str], Callable[[object], str] | None]

#: Per table: (header, source column or row function, cell formatter).
LAYOUTS: dict[str, list[Column]] = {
    "table1": [("Variant", "variant", None), ("Unit", "unit", None),
               ("Accuracy (%) [95% CI]", _ci_pct("accuracy_pct", "accuracy_ci"), None),
               ("Balanced acc. (%) [95% CI]", _ci_pct("balanced_accuracy_pct", "balanced_ci"),
                None),
               ("Std (%)", "std_pct", _f(2)), ("Std splits (%)", "std_splits_pct", _f(2)),
               ("Std seeds (%)", "std_seeds_pct", _f(2)), ("Time (min)", "time_min", _f(2)),
               ("Epochs", "epochs", _f(1)), ("Splits", "splits", _int),
               ("Seeds", "seeds", _int), ("Cases/run", "cases", _int)],
    "summary": [("Variant", "variant", None), ("Unit", "unit", None),
                ("Accuracy (%) [95% CI]", _ci_pct("accuracy_pct", "accuracy_ci"), None),
                ("AUC [95% CI]", _ci3("auc_mean", "auc_ci"), None),
                ("Time (min)", "time_min", _f(2)), ("Splits", "splits", _int)],
    "table1_reported": [("Variant", "variant", None), ("Source", "source", None),
                        ("Accuracy (%)", "accuracy_pct", _f(2)), ("Std (%)", "std_pct", _f(2)),
                        ("Time (min)", "time_min", _f(1))],
    "views": [("Variant", "variant", None), ("Unit", "unit", None),
              ("Accuracy (%) [95% CI]", _ci_pct("accuracy_pct", "accuracy_ci"), None),
              ("AUC [95% CI]", _ci3("auc_mean", "auc_ci"), None), ("Views", "cases", _int)],
    "table2": [("Model", "model", None), ("Source", "source", None),
               ("Accuracy (%)", "accuracy_pct", _f(2)),
               ("AUC (mean ± std over runs)", _pm("auc_mean", "auc_std", 3), None),
               ("AUC 95% CI (cluster bootstrap of the mean)", _auc_ci, None),
               ("Test cases", "test_samples", _int)],
    "delong": [("Variant", "variant", None), ("vs", "reference", None),
               ("Split", "split", None), ("AUC", "auc", _f(3)),
               ("AUC (ref.)", "auc_reference", _f(3)), ("Δ AUC", "diff", _f(3)),
               ("SE", "se", _f(3)), ("z", "z", _f(2)), ("p", "p_value", _p),
               ("p (Holm)", "p_holm", _p), ("n", "n", _int)],
    "paired": [("Variant", "variant", None), ("vs", "reference", None),
               ("Metric", "metric", None), ("t-test", "test", None),
               ("Splits", "splits", _int), ("Mean Δ (pp)", "mean_diff_pct", _f(2)),
               ("t-test p", "t_p", _p), ("t-test p (Holm)", "t_p_holm", _p),
               ("Wilcoxon p", "wilcoxon_p", _p), ("Wilcoxon p (Holm)", "wilcoxon_p_holm", _p)],
    "operating_points": [("Variant", "variant", None), ("Threshold", "threshold", None),
                         ("Sensitivity [95% CI]", _ci("sensitivity", 3), None),
                         ("Specificity [95% CI]", _ci("specificity", 3), None),
                         ("Runs", "runs", _int)],
    "calibration": [("Variant", "variant", None), ("Brier [95% CI]", _ci("brier", 4), None),
                    ("ECE (10 bins)", "ece", _f(4)), ("Cases", "n", _int)],
    "importance": [("Variant", "variant", None), ("Hyperparameter", "param", None),
                   ("Importance", "importance", _f(3)), ("Trials", "trials", _int)],
    "compute": [("Variant", "variant", None), ("Phase", "phase", None),
                ("Trials", "trials", _int), ("Pruned", "pruned", _int),
                ("Epochs", "epochs", _int), ("Time", "hours", duration),
                ("CPU time (× cores)", "cpu_hours", duration),
                ("GPU time (× GPUs)", "gpu_hours", duration),
                ("ASHA saved", "asha_saved_hours", duration),
                ("ASHA saved (%)", "asha_saved_pct", _f(1))],
}


def display(name: str, df: pd.DataFrame) -> pd.DataFrame:
    """``df`` as strings under the headers of ``LAYOUTS[name]`` (unknown names: as is)."""
    layout = LAYOUTS.get(name)
    if layout is None:
        return df.astype(str)
    out = {}
    for header, src, fmt in layout:
        if callable(src):
            out[header] = [src(r) for _, r in df.iterrows()]
        else:
            out[header] = [(fmt or str)(x) for x in df[src]]
    return pd.DataFrame(out, columns=[h for h, _, _ in layout])


def rule_at(df: pd.DataFrame) -> int | None:
    """Row index before which literature (reported) rows start, if any."""
    if "source" not in df:
        return None
    hits = [i for i, s in enumerate(df["source"]) if s == REPORTED]
    return hits[0] if hits else None


def markdown(shown: pd.DataFrame, rule: int | None = None) -> str:
    """A GitHub Markdown table; a full-width label row marks where reported rows start."""
    cols = list(shown.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for i, row in enumerate(shown.itertuples(index=False)):
        if i == rule:
            lines.append("| **— " + REPORTED + " (Chougrad et al. 2017, Table 2) —** |"
                         + " |" * (len(cols) - 1))
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines) + "\n"


def plain(shown: pd.DataFrame, names: int = 1) -> str:
    """Aligned plain-text columns (a terminal's table): the first ``names`` columns (names:
    variant, unit) left-aligned, the figures after them right-aligned."""
    cols = list(shown.columns)
    rows = [[str(c) for c in row] for row in shown.itertuples(index=False)]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]
    left = [i < names for i in range(len(cols))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if lft else c.rjust(w)
                         for c, w, lft in zip(cells, widths, left, strict=True)).rstrip()
    return "\n".join([line(cols)] + [line(r) for r in rows])


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
          "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
          "±": r"$\pm$", "Δ": r"$\Delta$", "–": "--", "—": "---", "<": r"$<$", "λ": r"$\lambda$"}


def _tex(s: object) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in str(s))


def latex(shown: pd.DataFrame, rule: int | None = None, caption: str = "") -> str:
    """A booktabs ``tabular`` (in a ``table``), ``\\midrule`` before the reported rows."""
    cols = list(shown.columns)
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(r"\caption{" + _tex(caption) + "}")
    lines += [r"\begin{tabular}{l" + "r" * (len(cols) - 1) + "}", r"\toprule",
              " & ".join(_tex(c) for c in cols) + r" \\", r"\midrule"]
    for i, row in enumerate(shown.itertuples(index=False)):
        if i == rule:
            lines.append(r"\midrule")
            lines.append(r"\multicolumn{" + str(len(cols)) + r"}{l}{\emph{" + _tex(REPORTED)
                         + r" (Chougrad et al.\ 2017, Table 2)}} \\")
        lines.append(" & ".join(_tex(c) for c in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def html_table(shown: pd.DataFrame, rule: int | None = None, table_id: str = "") -> str:
    """An escaped HTML ``<table>``; reported rows get class ``reported`` under a rule row."""
    cols = list(shown.columns)
    ident = f' id="{html.escape(table_id)}"' if table_id else ""
    out = [f"<table{ident}><thead><tr>"
           + "".join(f"<th>{html.escape(str(c))}</th>" for c in cols) + "</tr></thead><tbody>"]
    for i, row in enumerate(shown.itertuples(index=False)):
        cls = ""
        if rule is not None and i >= rule:
            cls = ' class="reported"'
            if i == rule:
                out.append(f'<tr class="rule"><td colspan="{len(cols)}">{REPORTED} '
                           "(Chougrad et al. 2017, Table 2)</td></tr>")
        out.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row)
                   + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def write_table(name: str, df: pd.DataFrame, out_dir: Path, caption: str = "") -> list[Path]:
    """``name.csv`` (raw numbers), ``name.md`` and ``name.tex``; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    shown, rule = display(name, df), rule_at(df)
    paths = [out_dir / f"{name}.csv", out_dir / f"{name}.md", out_dir / f"{name}.tex"]
    df.to_csv(paths[0], index=False)
    paths[1].write_text(markdown(shown, rule) + (f"\n{caption}\n" if caption else ""))
    paths[2].write_text(latex(shown, rule, caption))
    return paths

"""One self-contained HTML page of a report: inline CSS, figures as base64 PNG, no scripts and
no external resource, so it opens from an MLflow artifact, a mail attachment or a file path.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import TYPE_CHECKING

from dashboards.formats import display, html_table, rule_at

if TYPE_CHECKING:
    from dashboards.build import Computed

PROVENANCE = ("study", "spec_fingerprint", "data_fingerprint", "split_fingerprints",
              "split_mode", "search_mode", "git_commit", "device", "python", "torch", "ray",
              "optuna", "mlflow")

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;color:#222;line-height:1.4;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;
margin-top:1.8em}table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.88em}
th,td{border-bottom:1px solid #ddd;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f4f4f4}
tr.reported td{color:#666;font-style:italic}tr.rule td{border-top:2px solid #444;
color:#444;font-weight:600;text-align:left;background:#fafafa}
.caption{color:#555;font-size:.85em;max-width:900px}.problems{background:#fff3f3;
border:1px solid #e0a0a0;padding:.6em 1em}.notes{background:#f7f7ff;border:1px solid #c8c8e8;
padding:.6em 1em}figure{margin:1em 0}figure img{max-width:min(100%,640px);border:1px solid #eee}
pre{background:#f6f6f6;padding:.8em;overflow:auto;font-size:.8em}.meta td{text-align:left}
.banner{background:#fff0d0;border:1px solid #d8a040;padding:.5em 1em;font-weight:600;margin:.4em 0}
"""


def _table(c: Computed, name: str) -> str:
    from dashboards.build import CAPTIONS

    df = c.tables[name]
    body = ("<p><em>no rows</em></p>" if df.empty else
            html_table(display(name, df), rule_at(df), table_id=f"table-{name}"))
    return f'{body}\n<p class="caption">{html.escape(CAPTIONS.get(name, ""))}</p>'


def _figure(path: Path | None, name: str, caption: str) -> str:
    if path is None or not path.is_file():
        return f"<p><em>figure {html.escape(name)} missing</em></p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure id="figure-{html.escape(name)}"><img alt="{html.escape(caption)}" '
            f'src="data:image/png;base64,{data}"><figcaption class="caption">'
            f"{html.escape(caption)}</figcaption></figure>")


def _list(items: tuple[str, ...] | list[str], cls: str, title: str) -> str:
    if not items:
        return ""
    lis = "".join(f"<li>{html.escape(s)}</li>" for s in items)
    return f'<div class="{cls}"><strong>{html.escape(title)}</strong><ul>{lis}</ul></div>'


def _restudy(c: Computed) -> str:
    if c.restudy is None:
        return ""
    from dashboards.restudy import html_section

    return html_section(c.restudy)


def _external(c: Computed) -> str:
    from dashboards.external import html_section

    return html_section(c, _table)
def _about(c: Computed) -> str:
    """The first screen: what the study is, its status, and the warnings."""
    from dashboards.about import about_rows, study_warnings

    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                   for k, v in about_rows(c.runs))
    warn = study_warnings(c.runs)
    banner = ("".join(f'<p class="banner">{html.escape(w)}</p>' for w in warn) if warn
              else "")
    return f'{banner}<table class="meta" id="about">{rows}</table>'


def render(c: Computed, figures: dict[str, Path]) -> str:
    """The report page for ``c``, with PNG ``figures`` (name -> path) embedded."""
    r = c.runs
    meta = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(r.tags.get(k, '–'))}</td>"
                   "</tr>" for k in PROVENANCE)
    head = (f"<tr><th>parent run</th><td>{html.escape(r.parent_run_id)} "
            f"({html.escape(r.parent_status)})</td></tr>"
            f"<tr><th>tracking server</th><td>{html.escape(r.tracking_uri)} "
            f"(experiment {html.escape(r.experiment_id)})</td></tr>")
    n_eval = len(r.finished_evaluations)
    spec = json.dumps(r.spec, indent=2, default=str) if r.spec else "study_spec.json missing"
    fig = figures.get
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>tlstudy report: {html.escape(r.study)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Study <code>{html.escape(r.study)}</code></h1>",
        _about(c),
        f"<p>{len(r.variants)} variants × {r.n_splits} splits; {n_eval} finished evaluation "
        f"runs, {len(r.searches)} search runs. Every number below is recomputed from the "
        "MLflow tracking server; the paper's values are marked as reported.</p>",
        _list(r.problems, "problems", "Missing or partial"),
        _list(list(c.notes), "notes", "Notes"),
        _restudy(c),
        '<h2 id="tables">Table 1 — accuracy and time</h2>', _table(c, "table1"),
        "<h3>The paper's Table 1, reported, not reproduced</h3>",
        _table(c, "table1_reported"),
        "<h3>Secondary: view-level accuracy and AUC (views are not independent)</h3>",
        _table(c, "views"),
        '<h2 id="roc">Figure 2 — ROC curves</h2>',
        _figure(fig("roc"), "roc", "Mean ROC over splits, ±1 std band; AUC mean ± std."),
        "<h2>Table 2 — AUC, with the literature</h2>", _table(c, "table2"),
        _external(c),
        "<h2>Statistics</h2>", "<h3>DeLong tests against the declared reference</h3>",
        _table(c, "delong"), "<h3>Paired tests over splits</h3>", _table(c, "paired"),
        "<h3>Operating points</h3>", _table(c, "operating_points"),
        "<h3>Calibration</h3>", _table(c, "calibration"),
        _figure(fig("reliability"), "reliability", "Reliability diagram (10 bins)."),
        "<h2>Search</h2>",
        _figure(fig("search_progress"), "search_progress",
                "Best validation loss against trials run (mean over splits' searches)."),
        _table(c, "importance"),
        _figure(fig("importance"), "importance", "Optuna fANOVA importance."),
        _figure(fig("fted_lambda_lr"), "fted_lambda_lr", "FTED: λ × base LR."),
        _table(c, "compute"),
        _figure(fig("compute"), "compute", "Hours per variant; hatched: saved by ASHA."),
        "<h2>Settings and provenance</h2>", f'<table class="meta">{head}{meta}</table>',
        f"<details><summary>study_spec.json</summary><pre>{html.escape(spec)}</pre>"
        "</details>", "</body></html>",
    ]
    return "\n".join(p for p in parts if p)

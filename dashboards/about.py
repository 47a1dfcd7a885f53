"""What a report is about, for its first screen: the data (synthetic, or the real dataset by
format and fingerprint), the model, the splits and budgets, the device, the execution's status
and the warnings a reader must see before any number (synthetic data, unpretrained transfer
variants, variants never evaluated).

Everything comes from the parent run (``study_spec.json`` and its tags), so an old execution
reads as it was run.
"""

from __future__ import annotations

from typing import Any

from dashboards._load import StudyRuns

#: Dataset formats by the names users know them.
FORMAT_NAMES = {"bcdr": "BCDR (BCDR-F03 layout)", "mias": "mini-MIAS",
                "manifest": "a manifest (CSV)", "cbis": "CBIS-DDSM", "inbreast": "INbreast"}


def _dataset(spec: dict[str, Any], tags: dict[str, str]) -> str:
    ds = spec.get("dataset") or {}
    fp = tags.get("data_fingerprint", "–")
    if ds.get("synthetic"):
        s = ds["synthetic"]
        return (f"synthetic lesions ({s.get('patients', '?')} patients, generator seed "
                f"{s.get('seed', '?')}), fingerprint {fp}")
    fmt = ds.get("format", "?")
    return f"{FORMAT_NAMES.get(fmt, fmt)}, fingerprint {fp}"


def _splits(spec: dict[str, Any], tags: dict[str, str]) -> str:
    s = spec.get("splits") or {}
    scheme = s.get("scheme", "repeated")  # specs from before k-fold have no scheme
    if s.get("mode") == "official":
        parts = ["the dataset's official train/test split"]
    elif scheme == "kfold":
        repeats = int(s.get("repeats", 1) or 1)
        parts = [f"{s.get('n_splits', '?')}-fold cross-validation"
                 + (f" × {repeats} repeats" if repeats > 1 else "") + " (disjoint test folds)"]
    else:
        parts = [f"{s.get('n_splits', '?')} outer split(s), repeated hold-out"]
        if s.get("test_fraction") is not None:
            parts.append(f"test fraction {s['test_fraction']}")
    if s.get("val_fraction") is not None:
        parts.append(f"inner validation {s['val_fraction']}")
    return ", ".join(parts) + f"; grouped by {s.get('mode', tags.get('split_mode', '?'))}"


def _budgets(spec: dict[str, Any]) -> str:
    search = spec.get("search") or {}
    asha = search.get("asha") or {}
    ev = spec.get("evaluation") or {}
    return (f"search: {search.get('mode', '?')}, {search.get('trials', '?')} trials per "
            f"variant × split, ASHA up to {asha.get('max_epochs', '?')} epochs; evaluation: up "
            f"to {ev.get('max_epochs', '?')} epochs (early stopping patience "
            f"{ev.get('early_stopping_patience', '?')})")


def _model(spec: dict[str, Any], tags: dict[str, str]) -> str:
    roi = (spec.get("roi") or {}).get("size", "?")
    size = spec.get("input_size") or roi
    init = "ImageNet weights" if spec.get("pretrained", True) else "random initialisation"
    sha = tags.get("weights_sha256")
    weights = f" ({tags.get('weights_file', 'file')}, SHA-256 {sha[:12]}…)" if sha else ""
    return (f"{spec.get('backbone', '?')}, {init}{weights}; ROI {roi} px, input {size} px; "
            f"variants {', '.join(spec.get('variants') or [])}")


def _status(runs: StudyRuns) -> str:
    status = runs.parent_status
    reason = runs.tags.get("failure_reason")
    return f"{status}" + (f" — {reason}" if reason and status != "FINISHED" else "")


def about_rows(runs: StudyRuns) -> list[tuple[str, str]]:
    """(label, text) rows of the report's first screen."""
    spec, tags = runs.spec or {}, runs.tags
    return [
        ("status", _status(runs)),
        ("data", _dataset(spec, tags) if spec else f"fingerprint "
                                                    f"{tags.get('data_fingerprint', '–')}"),
        ("model", _model(spec, tags) if spec else "study_spec.json missing"),
        ("splits", _splits(spec, tags) if spec else "–"),
        ("budgets", _budgets(spec) if spec else "–"),
        ("device", tags.get("device", "–")),
    ]


def study_warnings(runs: StudyRuns) -> list[str]:
    """What must be read before the numbers, one line each."""
    spec, out = runs.spec or {}, []
    if (spec.get("dataset") or {}).get("synthetic"):
        out.append("synthetic data: these numbers test the pipeline and say nothing about "
                   "mammograms or the paper's findings.")
    transfer = [v for v in spec.get("variants") or [] if v != "RI"]
    if spec and not spec.get("pretrained", True) and transfer:
        out.append(f"no pretrained weights (pretrained: false, allow_unpretrained: true): "
                   f"{', '.join(transfer)} started from random initialisation, so they are "
                   "not transfer learning.")
    done = set(runs.finished_evaluations["variant"])
    never = [v for v in runs.variants if v not in done]
    if never:
        out.append(f"never evaluated: {', '.join(never)} (no finished evaluation run); "
                   "Table 1 lacks their rows.")
    if runs.parent_status not in ("FINISHED", "RUNNING"):
        out.append(f"the execution ended {runs.parent_status}: the tables show what had "
                   "finished.")
    return out

"""Re-studies: what the last execution of a study was (read from MLflow), whether anything
changed since, and how to warm-start the next one.

An *execution* is a parent run of the study's experiment (no ``mlflow.parentRunId`` tag). The
last one decides whether to run again: data (the ROI-set fingerprint: source contents + ROI
settings), code (git commit) and search space (spec fingerprint) are compared with the newest
FINISHED execution's tags; a last execution that did not finish (FAILED, KILLED, RUNNING) counts
as a change, so a failed scheduled run is retried.

A re-study is linked to the newest FINISHED execution (``previous_run_id``) and starts each
search group with that execution's best configuration of the group, read from its evaluation
runs (which trained exactly each group's best). Its Optuna studies are new
(``<study>@<parent run id[:8]>/<variant>/split<k>`` in the same ``optuna.db``): a changed
dataset or code makes the old objective values incomparable, so TPE must not mix them, while the
old studies stay in the storage untouched. Their TPE seeds are salted with the previous run's id:
with the same seed a re-study would replay the previous execution's random start-up proposals.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from search_spaces import ParamSpec, StudySpec

PARENT_TAG = "mlflow.parentRunId"
Trigger = Literal["changed", "forced", "retry", "first"]


def data_fingerprint(main: str, external: Mapping[str, str]) -> str:
    """The data a re-study compares: the ROI set's fingerprint ``main`` alone without external
    validation sets (older executions compare equal), else ``main`` plus a digest of the sorted
    ``name=fingerprint`` pairs of the external sets."""
    if not external:
        return main
    pairs = ",".join(f"{n}={fp}" for n, fp in sorted(external.items()))
    return f"{main}+{hashlib.blake2b(pairs.encode(), digest_size=8).hexdigest()}"


@dataclass(frozen=True)
class Execution:
    """One parent run of a study, as the scheduler needs it."""

    run_id: str
    status: str
    start_time: int                  # ms since the epoch
    tags: dict[str, str]
    params: dict[str, str]

    @property
    def fingerprints(self) -> dict[str, str]:
        external = {k.removeprefix("external_fingerprint."): v for k, v in self.tags.items()
                    if k.startswith("external_fingerprint.")}
        return {"data": data_fingerprint(self.tags.get("data_fingerprint", ""), external),
                "code": self.tags.get("git_commit", ""),
                "space": self.tags.get("spec_fingerprint", "")}


@dataclass(frozen=True)
class Current:
    """What a run now would use: data fingerprint, code version, spec fingerprint and the
    spec's flattened params (to name which keys of the space changed)."""

    data: str
    code: str
    space: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """Whether to run, why (one line), what changed, and the execution to build on."""

    run: bool
    reason: str
    changed: tuple[str, ...]
    trigger: Trigger
    previous: Execution | None


@dataclass(frozen=True)
class Restudy:
    """What ``run_study`` needs to run a re-study of ``previous_run_id``."""

    previous_run_id: str
    changed: tuple[str, ...]
    trigger: Trigger
    reason: str
    warm_start: dict[str, list[dict[str, Any]]]
    trials: int | None = None        # search budget per group; None = the space's

    def tags(self) -> dict[str, str]:
        return {"previous_run_id": self.previous_run_id, "changed": ",".join(self.changed),
                "trigger": self.trigger, "change_reason": self.reason,
                "warm_start_configs": str(sum(len(v) for v in self.warm_start.values())),
                **({"restudy_trials": str(self.trials)} if self.trials else {})}


# ----------------------------------------------------------------------------- failures

_PATH = re.compile(r"(?:[A-Za-z]:)?(?:~|\.{1,2})?(?:[\\/][^\s'\",:;()\[\]]+)+")
_IMAGE = re.compile(r"[^\s'\",:;()\[\]/\\]+\.(?:tiff?|pgm|png|jpe?g|dcm|bmp)\b", re.I)
# CBIS-DDSM case folders and patient ids (Mass-Training_P_00001_LEFT_CC_1, P_00001)
_PATIENT = re.compile(r"\b(?:(?:Mass|Calc)-(?:Training|Test)_)?P_\d+\w*", re.I)


def failure_reason(text: str, limit: int = 500) -> str:
    """An error message fit for an MLflow tag: paths and image file names (which can carry
    patient ids) replaced by ``<path>`` / ``<file>``, CBIS-DDSM case folders and patient ids by
    ``<patient>``; the full message stays in the local log."""
    return _PATIENT.sub("<patient>", _IMAGE.sub("<file>", _PATH.sub("<path>", text)))[:limit]


# ----------------------------------------------------------------------------- reading MLflow


def executions(client: MlflowClient, study: str) -> list[Execution]:
    """The study's executions (parent runs), newest first; [] if there is no experiment."""
    exp = client.get_experiment_by_name(study)
    if exp is None:
        return []
    out, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], run_view_type=ViewType.ACTIVE_ONLY,
                                  max_results=1000, page_token=token,
                                  order_by=["attributes.start_time DESC"])
        out += [Execution(r.info.run_id, r.info.status, r.info.start_time or 0,
                          dict(r.data.tags), dict(r.data.params))
                for r in page if PARENT_TAG not in r.data.tags]
        token = page.token
        if not token:
            return sorted(out, key=lambda e: e.start_time, reverse=True)


# ----------------------------------------------------------------------------- deciding


def decide(current: Current, history: list[Execution], *, force: bool = False) -> Decision:
    """Run or skip, from the executions (newest first) and the current state. Pure."""
    finished = [e for e in history if e.status == "FINISHED"]
    previous = finished[0] if finished else None
    if previous is None:
        why = ("no finished execution yet" if not history else
               f"no finished execution yet (last {history[0].run_id[:8]} "
               f"{history[0].status})")
        return Decision(True, why, ("first",), "first", None)
    changed, details = _diff(current, previous)
    last = history[0]
    if last.status != "FINISHED":
        failure = last.tags.get("failure_reason")
        why = f"last execution {last.run_id[:8]} is {last.status}" + (
            f" ({failure})" if failure else "") + "; retrying"
        return Decision(True, "; ".join([why, *details]), changed or ("retry",), "retry",
                        previous)
    if changed:
        return Decision(True, "; ".join(details), changed, "changed", previous)
    fp = current
    same = (f"nothing changed since {previous.run_id[:8]} (data {fp.data[:8]}, code "
            f"{fp.code[:8]}, space {fp.space[:8]})")
    if force:
        return Decision(True, f"--force: {same}", ("forced",), "forced", previous)
    return Decision(False, same, (), "changed", previous)


def _diff(current: Current, previous: Execution) -> tuple[tuple[str, ...], list[str]]:
    before = previous.fingerprints
    changed, details = [], []
    if current.data != before["data"]:
        changed.append("data")
        details.append(f"data changed ({before['data'][:8] or '?'} -> {current.data[:8]})")
    if current.code != before["code"]:
        changed.append("code")
        details.append(f"code changed ({before['code'][:8] or '?'} -> {current.code[:8]})")
    if current.space != before["space"]:
        changed.append("space")
        keys = _changed_keys(previous.params, current.params)
        details.append(f"search space changed ({before['space'][:8] or '?'} -> "
                       f"{current.space[:8]}" + (f": {', '.join(keys)}" if keys else "") + ")")
    return tuple(changed), details


def _changed_keys(before: Mapping[str, str], after: Mapping[str, Any], limit: int = 6
                  ) -> list[str]:
    keys = sorted(k for k in set(before) | set(after)
                  if before.get(k) != (None if k not in after else str(after[k])))
    return keys[:limit] + ([f"+{len(keys) - limit} more"] if len(keys) > limit else [])


# ----------------------------------------------------------------------------- warm start


def warm_start_configs(client: MlflowClient, previous_run_id: str, spec: StudySpec
                       ) -> dict[str, list[dict[str, Any]]]:
    """Group key (``FTED/split0``) -> [the previous execution's configuration of that group],
    read from its FINISHED evaluation runs' params and kept only where it fits the current
    space (a value outside a changed range is left to the sampler)."""
    run = client.get_run(previous_run_id)
    children = client.search_runs(
        [run.info.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{previous_run_id}' and tags.phase = 'evaluate' "
                      "and attributes.status = 'FINISHED'",
        run_view_type=ViewType.ACTIVE_ONLY, max_results=1000)
    searched = {(v, k) for v, k in spec.searches() if spec.params_for(v)}
    out: dict[str, list[dict[str, Any]]] = {}
    for child in sorted(children, key=lambda r: r.info.start_time or 0):
        variant, split = child.data.tags.get("variant", ""), child.data.tags.get("split", "")
        if not split.isdigit() or (variant, int(split)) not in searched:
            continue
        config = previous_values(child.data.params, spec.params_for(variant))
        if config:
            out[f"{variant}/split{split}"] = [config]  # newest run wins
    return out


def previous_values(params: Mapping[str, str], space: list[ParamSpec]) -> dict[str, Any]:
    """The searched values of ``space`` found in a run's params (``regime.base_lr``,
    ``batch_size``), typed, and inside the current ranges/choices."""
    out: dict[str, Any] = {}
    for p in space:
        raw = params.get(f"regime.{p.name}" if p.target == "regime" else p.name)
        if raw is None:
            continue
        value = _typed(raw, p)
        if value is not None:
            out[p.name] = value
    return out


def _typed(raw: str, p: ParamSpec) -> Any:
    if p.kind in ("float", "int"):
        try:
            x = float(raw)
        except ValueError:
            return None
        if not math.isfinite(x) or not float(p.low) <= x <= float(p.high):  # type: ignore[arg-type]
            return None
        return int(round(x)) if p.kind == "int" else x
    for choice in p.choices or ():
        if str(choice) == raw:
            return choice
    return None

"""The sections of a study file: one frozen dataclass each, and the parser that builds it.

Defaults mirror ``trainables`` (``RoiConfig``, ``SplitConfig``, ``TrainConfig``), i.e. the
paper's protocol; ``tests/search_spaces`` checks that they agree.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from ._errors import SpecError
from ._names import (
    ANALYSIS_UNITS,
    BALANCES,
    DATASET_FORMATS,
    METRICS,
    ROI_LARGE,
    ROI_PAD,
    SEARCH_MODES,
    SPLIT_MODES,
    SPLIT_SCHEMES,
    SYNTH_FIELDS,
    canonical_variant,
)
from ._params import ParamSpec, parse_params
from ._reader import Section, check_number, describe, join


def names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def resolve_path(value: str, base_dir: Path | None) -> Path:
    """``~`` expanded; a relative path is taken relative to ``base_dir`` (the file's folder)."""
    path = Path(value).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(os.path.normpath(base_dir / path))
    return path


# --------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class DatasetSpec:
    """Where the lesions come from.

    Attributes:
        format: loader (``bcdr``, ``mias``, ``manifest``, ``cbis-ddsm``, ``inbreast``); synthetic
            data is written in BCDR-F03's
            layout and read back with ``bcdr``.
        path: dataset folder (absolute once loaded from a file). For synthetic data: where to
            write it, ``None`` = the launcher's default folder.
        synthetic: ``SynthConfig`` keyword arguments as sorted ``(name, value)`` pairs, or
            ``None`` for a real dataset.
        options: loader choices as sorted ``(name, value)`` pairs, written next to ``format``
            in the file: ``calcifications`` (cbis-ddsm), ``birads_malignant_from`` (inbreast).
        balance: ``none`` (every lesion) or ``undersample`` (as many benign as malignant
            lesions, each with all its views, drawn with ``splits.seed``; the paper used a
            balanced 300 + 300 subset): ``trainables.balance``.
    """

    format: str
    path: Path | None = None
    synthetic: tuple[tuple[str, Any], ...] | None = None
    options: tuple[tuple[str, Any], ...] = ()
    balance: str = "none"

    @property
    def is_synthetic(self) -> bool:
        return self.synthetic is not None

    def synth_kwargs(self) -> dict[str, Any]:
        """``SynthConfig(**spec.dataset.synth_kwargs())``; ``{}`` for a real dataset."""
        return dict(self.synthetic or ())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": self.format,
                               "path": None if self.path is None else str(self.path)}
        if self.synthetic is not None:
            out["synthetic"] = {k: list(v) if isinstance(v, tuple) else v
                                for k, v in self.synthetic}
        out.update(self.options)
        if self.balance != "none":  # absent = none: older specs keep their fingerprint
            out["balance"] = self.balance
        return out


#: loader options a study file may set, per format: name -> (format, allowed values or None)
LOADER_OPTIONS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "calcifications": ("cbis-ddsm", None),
    "birads_malignant_from": ("inbreast", ("3", "4a", "4b", "4c", "5", "6")),
}


def parse_loader_options(s: Section, fmt: str) -> tuple[tuple[str, Any], ...]:
    """The loader options present in section ``s``, checked against ``fmt``."""
    out: list[tuple[str, Any]] = []
    for name, (owner, allowed) in LOADER_OPTIONS.items():
        if not s.has(name):
            continue
        if fmt != owner:
            raise s.error(name, f"only used with format: {owner} (this dataset is {fmt})")
        if allowed is None:
            out.append((name, s.boolean(name)))
        else:
            value = str(s.raw(name)).strip().lower()
            if value not in allowed:
                raise s.error(name, f"expected one of {list(allowed)}, got "
                                    f"{describe(s.raw(name))}")
            out.append((name, value))
    return tuple(sorted(out))


def parse_dataset(top: Section, base_dir: Path | None) -> DatasetSpec:
    s = top.section("dataset", ("format", "path", "synthetic", "balance", *LOADER_OPTIONS))
    balance = s.string("balance", "none", choices=BALANCES)
    if s.has("synthetic"):
        fmt = s.string("format", "bcdr", choices=("bcdr",))
        path = s.string("path", None, nullable=True)
        synth = _synthetic(s.section("synthetic", SYNTH_FIELDS))
    else:
        if not s.has("path"):
            raise SpecError(s.source, s.key("path"), "missing required key (a dataset folder; "
                            "or give `synthetic:` to generate one)", s.line)
        path = s.string("path")
        fmt = s.string("format", choices=DATASET_FORMATS)
        synth = None
    return DatasetSpec(fmt, None if path is None else resolve_path(path, base_dir), synth,
                       parse_loader_options(s, fmt), balance)


def _synthetic(s: Section) -> tuple[tuple[str, Any], ...]:
    out = []
    for name, kind in SYNTH_FIELDS.items():
        if not s.has(name):
            continue
        if kind == "int":
            value: Any = s.integer(name, min=2 if name == "patients" else 0)
        elif kind == "float":
            value = s.number(name, ge=0.0)
        else:
            value = s.raw(name)
            ok = isinstance(value, list) and len(value) == 2
            reasons = [check_number(v, ge=0.0) for v in value] if ok else []
            if not ok or any(reasons) or value[0] > value[1]:
                raise s.error(name, f"expected [min, max] with 0 <= min <= max, got "
                                    f"{describe(value)}")
            value = (float(value[0]), float(value[1]))
        out.append((name, value))
    return tuple(sorted(out))


# --------------------------------------------------------------------------- roi, splits


@dataclass(frozen=True)
class RoiSpec:
    """``trainables.rois.RoiConfig``: ROI side in px (paper 299), large-lesion and pad policy."""

    size: int = 299
    large: str = "resize"
    pad: str = "zero"


def parse_roi(top: Section) -> RoiSpec:
    s = top.section("roi", names(RoiSpec), required=False)
    d = RoiSpec()
    return RoiSpec(s.integer("size", d.size, min=8), s.string("large", d.large, choices=ROI_LARGE),
                   s.string("pad", d.pad, choices=ROI_PAD))


@dataclass(frozen=True)
class SplitSpec:
    """``trainables.splits.SplitConfig``: outer splits + inner validation. Default: 5-fold
    patient-grouped, class-stratified k-fold (disjoint test folds), ``repeats`` times;
    ``scheme: repeated`` is the paper's repeated 80/20 hold-out (``test_fraction`` is only
    used there: a k-fold test fold is ``1 / n_splits``)."""

    n_splits: int = 5
    test_fraction: float = 0.2
    val_fraction: float = 0.2
    seed: int = 0
    mode: str = "patient"  # "official": the dataset's published train/test split (CBIS-DDSM)
    scheme: str = "kfold"
    repeats: int = 1

    @property
    def total(self) -> int:
        """Outer splits the study runs: ``n_splits × repeats`` (k-fold), else ``n_splits``."""
        return self.n_splits * self.repeats if self.scheme == "kfold" else self.n_splits


def parse_splits(top: Section) -> SplitSpec:
    s = top.section("splits", names(SplitSpec), required=False)
    d = SplitSpec()
    out = SplitSpec(
        n_splits=s.integer("n_splits", d.n_splits, min=1),
        test_fraction=s.number("test_fraction", d.test_fraction, gt=0.0, lt=1.0),
        val_fraction=s.number("val_fraction", d.val_fraction, gt=0.0, lt=1.0),
        seed=s.integer("seed", d.seed, min=0),
        mode=s.string("mode", d.mode, choices=SPLIT_MODES),
        scheme=s.string("scheme", d.scheme, choices=SPLIT_SCHEMES),
        repeats=s.integer("repeats", d.repeats, min=1),
    )
    if out.mode == "official":  # the dataset's own train/test partition: one outer split
        if s.has("n_splits") and out.n_splits != 1:
            raise s.error("n_splits", f"mode: official is the dataset's one published train/"
                                      f"test split: n_splits must be 1, got {out.n_splits}")
        # test_fraction, scheme, repeats: not used
        return dataclasses.replace(out, n_splits=1, scheme="repeated", repeats=1)
    if out.scheme == "kfold" and out.n_splits < 2:
        raise s.error("n_splits", f"kfold needs at least 2 folds, got {out.n_splits} (one "
                                  "hold-out split: scheme: repeated)")
    if out.repeats > 1 and out.scheme != "kfold":
        raise s.error("repeats", "repeats > 1 needs scheme: kfold (repeated hold-out: raise "
                                 "n_splits instead)")
    return out


# --------------------------------------------------------------------------- search


@dataclass(frozen=True)
class AshaSpec:
    """ASHA early stopping of search trials (epochs are ASHA's time unit).

    ``grace_period``: epochs every trial gets; ``reduction_factor``: 1/η of the trials go on at
    each rung; ``max_epochs``: a search trial's full budget.
    """

    max_epochs: int
    grace_period: int = 1
    reduction_factor: float = 3.0

    def rungs(self) -> tuple[int, ...]:
        """The epochs at which ASHA compares trials (``grace · η^k`` below ``max_epochs``,
        rounded up: Ray decides at the first report at or past a rung), where a search trial
        that goes on writes its checkpoint and sends its epochs at once."""
        out, t = [], float(self.grace_period)
        while t < self.max_epochs:
            out.append(math.ceil(t - 1e-9))
            t *= self.reduction_factor
        return tuple(sorted(set(out)))


@dataclass(frozen=True)
class SearchSpec:
    """Phase 1: Optuna TPE (seeded) proposes, ASHA stops the weak.

    Attributes:
        mode: ``"nested"`` (one search per variant × outer split: test sets never inform a
            choice) or ``"shared"`` (one search per variant on split ``shared_split``, its best
            reused for every split: cheaper, optimistic).
        trials: trials per search (per variant × split when nested, per variant when shared).
        seed: the sampler's seed.
        metric: per-epoch validation metric ASHA and Optuna act on (``val_loss`` minimised;
            ``val_acc`` / ``val_auc`` maximised); see :attr:`metric_mode`.
        params: the hyperparameter declarations (searched and fixed), in file order.
    """

    trials: int
    asha: AshaSpec
    params: tuple[ParamSpec, ...] = ()
    mode: str = "nested"
    seed: int = 0
    metric: str = "val_loss"
    shared_split: int = 0

    @property
    def metric_mode(self) -> Literal["min", "max"]:
        return METRICS[self.metric]

    def to_dict(self) -> dict[str, Any]:
        grouped: dict[str, list[dict[str, Any]]] = {}
        for p in self.params:
            grouped.setdefault(p.name, []).append(p.to_dict())
        shared = {"shared_split": self.shared_split} if self.mode == "shared" else {}
        return {
            "mode": self.mode, "trials": self.trials, "seed": self.seed, "metric": self.metric,
            **shared,
            "asha": {"grace_period": self.asha.grace_period,
                     "reduction_factor": self.asha.reduction_factor,
                     "max_epochs": self.asha.max_epochs},
            "params": {k: v[0] if len(v) == 1 else v for k, v in grouped.items()},
        }


def parse_search(top: Section, variants: tuple[str, ...], n_splits: int) -> SearchSpec:
    s = top.section("search", ("mode", "trials", "seed", "metric", "shared_split", "asha",
                               "params"))
    mode = s.string("mode", "nested", choices=SEARCH_MODES)
    trials = s.integer("trials", min=1)
    seed = s.integer("seed", 0, min=0)
    metric = s.string("metric", "val_loss", choices=tuple(METRICS))
    shared_split = s.integer("shared_split", 0, min=0)
    if shared_split >= n_splits:
        raise s.error("shared_split", f"split {shared_split} does not exist: splits.n_splits is "
                                      f"{n_splits} (splits 0..{n_splits - 1})")
    if s.has("shared_split") and mode != "shared":
        raise s.error("shared_split", "only used with mode: shared")
    a = s.section("asha", ("grace_period", "reduction_factor", "max_epochs"))
    asha = AshaSpec(max_epochs=a.integer("max_epochs", min=1),
                    grace_period=a.integer("grace_period", 1, min=1),
                    reduction_factor=a.number("reduction_factor", 3.0, ge=2.0))
    if asha.grace_period > asha.max_epochs:
        raise a.error("grace_period", f"grace_period {asha.grace_period} > max_epochs "
                                      f"{asha.max_epochs}: no trial could reach its first rung")
    raw = s.raw("params", {})
    params = parse_params(Section(s.source, raw, s.key("params"),
                                  tuple(raw) if isinstance(raw, dict) else (),
                                  line=s.lines.get("params")), variants)
    return SearchSpec(trials=trials, asha=asha, params=params, mode=mode, seed=seed,
                      metric=metric, shared_split=shared_split)


# --------------------------------------------------------------------------- evaluation, train


@dataclass(frozen=True)
class EvaluationSpec:
    """Phase 2: each split's best configuration retrained on train+val, tested once.

    ``max_epochs``: the full budget (paper 90); ``early_stopping_patience``: epochs without a
    lower inner-validation loss before stopping (paper 15; ``None`` = off); ``seeds``: training
    seeds per split's best configuration (``train.seed``, ``+1``, …): the report's std then
    separates splits from initialisation.
    """

    max_epochs: int
    early_stopping_patience: int | None = 15
    external: tuple[ExternalSpec, ...] = ()
    seeds: int = 1

    def seed_list(self, base: int) -> list[int]:
        """The training seeds of each split's evaluation: ``base, base + 1, …`` (``seeds``)."""
        return [base + i for i in range(self.seeds)]

    def to_dict(self, *, redact: bool = False) -> dict[str, Any]:
        """File shape; ``external`` and ``seeds`` only when declared (older specs keep their
        fingerprint)."""
        out: dict[str, Any] = {"max_epochs": self.max_epochs,
                               "early_stopping_patience": self.early_stopping_patience}
        if self.external:
            out["external"] = [e.to_dict(redact=redact) for e in self.external]
        if self.seeds != 1:  # absent = 1
            out["seeds"] = self.seeds
        return out


@dataclass(frozen=True)
class ExternalSpec:
    """An external validation set: every evaluation run also tests its best-validation weights
    once on it (same ROI protocol). ``name`` names its metrics and artifacts."""

    name: str
    path: Path
    format: str
    options: tuple[tuple[str, Any], ...] = ()  # as DatasetSpec.options

    def to_dict(self, *, redact: bool = False) -> dict[str, Any]:
        return {"name": self.name, "path": "<redacted>" if redact else str(self.path),
                "format": self.format, **dict(self.options)}


_EXTERNAL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


def parse_evaluation(top: Section, base_dir: Path | None = None) -> EvaluationSpec:
    s = top.section("evaluation", (*names(EvaluationSpec),))
    return EvaluationSpec(s.integer("max_epochs", min=1),
                          s.integer("early_stopping_patience", 15, min=1, nullable=True),
                          _external(s, base_dir), s.integer("seeds", 1, min=1))


def _external(s: Section, base_dir: Path | None) -> tuple[ExternalSpec, ...]:
    items = s.raw("external", [])
    if items is None:
        return ()
    if not isinstance(items, (list, tuple)):
        raise s.error("external", f"expected a list of {{name, path, format}}, got "
                                  f"{describe(items)}")
    out: list[ExternalSpec] = []
    for i, item in enumerate(items):
        e = Section(s.source, item, join(s.key("external"), i),
                    ("name", "path", "format", *LOADER_OPTIONS), line=s.lines.get("external"))
        name = e.string("name")
        if not _EXTERNAL_NAME.match(name):
            raise e.error("name", f"{name!r}: use 1–32 lower-case letters, digits, '_' or '-' "
                                  "(it names metrics and artifacts)")
        if name in {o.name for o in out}:
            raise e.error("name", f"{name!r} is declared twice")
        fmt = e.string("format", choices=DATASET_FORMATS)
        out.append(ExternalSpec(name, resolve_path(e.string("path"), base_dir), fmt,
                                parse_loader_options(e, fmt)))
    return tuple(out)


# --------------------------------------------------------------------------- analysis, compare


@dataclass(frozen=True)
class AnalysisSpec:
    """How the report counts: ``unit`` = ``lesion`` (default: a lesion's views combined by
    their mean P(malignant) before any metric; bootstraps resample lesions), ``patient``
    (a patient's views of one class combined; bootstraps resample patients) or ``view`` (every
    view a case; bootstraps still resample lesions)."""

    unit: str = "lesion"


def parse_analysis(top: Section) -> AnalysisSpec:
    s = top.section("analysis", names(AnalysisSpec), required=False)
    return AnalysisSpec(s.string("unit", AnalysisSpec.unit, choices=ANALYSIS_UNITS))


@dataclass(frozen=True)
class CompareSpec:
    """Pre-declared comparisons: every variant against ``reference`` (default FTED when it is
    among the variants, else the last variant listed); never chosen on test results."""

    reference: str


def parse_compare(top: Section, variants: tuple[str, ...]) -> CompareSpec:
    s = top.section("compare", names(CompareSpec), required=False)
    default = "FTED" if "FTED" in variants else variants[-1]
    text = s.string("reference", default)
    try:
        ref = canonical_variant(text)
    except ValueError as e:
        raise s.error("reference", str(e)) from None
    if ref not in variants:
        raise s.error("reference", f"{ref} is not among the variants ({', '.join(variants)})")
    return CompareSpec(ref)


@dataclass(frozen=True)
class TrainSpec:
    """``trainables.config.TrainConfig`` settings that are neither searched nor set by the study
    structure (backbone, budget). Defaults are TrainConfig's (the paper's)."""

    batch_size: int = 128
    eval_batch_size: int | None = None
    plateau_factor: float = 0.1
    plateau_patience: int = 10
    restore_best: bool = True
    augment: bool = True
    max_shift: float = 0.25
    max_rotation_deg: float = 40.0
    hflip: bool = True
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    bf16: bool = True
    channels_last: bool = True
    cudnn_benchmark: bool = True
    checkpoint_every: int = 1
    checkpoint_interval_s: float = 60.0

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in names(TrainSpec)}


def parse_train(top: Section) -> tuple[TrainSpec, frozenset[str]]:
    """The ``train`` section and the keys it sets explicitly."""
    s = top.section("train", names(TrainSpec), required=False)
    d = TrainSpec()
    device = s.string("device", d.device)
    if not (device in ("auto", "cpu", "cuda", "mps") or
            (device.startswith("cuda:") and device[5:].isdigit())):
        raise s.error("device", f"expected auto, cpu, cuda, cuda:N or mps, got {device!r}")
    out = TrainSpec(
        batch_size=s.integer("batch_size", d.batch_size, min=2),
        eval_batch_size=s.integer("eval_batch_size", None, min=1, nullable=True),
        plateau_factor=s.number("plateau_factor", d.plateau_factor, gt=0.0, lt=1.0),
        plateau_patience=s.integer("plateau_patience", d.plateau_patience, min=0),
        restore_best=s.boolean("restore_best", d.restore_best),
        augment=s.boolean("augment", d.augment),
        max_shift=s.number("max_shift", d.max_shift, ge=0.0, lt=1.0),
        max_rotation_deg=s.number("max_rotation_deg", d.max_rotation_deg, ge=0.0, le=180.0),
        hflip=s.boolean("hflip", d.hflip),
        seed=s.integer("seed", d.seed, min=0),
        device=device,
        threads=s.integer("threads", None, min=1, nullable=True),
        bf16=s.boolean("bf16", d.bf16),
        channels_last=s.boolean("channels_last", d.channels_last),
        cudnn_benchmark=s.boolean("cudnn_benchmark", d.cudnn_benchmark),
        checkpoint_every=s.integer("checkpoint_every", d.checkpoint_every, min=1),
        checkpoint_interval_s=s.number("checkpoint_interval_s", d.checkpoint_interval_s,
                                       ge=0.0),
    )
    return out, frozenset(s.data)


# --------------------------------------------------------------------------- resources


@dataclass(frozen=True)
class ResourceSpec:
    """What each trial asks Ray for. Fractions below 1 share a device (``gpus: 0.5`` = two
    trials per GPU); above 1 they must be whole numbers (Ray's rule)."""

    cpus: float = 1.0
    gpus: float = 0.0


def parse_resources(top: Section) -> ResourceSpec:
    s = top.section("resources", names(ResourceSpec), required=False)
    cpus = s.number("cpus", 1.0, gt=0.0)
    gpus = s.number("gpus", 0.0, ge=0.0)
    for key, value in (("cpus", cpus), ("gpus", gpus)):
        if value > 1 and not value.is_integer():
            raise s.error(key, f"{value:g}: a request above 1 must be a whole number (Ray "
                               "shares a device only in fractions below 1)")
    return ResourceSpec(cpus, gpus)


__all__ = [
    "AnalysisSpec", "AshaSpec", "CompareSpec", "DatasetSpec", "EvaluationSpec", "ResourceSpec",
    "RoiSpec", "SearchSpec", "SplitSpec", "TrainSpec", "parse_analysis", "parse_compare",
    "parse_dataset", "parse_evaluation", "parse_resources", "parse_roi", "parse_search",
    "parse_splits", "parse_train", "resolve_path",
]

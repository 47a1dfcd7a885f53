"""Study definitions: :func:`load_spec` reads a YAML study file into a frozen :class:`StudySpec`.

Everything is checked before anything starts; each problem raises :class:`SpecError` naming
the file, the key path and the reason (``quick.yaml: search.params.base_lr: low 0.1 > high
0.01``). Nothing here imports torch, Ray or Optuna: the backbone registry is passed in
(``known_backbones``) and the study layer turns :class:`ParamSpec` into Optuna distributions.

A study file (see ``paper.yaml`` for every key, commented)::

    name: quick                    # MLflow experiment; default: the file's stem
    dataset: {synthetic: {patients: 150, seed: 0}}   # or {path: /data/BCDR-F03, format: bcdr}
    roi: {size: 64}
    splits: {n_splits: 3, test_fraction: 0.2, val_fraction: 0.2, seed: 0}
    backbone: efficientnet_lite0
    variants: [RI, FE, 1FT, 2FT, 3FT, AllFT, FTED]
    search:
      mode: nested                 # or shared
      trials: 4                    # per search (variant × split)
      asha: {grace_period: 1, reduction_factor: 2, max_epochs: 4}
      params:
        base_lr: {role: scientific, low: 1e-5, high: 1e-2, log: true}
        lam: {role: scientific, low: 0.0, high: 6.0, variants: [FTED]}
    evaluation: {max_epochs: 8, early_stopping_patience: 3, seeds: 1}
    analysis: {unit: lesion}       # or patient | view: what the report counts as a case
    compare: {reference: FTED}     # every variant is compared with this one (pre-declared)
    train: {batch_size: 32}
    resources: {cpus: 1, gpus: 0}
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ._errors import SpecError
from ._names import HYPERPARAMETERS, canonical_variant
from ._params import ParamSpec, Role
from ._reader import Section, describe, join
from ._sections import (
    AnalysisSpec,
    AshaSpec,
    CompareSpec,
    DatasetSpec,
    EvaluationSpec,
    ResourceSpec,
    RoiSpec,
    SearchSpec,
    SplitSpec,
    TrainSpec,
    parse_analysis,
    parse_compare,
    parse_dataset,
    parse_evaluation,
    parse_resources,
    parse_roi,
    parse_search,
    parse_splits,
    parse_train,
    resolve_path,
)
from ._yaml import read_yaml

Phase = Literal["search", "evaluate"]
#: The study files shipped with the package (``load_spec("quick")`` finds them).
SHIPPED: tuple[str, ...] = ("paper", "quick", "smoke")
_HERE = Path(__file__).resolve().parent
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TOP = ("name", "description", "dataset", "roi", "splits", "backbone", "input_size",
        "pretrained", "allow_unpretrained", "weights", "variants", "search", "evaluation",
        "train", "resources", "analysis", "compare")
#: Keys left out of the fingerprint: labels, where and how fast trials run, and how the report
#: reads the runs (analysis unit, declared reference): none changes what a trial computes.
_NOT_FINGERPRINTED = ("name", "description", "resources", "allow_unpretrained", "analysis",
                      "compare")


REDACTED = "<redacted>"  # what MLflow gets instead of a dataset path


@dataclass(frozen=True)
class StudySpec:
    """A validated study definition. Paths are absolute when loaded from a file.

    Attributes:
        name: study name (MLflow experiment, study folder).
        dataset / roi / splits: the data, how ROIs are cut, the outer splits.
        backbone: registry name (``inception_v3``, ``efficientnet_lite0``).
        input_size: model input side in px; ``None`` = the ROI side.
        pretrained / weights: ImageNet initialisation and an explicit weights file.
        allow_unpretrained: ``pretrained: false`` with variants other than RI is refused
            (a transfer-learning regime without the transfer) unless this is true.
        variants: canonical variant names, in file order.
        search / evaluation / train / resources: see their classes.
        source: the file it was read from (not part of equality or the fingerprint).
    """

    name: str
    dataset: DatasetSpec
    backbone: str
    variants: tuple[str, ...]
    search: SearchSpec
    evaluation: EvaluationSpec
    roi: RoiSpec = RoiSpec()
    splits: SplitSpec = SplitSpec()
    input_size: int | None = None
    pretrained: bool = True
    weights: Path | None = None
    allow_unpretrained: bool = False
    train: TrainSpec = TrainSpec()
    resources: ResourceSpec = ResourceSpec()
    analysis: AnalysisSpec = AnalysisSpec()
    compare: CompareSpec | None = None
    description: str = ""
    source: str = field(default="<dict>", compare=False)

    @property
    def reference(self) -> str:
        """The declared reference variant of every comparison (``compare.reference``)."""
        if self.compare is not None:
            return self.compare.reference
        return "FTED" if "FTED" in self.variants else self.variants[-1]

    # ------------------------------------------------------------------ hyperparameters

    def params_for(self, variant: str) -> list[ParamSpec]:
        """The searched hyperparameters of ``variant`` (what Optuna samples), in file order."""
        v = self._variant(variant)
        return [p for p in self.search.params if p.searched and p.applies_to(v)]

    def fixed_for(self, variant: str) -> dict[str, Any]:
        """``{name: value}`` of the hyperparameters declared fixed for ``variant``."""
        v = self._variant(variant)
        return {p.name: p.value for p in self.search.params if not p.searched and p.applies_to(v)}

    def roles_for(self, variant: str) -> dict[str, Role]:
        """``{name: role}`` of every hyperparameter declared for ``variant`` (logged as tags)."""
        v = self._variant(variant)
        return {p.name: p.role for p in self.search.params if p.applies_to(v)}

    def searches(self) -> list[tuple[str, int]]:
        """The (variant, split) pairs that get a search: all of them when nested, the shared
        split only when shared."""
        splits = (range(self.splits.total) if self.search.mode == "nested"
                  else [self.search.shared_split])
        return [(v, k) for v in self.variants for k in splits]

    def trial_config(self, variant: str, values: Mapping[str, Any] | None = None, *,
                     phase: Phase = "search") -> dict[str, Any]:
        """A ``TrainConfig.from_dict`` dict for one trial of ``variant``.

        ``values`` are the sampled values of exactly :meth:`params_for` (``variant``); fixed
        declarations and the ``train`` section fill the rest, ``RegimeConfig`` defaults what no
        one sets. ``phase="search"`` gets ASHA's ``max_epochs``, ``"evaluate"`` the evaluation
        budget; both stop early on the inner validation loss with the evaluation patience.

        Raises:
            ValueError: ``values`` misses a searched name or has one that is not searched.
        """
        v = self._variant(variant)
        values = dict(values or {})
        searched = {p.name for p in self.params_for(v)}
        if set(values) != searched:
            raise ValueError(f"{v}: values must set exactly {sorted(searched)}; missing "
                             f"{sorted(searched - set(values))}, unknown "
                             f"{sorted(set(values) - searched)}")
        chosen = {**self.fixed_for(v), **values}
        target = {name: HYPERPARAMETERS[name].target for name in chosen}
        regime = {"variant": v, **{k: x for k, x in chosen.items() if target[k] == "regime"}}
        train = {**self.train.to_dict(), **{k: x for k, x in chosen.items()
                                            if target[k] == "train"}}
        if phase not in ("search", "evaluate"):
            raise ValueError(f"phase must be 'search' or 'evaluate', got {phase!r}")
        budget = self.search.asha.max_epochs if phase == "search" else self.evaluation.max_epochs
        if phase == "search":  # a checkpoint at every rung ASHA compares trials at
            train["checkpoint_at"] = list(self.search.asha.rungs())
        return {
            "regime": regime, "backbone": self.backbone, "input_size": self.input_size,
            "pretrained": self.pretrained,
            "weights": None if self.weights is None else str(self.weights),
            "max_epochs": budget,
            "early_stopping_patience": self.evaluation.early_stopping_patience, **train,
        }

    def _variant(self, variant: str) -> str:
        v = canonical_variant(variant)
        if v not in self.variants:
            raise ValueError(f"variant {v} is not in this study ({', '.join(self.variants)})")
        return v

    # ------------------------------------------------------------------ overrides

    def with_dataset(self, path: str | Path, format: str) -> StudySpec:
        """The same study on another dataset (the launcher's ``--data PATH --data-format F``)."""
        data = self.to_dict()
        data["dataset"] = {"path": str(Path(path).expanduser().resolve()), "format": format}
        return spec_from_dict(data, source=f"{self.source} with --data")

    def with_name(self, name: str) -> StudySpec:
        """The same study under another name (the launcher's ``--study NAME``)."""
        if not _NAME.match(name):
            raise SpecError(self.source, "name", f"{name!r}: use letters, digits, '_', '.', '-' "
                            "(it names a folder and an MLflow experiment)")
        return dataclasses.replace(self, name=name)

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """Plain data in the file's own shape: ``spec_from_dict(spec.to_dict()) == spec``."""
        return {
            "name": self.name, "description": self.description,
            "dataset": self.dataset.to_dict(),
            "roi": dataclasses.asdict(self.roi), "splits": dataclasses.asdict(self.splits),
            "backbone": self.backbone, "input_size": self.input_size,
            "pretrained": self.pretrained, "allow_unpretrained": self.allow_unpretrained,
            "weights": None if self.weights is None else str(self.weights),
            "variants": list(self.variants), "search": self.search.to_dict(),
            "evaluation": self.evaluation.to_dict(), "train": self.train.to_dict(),
            "resources": dataclasses.asdict(self.resources),
            "analysis": dataclasses.asdict(self.analysis),
            "compare": {"reference": self.reference},
        }

    def public_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` without where the data lives: what may go to MLflow.

        ``dataset.path`` becomes ``"<redacted>"`` (a folder name can carry a patient's or a
        hospital's name); the data is identified by its content fingerprint instead (the
        parent run's ``data_fingerprint`` tag). Not a round trip: use :meth:`to_dict` for that.
        """
        out = self.to_dict()
        if out["dataset"].get("path") is not None:
            out["dataset"]["path"] = REDACTED
        out["evaluation"] = self.evaluation.to_dict(redact=True)  # external sets' paths too
        return out

    def flat_dict(self) -> dict[str, Any]:
        """:meth:`public_dict` flattened to dotted keys (``search.asha.max_epochs``,
        ``search.params.base_lr.0.low`` for the first of a list), for MLflow params, whose keys
        allow no brackets; lists of scalars become comma-joined strings."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(join(prefix, k), v)
            elif isinstance(value, list) and any(isinstance(x, dict) for x in value):
                for i, v in enumerate(value):
                    walk(f"{prefix}.{i}", v)
            elif isinstance(value, list):
                out[prefix] = ",".join(str(x) for x in value)
            else:
                out[prefix] = value

        walk("", self.public_dict())
        return out

    def fingerprint(self) -> str:
        """16 hex digits over everything that decides the results: not the name,
        description or resources, nor comments, key order or formatting of the file. Equal
        fingerprints mean the same study (same data settings, grid, spaces and budgets)."""
        data = {k: v for k, v in self.to_dict().items() if k not in _NOT_FINGERPRINTED}
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- loading


def shipped_path(name: str) -> Path:
    """Path of a shipped study file (``"quick"`` -> ``.../search_spaces/quick.yaml``)."""
    if name not in SHIPPED:
        raise ValueError(f"no shipped study {name!r}; shipped: {', '.join(SHIPPED)}")
    return _HERE / f"{name}.yaml"


def load_spec(path: str | Path, *, known_backbones: Collection[str] | None = None) -> StudySpec:
    """Read and validate a study file; a shipped name (``"quick"``) works too.

    Relative paths inside (dataset, weights) are taken relative to the file's folder.

    Raises:
        SpecError: anything wrong, naming the file, key path and reason.
    """
    p, source = Path(path), str(path)
    if not p.exists() and source in SHIPPED:
        p = shipped_path(source)
        source = _shown(p)
    data = read_yaml(p, source)
    return spec_from_dict(data, source=source, base_dir=p.resolve().parent,
                          known_backbones=known_backbones, default_name=p.stem)


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (shorter messages)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def spec_from_dict(data: Any, *, source: str = "<dict>", base_dir: Path | None = None,
                   known_backbones: Collection[str] | None = None,
                   default_name: str | None = None) -> StudySpec:
    """Validate already-parsed study data (what :func:`load_spec` does after reading YAML).

    ``base_dir``: folder relative paths are resolved against (``None`` leaves them relative).
    """
    if data is None:
        raise SpecError(source, "", "the file is empty; see search_spaces/paper.yaml for a "
                                    "complete study file")
    top = Section(source, data, "", _TOP)
    fallback = re.sub(r"[^A-Za-z0-9_.-]+", "-", default_name or "").strip("-.") or "study"
    name = top.string("name", fallback)
    if not _NAME.match(name):
        raise top.error("name", f"{name!r}: use letters, digits, '_', '.', '-' (it names a "
                                "folder and an MLflow experiment)")
    description = top.raw("description", "")
    description = "" if description is None else description
    if not isinstance(description, str):
        raise top.error("description", f"expected text, got {describe(description)}")
    variants = _parse_variants(top)
    splits = parse_splits(top)
    search = parse_search(top, variants, splits.total)
    train, train_keys = parse_train(top)
    declared = getattr(data["search"].get("params"), "lines", {})
    for p in search.params:
        if p.name in train_keys:
            raise SpecError(source, f"search.params.{p.name}", f"{p.name} is also set in "
                            f"train.{p.name}; keep one of them", declared.get(p.name))
    weights = top.string("weights", None, nullable=True)
    dataset = parse_dataset(top, base_dir)
    if splits.mode == "official" and dataset.format != "cbis-ddsm":
        raise SpecError(source, "splits.mode", f"official needs a dataset that publishes its "
                        f"train/test split (cbis-ddsm); dataset.format is {dataset.format}",
                        None)
    pretrained = top.boolean("pretrained", True)
    allow_unpretrained = top.boolean("allow_unpretrained", False)
    transfer = [v for v in variants if v != "RI"]
    if not pretrained and transfer and not allow_unpretrained:
        raise top.error("pretrained", f"false for {', '.join(transfer)}: these regimes transfer "
                        "ImageNet weights; without them they are random-init training under "
                        "another name. Keep 'pretrained: true' (stage the weights), or add "
                        "'allow_unpretrained: true' to run them anyway (the report says so)")
    return StudySpec(
        name=name,
        description=description,
        dataset=dataset,
        roi=parse_roi(top),
        splits=splits,
        backbone=_parse_backbone(top, known_backbones),
        input_size=top.integer("input_size", None, min=16, nullable=True),
        pretrained=pretrained,
        allow_unpretrained=allow_unpretrained,
        weights=None if weights is None else resolve_path(weights, base_dir),
        variants=variants,
        search=search,
        evaluation=parse_evaluation(top, base_dir),
        train=train,
        resources=parse_resources(top),
        analysis=parse_analysis(top),
        compare=parse_compare(top, variants),
        source=source,
    )


def _parse_variants(top: Section) -> tuple[str, ...]:
    names = top.string_list("variants")
    if not names:
        raise top.error("variants", "empty: list at least one of RI, FE, 1FT, 2FT, 3FT, AllFT, "
                                    "FTED")
    out: list[str] = []
    for i, text in enumerate(names):
        try:
            v = canonical_variant(text)
        except ValueError as e:
            raise SpecError(top.source, join("variants", i), str(e),
                            top.lines.get("variants")) from None
        if v in out:
            raise SpecError(top.source, join("variants", i), f"{v} is listed twice",
                            top.lines.get("variants"))
        out.append(v)
    return tuple(out)


def _parse_backbone(top: Section, known: Collection[str] | None) -> str:
    if known is None:
        return top.string("backbone")
    known = tuple(sorted(known))
    value = top.raw("backbone")
    if isinstance(value, str) and value not in known:
        raise top.error("backbone", f"unknown backbone {value!r}; available: {', '.join(known)}")
    return top.string("backbone", choices=known)


def check_resources(spec: StudySpec, available: Mapping[str, float]) -> None:
    """Fail before any trial is queued if no node could ever run one.

    ``available``: the cluster's totals as ``ray.cluster_resources()`` gives them
    (``{"CPU": 16.0, "GPU": 2.0, ...}``). A cluster that autoscales its GPU workers has no GPU
    until one starts: pass what it can reach, not what is up.

    Raises:
        SpecError: a GPU request on a cluster without GPUs, or more per trial than it has.
    """
    cpus, gpus = float(available.get("CPU", 0.0)), float(available.get("GPU", 0.0))
    r = spec.resources
    if r.gpus > 0 and gpus <= 0:
        raise SpecError(spec.source, "resources.gpus", f"each trial asks for {r.gpus:g} GPU but "
                        f"the cluster has none ({cpus:g} CPUs); set resources.gpus: 0 to train "
                        "on CPUs, or run on GPU workers (--cluster ray_cluster.yaml)")
    if r.gpus > gpus:
        raise SpecError(spec.source, "resources.gpus", f"each trial asks for {r.gpus:g} GPUs "
                        f"but the cluster has {gpus:g}: no trial could start")
    if r.cpus > cpus:
        raise SpecError(spec.source, "resources.cpus", f"each trial asks for {r.cpus:g} CPUs "
                        f"but the cluster has {cpus:g}: no trial could start")


__all__ = [
    "SHIPPED", "AnalysisSpec", "AshaSpec", "CompareSpec", "DatasetSpec", "EvaluationSpec",
    "ParamSpec", "ResourceSpec",
    "RoiSpec", "SearchSpec", "SpecError", "SplitSpec", "StudySpec", "TrainSpec",
    "check_resources", "load_spec", "shipped_path", "spec_from_dict",
]

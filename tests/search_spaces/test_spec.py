"""Study files: the shipped ones load, every kind of mistake is named by file + key + reason,
the mirrors of ``trainables`` agree with the real dataclasses, fingerprints are stable."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from search_spaces import (
    HYPERPARAMETERS,
    PAPER_VARIANTS,
    SHIPPED,
    SpecError,
    StudySpec,
    canonical_variant,
    check_resources,
    load_spec,
    shipped_path,
    spec_from_dict,
)
from search_spaces._names import DATASET_FORMATS, ROLES, SYNTH_FIELDS
from search_spaces._sections import RoiSpec, SplitSpec, TrainSpec
from trainables.backbones import available_backbones
from trainables.config import TrainConfig
from trainables.datasets import FORMATS
from trainables.datasets.synthetic import SynthConfig
from trainables.regimes import PAPER_VARIANTS as REAL_PAPER_VARIANTS
from trainables.regimes import RegimeConfig, parse_variant
from trainables.rois import RoiConfig
from trainables.splits import SplitConfig

BACKBONES = available_backbones()


def quick_dict() -> dict:
    """The shipped quick.yaml as plain data (a valid base to break)."""
    return load_spec("quick", known_backbones=BACKBONES).to_dict()


def write(tmp_path: Path, data, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def middle(param) -> object:
    """A value inside a searched ParamSpec's range."""
    if param.kind == "categorical":
        return param.choices[0]
    mid = math.sqrt(param.low * param.high) if param.log else (param.low + param.high) / 2
    return round(mid) if param.kind == "int" else mid


# --------------------------------------------------------------------------- shipped files


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_specs_load_and_build_real_configs(name):
    spec = load_spec(shipped_path(name), known_backbones=BACKBONES)
    assert spec.name == name
    RoiConfig(**dataclasses.asdict(spec.roi))
    SplitConfig(**dataclasses.asdict(spec.splits))
    if spec.dataset.is_synthetic:
        SynthConfig(**spec.dataset.synth_kwargs())
    assert spec.dataset.format in FORMATS
    for variant in spec.variants:
        values = {p.name: middle(p) for p in spec.params_for(variant)}
        for phase in ("search", "evaluate"):
            config = TrainConfig.from_dict(spec.trial_config(variant, values, phase=phase))
            assert config.regime.variant == variant
            assert config.backbone == spec.backbone
        assert config.max_epochs == spec.evaluation.max_epochs
    json.dumps(spec.to_dict())  # loggable as an artifact
    assert all(isinstance(v, str | int | float | bool | type(None))
               for v in spec.flat_dict().values())


def test_paper_yaml_is_the_paper_protocol():
    spec = load_spec("paper", known_backbones=BACKBONES)
    assert spec.backbone == "inception_v3" and spec.roi.size == 299
    assert spec.variants == REAL_PAPER_VARIANTS
    assert spec.splits.n_splits == 5 and spec.splits.test_fraction == 0.2
    assert spec.evaluation.max_epochs == 90 and spec.evaluation.early_stopping_patience == 15
    assert spec.train.batch_size == 128 and spec.resources.gpus > 0
    assert spec.dataset.format == "bcdr" and not spec.dataset.is_synthetic
    lr = {v: next(p for p in spec.params_for(v) if p.name == "base_lr") for v in spec.variants}
    assert all(p.log and p.low < 1e-4 < p.high for v, p in lr.items() if v != "FTED")
    assert lr["FTED"].log and lr["FTED"].low < 1e-3 < lr["FTED"].high
    lam = next(p for p in spec.params_for("FTED") if p.name == "lam")
    assert lam.low <= 3.0 <= lam.high  # the paper's |λ|


def test_quick_and_smoke_are_small_cpu_studies():
    quick, smoke = (load_spec(n, known_backbones=BACKBONES) for n in ("quick", "smoke"))
    assert quick.variants == REAL_PAPER_VARIANTS and quick.splits.n_splits == 3
    assert quick.backbone == smoke.backbone == "efficientnet_lite0"
    assert quick.dataset.is_synthetic and smoke.dataset.is_synthetic
    assert quick.resources.gpus == smoke.resources.gpus == 0
    assert smoke.roi.size <= 48 and set(smoke.variants) == {"FE", "FTED"}
    assert smoke.search.asha.grace_period < smoke.search.asha.max_epochs  # ASHA can prune


def test_params_for_fted_has_lambda_fe_does_not():
    spec = load_spec("quick", known_backbones=BACKBONES)
    assert "lam" in {p.name for p in spec.params_for("FTED")}
    assert "lam" not in {p.name for p in spec.params_for("FE")}
    assert "lam" not in spec.fixed_for("FE")
    assert spec.fixed_for("fe") == spec.fixed_for("FE")  # any spelling of a variant
    fted_lr = next(p for p in spec.params_for("FTED") if p.name == "base_lr")
    fe_lr = next(p for p in spec.params_for("FE") if p.name == "base_lr")
    assert fted_lr.low > fe_lr.low  # FTED's t0 has its own range
    with pytest.raises(ValueError, match="not in this study"):
        load_spec("smoke").params_for("RI")


@pytest.mark.parametrize("name", SHIPPED)
def test_every_param_has_a_role(name):
    spec = load_spec(name)
    assert spec.search.params
    for p in spec.search.params:
        assert p.role in ROLES and (p.role == "fixed") == (not p.searched)
    for v in spec.variants:
        roles = spec.roles_for(v)
        assert set(roles) == {p.name for p in spec.params_for(v)} | set(spec.fixed_for(v))


def test_trial_config_wants_exactly_the_searched_values():
    spec = load_spec("smoke")
    with pytest.raises(ValueError, match="missing"):
        spec.trial_config("FTED", {"base_lr": 1e-3})
    with pytest.raises(ValueError, match="unknown"):
        spec.trial_config("FE", {"base_lr": 1e-3, "lam": 1.0})


# --------------------------------------------------------------------------- mirrors


def _fields(cls) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cls)}


def test_mirrored_dataclasses_match_trainables():
    assert _fields(RoiSpec) == _fields(RoiConfig)
    assert _fields(SplitSpec) == _fields(SplitConfig)
    structural = {"regime", "backbone", "input_size", "pretrained", "weights", "max_epochs",
                  "early_stopping_patience", "checkpoint_at"}
    # a study writes checkpoints on a time budget; a bare trial every epoch
    study_defaults = {"checkpoint_interval_s": 60.0}
    train = {**_fields(TrainConfig), **study_defaults}
    assert set(_fields(TrainSpec)) == set(train) - structural
    assert all(train[k] == v for k, v in _fields(TrainSpec).items())
    assert set(SYNTH_FIELDS) == set(_fields(SynthConfig))
    assert PAPER_VARIANTS == REAL_PAPER_VARIANTS
    assert DATASET_FORMATS == FORMATS


def test_hyperparameter_names_are_config_fields():
    regime = set(_fields(RegimeConfig)) - {"variant", "n_classes"}
    train = set(_fields(TrainConfig))
    for name, domain in HYPERPARAMETERS.items():
        assert name in (regime if domain.target == "regime" else train), name
    assert regime <= set(HYPERPARAMETERS)  # every regime knob can be searched


def _accepts(name: str, value) -> bool:
    try:
        if HYPERPARAMETERS[name].target == "regime":
            RegimeConfig(variant="FTED", **{name: value})
        else:
            TrainConfig(regime=RegimeConfig("FE"), **{name: value})
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("name", sorted(n for n, d in HYPERPARAMETERS.items() if d.numeric))
def test_domains_agree_with_the_real_configs_at_their_edges(name):
    d = HYPERPARAMETERS[name]
    edges = [b for b in (d.gt, d.ge, d.lt, d.le) if b is not None]
    step = 1 if d.type == "int" else 1e-9
    for edge in edges:
        for value in (edge - step, edge, edge + step):
            value = int(value) if d.type == "int" else float(value)
            assert (d.check(value) is None) == _accepts(name, value), (name, value)


@pytest.mark.parametrize("text", ["RI", "fe", "1FT", "2ft", "12FT", "AllFT", "allft", "FTED",
                                  " fted ", "0FT", "FT", "XFT", "ALL", "", "3 FT"])
def test_variant_names_as_trainables_reads_them(text):
    try:
        expected = parse_variant(text).name
    except ValueError:
        with pytest.raises(ValueError):
            canonical_variant(text)
    else:
        assert canonical_variant(text) == expected


# --------------------------------------------------------------------------- errors


def _set(path: str, value):
    def mutate(d):
        *parents, last = path.split(".")
        for key in parents:
            d = d[key]
        d[last] = value
    return mutate


def _delete(path: str):
    def mutate(d):
        *parents, last = path.split(".")
        for key in parents:
            d = d[key]
        del d[last]
    return mutate


BASE_LR = "search.params.base_lr"
BAD = [
    # (mutation, key path in the message, reason fragment)
    (_set("variants", ["RI", "XFT"]), "variants[1]", "unknown variant 'XFT'"),
    (_set("variants", []), "variants", "empty"),
    (_set("variants", ["FE", "fe"]), "variants[1]", "listed twice"),
    (_set("backbone", "resnet50"), "backbone", "unknown backbone 'resnet50'"),
    (_set("search.params.base_rl", {"role": "fixed", "value": 1e-4}), "search.params.base_rl",
     "did you mean 'base_lr'"),
    (_set("search.params.learning_rate", {"role": "fixed", "value": 1e-4}),
     "search.params.learning_rate", "unknown hyperparameter"),
    (_set("serach", {}), "serach", "did you mean 'search'"),
    (_set("search.asha.grace_periode", 1), "search.asha.grace_periode", "unknown key"),
    (_set("roi.colour", "grey"), "roi.colour", "unknown key"),
    (_set(BASE_LR, {"role": "scientific", "low": 0.1, "high": 0.01, "log": True}), BASE_LR,
     "low 0.1 > high 0.01"),
    (_set(BASE_LR, {"role": "scientific", "low": 0.01, "high": 0.01}), BASE_LR, "low == high"),
    (_set(BASE_LR, {"role": "scientific", "low": -1e-4, "high": 0.01}), BASE_LR,
     "low: must be > 0"),
    (_set(BASE_LR, {"role": "fixed", "value": 0}), BASE_LR, "value: must be > 0"),
    (_set("search.params.lam", {"role": "scientific", "low": 0.0, "high": 6.0, "log": True,
                                "variants": ["FTED"]}), "search.params.lam",
     "log scale needs low > 0"),
    (_set("search.params.lam", {"role": "scientific", "low": 0.0, "high": 6.0}),
     "search.params.lam", "only affects FTED"),
    (_set("search.params.lam", {"role": "fixed", "value": -3.0}), "search.params.lam",
     "must be >= 0"),
    (_set(BASE_LR, [{"role": "fixed", "value": 1e-4, "variants": ["FE", "FTED"]},
                    {"role": "fixed", "value": 1e-3, "variants": ["FTED"]}]),
     BASE_LR + "[1]", "declared twice for FTED"),
    (_set(BASE_LR, {"role": "scientific", "low": 1e-4, "high": 1e-2, "variants": ["FTDE"]}),
     BASE_LR + ".variants[0]", "unknown variant"),
    (_set(BASE_LR, {"role": "scientific", "low": 1e-4, "high": 1e-2, "variants": []}),
     BASE_LR + ".variants", "empty list"),
    (_set("search.params.momentum", {"value": 0.9}), "search.params.momentum.role",
     "missing required key"),
    (_set("search.params.momentum", {"role": "tuned", "value": 0.9}),
     "search.params.momentum.role", "not one of scientific, nuisance, fixed"),
    (_set("search.params.momentum", {"role": "fixed", "low": 0.8, "high": 0.99}),
     "search.params.momentum.role", "role fixed takes a value"),
    (_set("search.params.momentum", {"role": "nuisance", "value": 0.9}),
     "search.params.momentum.role", "give low/high or choices"),
    (_set("search.params.momentum", {"role": "fixed", "value": 0.9, "low": 0.1}),
     "search.params.momentum", "exactly one of"),
    (_set("search.params.depth", {"role": "nuisance", "choices": ["normalized", "deep"],
                                  "variants": ["FTED"]}), "search.params.depth.choices[1]",
     "expected one of normalized, index"),
    (_set("search.params.dropout", {"role": "nuisance", "choices": [0.5]}),
     "search.params.dropout.choices", "at least 2 distinct"),
    (_set("search.params.head_pool", {"role": "nuisance", "low": 1, "high": 2}),
     "search.params.head_pool", "categorical"),
    (_set("search.params.head_hidden", {"role": "nuisance", "low": 64.5, "high": 512}),
     "search.params.head_hidden", "expected an integer"),
    (_set("search.params.batch_size", {"role": "fixed", "value": 16}),
     "search.params.batch_size", "also set in train.batch_size"),
    (_set("search.trials", "many"), "search.trials", "expected an integer, got string"),
    (_set("search.trials", 0), "search.trials", "must be >= 1"),
    (_set("roi.size", 64.5), "roi.size", "expected an integer"),
    (_set("splits.n_splits", True), "splits.n_splits", "expected an integer, got boolean"),
    (_set("splits.test_fraction", 1.5), "splits.test_fraction", "must be < 1"),
    (_set("splits.n_splits", 1), "splits.n_splits", "kfold needs at least 2 folds"),
    (_set("splits.repeats", 0), "splits.repeats", "must be >= 1"),
    (_set("splits.scheme", "repeated"), "splits.repeats", "repeats > 1 needs scheme: kfold"),
    (_set("dataset.balance", "oversample"), "dataset.balance", "not one of none, undersample"),
    (_set("evaluation.seeds", 0), "evaluation.seeds", "must be >= 1"),
    (_set("analysis.unit", "image"), "analysis.unit", "not one of lesion, patient, view"),
    (_set("analysis.units", "view"), "analysis.units", "unknown key"),
    (_set("compare.reference", "2FTED"), "compare.reference", "unknown variant"),
    (_set("pretrained", "yes please"), "pretrained", "expected true or false"),
    (_delete("search.asha.max_epochs"), "search.asha.max_epochs", "missing required key"),
    (_delete("dataset"), "dataset", "missing required key"),
    (_delete("variants"), "variants", "missing required key"),
    (_set("dataset", {"format": "bcdr"}), "dataset.path", "missing required key"),
    (_set("dataset", {"path": "x", "format": "dicom"}), "dataset.format", "not one of"),
    (_set("dataset.synthetic.patients", 1), "dataset.synthetic.patients", "must be >= 2"),
    (_set("dataset.synthetic.radius_range", [30, 10]), "dataset.synthetic.radius_range",
     "min <= max"),
    (_set("search.asha.grace_period", 5), "search.asha.grace_period", "> max_epochs"),
    (_set("search.asha.reduction_factor", 1), "search.asha.reduction_factor", "must be >= 2"),
    (_set("search.metric", "val_los"), "search.metric", "did you mean 'val_loss'"),
    (_set("search.mode", "shared_split"), "search.mode", "not one of nested, shared"),
    (_set("search.shared_split", 7), "search.shared_split", "does not exist"),
    (_set("evaluation.early_stopping_patience", 0), "evaluation.early_stopping_patience",
     "must be >= 1"),
    (_set("train.device", "gpu"), "train.device", "expected auto, cpu"),
    (_set("resources.gpus", -1), "resources.gpus", "must be >= 0"),
    (_set("resources.cpus", 0), "resources.cpus", "must be > 0"),
    (_set("resources.cpus", 1.5), "resources.cpus", "whole number"),
    (_set("resources.gpus", float("nan")), "resources.gpus", "finite"),
    (_set("name", "my study!"), "name", "use letters"),
    (_set("input_size", 8), "input_size", "must be >= 16"),
]


@pytest.mark.parametrize(("mutate", "key", "reason"), BAD,
                         ids=[f"{i}-{key}" for i, (_, key, _) in enumerate(BAD)])
def test_bad_spec_names_file_key_and_reason(tmp_path, mutate, key, reason):
    data = quick_dict()
    if key == "splits.repeats" and "kfold" in reason:
        data["splits"]["repeats"] = 2  # repeats of a repeated hold-out
    mutate(data)
    path = write(tmp_path, data)
    with pytest.raises(SpecError) as info:
        load_spec(path, known_backbones=BACKBONES)
    err = info.value
    assert str(err).startswith(f"{path}: {key}: "), str(err)
    assert reason in str(err)
    assert err.key == key and err.source == str(path)
    assert isinstance(err, ValueError)


def test_error_gives_the_line_of_the_key(tmp_path):
    text = re.sub(r"reduction_factor: [\d.]+", "reduction_factor: 1",
                  shipped_path("quick").read_text(), count=1)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "reduction_factor: 1" in t)
    path = write(tmp_path, text, "quick.yaml")
    with pytest.raises(SpecError, match=rf"quick.yaml: search.asha.reduction_factor: .*"
                                        rf"\(line {line}\)"):
        load_spec(path)


def test_inverted_range_message_as_documented(tmp_path):
    text = shipped_path("smoke").read_text().replace(
        "base_lr: {role: scientific, low: 1.0e-4, high: 1.0e-2",
        "base_lr: {role: scientific, low: 0.1, high: 0.01")
    with pytest.raises(SpecError, match=r"smoke.yaml: search.params.base_lr: low 0.1 > high "
                                        r"0.01"):
        load_spec(write(tmp_path, text, "smoke.yaml"))


@pytest.mark.parametrize(("text", "reason"), [
    ("search: [1, 2\nname: x\n", "line 2, column 5: invalid YAML"),
    ("name: a\nname: b\n", "line 2, column 1: invalid YAML: key 'name' given twice"),
    ("", "the file is empty"),
    ("- 1\n- 2\n", "(top level): expected a mapping"),
    ("name: x\n\tvariants: [FE]\n", "invalid YAML"),
    ("!!python/object:os.system {}\n", "invalid YAML"),
])
def test_unreadable_yaml_is_a_spec_error(tmp_path, text, reason):
    path = write(tmp_path, text)
    with pytest.raises(SpecError, match=r"^" + str(path).replace("\\", "\\\\")) as info:
        load_spec(path)
    assert reason in str(info.value)


def test_missing_or_binary_file_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "nope.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00name")
    with pytest.raises(SpecError, match="not UTF-8"):
        load_spec(tmp_path / "bin.yaml")


def test_exponent_without_dot_is_a_number(tmp_path):
    text = shipped_path("smoke").read_text().replace("low: 1.0e-4", "low: 1e-4")
    spec = load_spec(write(tmp_path, text, "s.yaml"))
    assert next(p for p in spec.params_for("FE") if p.name == "base_lr").low == 1e-4


# --------------------------------------------------------------------------- resources


def test_gpu_request_on_a_cluster_without_gpus_fails():
    paper = load_spec("paper")
    with pytest.raises(SpecError, match=r"paper.yaml: resources.gpus: .*the cluster has none"):
        check_resources(paper, {"CPU": 16.0, "memory": 1e10})
    check_resources(paper, {"CPU": 16.0, "GPU": 1.0})
    check_resources(load_spec("quick"), {"CPU": 2.0})


def test_more_per_trial_than_the_cluster_has_fails():
    spec = load_spec("paper")
    big = dataclasses.replace(spec, resources=dataclasses.replace(spec.resources, gpus=2.0))
    with pytest.raises(SpecError, match="resources.gpus: .*has 1"):
        check_resources(big, {"CPU": 16.0, "GPU": 1.0})
    with pytest.raises(SpecError, match="resources.cpus"):
        check_resources(spec, {"CPU": 0.5, "GPU": 1.0})


# --------------------------------------------------------------------------- paths


def test_relative_paths_resolve_against_the_files_folder(tmp_path, monkeypatch):
    data = quick_dict()
    data["dataset"] = {"path": "../data/BCDR-F03", "format": "bcdr"}
    data["weights"] = "weights/lite0.pth"
    folder = tmp_path / "studies"
    folder.mkdir()
    path = write(folder, data, "mine.yaml")
    monkeypatch.chdir(tmp_path.parent)  # the working directory does not matter
    spec = load_spec(path)
    assert spec.dataset.path == (tmp_path / "data" / "BCDR-F03").resolve()
    assert spec.weights == (folder / "weights" / "lite0.pth").resolve()
    assert spec.name == "quick"
    absolute = load_spec(write(folder, {**data, "dataset": {"path": "/srv/bcdr",
                                                            "format": "bcdr"}}, "abs.yaml"))
    assert absolute.dataset.path == Path("/srv/bcdr")


def test_with_name_checks_the_name():
    spec = load_spec("smoke")
    assert spec.with_name("smoke-2").name == "smoke-2"
    assert spec.with_name("smoke-2").fingerprint() == spec.fingerprint()  # a label only
    with pytest.raises(SpecError, match="name: 'a b'"):
        spec.with_name("a b")


def test_name_defaults_to_the_file_stem(tmp_path):
    data = quick_dict()
    del data["name"]
    assert load_spec(write(tmp_path, data, "my study.yaml")).name == "my-study"


def test_with_dataset_replaces_the_data(tmp_path):
    spec = load_spec("quick").with_dataset(tmp_path / "mias", "mias")
    assert spec.dataset.path == (tmp_path / "mias").resolve() and spec.dataset.format == "mias"
    assert not spec.dataset.is_synthetic
    with pytest.raises(SpecError, match="dataset.format"):
        load_spec("quick").with_dataset(tmp_path, "dicom")


# --------------------------------------------------------------------------- fingerprint


def test_fingerprint_is_stable_across_formatting_and_key_order(tmp_path):
    spec = load_spec("quick")
    data = spec.to_dict()
    reordered = dict(reversed(list(data.items())))
    block = write(tmp_path, reordered, "a.yaml")
    flow = tmp_path / "b.yaml"
    flow.write_text("# a comment\n" + yaml.safe_dump(data, default_flow_style=True))
    assert load_spec(block).fingerprint() == load_spec(flow).fingerprint() == spec.fingerprint()
    assert load_spec("quick").fingerprint() == spec.fingerprint()
    assert len(spec.fingerprint()) == 16


@pytest.mark.parametrize("knob", [
    _set("search.trials", 3), _set("search.asha.max_epochs", 5),
    _set("search.asha.grace_period", 2), _set("search.asha.reduction_factor", 4),
    _set("evaluation.max_epochs", 4), _set("splits.n_splits", 2), _set("roi.size", 48),
    _set("dataset.synthetic.patients", 60), _set("train.batch_size", 8),
    _set("variants", ["FE", "FTED"]), _set("search.seed", 1),
])
def test_fingerprint_changes_with_any_budget_knob(knob):
    data = quick_dict()
    before = spec_from_dict(copy.deepcopy(data)).fingerprint()
    knob(data)
    assert spec_from_dict(data).fingerprint() != before


def test_fingerprint_ignores_where_trials_run():
    data = quick_dict()
    before = spec_from_dict(copy.deepcopy(data)).fingerprint()
    data["resources"] = {"cpus": 2, "gpus": 0.5}
    data["description"] = "another label"
    assert spec_from_dict(data).fingerprint() == before


# --------------------------------------------------------------------------- properties

_KEYS = st.sampled_from(["low", "high", "value", "role", "log", "choices", "variants",
                         "max_epochs", "size", "path", "xyz"])
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats()
    | st.text(max_size=8) | st.sampled_from(["FTED", "fixed", "nuisance", "1e-3", "bcdr"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=3),
    max_leaves=6,
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


@st.composite
def mutated_specs(draw):
    data = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(data) if p]
        path = draw(st.sampled_from(paths))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        op = draw(st.sampled_from(["replace", "delete", "add", "swap"]))
        if op == "replace":
            parent[path[-1]] = draw(_VALUES)
        elif op == "delete":
            del parent[path[-1]]
        elif op == "add" and isinstance(parent, dict):
            parent[draw(_KEYS)] = draw(_VALUES)
        elif op == "swap":  # a value of the right shape in the wrong place
            other = draw(st.sampled_from(paths))
            value = data
            for key in other:
                value = value[key]
            parent[path[-1]] = copy.deepcopy(value)
    return data


BASE = quick_dict()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_specs())
def test_any_mutation_loads_or_raises_spec_error(data):
    try:
        spec = spec_from_dict(data, source="m.yaml", known_backbones=BACKBONES)
    except SpecError as e:
        assert str(e).startswith("m.yaml: ")
        return
    assert isinstance(spec, StudySpec)
    assert spec_from_dict(spec.to_dict(), known_backbones=BACKBONES) == spec  # round trip
    spec.fingerprint()


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab:-[]{},'\"!&*#|>\n\t 0.1e")), max_size=60))
def test_any_text_loads_or_raises_spec_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "f.yaml"
    path.write_text(text)
    try:
        load_spec(path)
    except SpecError as e:
        assert str(e).startswith(str(path))


def test_importing_search_spaces_pulls_in_nothing_heavy():
    code = ("import sys, search_spaces; search_spaces.load_spec('paper'); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torch', 'ray', 'optuna', 'mlflow', 'trainables', 'numpy'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"


def test_search_metric_is_the_validation_loss_the_trainable_selects_by(tmp_path):
    text = shipped_path("smoke").read_text().replace("  asha:", "  metric: val_auc\n  asha:", 1)
    with pytest.raises(SpecError, match=r"search.metric"):
        load_spec(write(tmp_path, text, "smoke.yaml"))


@pytest.mark.parametrize("name", ["quick", "paper", "smoke"])
def test_flat_dict_keys_are_valid_mlflow_param_names(name):
    flat = load_spec(name).flat_dict()
    bad = [k for k in flat if not re.fullmatch(r"[\w./\- :]+", k) or len(k) > 250]
    assert not bad
    if name == "quick":  # a list of per-variant declarations gets numbered keys
        assert flat["search.params.base_lr.1.variants"] == "FE,1FT,2FT,3FT,AllFT"


def test_search_trials_checkpoint_at_asha_rungs():
    spec = load_spec("paper")
    asha = spec.search.asha
    rungs = asha.rungs()
    assert rungs[0] == asha.grace_period and rungs[-1] < asha.max_epochs
    pairs = zip(rungs[:-1], rungs[1:], strict=True)
    assert all(b == round(a * asha.reduction_factor) for a, b in pairs)
    search = spec.trial_config("FE", {k.name: k.low for k in spec.params_for("FE")})
    assert tuple(search["checkpoint_at"]) == rungs
    evaluate = spec.trial_config("FE", {k.name: k.low for k in spec.params_for("FE")},
                                 phase="evaluate")
    assert "checkpoint_at" not in evaluate and evaluate["checkpoint_interval_s"] == 60.0
# --------------------------------------------------------------------------- analysis keys


def test_quick_and_paper_default_to_kfold_lesion_unit_and_fted_reference():
    for name in ("quick", "paper"):
        spec = load_spec(name, known_backbones=BACKBONES)
        assert spec.splits.scheme == "kfold" and spec.splits.repeats == 1
        assert spec.splits.total == spec.splits.n_splits
        assert spec.analysis.unit == "lesion" and spec.reference == "FTED"
        assert spec.evaluation.seeds == 1 and spec.dataset.balance == "none"
        assert spec.to_dict()["compare"] == {"reference": "FTED"}
    smoke = load_spec("smoke", known_backbones=BACKBONES)
    assert smoke.splits.scheme == "repeated" and smoke.splits.total == 1


def test_new_keys_round_trip_and_fingerprint_what_changes_results(tmp_path):
    data = quick_dict()
    base = spec_from_dict(data)
    data["splits"]["repeats"] = 2
    data["evaluation"]["seeds"] = 3
    data["dataset"]["balance"] = "undersample"
    data["analysis"] = {"unit": "patient"}
    data["compare"] = {"reference": "allft"}
    spec = load_spec(write(tmp_path, data), known_backbones=BACKBONES)
    assert spec.splits.total == 6 and len(spec.searches()) == 7 * 6
    assert spec.evaluation.seed_list(spec.train.seed) == [0, 1, 2]
    assert spec.dataset.balance == "undersample" and spec.analysis.unit == "patient"
    assert spec.reference == "AllFT"
    assert spec_from_dict(spec.to_dict()) == spec
    # seeds, repeats and balance change what trials compute; unit and reference do not
    for key, value in (("splits.repeats", 2), ("evaluation.seeds", 3),
                       ("dataset.balance", "undersample")):
        d = quick_dict()
        _set(key, value)(d)
        assert spec_from_dict(d).fingerprint() != base.fingerprint(), key
    d = quick_dict()
    d["analysis"], d["compare"] = {"unit": "view"}, {"reference": "RI"}
    assert spec_from_dict(d).fingerprint() == base.fingerprint()


def test_reference_defaults_to_fted_else_the_last_variant_and_must_be_a_variant(tmp_path):
    data = quick_dict()
    data["variants"] = ["RI", "FE"]
    del data["compare"]
    data["search"]["params"] = {"base_lr": {"role": "scientific", "low": 1e-4, "high": 1e-2,
                                            "log": True}}
    assert spec_from_dict(data).reference == "FE"
    data["compare"] = {"reference": "FTED"}
    with pytest.raises(SpecError, match="compare.reference: FTED is not among the variants"):
        load_spec(write(tmp_path, data), known_backbones=BACKBONES)

"""Study-file sections for the DICOM datasets: `splits.mode: official`, `evaluation.external`."""

from __future__ import annotations

import pytest

from search_spaces import SpecError, load_spec, spec_from_dict


def _smoke(**splits) -> dict:
    data = load_spec("smoke").to_dict()
    data["dataset"] = {"path": "/data/CBIS", "format": "cbis-ddsm"}
    data["splits"] = {"val_fraction": 0.25, **splits}
    return data


def test_official_mode_is_one_split_of_a_cbis_study():
    spec = spec_from_dict(_smoke(mode="official"))
    assert spec.splits.mode == "official" and spec.splits.n_splits == 1
    assert spec_from_dict(spec.to_dict()) == spec


def test_official_mode_is_one_split_only():
    with pytest.raises(SpecError, match="n_splits must be 1") as err:
        spec_from_dict(_smoke(mode="official", n_splits=5))
    assert err.value.key == "splits.n_splits"


def test_official_mode_needs_a_dataset_with_a_published_split():
    data = _smoke(mode="official")
    data["dataset"] = {"path": "/data/INbreast", "format": "inbreast"}
    with pytest.raises(SpecError, match="official needs a dataset that publishes"):
        spec_from_dict(data)


# ------------------------------------------------------------------ evaluation.external


def _with_external(external) -> dict:
    data = load_spec("smoke").to_dict()
    data["evaluation"]["external"] = external
    return data


def test_external_sets_round_trip_and_stay_out_of_mlflow(tmp_path):
    spec = spec_from_dict(_with_external([
        {"name": "inbreast", "path": str(tmp_path / "QZXEXT"), "format": "inbreast"}]))
    (ext,) = spec.evaluation.external
    assert (ext.name, ext.format, ext.path) == ("inbreast", "inbreast", tmp_path / "QZXEXT")
    assert spec_from_dict(spec.to_dict()) == spec
    assert spec.public_dict()["evaluation"]["external"][0]["path"] == "<redacted>"
    assert not [k for k, v in spec.flat_dict().items() if "QZXEXT" in str(v)]
    plain = load_spec("smoke")
    assert "external" not in plain.to_dict()["evaluation"]  # old fingerprints unchanged
    assert spec.fingerprint() != plain.fingerprint()


@pytest.mark.parametrize("external,key,reason", [
    ({"name": "x"}, "evaluation.external", "expected a list"),
    ([{"name": "Bad Name", "path": "/d", "format": "inbreast"}], "evaluation.external[0].name",
     "lower-case"),
    ([{"name": "a", "path": "/d", "format": "dicom"}], "evaluation.external[0].format", "dicom"),
    ([{"name": "a", "format": "inbreast"}], "evaluation.external[0].path", "missing"),
    ([{"name": "a", "path": "/d", "format": "inbreast"},
      {"name": "a", "path": "/e", "format": "mias"}], "evaluation.external[1].name", "twice"),
])
def test_bad_external_sets_are_named(external, key, reason):
    with pytest.raises(SpecError, match=reason) as err:
        spec_from_dict(_with_external(external))
    assert err.value.key == key


# ------------------------------------------------------------------ loader options


def test_loader_options_round_trip_for_their_format():
    data = _smoke()
    data["dataset"] = {"path": "/data/INbreast", "format": "inbreast",
                       "birads_malignant_from": "4B"}
    data["evaluation"]["external"] = [{"name": "cbis", "path": "/data/CBIS",
                                       "format": "cbis-ddsm", "calcifications": True}]
    spec = spec_from_dict(data)
    assert spec.dataset.options == (("birads_malignant_from", "4b"),)
    assert spec.evaluation.external[0].options == (("calcifications", True),)
    assert spec_from_dict(spec.to_dict()) == spec
    assert "birads_malignant_from" not in load_spec("smoke").to_dict()["dataset"]

    from study.phases._data import load_options

    opts = load_options(spec.dataset.options)
    assert opts.inbreast.birads_malignant_from == "4b" and not opts.cbis.calcifications


@pytest.mark.parametrize("dataset,key,reason", [
    ({"path": "/d", "format": "bcdr", "calcifications": True}, "dataset.calcifications",
     "only used with format: cbis-ddsm"),
    ({"path": "/d", "format": "inbreast", "birads_malignant_from": 7},
     "dataset.birads_malignant_from", "expected one of"),
    ({"path": "/d", "format": "cbis-ddsm", "calcifications": "yes"}, "dataset.calcifications",
     ""),
])
def test_bad_loader_options_are_named(dataset, key, reason):
    data = _smoke()
    data["dataset"] = dataset
    with pytest.raises(SpecError, match=reason or None) as err:
        spec_from_dict(data)
    assert err.value.key == key

"""The study's data preparation on the DICOM formats: official split, external sets (no Ray)."""

from __future__ import annotations

import csv

import pytest

from search_spaces import load_spec, spec_from_dict
from study.phases._data import prepare_data
from trainables.datasets.synthetic import SynthConfig
from trainables.datasets.synthetic_native import write_synthetic_cbis, write_synthetic_inbreast
from trainables.records import DatasetError
from trainables.train import check_split

SMALL = SynthConfig(patients=10, seed=3, width=200, height=300, radius_range=(5.0, 10.0))


def _spec(path, fmt, **extra):
    data = load_spec("smoke").to_dict()
    data["dataset"] = {"path": str(path), "format": fmt}
    for key, value in extra.items():
        data[key] = {**data.get(key, {}), **value}
    return spec_from_dict(data)


def test_official_split_of_a_cbis_study(tmp_path):
    cbis = write_synthetic_cbis(tmp_path / "cbis", SMALL)
    spec = _spec(cbis, "cbis-ddsm", splits={"mode": "official", "val_fraction": 0.3})
    data = prepare_data(spec, tmp_path / "runs")
    (split,) = data.splits
    check_split(data.rois, split, "evaluate")  # the trainable's own leak check
    with open(cbis / "mass_case_description_test_set.csv", newline="") as fh:
        test_rows = len(list(csv.reader(fh))) - 1  # quoted line breaks: count rows, not lines
    assert len(split.test) == test_rows
    assert data.fingerprint == data.rois.fingerprint  # no external sets


def test_external_sets_are_prepared_and_fingerprinted(tmp_path):
    inb = write_synthetic_inbreast(tmp_path / "inb", SMALL)
    spec = _spec(tmp_path / "unused", "bcdr", evaluation={"external": [
        {"name": "inb", "path": str(inb), "format": "inbreast"}]})
    data = spec_from_dict({**spec.to_dict(), "dataset": {
        "synthetic": {"patients": 6, "seed": 0, "width": 200, "height": 300,
                      "radius_range": [5.0, 10.0]}, "format": "bcdr"}})
    prepared = prepare_data(data, tmp_path / "runs")
    ext = prepared.external["inb"]
    assert ext.size == prepared.rois.size and len(set(ext.labels.tolist())) == 2
    assert prepared.fingerprint.startswith(prepared.rois.fingerprint + "+")
    (inb / "AllXML").rename(inb / "gone")  # no outlines: no lesions at all
    with pytest.raises(DatasetError):
        prepare_data(data, tmp_path / "runs")

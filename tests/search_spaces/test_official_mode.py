"""``splits.mode: official`` in a study file: CBIS-DDSM only, one outer split."""

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

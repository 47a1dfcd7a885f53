"""External validation table: lesion level, per variant, CIs over lesions (pure, no MLflow)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dashboards.external import external_names, external_table, lesion_level


def _preds(n_lesions: int = 12, noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """Two variants × two splits; every lesion seen in two views; GOOD separates, COIN not."""
    rng = np.random.default_rng(seed)
    rows = []
    for variant, good in (("GOOD", True), ("COIN", False)):
        for split in (0, 1):
            for k in range(n_lesions):
                y = k % 2
                for view in (0, 1):
                    p = (0.8 if y else 0.2) if good else rng.uniform()
                    p = float(np.clip(p + noise * rng.standard_normal(), 0, 1))
                    rows.append({"external": "inb", "variant": variant, "split": split,
                                 "run_id": f"{variant}{split}", "sample_id": f"s{k}v{view}",
                                 "lesion_id": f"l{k}", "p_malignant": p, "label": y})
    return pd.DataFrame(rows)


def test_views_are_combined_into_lesions_first():
    lesions = lesion_level(_preds())
    assert len(lesions) == 2 * 2 * 12
    assert set(lesions.groupby(["variant", "split"]).size()) == {12}


def test_a_separating_variant_scores_one_and_a_coin_does_not():
    table = external_table(_preds(), n_boot=200, seed=0, variants=["GOOD", "COIN"])
    good = table.set_index("variant").loc["GOOD"]
    assert list(table["variant"]) == ["GOOD", "COIN"]
    assert good["lesions"] == 12 and good["benign"] == 6 and good["malignant"] == 6
    assert good["runs"] == 2 and good["acc mean"] == 1.0 and good["AUC (avg pred)"] == 1.0
    assert good["acc CI low"] == good["acc CI high"] == 1.0
    coin = table.set_index("variant").loc["COIN"]
    assert coin["AUC CI low"] <= coin["AUC (avg pred)"] <= coin["AUC CI high"]
    assert coin["acc CI low"] <= coin["acc (avg pred)"] <= coin["acc CI high"]
    assert coin["AUC CI high"] - coin["AUC CI low"] > 0.1  # 12 lesions: a wide interval


def test_same_seed_same_intervals_and_empty_input():
    a = external_table(_preds(noise=0.3), n_boot=300, seed=4)
    b = external_table(_preds(noise=0.3), n_boot=300, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert external_table(_preds().iloc[:0]).empty


@pytest.mark.parametrize("spec,names", [
    (None, []), ({"evaluation": {"max_epochs": 2}}, []),
    ({"evaluation": {"external": [{"name": "inb", "path": "<redacted>"}]}}, ["inb"]),
])
def test_declared_external_sets_are_read_from_the_spec(spec, names):
    assert external_names(spec) == names

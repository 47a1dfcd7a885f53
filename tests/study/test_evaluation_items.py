"""Evaluation seeds and what an evaluation trial logs about its cases: one grid item per
(variant, split, seed), the seed reaching the trial's config, and anonymous lesion/patient
ids next to every test prediction (never the raw patient id)."""

from __future__ import annotations

import numpy as np

from search_spaces import load_spec, spec_from_dict
from study.phases._run import evaluation_items
from study.phases._trial import TrialContext, predictions_record, train_config
from trainables._roiset import RoiSet


def _spec(seeds: int):
    data = load_spec("smoke").to_dict()
    data["evaluation"]["seeds"] = seeds
    data["train"]["seed"] = 10
    return spec_from_dict(data)


def test_each_split_best_is_evaluated_once_per_seed_and_the_trial_uses_it():
    spec = _spec(3)
    configs = {("FE", 0): {"base_lr": 1e-3}, ("FTED", 0): {"base_lr": 2e-3, "lam": 3.0}}
    items = evaluation_items(spec, configs)
    assert [(i["variant"], i["split"], i["seed"]) for i in items] == [
        ("FE", 0, 10), ("FE", 0, 11), ("FE", 0, 12),
        ("FTED", 0, 10), ("FTED", 0, 11), ("FTED", 0, 12)]
    assert items[4]["lam"] == 3.0 and items[4]["base_lr"] == 2e-3
    ctx = TrialContext(spec=spec, phase="evaluate", rois=None, splits=(),  # type: ignore[arg-type]
                       tracking_uri="", experiment_id="", parent_run_id="", tags={})
    assert [train_config(i, ctx).seed for i in items[:3]] == [10, 11, 12]
    assert [i["seed"] for i in evaluation_items(_spec(1), configs)] == [10, 10]


def test_test_predictions_carry_anonymous_lesion_and_patient_ids():
    n = 8
    patients = np.array(["Anna Example", "Anna Example", "Anna Example", "Anna Example",
                         "P-0002", "P-0002", "P-0003", "P-0003"], dtype=object)
    lesions = np.array([f"{p}/{i // 2}" for i, p in enumerate(patients)], dtype=object)
    rois = RoiSet(np.zeros((n, 8, 8), np.uint8), np.array([1, 1, 0, 0, 1, 1, 0, 0]), patients,
                  lesions, np.array([f"s{i}" for i in range(n)], dtype=object), "ab" * 16)
    probs = {f"s{i}": 0.1 * i for i in (5, 0, 1, 3, 2)}
    labels = {s: int(rois.labels[int(s[1:])]) for s in probs}
    rec = predictions_record(rois, probs, labels)
    assert rec["sample_id"] == ["s5", "s0", "s1", "s3", "s2"]
    assert rec["label"] == [1, 1, 1, 0, 0]
    cl, pa = rec["cluster"], rec["patient"]
    assert cl[1] == cl[2] and cl[3] == cl[4] and len({cl[0], cl[1], cl[3]}) == 3
    assert pa[1] == pa[2] == pa[3] == pa[4] != pa[0]
    text = repr(rec)
    assert "Anna" not in text and "P-0002" not in text  # no raw patient or lesion id
    assert all(c.startswith("l") for c in cl) and all(p.startswith("p") for p in pa)
    other = RoiSet(rois.images, rois.labels, patients, lesions, rois.sample_ids, "cd" * 16)
    assert predictions_record(other, probs, labels)["cluster"] != cl  # keyed by the data

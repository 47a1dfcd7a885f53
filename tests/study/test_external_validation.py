"""External validation end to end: a smoke study trained on synthetic BCDR (TIFF) and
externally validated on synthetic INbreast (DICOM), real local Ray and a real MLflow server."""

from __future__ import annotations

from pathlib import Path

import pytest

from search_spaces import load_spec, spec_from_dict
from study.scheduling._restudy import Current, data_fingerprint, decide, executions
from trainables.datasets.synthetic import SynthConfig
from trainables.datasets.synthetic_native import write_synthetic_inbreast

EXTERNAL = SynthConfig(patients=10, seed=7, width=360, height=584, radius_range=(8.0, 24.0))


def _spec(external: Path, name: str):
    data = load_spec("smoke").to_dict()
    data["name"] = name
    data["evaluation"]["external"] = [{"name": "inbreast", "path": str(external),
                                       "format": "inbreast"}]
    return spec_from_dict(data)


@pytest.fixture(scope="module")
def externally_validated(tmp_path_factory, ray_local, mlflow_server):
    from study.run import run_study

    external = write_synthetic_inbreast(tmp_path_factory.mktemp("ext") / "INbreast", EXTERNAL)
    spec = _spec(external, "external-validation")
    root = tmp_path_factory.mktemp("runs-ext")
    lines: list[str] = []
    outcome = run_study(spec, root / spec.name, mlflow_server, echo=lines.append)
    return spec, external, root / spec.name, outcome, lines


@pytest.mark.slow
def test_every_evaluation_run_is_tested_on_the_external_set(externally_validated,
                                                              mlflow_client):
    spec, external, study_dir, outcome, lines = externally_validated
    runs = mlflow_client.search_runs([outcome.experiment_id], max_results=500)
    evals = [r for r in runs if r.data.tags.get("phase") == "evaluate"
             and r.info.status == "FINISHED"]
    assert len(evals) == len(spec.variants) * spec.splits.n_splits
    for r in evals:
        m = r.data.metrics
        assert 0.0 <= m["external_inbreast_auc"] <= 1.0 and 0.0 <= m["external_inbreast_acc"] <= 1
        names = [a.path for a in mlflow_client.list_artifacts(r.info.run_id)]
        assert "external_inbreast_predictions.json" in names
    search = [r for r in runs if r.data.tags.get("phase") == "search"]
    assert search and not any("external_inbreast_auc" in r.data.metrics for r in search)
    parent = mlflow_client.get_run(outcome.parent_run_id)
    assert len(parent.data.tags["external_fingerprint.inbreast"]) == 32
    assert parent.data.params.get("evaluation.external.0.path") == "<redacted>"
    # the report has the external table beside Table 2, marked as such
    html = (study_dir / "report" / "report.html").read_text()
    assert "External validation (other datasets" in html
    table = (study_dir / "report" / "tables" / "external.csv").read_text()
    assert "inbreast" in table and "FE" in table and "FTED" in table


@pytest.mark.slow
def test_a_restudy_notices_a_changed_external_set(externally_validated, mlflow_client):
    from study.phases._data import prepare_data

    spec, external, study_dir, outcome, _ = externally_validated
    history = executions(mlflow_client, spec.name)
    tags = history[0].tags
    now = prepare_data(spec, study_dir.parent)
    same = Current(now.fingerprint, tags["git_commit"], spec.fingerprint())
    assert not decide(same, history).run
    assert now.fingerprint == data_fingerprint(tags["data_fingerprint"], {
        "inbreast": tags["external_fingerprint.inbreast"]})
    lines = (external / "INbreast.csv").read_text().splitlines()
    head, first, *rest = lines
    fields = first.split(";")
    fields[-1] = "5" if fields[-1] in ("1", "2", "3") else "2"  # one image's BI-RADS flips
    (external / "INbreast.csv").write_text("\n".join([head, ";".join(fields), *rest]) + "\n")
    changed = prepare_data(spec, study_dir.parent)
    assert changed.rois.fingerprint == now.rois.fingerprint  # the study's own data: same
    decision = decide(Current(changed.fingerprint, tags["git_commit"], spec.fingerprint()),
                      history)
    assert decision.run and "data" in decision.changed

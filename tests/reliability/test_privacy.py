"""No patient id, image file name, dataset path or DICOM header value reaches MLflow.

The smoke study runs (real local Ray, real MLflow server) on a BCDR-layout dataset whose
patient ids, image file names and folder are distinctive strings; then everything MLflow holds
for that study is scanned: run names, params, tags, metric names, every artifact's bytes —
and, as a catch-all, the server's raw SQLite store and artifact folder. A second study runs on
synthetic INbreast DICOMs whose headers carry identifying values (names, ids, UIDs, institution,
accession number) and whose file names carry the patient hashes; none may reach MLflow.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from search_spaces import load_spec
from tests.reliability._tally import tally
from trainables.datasets.synthetic import SynthConfig, write_synthetic_bcdr

PATIENT_MARK = "QZXPAT"   # every patient id starts with it
FILE_MARK = "QZXIMG"      # every image file name contains it
FOLDER_MARK = "QZXDIR"    # the dataset's folder
MARKS = (PATIENT_MARK, FILE_MARK, FOLDER_MARK)


def _distinctive_dataset(top: Path, config: SynthConfig) -> Path:
    """The smoke study's synthetic data with patient ids and file names rewritten."""
    folder = top / f"{FOLDER_MARK}-data"
    subset = write_synthetic_bcdr(folder, config)
    csv_path = subset / "bcdr_f03_outlines.csv"
    rows = list(csv.reader(io.StringIO(csv_path.read_text())))
    head = rows[0]
    pid, fname = head.index("patient_id"), head.index("image_filename")
    for row in rows[1:]:
        old = Path(row[fname])
        new = old.with_name(f"{FILE_MARK}_{row[pid]}_{old.name}")
        if (subset / old).exists():
            (subset / old).rename(subset / new)
        row[fname] = new.as_posix()
        row[pid] = f"{PATIENT_MARK}{int(row[pid]):04d}"
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    csv_path.write_text(out.getvalue())
    return folder


@pytest.fixture(scope="module")
def private_study(tmp_path_factory, ray_local, mlflow_server):
    from study.run import run_study

    smoke = load_spec("smoke")
    data = _distinctive_dataset(tmp_path_factory.mktemp("private"),
                                SynthConfig(**smoke.dataset.synth_kwargs()))
    spec = smoke.with_dataset(data, "bcdr").with_name("privacy-scan")
    root = tmp_path_factory.mktemp("runs")
    lines: list[str] = []
    outcome = run_study(spec, root / spec.name, mlflow_server, echo=lines.append)
    return data, outcome


def _found(text: str | bytes) -> list[str]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return [m for m in MARKS if m.lower() in text.lower()]


def _scan(mlflow_client, outcome, mlflow_server_info, tmp_path, found) -> tuple[int, list[str]]:
    """Every value and file MLflow holds for the study, passed through ``found``."""
    runs = mlflow_client.search_runs([outcome.experiment_id], max_results=1000)
    assert len(runs) > 3
    leaks: list[str] = []
    scanned = 0

    def check(where: str, value: object) -> None:
        nonlocal scanned
        scanned += 1
        leaks.extend(f"{where}: {m}" for m in found(str(value) if not isinstance(value, bytes)
                                                    else value))

    exp = mlflow_client.get_experiment(outcome.experiment_id)
    check("experiment name", exp.name)
    for k, v in exp.tags.items():
        check(f"experiment tag {k}", f"{k}={v}")
    for run in runs:
        rid = run.info.run_id
        check(f"{rid} run name", run.info.run_name)
        for k, v in run.data.params.items():
            check(f"{rid} param {k}", f"{k}={v}")
        for k, v in run.data.tags.items():
            check(f"{rid} tag {k}", f"{k}={v}")
        for k in run.data.metrics:
            check(f"{rid} metric", k)
        stack = [a for a in mlflow_client.list_artifacts(rid)]
        while stack:
            art = stack.pop()
            check(f"{rid} artifact path", art.path)
            if art.is_dir:
                stack += mlflow_client.list_artifacts(rid, art.path)
                continue
            local = mlflow_client.download_artifacts(rid, art.path, str(tmp_path))
            check(f"{rid} artifact {art.path}", Path(local).read_bytes())
    # catch-all: the server's raw store and artifact folder (other tests' runs hold no marks)
    store = mlflow_server_info.log_path.parent
    for f in [store / "mlflow.db", *sorted((store / "artifacts").rglob("*"))]:
        if f.is_file():
            check(f"raw {f.name}", f.read_bytes())
    return scanned, leaks


@pytest.mark.slow
def test_no_patient_id_file_name_or_path_reaches_mlflow(private_study, mlflow_client,
                                                        mlflow_server_info, tmp_path):
    data, outcome = private_study
    names = [p.name for p in data.rglob("*.tif")]
    assert names and all(FILE_MARK in n for n in names)  # the fixture is what it claims
    scanned, leaks = _scan(mlflow_client, outcome, mlflow_server_info, tmp_path, _found)
    tally["privacy: MLflow values and files scanned"] += scanned
    tally["privacy: patient ids / file names / paths found in MLflow"] += len(leaks)
    assert not leaks, "\n".join(leaks[:20])


# ------------------------------------------------------------------- DICOM headers (INbreast)

HEADER_MARK = "QZXHDR"  # in every PatientName, PatientID, InstitutionName, AccessionNumber


@pytest.fixture(scope="module")
def private_dicom_study(tmp_path_factory, ray_local, mlflow_server):
    """The smoke study on synthetic INbreast DICOMs whose headers carry identifying values."""
    from study.run import run_study
    from trainables.datasets.synthetic_native import write_synthetic_inbreast

    smoke = load_spec("smoke")
    folder = tmp_path_factory.mktemp("private-dicom") / f"{FOLDER_MARK}-inbreast"
    write_synthetic_inbreast(folder, SynthConfig(**smoke.dataset.synth_kwargs()),
                             header_mark=HEADER_MARK)
    spec = smoke.with_dataset(folder, "inbreast").with_name("privacy-scan-dicom")
    root = tmp_path_factory.mktemp("runs-dicom")
    outcome = run_study(spec, root / spec.name, mlflow_server, echo=lambda _line: None)
    return folder, outcome


def _header_values(folder: Path) -> list[str]:
    """Every identifying header value and patient identifier the dataset's files carry."""
    import pydicom

    values: set[str] = set()
    for path in sorted((folder / "AllDICOMs").glob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in ("PatientName", "PatientID", "InstitutionName", "AccessionNumber",
                        "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            values.add(str(ds.get(keyword, "")))
        values.add(path.name.split("_")[1])  # the patient hash, INbreast's patient id
    values.discard("")
    return sorted(values)


@pytest.mark.slow
def test_no_dicom_header_value_reaches_mlflow(private_dicom_study, mlflow_client,
                                              mlflow_server_info, tmp_path):
    from trainables.datasets.synthetic_native import header_uid_root

    folder, outcome = private_dicom_study
    values = _header_values(folder)
    assert any(HEADER_MARK in v for v in values)  # the fixture is what it claims
    uid_root = header_uid_root(HEADER_MARK)
    assert any(v.startswith(uid_root) for v in values)
    needles = [v.lower() for v in values] + [HEADER_MARK.lower(), uid_root.lower(),
                                             FOLDER_MARK.lower()]

    def found(text: str | bytes) -> list[str]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        low = text.lower()
        return [n for n in needles if n in low]

    scanned, leaks = _scan(mlflow_client, outcome, mlflow_server_info, tmp_path, found)
    tally["privacy: MLflow values and files scanned (DICOM study)"] += scanned
    tally["privacy: DICOM header values / patient ids found in MLflow"] += len(leaks)
    assert not leaks, "\n".join(leaks[:20])


def test_mlflow_params_and_public_spec_carry_no_dataset_path(tmp_path):
    spec = load_spec("smoke").with_dataset(tmp_path / f"{FOLDER_MARK}-x", "bcdr")
    assert FOLDER_MARK in spec.to_dict()["dataset"]["path"]  # kept for the round trip
    assert spec.public_dict()["dataset"]["path"] == "<redacted>"
    assert not [k for k, v in spec.flat_dict().items() if FOLDER_MARK in str(v)]
    assert load_spec("smoke").public_dict() == load_spec("smoke").to_dict()  # synthetic: no path


def test_failure_reasons_from_the_dicom_loaders_carry_no_patient_or_file(tmp_path):
    """A scheduled re-study whose data cannot be read logs ``failure_reason`` to MLflow."""
    from study.scheduling._restudy import failure_reason
    from trainables.datasets import load_dataset
    from trainables.datasets.synthetic_native import write_synthetic_cbis, write_synthetic_inbreast
    from trainables.records import DatasetError

    config = SynthConfig(patients=3, seed=1, width=160, height=240, radius_range=(4.0, 8.0))
    cbis = write_synthetic_cbis(tmp_path / f"{FOLDER_MARK}-cbis", config)
    for d in (cbis / "CBIS-DDSM").iterdir():  # every case folder gone: one problem per row
        if d.name.endswith("_CC"):
            import shutil

            shutil.rmtree(d)
    inb = write_synthetic_inbreast(tmp_path / f"{FOLDER_MARK}-inb", config)
    for p in sorted((inb / "AllDICOMs").glob("*.dcm"))[:2]:
        p.write_bytes(b"broken")
    for path, fmt in ((cbis, "cbis-ddsm"), (inb, "inbreast")):
        with pytest.raises(DatasetError) as err:
            load_dataset(path, fmt)
        text = failure_reason(f"data: {err.value}", limit=100_000)
        hashes = {p.name.split("_")[1] for p in (inb / "AllDICOMs").glob("*.dcm")}
        assert FOLDER_MARK not in text and "P_0" not in text, text
        assert not any(h in text for h in hashes), text

"""CBIS-DDSM loader on small datasets written in the TCIA download layout (DICOM)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGLosslessSV1

from trainables.datasets import CbisOptions, DatasetProblems, LoadOptions, load_dataset
from trainables.datasets._dicom import read_dicom
from trainables.datasets.synthetic import SynthConfig
from trainables.datasets.synthetic_native import write_synthetic_cbis
from trainables.records import DatasetError, Label
from trainables.rois import RoiConfig, extract_rois

SMALL = SynthConfig(patients=6, seed=2, width=200, height=300, radius_range=(5.0, 10.0))


@pytest.fixture(scope="module")
def cbis(tmp_path_factory) -> Path:
    return write_synthetic_cbis(tmp_path_factory.mktemp("cbis") / "CBIS", SMALL)


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(path.read_text(), newline="")))
    return rows[0], rows[1:]


def _write_rows(path: Path, head: list[str], rows: list[list[str]]) -> None:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([head, *rows])
    path.write_text(buf.getvalue())


def _mask_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.dcm") if pydicom.dcmread(p).SeriesDescription ==
            "ROI mask images"]


def test_reads_every_mass_row_with_labels_patients_and_official_subset(cbis):
    loaded = load_dataset(cbis, "cbis-ddsm")
    n_rows = {}
    labels = {}
    for name in ("train", "test"):
        head, rows = _rows(cbis / f"mass_case_description_{name}_set.csv")
        n_rows[name] = len(rows)
        for r in rows:
            labels[(r[0], r[2], r[3], r[4])] = r[head.index("pathology")]
    assert len(loaded.records) == sum(n_rows.values())
    assert {r.subset for r in loaded.records} == {"train", "test"}
    assert sum(r.subset == "test" for r in loaded.records) == n_rows["test"]
    for rec in loaded.records:
        assert rec.patient.startswith("P_") and rec.image.name == "1-1.dcm"
        side, view, kind_id = rec.lesion.split("_")
        pathology = labels[(rec.patient, side, view, kind_id.removeprefix("mass"))]
        want = Label.MALIGNANT if pathology == "MALIGNANT" else Label.BENIGN
        assert rec.label == want
    assert {"BENIGN", "BENIGN_WITHOUT_CALLBACK", "MALIGNANT"} <= set(labels.values())
    s = loaded.summary()
    assert s["patients"] == SMALL.patients and s["benign"] > 0 and s["malignant"] > 0
    assert "BENIGN_WITHOUT_CALLBACK → benign" in s["label_rule"]
    # a patient's views and breasts share one patient id, and one official subset
    by_patient = {}
    for rec in loaded.records:
        by_patient.setdefault(rec.patient, set()).add(rec.subset)
    assert all(len(v) == 1 for v in by_patient.values())


def test_csv_paths_do_not_match_folders_and_some_columns_are_swapped(cbis):
    """The fixture has what the real download has: UID paths, 000000/000001 names, swaps."""
    head, rows = _rows(cbis / "mass_case_description_train_set.csv")
    crop_col, mask_col = head.index("cropped image file path"), head.index("ROI mask file path")
    assert all(r[head.index("image file path")].endswith("/000000.dcm") for r in rows)
    assert not list(cbis.rglob("000000.dcm"))
    assert any(r[crop_col].strip().endswith("000001.dcm") for r in rows)  # swapped row
    assert any(r[mask_col].endswith("\n") or r[crop_col].endswith("\n") for r in rows)
    assert load_dataset(cbis, "cbis-ddsm").problems == ()


def test_roi_is_the_mask_bounding_box(cbis):
    loaded = load_dataset(cbis, "cbis-ddsm")
    masks = {}
    for p in _mask_files(cbis):
        m = read_dicom(p)
        ys, xs = np.nonzero(m)
        masks[(int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))] = p
    for rec in loaded.records:
        assert tuple(int(v) for v in rec.bbox()) in masks
    rois, summary = extract_rois(loaded, RoiConfig(size=32))
    assert rois.images.dtype == np.uint16 and rois.images.max() > 4096  # 16-bit mammograms
    assert summary.rois == len(loaded.records)


def test_column_spellings_are_normalised(cbis, tmp_path):
    root = _copy(cbis, tmp_path / "c")
    path = root / "mass_case_description_train_set.csv"
    head, rows = _rows(path)
    head = [h.replace(" ", "_") if h != "breast_density" else " Breast Density " for h in head]
    _write_rows(path, head, rows)
    assert len(load_dataset(root, "cbis-ddsm").records) == len(load_dataset(cbis,
                                                                            "cbis-ddsm").records)


def test_calcifications_only_when_asked(tmp_path):
    root = write_synthetic_cbis(tmp_path / "c", SynthConfig(
        patients=6, seed=4, width=200, height=300, radius_range=(5.0, 10.0),
        non_mass_fraction=1.0))
    masses = load_dataset(root, "cbis-ddsm")
    both = load_dataset(root, "cbis-ddsm", options=LoadOptions(CbisOptions(calcifications=True)))
    n_calc = sum(len(_rows(p)[1]) for p in root.glob("calc_*.csv"))
    assert n_calc > 0 and len(both.records) == len(masses.records) + n_calc
    assert all("mass" in r.lesion for r in masses.records)
    assert any("calc" in r.lesion for r in both.records)


def test_monochrome1_mammogram_gives_the_same_rois(cbis, tmp_path):
    root = _copy(cbis, tmp_path / "c")
    full = sorted(p for p in root.rglob("1-1.dcm") if "full mammogram" in str(p.parent))
    for p in full:  # store every mammogram inverted, as MONOCHROME1
        ds = pydicom.dcmread(p)
        px = ds.pixel_array
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.PixelData = (65535 - px).astype("<u2").tobytes()
        ds.save_as(p)
    a, _ = extract_rois(load_dataset(cbis, "cbis-ddsm"), RoiConfig(size=32))
    b, _ = extract_rois(load_dataset(root, "cbis-ddsm"), RoiConfig(size=32))
    assert np.array_equal(a.images, b.images)


def _problems(root: Path) -> list:
    return list(load_dataset(root, "cbis-ddsm", strict=False).problems)


def test_bad_rows_are_named_by_file_row_and_field(cbis, tmp_path):
    root = _copy(cbis, tmp_path / "c")
    path = root / "mass_case_description_train_set.csv"
    head, rows = _rows(path)
    rows = [[c.strip() for c in r] for r in rows]  # one CSV line per row: rows = lines - 1
    rows[0][head.index("pathology")] = "MAYBE"
    rows[1][head.index("image view")] = "XX"
    rows[2][head.index("image file path")] = "Mass-Training_P_99999_LEFT_CC/1.2/1.3/000000.dcm"
    _write_rows(path, head, rows)
    found = {(p.row, p.field) for p in _problems(root)}
    assert found == {(2, "pathology"), (3, "image view"), (4, "image file path")}
    with pytest.raises(DatasetProblems, match="mass_case_description_train_set.csv, row 2, "
                                              "field 'pathology'"):
        load_dataset(root, "cbis-ddsm")


def test_missing_mask_and_undecodable_files_are_named(cbis, tmp_path):
    root = _copy(cbis, tmp_path / "c")
    for p in _mask_files(root)[:1]:
        p.unlink()
    problems = _problems(root)
    assert [p.field for p in problems] == ["ROI mask file path"]
    assert "no binary ROI mask" in problems[0].reason
    # a compressed mammogram whose decoder is absent: refused before training, named
    root2 = _copy(cbis, tmp_path / "d")
    full = sorted(p for p in root2.rglob("1-1.dcm") if "full mammogram" in str(p.parent))[0]
    ds = pydicom.dcmread(full)
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xc3" + b"\0" * 60 + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.save_as(full, enforce_file_format=True)
    loaded = load_dataset(root2, "cbis-ddsm")  # the header is readable: sizes known
    with pytest.raises(DatasetProblems, match="no decoder installed") as err:
        extract_rois(loaded, RoiConfig(size=32))
    assert all(p.field == "image" for p in err.value.problems)


def test_no_csv_or_no_images_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="case_description"):
        load_dataset(tmp_path, "cbis-ddsm")
    (tmp_path / "mass_case_description_train_set.csv").write_text(
        "patient_id,left or right breast\n")
    problems = _problems(tmp_path)
    assert problems and "no CBIS-DDSM case folders" in problems[0].reason


def test_official_split_keeps_the_published_test_set(cbis):
    from trainables.official_split import official_split

    loaded = load_dataset(cbis, "cbis-ddsm")
    recs = loaded.records
    labels = np.array([int(r.label) for r in recs])
    patients = np.array([r.patient for r in recs], dtype=object)
    subsets = np.array([r.subset for r in recs], dtype=object)
    split = official_split(labels, patients, subsets, val_fraction=0.3, seed=0)
    assert set(split.test) == {i for i, r in enumerate(recs) if r.subset == "test"}
    assert set(split.trainval) == {i for i, r in enumerate(recs) if r.subset == "train"}
    assert len(split.val) > 0 and len(split.train) > 0
    parts = [set(patients[p]) for p in (split.train, split.val, split.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    again = official_split(labels, patients, subsets, val_fraction=0.3, seed=0)
    assert again.fingerprint == split.fingerprint
    leaky = subsets.copy()
    leaky[np.flatnonzero(subsets == "train")[0]] = "test"  # one view of a train patient
    with pytest.raises(DatasetError, match="in both the official train and test"):
        official_split(labels, patients, leaky)
    with pytest.raises(DatasetError, match="only cbis-ddsm publishes"):
        official_split(labels, patients, np.array([None] * len(recs), dtype=object))


def test_the_jpeg_conversion_reads_like_the_dicom_download(cbis, tmp_path):
    """``jpeg/<uid>/1-1.jpg`` + ``csv/dicom_info.csv``: same records, lossy masks tolerated."""
    from trainables.datasets.synthetic_native import write_synthetic_cbis_jpeg

    root = write_synthetic_cbis_jpeg(tmp_path / "kaggle", SMALL)
    assert not list(root.rglob("*.dcm")) and list(root.glob("jpeg/*/1-1.jpg"))
    jpeg = load_dataset(root, "cbis-ddsm")
    dicom = load_dataset(cbis, "cbis-ddsm")
    key = lambda r: (r.patient, r.lesion)  # noqa: E731
    assert sorted(map(key, jpeg.records)) == sorted(map(key, dicom.records))
    boxes = {key(r): np.array(r.bbox()) for r in dicom.records}
    for rec in jpeg.records:  # JPEG ringing moves a mask's edge by a pixel at most
        assert np.abs(np.array(rec.bbox()) - boxes[key(rec)]).max() <= 2
        assert rec.image.suffix == ".jpg"
    rois, _ = extract_rois(jpeg, RoiConfig(size=32))
    assert rois.images.dtype == np.uint8 and len(rois) == len(jpeg.records)

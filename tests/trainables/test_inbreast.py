"""INbreast loader on small datasets written in the release's layout (CSV + DICOM + OsiriX XML)."""

from __future__ import annotations

import plistlib
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from trainables.datasets import InbreastOptions, LoadOptions, load_dataset
from trainables.datasets._inbreast import parse_birads
from trainables.datasets.synthetic import SynthConfig
from trainables.datasets.synthetic_native import write_synthetic_inbreast
from trainables.records import DatasetError, Label, View
from trainables.rois import RoiConfig, extract_rois

SMALL = SynthConfig(patients=6, seed=3, width=200, height=300, radius_range=(5.0, 10.0),
                    non_mass_fraction=0.5)


@pytest.fixture(scope="module")
def inbreast(tmp_path_factory) -> Path:
    return write_synthetic_inbreast(tmp_path_factory.mktemp("inb") / "INbreast Release 1.0",
                                    SMALL)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _csv(root: Path) -> list[list[str]]:
    return [ln.split(";") for ln in (root / "INbreast.csv").read_text().splitlines()]


def _write_csv(root: Path, rows: list[list[str]]) -> None:
    (root / "INbreast.csv").write_text("\n".join(";".join(r) for r in rows) + "\n")


def _masses(xml: Path) -> int:
    with xml.open("rb") as fh:
        return sum(r["Name"] == "Mass" for r in plistlib.load(fh)["Images"][0]["ROIs"])


def test_reads_masses_with_birads_labels_and_patient_hashes(inbreast):
    loaded = load_dataset(inbreast.parent, "inbreast")  # the folder above the release: found
    rows = _csv(inbreast)[1:]
    n_masses = sum(_masses(inbreast / "AllXML" / f"{r[5]}.xml") for r in rows)
    assert len(loaded.records) == n_masses
    birads = {r[5]: r[7] for r in rows}
    for rec in loaded.records:
        file_name = rec.lesion.split("#")[0]
        want = Label.MALIGNANT if birads[file_name][0] in "456" else Label.BENIGN
        assert rec.label == want
        assert rec.image.name.startswith(f"{file_name}_{rec.patient}_MG_")
        assert (rec.view == View.MLO) == ("_ML_" in rec.image.name)
    s = loaded.summary()
    assert s["patients"] == SMALL.patients and s["benign"] and s["malignant"]
    assert "BI-RADS 1–3 → benign, 4a–6 → malignant" in s["label_rule"]
    assert loaded.skipped.get("outline not selected (Calcification)", 0) > 0  # masses only
    rois, _ = extract_rois(loaded, RoiConfig(size=32))
    assert rois.images.dtype == np.uint16 and rois.images.max() < 2 ** 14  # 14 bits stored


def test_outline_points_are_read_from_point_px(inbreast):
    loaded = load_dataset(inbreast, "inbreast")
    rec = loaded.records[0]
    with (inbreast / "AllXML" / f"{rec.lesion.split('#')[0]}.xml").open("rb") as fh:
        roi = plistlib.load(fh)["Images"][0]["ROIs"][int(rec.lesion.split("#")[1]) - 1]
    first = roi["Point_px"][0].strip("()").split(",")
    assert rec.outline[0] == pytest.approx((float(first[0]), float(first[1])))
    assert len(rec.outline) == roi["NumberOfPoints"]


@pytest.mark.parametrize("cut,malignant", [("4a", {"4a", "4b", "4c", "5", "6"}),
                                           ("4c", {"4c", "5", "6"}), ("3", {"3", "4a", "4b",
                                                                           "4c", "5", "6"})])
def test_the_birads_threshold_is_declared_and_applied(inbreast, cut, malignant):
    loaded = load_dataset(inbreast, "inbreast",
                          options=LoadOptions(inbreast=InbreastOptions(cut)), strict=False)
    birads = {r[5]: parse_birads(r[7]) for r in _csv(inbreast)[1:]}
    for rec in loaded.records:
        assert (rec.label == Label.MALIGNANT) == (birads[rec.lesion.split("#")[0]] in malignant)
    assert f"{cut}–6 → malignant" in loaded.label_rule
    with pytest.raises(ValueError, match="birads_malignant_from"):
        InbreastOptions("7")


def test_monochrome1_and_16_bit_images(inbreast, tmp_path):
    root = _copy(inbreast, tmp_path / "r")
    for p in (root / "AllDICOMs").glob("*.dcm"):
        ds = pydicom.dcmread(p)
        px = ds.pixel_array.astype(np.uint32)
        ds.BitsStored, ds.HighBit = 16, 15
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.PixelData = (65535 - px * 4).astype("<u2").tobytes()  # 16-bit, stored inverted
        ds.save_as(p)
    a, _ = extract_rois(load_dataset(inbreast, "inbreast"), RoiConfig(size=32))
    b, _ = extract_rois(load_dataset(root, "inbreast"), RoiConfig(size=32))
    assert np.array_equal(a.images.astype(np.uint32) * 4, b.images)


def test_bad_rows_and_outlines_are_named(inbreast, tmp_path):
    root = _copy(inbreast, tmp_path / "r")
    rows = _csv(root)
    rows[1][7] = "7"           # Bi-Rads
    rows[2][2] = "X"           # Laterality
    rows[3][5] = "99999999"    # File Name without a DICOM
    _write_csv(root, rows)
    xml = root / "AllXML" / f"{rows[4][5]}.xml"
    with xml.open("rb") as fh:
        doc = plistlib.load(fh)
    doc["Images"][0]["ROIs"][0]["Point_px"][1] = "(12; 3)"
    with xml.open("wb") as fh:
        plistlib.dump(doc, fh)
    bad_xml = root / "AllXML" / f"{rows[5][5]}.xml"
    bad_xml.write_text("<plist><dict><key>Images")
    problems = load_dataset(root, "inbreast", strict=False).problems
    got = {(Path(p.file).name, p.row, p.field) for p in problems}
    assert got == {("INbreast.csv", 2, "Bi-Rads"), ("INbreast.csv", 3, "Laterality"),
                   ("INbreast.csv", 4, "File Name"), (xml.name, None, "ROIs[0].Point_px[1]"),
                   (bad_xml.name, None, "Images[0].ROIs")}
    with pytest.raises(DatasetError, match="INbreast.csv, row 2, field 'Bi-Rads'"):
        load_dataset(root, "inbreast")


def test_images_without_xml_and_birads_0_are_counted_skips(inbreast, tmp_path):
    root = _copy(inbreast, tmp_path / "r")
    rows = _csv(root)
    (root / "AllXML" / f"{rows[1][5]}.xml").unlink()
    rows[2][7] = "0"
    _write_csv(root, rows)
    loaded = load_dataset(root, "inbreast", strict=False)
    assert loaded.skipped["image without outlines (no AllXML file)"] == 1
    assert loaded.skipped["BI-RADS 0 (incomplete assessment)"] == 1


def test_missing_release_files_are_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="no INbreast.csv"):
        load_dataset(tmp_path, "inbreast")
    (tmp_path / "INbreast.csv").write_text("Laterality;View;File Name;Bi-Rads\nL;CC;1;2\n")
    problems = load_dataset(tmp_path, "inbreast", strict=False).problems
    assert "no AllDICOMs folder" in problems[0].reason

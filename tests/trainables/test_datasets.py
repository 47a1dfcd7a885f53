"""Loaders on files written in the datasets' native layouts, and their errors."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.trainables.native_files import (
    BcdrRow,
    default_rows,
    write_bcdr,
    write_manifest,
    write_mias,
)
from trainables.datasets import DatasetProblems, load_dataset
from trainables.records import DatasetError, Label, Laterality, View


@pytest.mark.parametrize("digital", [False, True], ids=["F03", "D01"])
def test_bcdr_reads_every_mass_view_with_its_quirks(tmp_path, digital):
    rows = default_rows(6)
    folder = write_bcdr(tmp_path, rows, digital=digital)
    ds = load_dataset(folder, "bcdr")
    masses = [r for r in rows if r.nodule == 1]
    assert len(ds.records) == len(masses) == 12
    assert ds.skipped == {"not a mass lesion (mammography_nodule = 0)": 1}
    by_key = {(r.patient, r.image.name): r for r in ds.records}
    for row in masses:
        rec = by_key[(str(row.patient), row.filename(digital).split("/")[-1])]
        xs, ys = row.outline()
        # every point survives the " , value" quirk, the first one included
        assert rec.outline == tuple(zip(map(float, xs), map(float, ys), strict=True))
        assert rec.label == (Label.BENIGN if row.label == "Benign" else Label.MALIGNANT)
        assert rec.view == (View.CC if row.view in (1, 2) else View.MLO)
        assert rec.laterality == (Laterality.RIGHT if row.view in (1, 3) else Laterality.LEFT)
        assert rec.image.is_file()
    summary = ds.summary()
    assert summary["patients"] == 6 and summary["lesions"] == 6 and summary["images"] == 12
    assert summary["benign"] == 6 and summary["malignant"] == 6


def test_bcdr_folder_accepted_at_every_level(tmp_path):
    folder = write_bcdr(tmp_path / "data", default_rows(4))
    for level in (folder, folder.parent, folder.parent.parent,
                  folder / "bcdr_f03_outlines.csv"):
        assert len(load_dataset(level, "bcdr").records) == 8


def test_digital_points_with_leading_space_keep_the_first_point(tmp_path):
    folder = write_bcdr(tmp_path, default_rows(2), digital=True)
    text = (folder / "bcdr_d01_outlines.csv").read_text()
    assert ", 1, " in text  # the ", value" separator is really there
    rec = load_dataset(folder, "bcdr").records[0]
    assert rec.outline[0] == (float(default_rows(2)[0].outline()[0][0]),
                              float(default_rows(2)[0].outline()[1][0]))


def test_mias_flips_y_groups_pairs_and_counts_skips(tmp_path):
    folder = write_mias(tmp_path / "mias", [
        "mdb001 G CIRC B 100 60 20",
        "mdb002 G SPIC M 50 200 10",
        "mdb002 G SPIC M 150 150 12",
        "mdb003 D NORM ",
        "mdb004 F CALC B",
        "mdb005 F CALC M 30 40 5",
        "mdb006 F MISC B 70 70 9",
    ], size=256)
    ds = load_dataset(folder, "mias")
    assert ds.skipped == {"normal film (CLASS = NORM)": 1, "abnormality without coordinates": 1,
                          "not a selected class (CALC)": 1}
    assert len(ds.records) == 4
    first = ds.records[0]
    x0, y0, x1, y1 = first.bbox()
    # centre (100, 60) measured from the bottom-left -> y = 255 - 60 from the top
    assert (x0 + x1) / 2 == pytest.approx(100, abs=0.5)
    assert (y0 + y1) / 2 == pytest.approx(255 - 60, abs=0.5)
    assert first.label == Label.BENIGN and first.view == View.MLO
    patients = {r.image.name: r.patient for r in ds.records}
    assert patients["mdb001.pgm"] == patients["mdb002.pgm"] != patients["mdb006.pgm"]
    assert {r.lesion for r in ds.records if r.image.name == "mdb002.pgm"} == {
        "mdb002_1", "mdb002_2"}


@pytest.mark.parametrize("header,row", [
    ("image,label,patient,x_points,y_points", "a.png,benign,p1,10 30 30 10,10 10 40 40"),
    ("image,label,patient,x_min,y_min,x_max,y_max", "a.png,Benign,p1,10,10,30,40"),
    ("image,label,patient,x,y,radius", "a.png,BENIGN,p1,20,25,10"),
])
def test_manifest_geometries(tmp_path, header, row):
    other = "b.png,malignant,p2,10 30 30 10,10 10 40 40"
    if "x_min" in header:
        other = "b.png,malignant,p2,10,10,30,40"
    elif "radius" in header:
        other = "b.png,malignant,p2,20,25,10"
    path = write_manifest(tmp_path, header, [row, other], images=["a.png", "b.png"])
    ds = load_dataset(path, "manifest")
    assert [r.label for r in ds.records] == [Label.BENIGN, Label.MALIGNANT]
    x0, y0, x1, y1 = ds.records[0].bbox()
    assert 9 <= x0 <= 11 and 29 <= x1 <= 31 and 9 <= y0 <= 16 and 34 <= y1 <= 41


# ------------------------------------------------------------------------------ bad input

def _replace_field(line_no: int, column: str, value: str, digital: bool = False):
    """Edit one field of CSV line ``line_no`` (1-based, header = 1)."""
    row_index = line_no - 1
    from trainables.datasets._bcdr import DIGITAL_COLUMNS, FILM_COLUMNS

    cols = DIGITAL_COLUMNS if digital else FILM_COLUMNS

    def edit(lines):
        fields = lines[row_index].split(",")
        fields[cols.index(column)] = value
        lines[row_index] = ",".join(fields)
        return lines
    return edit


BAD_BCDR = {
    "unknown label": (_replace_field(4, "classification", "Maybe"), 4, "classification",
                      "expected 'Benign' or 'Malign'"),
    "point counts differ": (_replace_field(3, "lw_y_points", "1 2 3"), 3,
                            "lw_x_points/lw_y_points", "x points but 3 y points"),
    "non-numeric point": (_replace_field(5, "lw_x_points", "10 1O 12"), 5, "lw_x_points",
                          "non-numeric coordinate '1O'"),
    "unknown view": (_replace_field(6, "image_view", "7"), 6, "image_view", "got '7'"),
    "missing image": (_replace_field(3, "image_filename", "patient_1/study_1/nope.tif"), 3,
                      "image_filename", "image not found"),
    "bad flag": (_replace_field(7, "mammography_nodule", "yes"), 7, "mammography_nodule",
                 "expected 0 or 1"),
    "duplicate row": (lambda lines: lines + [lines[3]], 15, "lesion_id", "duplicate of row 4"),
    "extra field": (lambda lines: lines[:2] + [lines[2] + ",9"] + lines[3:], 3, None,
                    "has 19 fields, the header has 18"),
    "wrong columns": (lambda lines: [lines[0].replace("classification", "pathology")] + lines[1:],
                      1, None, "missing ['classification']"),
}


@pytest.mark.parametrize("case", sorted(BAD_BCDR))
def test_bcdr_bad_input_names_file_row_and_field(tmp_path, case):
    edit, row, field, reason = BAD_BCDR[case]
    folder = write_bcdr(tmp_path, default_rows(6), csv_edit=edit)
    with pytest.raises(DatasetProblems) as err:
        load_dataset(folder, "bcdr")
    problem = err.value.problems[0]
    assert problem.file.endswith("bcdr_f03_outlines.csv")
    assert (problem.row, problem.field) == (row, field)
    assert reason in problem.reason
    message = str(err.value)
    assert "bcdr_f03_outlines.csv" in message and f"row {row}" in message
    # nothing silently dropped: non-strict loading keeps the problem and the good rows
    ds = load_dataset(folder, "bcdr", strict=False)
    assert ds.problems == tuple(err.value.problems)
    if row != 1:  # a bad header leaves nothing to read; a bad row leaves the others
        assert len(ds.records) >= 10


def test_outline_outside_the_image(tmp_path):
    rows = default_rows(4)
    rows[2] = BcdrRow(2, 1, rows[2].view, rows[2].label, centre=(190, 150), radius=30)
    folder = write_bcdr(tmp_path, rows)
    with pytest.raises(DatasetProblems, match=r"row 4, field 'lw_x_points/lw_y_points': "
                                              r"outline bounding box .* outside the 200 × 300"):
        load_dataset(folder, "bcdr")


def test_empty_class_is_an_error(tmp_path):
    rows = [r for r in default_rows(6) if r.label == "Benign"]
    folder = write_bcdr(tmp_path, rows)
    with pytest.raises(DatasetProblems, match="no malignant lesions: the class is empty"):
        load_dataset(folder, "bcdr")


def test_empty_and_missing_files(tmp_path):
    folder = write_bcdr(tmp_path, default_rows(2), csv_edit=lambda lines: [])
    with pytest.raises(DatasetProblems, match="the file is empty"):
        load_dataset(folder, "bcdr")
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(DatasetError, match="no bcdr_<subset>_outlines.csv"):
        load_dataset(tmp_path / "elsewhere", "bcdr")
    with pytest.raises(DatasetError, match="unknown dataset format 'dicom'"):
        load_dataset(folder, "dicom")


@pytest.mark.parametrize("line,field,reason", [
    ("mdb001 G CIRC X 10 10 5", "SEVERITY", "expected B or M"),
    ("mdb001 G BLOB B 10 10 5", "CLASS", "unknown class 'BLOB'"),
    ("mdb001 G CIRC B 10 ten 5", "X/Y/RADIUS", "non-numeric"),
    ("mdb001 G CIRC B 10 10 -5", "X/Y/RADIUS", "radius must be > 0"),
    ("mdb001 G CIRC B 900 10 5", "X/Y", "outside the 256 × 256 image"),
    ("mdb01 G CIRC B 10 10 5", "REFNUM", "expected 'mdbNNN'"),
])
def test_mias_bad_rows(tmp_path, line, field, reason):
    folder = write_mias(tmp_path / "m", ["mdb002 G CIRC M 50 50 9", "mdb004 G CIRC B 50 50 9",
                                         line])
    with pytest.raises(DatasetProblems) as err:
        load_dataset(folder, "mias")
    p = err.value.problems[0]
    assert (p.row, p.field) == (3, field) and reason in p.reason and p.file.endswith("Info.txt")


def test_manifest_bad_rows(tmp_path):
    path = write_manifest(tmp_path, "image,label,patient,x,y,radius", [
        "a.png,benign,p1,20,20,5",
        "b.png,unsure,p2,20,20,5",
        "c.png,malignant,p3,20,20,5",
        "a.png,malignant,,20,20,nan",
    ], images=["a.png", "b.png"])
    ds = load_dataset(path, "manifest", strict=False)
    found = {(p.row, p.field) for p in ds.problems}
    assert found == {(3, "label"), (4, "image"), (5, "patient"), (None, "label")}
    assert "image not found" in next(p.reason for p in ds.problems if p.row == 4)
    assert re.search(r"manifest\.csv, row 3, field 'label': expected benign or malignant",
                     str(DatasetProblems(list(ds.problems))))
    assert "no malignant lesions" in str(ds.problems[-1])
    assert len(ds.records) == 1 and np.isclose(ds.records[0].bbox()[0], 15)

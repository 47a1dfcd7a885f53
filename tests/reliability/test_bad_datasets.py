"""Fuzz/property tests: damaged datasets in every native layout are refused clearly.

Each example writes a small valid dataset (BCDR film or digital CSV + TIFFs, mini-MIAS
``Info.txt`` + PGMs, or a manifest CSV + PNGs) under a folder whose name may hold non-ASCII
characters, applies one to three random damages (random bytes or truncation as images, pixel
bytes flipped, wrong pixel types, columns missing or extra, fields replaced by non-numbers,
NaN, huge or unicode values, outlines moved off the film, rows cut, empty files, ...) and runs
the whole reading path: ``load_dataset`` then ``extract_rois``.

The property: either the dataset is accepted and *every* data row is accounted for (records +
counted skips = rows), or a :class:`DatasetError` is raised whose message names the annotation
file (and for row problems a row inside the file) — never another exception type.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.reliability._tally import tally
from tests.trainables.native_files import default_rows, write_bcdr, write_manifest, write_mias
from trainables.datasets import DatasetProblems, load_dataset
from trainables.records import DatasetError
from trainables.rois import RoiConfig, extract_rois

#: examples per format; ``TLSTUDY_FUZZ_EXAMPLES=2000 pytest tests/reliability`` for a longer hunt
EXAMPLES = int(os.environ.get("TLSTUDY_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

NASTY = ["", " ", "abc", "NaN", "nan", "inf", "-inf", "1e400", "-1", "0", "1e308", "-1e308",
         "9" * 40, "é漢字", "\x00", "1,2", '"', "3 x 4", "1e-400", "Benign ", "Maybe", "\t",
         "1\u20282", "1\x852", "x" * 140_000, "١٢٣", "0x10", "1_000", "--5", "+7"]
value = st.one_of(st.sampled_from(NASTY), st.text(max_size=24),
                  st.integers(-10**30, 10**30).map(str), st.floats().map(repr))
FOLDERS = ["plain", "dätä 漢字", "with space", "emoji 😀", "ümlaut-ß"]

# damages shared by the CSV formats: (kind, row index, column index, value)
csv_damage = st.one_of(
    st.tuples(st.just("field"), st.integers(0, 99), st.integers(0, 99), value),
    st.tuples(st.just("drop_column"), st.integers(0, 99)),
    st.tuples(st.just("drop_header_column"), st.integers(0, 99)),
    st.tuples(st.just("extra_column"), st.sampled_from(["extra", "age", "é", ""])),
    st.tuples(st.just("extra_field"), st.integers(0, 99), value),
    st.tuples(st.just("cut_row"), st.integers(0, 99), st.integers(0, 20)),
    st.tuples(st.just("delete_row"), st.integers(0, 99)),
    st.tuples(st.just("blank_row"), st.integers(0, 99)),
    st.tuples(st.just("empty_file")),
    st.tuples(st.just("only_header")),
    st.tuples(st.just("append_bytes"), st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("shift_points"), st.integers(0, 99),
              st.sampled_from([-10**6, -500, -120, 150, 400, 10**9])),
    st.tuples(st.just("point_token"), st.integers(0, 99), st.integers(0, 1), value),
)
image_damage = st.one_of(
    st.tuples(st.just("random_bytes"), st.integers(0, 99), st.binary(max_size=300)),
    st.tuples(st.just("truncate"), st.integers(0, 99), st.floats(0.0, 0.99)),
    st.tuples(st.just("flip_pixels"), st.integers(0, 99), st.integers(0, 10**6),
              st.integers(0, 255)),
    st.tuples(st.just("delete_image"), st.integers(0, 99)),
    st.tuples(st.just("pixel_type"), st.integers(0, 99),
              st.sampled_from(["float32", "rgb", "1x1", "uint16", "bilevel", "int32_neg"])),
    st.tuples(st.just("unicode_name"), st.integers(0, 99), st.sampled_from(FOLDERS[1:])),
)


@dataclass
class Case:
    """A written dataset: its annotation file, its image files (by row), separator, rows."""

    annotation: Path
    lines: list[str]
    images: list[Path]
    sep: str
    fmt: str

    @property
    def data_rows(self) -> int:
        start = 0 if self.fmt == "mias" else 1  # a line of bare separators is a blank row
        return sum(1 for ln in self.lines[start:] if ln.replace(",", "").strip())


# ------------------------------------------------------------------------------- applying damage

def _split(case: Case, line: str) -> list[str]:
    return line.split() if case.fmt == "mias" else line.split(case.sep.strip() or case.sep)


def _join(case: Case, fields: list[str]) -> str:
    return " ".join(fields) if case.fmt == "mias" else case.sep.join(fields)


def _apply_csv(case: Case, dmg: tuple) -> None:
    kind, lines = dmg[0], case.lines
    first = 0 if case.fmt == "mias" else 1
    body = list(range(first, len(lines)))
    if kind == "empty_file" or not lines:
        case.lines = []
        return
    if kind == "only_header":
        case.lines = lines[:first]
        return
    if kind == "append_bytes":
        case.lines = lines + [dmg[1].decode("latin-1")]
        return
    if kind in ("drop_column", "drop_header_column", "extra_column") and case.fmt == "mias":
        kind, dmg = "cut_row", ("cut_row", len(dmg[1]) if isinstance(dmg[1], str) else dmg[1], 3)
    if kind == "extra_column":
        case.lines = [_join(case, _split(case, ln) + [dmg[1] if i == 0 else "1"])
                      for i, ln in enumerate(lines)]
        return
    if kind == "drop_column":
        n = len(_split(case, lines[0]))
        c = dmg[1] % n
        case.lines = [_join(case, [f for j, f in enumerate(_split(case, ln)) if j != c])
                      for ln in lines]
        return
    if kind == "drop_header_column":
        head = _split(case, lines[0])
        del head[dmg[1] % len(head)]
        lines[0] = _join(case, head)
        return
    if not body:
        return
    r = body[dmg[1] % len(body)]
    fields = _split(case, lines[r])
    if not fields and kind != "delete_row":
        return
    if kind == "field":
        fields[dmg[2] % len(fields)] = dmg[3]
    elif kind == "extra_field":
        fields.append(dmg[2])
    elif kind == "cut_row":
        fields = fields[:dmg[2]]
    elif kind == "delete_row":
        del lines[r]
        return
    elif kind == "blank_row":
        fields = []
    elif kind in ("shift_points", "point_token"):
        cols = _point_columns(case)
        if cols is not None and max(cols) >= len(fields):
            return  # the row was cut before its geometry: nothing left to damage there
        if cols is None:
            fields[min(4, len(fields) - 1)] = str(dmg[2]) if kind == "shift_points" else dmg[3]
        elif kind == "shift_points":
            for c in cols:
                fields[c] = " ".join(str(_num(t) + dmg[2]) for t in fields[c].split())
        else:
            c = cols[dmg[2] % len(cols)]
            toks = fields[c].split() or ["0"]
            toks[len(toks) // 2] = dmg[3]
            fields[c] = " ".join(toks)
    lines[r] = _join(case, fields)


def _num(token: str) -> float:
    try:
        return float(token)
    except ValueError:
        return 0.0


def _point_columns(case: Case) -> list[int] | None:
    if case.fmt == "mias":
        return None
    head = [h.strip() for h in _split(case, case.lines[0])]
    for names in (["lw_x_points", "lw_y_points"], ["x_points", "y_points"],
                  ["x_min", "y_min", "x_max", "y_max"], ["x", "y", "radius"]):
        if all(n in head for n in names):
            return [head.index(n) for n in names]
    return None


def _apply_image(case: Case, dmg: tuple) -> None:
    kind = dmg[0]
    path = case.images[dmg[1] % len(case.images)]
    if not path.is_file():
        return
    if kind in ("flip_pixels", "pixel_type"):
        try:  # an earlier damage may have destroyed the image already
            with Image.open(path) as im:
                im.load()
        except Exception:  # noqa: BLE001
            return
    if kind == "random_bytes":
        path.write_bytes(dmg[2])
    elif kind == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[:int(len(data) * dmg[2])])
    elif kind == "flip_pixels":  # pixel data only: a flipped header could claim gigapixels
        data = bytearray(path.read_bytes())
        with Image.open(path) as im:
            n_pix = im.width * im.height
        start = 8 + 4 if path.suffix != ".pgm" else len(data) - n_pix
        i = start + dmg[2] % max(1, min(n_pix, len(data) - start))
        data[i] = dmg[3]
        path.write_bytes(bytes(data))
    elif kind == "delete_image":
        path.unlink()
    elif kind == "pixel_type":
        _rewrite_pixels(path, dmg[2])
    elif kind == "unicode_name":
        _rename_image(case, path, dmg[2])


def _rewrite_pixels(path: Path, kind: str) -> None:
    with Image.open(path) as im:
        arr = np.asarray(im.convert("L"))
    if kind == "float32":
        img = Image.fromarray(arr.astype(np.float32), mode="F")
    elif kind == "rgb":
        img = Image.fromarray(np.stack([arr] * 3, -1).astype(np.uint8), mode="RGB")
    elif kind == "1x1":
        img = Image.fromarray(arr[:1, :1])
    elif kind == "uint16":
        img = Image.fromarray(arr.astype(np.uint16) * 64)
    elif kind == "bilevel":
        img = Image.fromarray(arr > 127)
    else:
        img = Image.fromarray(arr.astype(np.int32) - 300, mode="I")
    fmt = {".tif": "TIFF", ".pgm": "PPM", ".png": "PNG"}[path.suffix]
    buf = io.BytesIO()
    try:
        img.save(buf, format=fmt)
    except (OSError, ValueError, KeyError):  # that format cannot hold that pixel type
        img.save(buf, format="TIFF")
    path.write_bytes(buf.getvalue())


def _rename_image(case: Case, path: Path, folder_name: str) -> None:
    """Move an image under a non-ASCII name and update the annotation file (stays valid)."""
    if case.fmt == "mias":
        return  # MIAS names images by REFNUM: nothing to rename
    new = path.parent / folder_name / f"{path.stem}-ø{path.suffix}"
    new.parent.mkdir(exist_ok=True)
    path.rename(new)
    old_rel = path.relative_to(case.annotation.parent).as_posix()
    new_rel = new.relative_to(case.annotation.parent).as_posix()
    case.lines = [ln.replace(old_rel, new_rel) for ln in case.lines]
    case.images = [new if p == path else p for p in case.images]


def _write(case: Case) -> None:
    text = "\n".join(case.lines) + ("\n" if case.lines else "")
    case.annotation.write_bytes(text.encode("utf-8", errors="surrogatepass"))


# --------------------------------------------------------------------------------- the datasets

def _bcdr(top: Path, digital: bool) -> Case:
    rows = default_rows(4)
    folder = write_bcdr(top, rows, digital=digital, size=(160, 220))
    name = "bcdr_d01_outlines.csv" if digital else "bcdr_f03_outlines.csv"
    csv = folder / name
    images = [folder / r.filename(digital) for r in rows]
    return Case(csv, csv.read_text(encoding="utf-8").splitlines(), images,
                ", " if digital else ",", "bcdr")


def _mias(top: Path) -> Case:
    lines = ["mdb001 G CIRC B 100 120 20", "mdb002 F SPIC M 90 100 15",
             "mdb003 D MISC M 120 140 25", "mdb004 G CIRC B 60 70 12",
             "mdb005 F NORM", "mdb006 G CALC B", "mdb007 F ARCH M 100 100 30"]
    folder = write_mias(top, lines, size=200)
    refs = sorted({ln.split()[0] for ln in lines})
    return Case(folder / "Info.txt", lines, [folder / f"{r}.pgm" for r in refs], " ", "mias")


def _manifest(top: Path, geometry: str) -> Case:
    head, rows, images = {
        "points": ("image,label,patient,lesion,view,laterality,x_points,y_points",
                   [f"img{i}.png,{'benign' if i % 2 else 'malignant'},p{i // 2},l{i},CC,L,"
                    f"{40 + i} {60 + i} {50 + i},{50} {55} {70}" for i in range(6)], None),
        "box": ("image,label,patient,x_min,y_min,x_max,y_max",
                [f"img{i}.png,{'benign' if i % 2 else 'malignant'},p{i // 2},"
                 f"{20 + i},{30},{60 + i},{70}" for i in range(6)], None),
        "circle": ("image,label,patient,x,y,radius",
                   [f"img{i}.png,{'Benign' if i % 2 else 'MALIGNANT'},p{i // 2},"
                    f"{60 + i},{70},{10 + i}" for i in range(6)], None),
    }[geometry]
    images = [f"img{i}.png" for i in range(6)]
    path = write_manifest(top, head, rows, images=images)
    return Case(path, path.read_text(encoding="utf-8").splitlines(),
                [top / n for n in images], ",", "manifest")


# ------------------------------------------------------------------------------------ the check

def _check(case: Case, dataset_path: Path) -> str:
    """Run the reading path; assert the property; return the outcome for the tally."""
    n_rows = case.data_rows
    name = case.annotation.name
    try:
        loaded = load_dataset(dataset_path, case.fmt, strict=False)
    except DatasetError as exc:  # whole dataset unreadable: the message names a file
        assert name in str(exc) or str(case.annotation.parent) in str(exc), str(exc)
        return "refused"
    for p in loaded.problems:
        assert Path(p.file).name == name, p
        text = "\n".join(case.lines)
        n_lines = text.count("\n") + text.count("\r") + 1  # csv's line ends (MIAS: fewer)
        assert p.row is None or 1 <= p.row <= n_lines + 1, p
        assert str(p).startswith(p.file), p
    if loaded.problems:
        try:
            load_dataset(dataset_path, case.fmt)
        except DatasetProblems as exc:
            assert name in str(exc) and len(exc.problems) == len(loaded.problems)
        else:
            raise AssertionError("strict load accepted a dataset with problems")
        return "refused"
    # accepted: nothing silently dropped
    skipped = sum(loaded.skipped.values())
    assert len(loaded.records) + skipped == n_rows, (len(loaded.records), loaded.skipped, n_rows)
    assert len({r.source.row for r in loaded.records}) == len(loaded.records)
    try:
        rois, _ = extract_rois(loaded, RoiConfig(size=32), cache_dir=None)
    except DatasetProblems as exc:
        assert all(Path(p.file).name == name and p.row is not None for p in exc.problems)
        assert all(p.field == "image" for p in exc.problems)
        return "refused"
    except DatasetError as exc:
        assert name in str(exc), str(exc)
        return "refused"
    assert len(rois.images) == len(loaded.records)
    assert rois.images.dtype in (np.uint8, np.uint16)
    return "accepted"


def _run(fmt_key: str, build, damages: list[tuple], folder: str, *,
         dataset_at=lambda case: case.annotation.parent) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        top = Path(tmp) / folder
        top.mkdir()
        case = build(top)
        for dmg in damages:
            if dmg[0] in {"random_bytes", "truncate", "flip_pixels", "delete_image",
                          "pixel_type", "unicode_name"}:
                _apply_image(case, dmg)
            else:
                _apply_csv(case, dmg)
        _write(case)
        outcome = _check(case, dataset_at(case))
    tally[f"bad datasets tried ({fmt_key})"] += 1
    tally[f"bad datasets {outcome} ({fmt_key})"] += 1


damages = st.lists(st.one_of(csv_damage, image_damage), min_size=1, max_size=3)


@FUZZ
@given(damages=damages, digital=st.booleans(), folder=st.sampled_from(FOLDERS))
def test_damaged_bcdr_is_refused_by_file_row_and_field(damages, digital, folder):
    _run("bcdr", lambda top: _bcdr(top, digital), damages, folder,
         dataset_at=lambda case: case.annotation.parent.parent)


@FUZZ
@given(damages=damages, folder=st.sampled_from(FOLDERS))
def test_damaged_mias_is_refused_by_file_row_and_field(damages, folder):
    _run("mias", _mias, damages, folder)


@FUZZ
@given(damages=damages, geometry=st.sampled_from(["points", "box", "circle"]),
       folder=st.sampled_from(FOLDERS))
def test_damaged_manifest_is_refused_by_file_row_and_field(damages, geometry, folder):
    _run("manifest", lambda top: _manifest(top, geometry), damages, folder,
         dataset_at=lambda case: case.annotation)


# ------------------------------------------------------------- what the fuzzing found (regressions)

def test_a_field_over_csvs_size_limit_is_a_row_problem(tmp_path):
    """csv raised ``_csv.Error: field larger than field limit`` from inside the loader."""
    case = _manifest(tmp_path, "box")
    case.lines[3] = case.lines[3].replace("p1", "p" * 200_000)
    _write(case)
    loaded = load_dataset(case.annotation, "manifest", strict=False)
    assert [(p.row, "unreadable CSV row") for p in loaded.problems] == [
        (4, "unreadable CSV row")]
    assert "field larger than field limit" in loaded.problems[0].reason


def test_line_separators_inside_fields_do_not_shift_row_numbers(tmp_path):
    """``str.splitlines`` split rows at U+2028/\\x85/\\x0b: reported rows pointed past the end."""
    case = _manifest(tmp_path, "box")
    case.lines[2] = case.lines[2].replace("p0", "p\u20280")
    case.lines[4] = case.lines[4].replace("benign", "ben\x85ign")
    _write(case)
    loaded = load_dataset(case.annotation, "manifest", strict=False)
    assert [(p.row, p.field) for p in loaded.problems] == [(5, "label")]
    mias = _mias(tmp_path / "mias")
    mias.lines.insert(2, "mdb\x0b009 G CIRC B 1 2 3")
    _write(mias)
    loaded = load_dataset(mias.annotation, "mias", strict=False)
    assert [(p.row, p.field) for p in loaded.problems] == [(3, "REFNUM")]


def test_an_image_header_claiming_gigapixels_is_a_row_problem(tmp_path):
    """PIL's DecompressionBombError (not an OSError) escaped ``image_size``."""
    case = _manifest(tmp_path, "box")
    case.images[0].write_bytes(b"P5\n200000 200000\n255\n" + b"\0" * 64)
    loaded = load_dataset(case.annotation, "manifest", strict=False)
    assert [(p.row, p.field) for p in loaded.problems] == [(2, "image")]
    assert "DecompressionBombError" in loaded.problems[0].reason
    assert "img0.png" in str(loaded.problems[0])


# ------------------------------------------------------- the DICOM formats (CBIS-DDSM, INbreast)

#: examples per DICOM format (each writes a few DICOM files; a quarter of the CSV formats' count)
DICOM_EXAMPLES = max(10, EXAMPLES // 4)
DICOM_FUZZ = settings(FUZZ, max_examples=DICOM_EXAMPLES)

dicom_damage = st.one_of(
    st.tuples(st.just("random_bytes"), st.integers(0, 99), st.binary(max_size=300)),
    st.tuples(st.just("truncate"), st.integers(0, 99), st.floats(0.0, 0.99)),
    st.tuples(st.just("flip_tail"), st.integers(0, 99), st.integers(1, 4000), st.integers(0, 255)),
    st.tuples(st.just("delete_image"), st.integers(0, 99)),
    st.tuples(st.just("attribute"), st.integers(0, 99),
              st.sampled_from(["PhotometricInterpretation", "BitsStored", "BitsAllocated",
                               "SamplesPerPixel", "Rows", "Columns", "PixelRepresentation",
                               "NumberOfFrames", "TransferSyntaxUID"]),
              st.sampled_from(["MONOCHROME1", "RGB", "0", "1", "3", "12", "17", "32", "65535",
                               "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.5"])),
)
xml_damage = st.one_of(
    st.tuples(st.just("xml_bytes"), st.integers(0, 99), st.binary(max_size=200)),
    st.tuples(st.just("xml_point"), st.integers(0, 99), st.integers(0, 500), value),
    st.tuples(st.just("xml_name"), st.integers(0, 99), st.sampled_from(
        ["mass", "MASS ", "Calcification", "", "Spiculated Region"])),
    st.tuples(st.just("xml_drop_points"), st.integers(0, 99), st.integers(0, 5)),
)
_TEMPLATES: dict[str, Path] = {}


def _template(fmt: str) -> Path:
    """One small synthetic dataset per format, written once and copied for each example."""
    if fmt not in _TEMPLATES:
        from trainables.datasets.synthetic import SynthConfig
        from trainables.datasets.synthetic_native import (
            write_synthetic_cbis,
            write_synthetic_inbreast,
        )

        config = SynthConfig(patients=4, seed=5, width=160, height=240,
                             radius_range=(4.0, 8.0), non_mass_fraction=0.5)
        top = Path(tempfile.mkdtemp(prefix=f"fuzz-{fmt}-"))
        writer = write_synthetic_cbis if fmt == "cbis-ddsm" else write_synthetic_inbreast
        _TEMPLATES[fmt] = writer(top / "data", config)
    return _TEMPLATES[fmt]


def _damage_dicom(files: list[Path], dmg: tuple) -> None:
    import pydicom

    path = files[dmg[1] % len(files)]
    if not path.is_file():
        return
    kind = dmg[0]
    if kind == "random_bytes":
        path.write_bytes(dmg[2])
    elif kind == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[:int(len(data) * dmg[2])])
    elif kind == "flip_tail":  # inside the pixel data, which ends the file
        data = bytearray(path.read_bytes())
        data[-min(dmg[2], len(data))] = dmg[3]
        path.write_bytes(bytes(data))
    elif kind == "delete_image":
        path.unlink()
    else:
        try:
            ds = pydicom.dcmread(path)
            if dmg[2] == "TransferSyntaxUID":
                ds.file_meta.TransferSyntaxUID = dmg[3]
            elif dmg[2] == "PhotometricInterpretation":
                ds.PhotometricInterpretation = dmg[3]
            else:
                setattr(ds, dmg[2], int(dmg[3]) if dmg[3].isdigit() else 1)
            ds.save_as(path)
        except Exception:  # noqa: BLE001 -- an earlier damage made it unreadable, or the
            return          # value cannot be written at all: the file stays as it was


def _damage_xml(files: list[Path], dmg: tuple) -> None:
    import plistlib

    if not files:
        return
    path = files[dmg[1] % len(files)]
    if dmg[0] == "xml_bytes":
        path.write_bytes(dmg[2])
        return
    try:
        with path.open("rb") as fh:
            doc = plistlib.load(fh)
        roi = doc["Images"][0]["ROIs"][0]
        if dmg[0] == "xml_point":
            roi["Point_px"][dmg[2] % len(roi["Point_px"])] = dmg[3].replace("\x00", "")
        elif dmg[0] == "xml_name":
            roi["Name"] = dmg[2]
        else:
            roi["Point_px"] = roi["Point_px"][:dmg[2]]
        with path.open("wb") as fh:
            plistlib.dump(doc, fh)
    except Exception:  # noqa: BLE001 -- an earlier damage broke it already
        return


def _check_dicom_format(fmt: str, root: Path, csv_path: Path) -> str:
    """Accepted with every ROI extracted, or refused by a DatasetError naming a dataset file."""
    def names_a_file(text: str) -> bool:
        return str(root) in text or csv_path.name in text

    try:
        loaded = load_dataset(root, fmt, strict=False)
    except DatasetError as exc:
        assert names_a_file(str(exc)), str(exc)
        return "refused"
    for p in loaded.problems:
        assert str(p).startswith(p.file) and Path(p.file).is_relative_to(root), p
    if loaded.problems:
        try:
            load_dataset(root, fmt)
        except DatasetProblems as exc:
            assert len(exc.problems) == len(loaded.problems)
        else:
            raise AssertionError("strict load accepted a dataset with problems")
        return "refused"
    if fmt == "cbis-ddsm":  # one record per mass row: nothing silently dropped
        n_rows = sum(sum(1 for row in list(csv.reader(io.StringIO(
            p.read_text(encoding="utf-8-sig"), newline="")))[1:] if any(f.strip() for f in row))
            for p in root.glob("mass_case_description_*_set.csv"))
        assert len(loaded.records) + sum(loaded.skipped.values()) == n_rows
    try:
        rois, _ = extract_rois(loaded, RoiConfig(size=32), cache_dir=None)
    except DatasetError as exc:
        assert names_a_file(str(exc)), str(exc)
        return "refused"
    assert len(rois.images) == len(loaded.records)
    assert rois.images.dtype in (np.uint8, np.uint16)
    return "accepted"


def _run_dicom(fmt: str, damages: list[tuple], folder: str) -> None:
    import shutil

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / folder / "data"
        shutil.copytree(_template(fmt), root)
        csv_name = ("mass_case_description_train_set.csv" if fmt == "cbis-ddsm"
                    else "INbreast.csv")
        csv_path = root / csv_name
        case = Case(csv_path, csv_path.read_text().splitlines(), [], ";" if fmt == "inbreast"
                    else ",", fmt)
        dicoms = sorted(root.rglob("*.dcm"))
        xmls = sorted(root.rglob("*.xml"))
        for dmg in damages:
            if dmg[0] in ("random_bytes", "truncate", "flip_tail", "delete_image", "attribute"):
                _damage_dicom(dicoms, dmg)
            elif dmg[0].startswith("xml_"):
                _damage_xml(xmls, dmg)
            else:
                _apply_csv(case, dmg)
        _write(case)
        outcome = _check_dicom_format(fmt, root, csv_path)
    tally[f"bad datasets tried ({fmt})"] += 1
    tally[f"bad datasets {outcome} ({fmt})"] += 1


@DICOM_FUZZ
@given(damages=st.lists(st.one_of(csv_damage, dicom_damage), min_size=1, max_size=3),
       folder=st.sampled_from(FOLDERS))
def test_damaged_cbis_ddsm_is_refused_by_file_row_and_field(damages, folder):
    _run_dicom("cbis-ddsm", damages, folder)


@DICOM_FUZZ
@given(damages=st.lists(st.one_of(csv_damage, dicom_damage, xml_damage), min_size=1,
                        max_size=3),
       folder=st.sampled_from(FOLDERS))
def test_damaged_inbreast_is_refused_by_file_row_and_field(damages, folder):
    _run_dicom("inbreast", damages, folder)

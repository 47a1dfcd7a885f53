"""INbreast loader (``INbreast.csv`` + ``AllDICOMs/*.dcm`` + ``AllXML/*.xml``).

Layout (as public readers of the release show it; ``INbreast Release 1.0/`` may be given or the
folder above it):

- ``INbreast.csv``, ``;``-separated, one row per image: ``Patient ID;Patient age;Laterality;
  View;Acquisition date;File Name;ACR;Bi-Rads`` (patient id and age are ``removed`` in the
  release). Only ``Laterality``, ``View``, ``File Name`` and ``Bi-Rads`` are needed; other
  columns may be missing or renamed.
- ``AllDICOMs/<File Name>_<patient hash>_MG_<L|R>_<CC|ML>_ANON.dcm``: the patient hash (second
  token) is the only patient identifier the release carries; patients are grouped by it.
- ``AllXML/<File Name>.xml``: an OsiriX plist, ``Images[0].ROIs[]`` each with ``Name``
  (``Mass``, ``Calcification``, ``Cluster``, ``Spiculated Region``, ...) and ``Point_px``, a list
  of ``"(x, y)"`` strings in pixels (top-left origin). Images without findings have no XML.

Labels: INbreast has no biopsy result for every lesion; BI-RADS (given per *image*) is the
usual proxy. The rule is declared and printed: by default BI-RADS 1–3 → benign, 4a–6 →
malignant (``birads_malignant_from``); BI-RADS 0 (incomplete) is skipped and counted. A plain
``4`` ranks with ``4a``. Every mass of an image takes that image's label.

Lesions: INbreast does not link a mass's CC and MLO outlines, so each outlined mass view is its
own lesion (``<File Name>#k``); both views of a patient still stay on one side of every split.
"""

from __future__ import annotations

import plistlib
import re
from dataclasses import dataclass
from pathlib import Path

from trainables.datasets._common import check_classes, check_duplicates, read_csv_rows
from trainables.datasets._dicom import dicom_size
from trainables.datasets._problems import ProblemLog
from trainables.records import DatasetError, Label, Laterality, LesionRecord, SourceRef, View

CSV_NAME = "INbreast.csv"
REQUIRED = {"Laterality", "View", "File Name", "Bi-Rads"}
BIRADS_ORDER = ("0", "1", "2", "3", "4a", "4b", "4c", "5", "6")
_DICOM_NAME = re.compile(r"^(\d+)_([^_]+)_MG_([LR])_(CC|ML|MLO)_ANON\.dcm$", re.IGNORECASE)
_POINT = re.compile(r"^\(\s*([^,]+?)\s*,\s*([^,]+?)\s*(?:,\s*[^,]+?\s*)?\)$")


@dataclass(frozen=True)
class InbreastOptions:
    """``birads_malignant_from``: lowest BI-RADS category called malignant (default ``4a``);
    ``roi_names``: outline names loaded (case-insensitive; default masses only)."""

    birads_malignant_from: str = "4a"
    roi_names: tuple[str, ...] = ("mass",)

    def __post_init__(self) -> None:
        if self.birads_malignant_from.lower() not in BIRADS_ORDER[2:]:
            raise ValueError(f"birads_malignant_from must be one of {list(BIRADS_ORDER[2:])}, "
                             f"got {self.birads_malignant_from!r}")

    def label_rule(self) -> str:
        cut = BIRADS_ORDER.index(self.birads_malignant_from.lower())
        benign, malignant = BIRADS_ORDER[1:cut], BIRADS_ORDER[cut:]
        return (f"BI-RADS {benign[0]}–{benign[-1]} → benign, {malignant[0]}–{malignant[-1]} → "
                f"malignant (INbreast has no pathology for every lesion: BI-RADS is a proxy); "
                f"BI-RADS 0 skipped")


def find_inbreast_csv(path: Path) -> Path:
    """``INbreast.csv`` at ``path`` (the file or its folder) or one folder below."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise DatasetError("no such file or folder", file=path)
    for pattern in (CSV_NAME, f"*/{CSV_NAME}"):
        found = sorted(p for p in path.glob(pattern) if p.is_file())
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise DatasetError(f"several {CSV_NAME} found; give the release folder", file=path)
    raise DatasetError(f"no {CSV_NAME} here or one folder below", file=path)


def parse_birads(text: str) -> str | None:
    """Normalised BI-RADS category (``"4b"``) or None."""
    t = text.strip().lower()
    t = {"4": "4a"}.get(t, t)
    return t if t in BIRADS_ORDER else None


def load_inbreast(path: Path | str, log: ProblemLog,
                  options: InbreastOptions = InbreastOptions()) -> list[LesionRecord]:
    """Outlined mass views of INbreast; problems and skips go to ``log``."""
    csv_path = find_inbreast_csv(Path(path))
    root = csv_path.parent
    dicoms = _index_dicoms(root / "AllDICOMs", csv_path, log)
    cut = BIRADS_ORDER.index(options.birads_malignant_from.lower())
    names = {n.lower() for n in options.roi_names}
    records: list[LesionRecord] = []
    for row_no, row in read_csv_rows(csv_path, log, delimiter=";", required=REQUIRED):
        records += _row(row, row_no, csv_path, root, dicoms, cut, names, log)
    check_duplicates(records, log, "File Name")
    check_classes(records, csv_path, log, "Bi-Rads")
    return records


def _index_dicoms(folder: Path, csv_path: Path, log: ProblemLog) -> dict[str, Path]:
    """File Name → DICOM path; a name matching two files is a problem."""
    out: dict[str, Path] = {}
    if not folder.is_dir():
        log.add(csv_path, None, None, f"no AllDICOMs folder next to it ({folder})")
        return out
    for p in sorted(folder.glob("*.dcm")):
        m = _DICOM_NAME.match(p.name)
        key = m.group(1) if m else p.name.split("_", 1)[0]
        if key in out:
            log.add(p, None, None, f"a second DICOM for File Name {key} ({out[key].name})")
        out[key] = p
    return out


def _row(row: dict[str, str], row_no: int, csv_path: Path, root: Path, dicoms: dict[str, Path],
         cut: int, names: set[str], log: ProblemLog) -> list[LesionRecord]:
    n_before = len(log.problems)
    file_name = row["File Name"]
    if file_name.endswith(".0"):  # written through a spreadsheet as a float
        file_name = file_name[:-2]
    side = {"L": Laterality.LEFT, "R": Laterality.RIGHT}.get(row["Laterality"].upper())
    if side is None:
        log.add(csv_path, row_no, "Laterality", f"expected L or R, got {row['Laterality']!r}")
    view = {"CC": View.CC, "MLO": View.MLO, "ML": View.MLO}.get(row["View"].upper())
    if view is None:
        log.add(csv_path, row_no, "View", f"expected CC or MLO, got {row['View']!r}")
    birads = parse_birads(row["Bi-Rads"])
    if birads is None:
        log.add(csv_path, row_no, "Bi-Rads",
                f"expected one of {list(BIRADS_ORDER)}, got {row['Bi-Rads']!r}")
    if not file_name.isdigit():
        log.add(csv_path, row_no, "File Name", f"expected the image's number, got {file_name!r}")
    elif file_name not in dicoms:
        log.add(csv_path, row_no, "File Name", f"no AllDICOMs/{file_name}_*.dcm")
    if len(log.problems) > n_before:
        return []
    assert side is not None and view is not None and birads is not None
    if birads == "0":
        log.skip("BI-RADS 0 (incomplete assessment)")
        return []
    image = dicoms[file_name]
    m = _DICOM_NAME.match(image.name)
    if m is None:
        log.add(csv_path, row_no, "File Name", f"DICOM name {image.name!r} is not "
                "<File Name>_<patient>_MG_<L|R>_<CC|ML>_ANON.dcm: no patient identifier")
        return []
    xml = root / "AllXML" / f"{file_name}.xml"
    if not xml.is_file():
        log.skip("image without outlines (no AllXML file)")
        return []
    rois = _read_rois(xml, log)
    if rois is None:
        return []
    try:
        width, height = dicom_size(image)
    except DatasetError as exc:
        log.add(csv_path, row_no, "File Name", f"{image.name}: {exc.reason}")
        return []
    label = Label.MALIGNANT if BIRADS_ORDER.index(birads) >= cut else Label.BENIGN
    out = []
    for k, (name, points) in enumerate(rois):
        if name.lower() not in names:
            log.skip(f"outline not selected ({name or 'unnamed'})")
            continue
        where = f"ROIs[{k}].Point_px"
        if len(points) < 3:
            log.add(xml, None, where, f"a {name} outline needs at least 3 points, has "
                    f"{len(points)}")
            continue
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        if min(xs) < -1 or min(ys) < -1 or max(xs) > width or max(ys) > height:
            log.add(xml, None, where, f"outline ({min(xs):g}, {min(ys):g})–({max(xs):g}, "
                    f"{max(ys):g}) lies outside the {width} × {height} image {image.name}")
            continue
        out.append(LesionRecord(
            patient=m.group(2), lesion=f"{file_name}#{k + 1}", view=view, laterality=side,
            label=label, image=image, outline=tuple(points), source=SourceRef(csv_path, row_no)))
    return out


def _read_rois(xml: Path, log: ProblemLog) -> list[tuple[str, list[tuple[float, float]]]] | None:
    """``[(name, [(x, y), ...]), ...]`` of ``Images[0].ROIs``; None (problem logged) if bad."""
    try:
        with xml.open("rb") as fh:
            doc = plistlib.load(fh)
        rois = doc["Images"][0]["ROIs"]
        if not isinstance(rois, list):
            raise TypeError("ROIs is not a list")
    except Exception as exc:  # noqa: BLE001 -- expat, plist, key and type errors alike
        log.add(xml, None, "Images[0].ROIs", f"not an OsiriX ROI plist: "
                f"{type(exc).__name__}: {str(exc)[:120]}")
        return None
    out = []
    for k, roi in enumerate(rois):
        if not isinstance(roi, dict):
            log.add(xml, None, f"ROIs[{k}]", "not a dictionary")
            return None
        name = str(roi.get("Name", "")).strip()
        raw = roi.get("Point_px", [])
        points = []
        for j, text in enumerate(raw if isinstance(raw, list) else [raw]):
            m = _POINT.match(str(text).strip())
            try:
                x, y = (float(m.group(1)), float(m.group(2))) if m else (None, None)
            except ValueError:
                x = y = None
            if x is None or y is None or not (abs(x) < 1e7 and abs(y) < 1e7):
                log.add(xml, None, f"ROIs[{k}].Point_px[{j}]",
                        f"expected \"(x, y)\", got {str(text)[:40]!r}")
                return None
            points.append((x, y))
        out.append((name, points))
    return out

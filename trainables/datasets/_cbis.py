"""CBIS-DDSM loader: the four case-description CSVs + the TCIA DICOM download.

Layout (checked against public readers of the dataset; tolerant where they disagree):

- ``mass_case_description_{train,test}_set.csv`` and ``calc_case_description_{train,test}_set
  .csv`` at the given folder or one below it (``csv/``). Columns differ a little between files
  (``breast_density`` vs ``breast density``; the calc files have ``calc type, calc
  distribution``): names are normalised (lower case, ``_`` → space) before use. Values may carry
  stray spaces, quotes or a quoted trailing line break: they are stripped.
- Images: ``CBIS-DDSM/<case folder>/<study folder>/<series folder>/1-1.dcm`` (NBIA Data
  Retriever). The case folder is the first component of each CSV path
  (``Mass-Training_P_00001_LEFT_CC`` for the mammogram, ``..._LEFT_CC_1`` for abnormality 1's
  ROI mask and crop); the folders below it do **not** match the UID paths the CSV writes
  (``.../<StudyUID>/<SeriesUID>/000000.dcm``), nor do the file names. So files are matched by
  case folder only: the mammogram is the case folder's one DICOM (or the one whose series is
  ``full mammogram images``); the mask and the crop are told apart **by content** — the mask
  is the binary image of the mammogram's size — since the cropped/mask columns are swapped on
  some rows and both files may sit in one series folder.
- Labels from ``pathology``: MALIGNANT → malignant; BENIGN and BENIGN_WITHOUT_CALLBACK →
  benign. Masses only unless ``calcifications=True``.
- ROI: the mask's bounding box becomes the outline (a rectangle), cropped by the same square
  protocol as BCDR. Patients are ``P_xxxxx``; both views and both breasts of a patient stay
  together in every split. CBIS-DDSM does not link an abnormality's CC and MLO outlines, so
  each outlined view is its own lesion (``<LEFT|RIGHT>_<CC|MLO>_<mass|calc><id>``).
- The official train/test partition is kept on each record (``subset``) for
  ``splits.mode: official``.

Reading every mask at load time costs one full-size image read per abnormality (minutes for
the whole dataset, once: the ROI cache is keyed by the files' contents). A mask whose size
differs from its mammogram (a handful are reported in the public data) is skipped and counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from trainables.datasets._cbis_files import CASE_RE, image_size, index_cases, mask_bbox, pixels
from trainables.datasets._common import check_classes, check_duplicates, read_csv_rows
from trainables.datasets._problems import ProblemLog
from trainables.records import DatasetError, Label, Laterality, LesionRecord, SourceRef, View

CSV_RE = re.compile(r"^(mass|calc)_case_description_(train|test)_set\.csv$", re.IGNORECASE)
REQUIRED = {"patient id", "left or right breast", "image view", "abnormality id", "pathology",
            "image file path", "cropped image file path", "roi mask file path"}
PATHOLOGY = {"MALIGNANT": Label.MALIGNANT, "BENIGN": Label.BENIGN,
             "BENIGN_WITHOUT_CALLBACK": Label.BENIGN}
LABEL_RULE = "pathology MALIGNANT → malignant; BENIGN, BENIGN_WITHOUT_CALLBACK → benign"


@dataclass(frozen=True)
class CbisOptions:
    """``calcifications``: also load the calc CSVs (off by default: the study is on masses)."""

    calcifications: bool = False

    def label_rule(self) -> str:
        return LABEL_RULE


def normalise_column(name: str) -> str:
    """``breast_density`` / ``Breast Density `` → ``breast density``; ``patient_id`` →
    ``patient id``."""
    return re.sub(r"[\s_]+", " ", name.strip().lower())


def clean_value(text: str) -> str:
    """A CSV value without stray whitespace, line breaks or quotes."""
    return re.sub(r"[\r\n]+", "", text).strip().strip('"').strip()


def find_cbis_csvs(path: Path) -> list[Path]:
    """The case-description CSVs at ``path`` (a folder, or one of the CSVs) or one folder
    below it."""
    path = Path(path)
    if path.is_file():
        path = path.parent
    if not path.is_dir():
        raise DatasetError("no such file or folder", file=path)
    for pattern in ("*.csv", "*/*.csv"):
        found = sorted(p for p in path.glob(pattern) if CSV_RE.match(p.name) and p.is_file())
        if found:
            return found
    raise DatasetError("no {mass,calc}_case_description_{train,test}_set.csv here or one folder "
                       "below", file=path)


def find_cbis_csv(path: Path) -> Path:
    """The annotation file that stands for the dataset: the first mass CSV (train first)."""
    found = find_cbis_csvs(path)
    mass = [p for p in found if p.name.lower().startswith("mass")]
    return sorted(mass or found, key=lambda p: ("test" in p.name.lower(), p.name))[0]


def cbis_sources(path: Path) -> list[Path]:
    """Every CSV the loader reads (for the data fingerprint)."""
    return find_cbis_csvs(path)


def load_cbis(path: Path | str, log: ProblemLog,
              options: CbisOptions = CbisOptions()) -> list[LesionRecord]:
    """Outlined abnormality views of CBIS-DDSM; problems and skips go to ``log``."""
    path = Path(path)
    csvs = [p for p in find_cbis_csvs(path)
            if options.calcifications or p.name.lower().startswith("mass")]
    if not csvs:
        raise DatasetError("no mass_case_description_*_set.csv (calcifications are off)",
                           file=path)
    cases, _info = index_cases(csvs[0].parent, path)
    if not cases:
        log.add(csvs[0], None, None, "no CBIS-DDSM case folders (Mass-Training_P_00001_LEFT_CC, "
                "...) found in CBIS-DDSM/ next to the CSVs")
        return []
    full_cache: dict[str, tuple[Path, tuple[int, int]] | str] = {}
    records: list[LesionRecord] = []
    for csv_path in csvs:
        subset = "test" if "_test_" in csv_path.name.lower() else "train"
        for row_no, raw in read_csv_rows(csv_path, log, required=REQUIRED,
                                         header_map=normalise_column):
            row = {k: clean_value(v) for k, v in raw.items()}
            rec = _row(row, row_no, csv_path, cases, full_cache, subset, log)
            if rec is not None:
                records.append(rec)
    check_duplicates(records, log, "abnormality id")
    check_classes(records, csvs[0], log, "pathology")
    return records


def _case_name(value: str) -> str:
    """First path component of a CSV path (``Mass-Training_P_00001_LEFT_CC``), upper case."""
    parts = [p for p in re.split(r"[\\/]+", value) if p and p != "CBIS-DDSM"]
    return parts[0].upper() if parts else ""


def _row(row: dict[str, str], row_no: int, csv_path: Path, cases: dict[str, list[Path]],
         full_cache: dict[str, tuple[Path, tuple[int, int]] | str], subset: str,
         log: ProblemLog) -> LesionRecord | None:
    n_before = len(log.problems)

    def bad(field: str, reason: str) -> None:
        log.add(csv_path, row_no, field, reason)

    if not re.fullmatch(r"P_\d+", row["patient id"]):
        bad("patient_id", f"expected P_ and digits, got {row['patient id'][:40]!r}")
    side = {"LEFT": Laterality.LEFT, "RIGHT": Laterality.RIGHT}.get(
        row["left or right breast"].upper())
    if side is None:
        bad("left or right breast", f"expected LEFT or RIGHT, got "
            f"{row['left or right breast'][:40]!r}")
    view = {"CC": View.CC, "MLO": View.MLO}.get(row["image view"].upper())
    if view is None:
        bad("image view", f"expected CC or MLO, got {row['image view'][:40]!r}")
    abn = row["abnormality id"]
    if not abn.isdigit() or int(abn) < 1 or len(abn) > 4:
        bad("abnormality id", f"expected a positive integer, got {abn[:40]!r}")
    label = PATHOLOGY.get(row["pathology"].upper())
    if label is None:
        bad("pathology", f"expected one of {sorted(PATHOLOGY)}, got {row['pathology'][:40]!r}")
    full_case = _case_name(row["image file path"])
    if not CASE_RE.match(full_case):
        bad("image file path", f"does not start with a case folder such as "
            f"Mass-Training_P_00001_LEFT_CC: {row['image file path'][:80]!r}")
    roi_cases = {_case_name(row["cropped image file path"]), _case_name(row["roi mask file path"])}
    roi_cases.discard("")
    if not roi_cases:
        bad("ROI mask file path", "empty (and so is cropped image file path)")
    if len(log.problems) > n_before:
        return None
    assert side is not None and view is not None and label is not None
    full = _full_image(full_case, cases, full_cache)
    if isinstance(full, str):
        bad("image file path", full)
        return None
    image, size = full
    bbox = _mask_bbox(roi_cases, cases, size)
    if isinstance(bbox, str):
        if bbox.startswith("skip:"):
            log.skip(bbox[5:])
        else:
            bad("ROI mask file path", bbox)
        return None
    x0, y0, x1, y1 = bbox
    kind = "mass" if full_case.startswith("MASS") else "calc"
    return LesionRecord(
        patient=row["patient id"], lesion=f"{side.name}_{view.value}_{kind}{int(abn)}",
        view=view, laterality=side, label=label, image=image,
        outline=((x0, y0), (x1, y0), (x1, y1), (x0, y1)),
        source=SourceRef(csv_path, row_no), subset=subset)


def _full_image(case: str, cases: dict[str, list[Path]],
                cache: dict[str, tuple[Path, tuple[int, int]] | str]
                ) -> tuple[Path, tuple[int, int]] | str:
    """The case folder's mammogram and its ``(width, height)``, or the reason it is unusable."""
    if case in cache:
        return cache[case]
    files = cases.get(case)
    if not files:
        out: tuple[Path, tuple[int, int]] | str = f"no case folder {case} with a DICOM file"
    else:
        if len(files) > 1:
            files = [f for f in files if "full mammogram" in f.parent.name.lower()] or files
        if len(files) > 1:
            out = f"case folder {case} holds {len(files)} DICOM files; expected one mammogram"
        else:
            try:
                out = (files[0], image_size(files[0]))
            except DatasetError as exc:
                out = f"{files[0]}: {exc.reason}"
    cache[case] = out
    return out


def _mask_bbox(roi_cases: set[str], cases: dict[str, list[Path]],
               size: tuple[int, int]) -> tuple[int, int, int, int] | str:
    """Bounding box ``(x0, y0, x1, y1)`` of the abnormality's mask, found by size and content
    (whichever CSV column named it)."""
    files = sorted({f for c in roi_cases for f in cases.get(c, [])})
    if not files:
        return f"no ROI case folder {' / '.join(sorted(roi_cases))} with an image file"
    sized: list[Path] = []
    wrong: list[Path] = []
    for f in files:
        try:
            (sized if image_size(f) == size else wrong).append(f)
        except DatasetError as exc:
            return f"{f}: {exc.reason}"
    boxes = []
    for f in sized:
        try:
            box = mask_bbox(pixels(f))
        except DatasetError as exc:
            return f"{f}: {exc.reason}"
        if box is not None:
            boxes.append(box)
    if len(boxes) > 1:
        return (f"{len(boxes)} mask-like images of the mammogram's size in {sorted(roi_cases)}; "
                "expected one ROI mask")
    if not boxes:
        if any(_is_mask(f) for f in wrong):
            return "skip:ROI mask size differs from its mammogram"
        return f"no binary ROI mask among the {len(files)} image file(s) of {sorted(roi_cases)}"
    return boxes[0]


def _is_mask(path: Path) -> bool:
    try:
        return mask_bbox(pixels(path)) is not None
    except DatasetError:
        return False

"""BCDR (Breast Cancer Digital Repository) loader, film (F0x) and digital (D0x) subsets.

Reads ``bcdr_<subset>_outlines.csv`` as distributed: F03 has 18 comma-separated columns; the
digital subsets add ``series`` (19 columns) and write every value after the first as
``", value"``. Only mass lesions (``mammography_nodule == 1``) become records; the other rows
are counted as skipped. Paths in the CSV are relative to the subset folder, which may be given
at any level users keep it (``BCDR-F03_dataset/``, ``BCDR-F03_dataset/BCDR-F03/``, or a folder
above them).
"""

from __future__ import annotations

from pathlib import Path

from trainables.datasets._common import (
    check_classes,
    check_duplicates,
    check_outline,
    image_size,
    parse_points,
    read_csv_rows,
)
from trainables.datasets._problems import ProblemLog
from trainables.records import DatasetError, Label, Laterality, LesionRecord, SourceRef, View

FILM_COLUMNS = [
    "patient_id", "study_id", "lesion_id", "segmentation_id", "image_view", "image_filename",
    "lw_x_points", "lw_y_points", "mammography_type", "mammography_nodule",
    "mammography_calcification", "mammography_microcalcification",
    "mammography_axillary_adenopathy", "mammography_architectural_distortion",
    "mammography_stroma_distortion", "age", "density", "classification",
]
DIGITAL_COLUMNS = FILM_COLUMNS[:2] + ["series"] + FILM_COLUMNS[2:]

VIEWS: dict[str, tuple[View, Laterality]] = {
    "1": (View.CC, Laterality.RIGHT),   # RCC
    "2": (View.CC, Laterality.LEFT),    # LCC
    "3": (View.MLO, Laterality.RIGHT),  # RO
    "4": (View.MLO, Laterality.LEFT),   # LO
}
LABELS = {"Benign": Label.BENIGN, "Malign": Label.MALIGNANT}


def find_outlines_csv(path: Path) -> Path:
    """The ``bcdr_*_outlines.csv`` at ``path`` or up to two folder levels below it."""
    path = Path(path)
    if path.is_file():
        if path.name.lower().startswith("bcdr_") and path.name.lower().endswith("_outlines.csv"):
            return path
        raise DatasetError("expected a BCDR folder or its bcdr_<subset>_outlines.csv", file=path)
    if not path.is_dir():
        raise DatasetError("no such file or folder", file=path)
    for pattern in ("bcdr_*_outlines.csv", "*/bcdr_*_outlines.csv", "*/*/bcdr_*_outlines.csv"):
        found = sorted(p for p in path.glob(pattern) if p.is_file())
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            names = ", ".join(str(p.relative_to(path)) for p in found)
            raise DatasetError(f"several BCDR subsets found ({names}); give the subset folder",
                               file=path)
    raise DatasetError("no bcdr_<subset>_outlines.csv here or up to two folders below", file=path)


def load_bcdr(path: Path | str, log: ProblemLog) -> list[LesionRecord]:
    """Mass-lesion records of one BCDR subset; problems and skips go to ``log``."""
    csv_path = find_outlines_csv(Path(path))
    root = csv_path.parent
    with csv_path.open(encoding="utf-8-sig", errors="replace") as fh:
        first = fh.readline()
    digital = "series" in [c.strip() for c in first.split(",")]
    columns = DIGITAL_COLUMNS if digital else FILM_COLUMNS
    records: list[LesionRecord] = []
    sizes: dict[Path, tuple[int, int] | None] = {}
    for row_no, row in read_csv_rows(csv_path, log, expected=columns):
        rec = _parse_row(row, row_no, csv_path, root, log)
        if rec is None:
            continue
        if rec.image not in sizes:
            sizes[rec.image] = image_size(rec.image, log, file=csv_path, row=row_no,
                                          field="image_filename")
        size = sizes[rec.image]
        if size is not None and check_outline(rec, size, log, fields="lw_x_points/lw_y_points"):
            records.append(rec)
    check_duplicates(records, log, "lesion_id")
    check_classes(records, csv_path, log, "classification")
    return records


def _parse_row(row: dict[str, str], row_no: int, csv_path: Path, root: Path,
               log: ProblemLog) -> LesionRecord | None:
    n_before = len(log.problems)

    def bad(field: str, reason: str) -> None:
        log.add(csv_path, row_no, field, reason)

    nodule = row["mammography_nodule"]
    if nodule not in ("0", "1"):
        bad("mammography_nodule", f"expected 0 or 1, got {nodule!r}")
        return None
    if nodule == "0":
        log.skip("not a mass lesion (mammography_nodule = 0)")
        return None
    for key in ("patient_id", "lesion_id"):
        if not row[key]:
            bad(key, "empty")
    if row["image_view"] not in VIEWS:
        bad("image_view", f"expected 1 (RCC), 2 (LCC), 3 (RO) or 4 (LO), got {row['image_view']!r}")
    if row["classification"] not in LABELS:
        bad("classification", f"expected 'Benign' or 'Malign', got {row['classification']!r}")
    if not row["image_filename"]:
        bad("image_filename", "empty")
    xs = parse_points(row["lw_x_points"], file=csv_path, row=row_no, field="lw_x_points", log=log)
    ys = parse_points(row["lw_y_points"], file=csv_path, row=row_no, field="lw_y_points", log=log)
    if xs is not None and ys is not None and len(xs) != len(ys):
        bad("lw_x_points/lw_y_points", f"{len(xs)} x points but {len(ys)} y points")
    if len(log.problems) > n_before or xs is None or ys is None:
        return None
    view, side = VIEWS[row["image_view"]]
    return LesionRecord(
        patient=row["patient_id"],
        lesion=row["lesion_id"],
        view=view,
        laterality=side,
        label=LABELS[row["classification"]],
        image=root / row["image_filename"].lstrip("/\\"),
        outline=tuple(zip(xs, ys, strict=True)),
        source=SourceRef(csv_path, row_no),
    )

"""Plain manifest CSV for any other dataset.

Columns: ``image,label,patient`` and one geometry: an outline (``x_points,y_points``,
whitespace-separated pixels), a box (``x_min,y_min,x_max,y_max``) or a circle
(``x,y,radius``). Optional: ``lesion``, ``view`` (CC/MLO), ``laterality`` (L/R). Labels are
``benign``/``malignant`` (case-insensitive). Image paths are relative to the CSV's folder;
coordinates use a top-left origin.
"""

from __future__ import annotations

from pathlib import Path

from trainables.datasets._common import (
    check_classes,
    check_duplicates,
    check_outline,
    image_size,
    parse_number,
    parse_points,
    read_csv_rows,
)
from trainables.datasets._mias import circle_outline
from trainables.datasets._problems import ProblemLog
from trainables.records import DatasetError, Label, Laterality, LesionRecord, SourceRef, View

REQUIRED = {"image", "label", "patient"}
GEOMETRIES = (("x_points", "y_points"), ("x_min", "y_min", "x_max", "y_max"), ("x", "y", "radius"))
LABELS = {"benign": Label.BENIGN, "malignant": Label.MALIGNANT}


def find_manifest(path: Path) -> Path:
    path = Path(path)
    if path.is_file():
        return path
    found = sorted(path.glob("*.csv")) if path.is_dir() else []
    if len(found) == 1:
        return found[0]
    raise DatasetError("give the manifest CSV itself (expected exactly one *.csv here)", file=path)


def load_manifest(path: Path | str, log: ProblemLog) -> list[LesionRecord]:
    csv_path = find_manifest(Path(path))
    with csv_path.open(encoding="utf-8-sig", errors="replace") as fh:
        header = {c.strip() for c in fh.readline().split(",")}
    geometry = next((g for g in GEOMETRIES if set(g) <= header), None)
    if geometry is None:
        log.add(csv_path, 1, None, "needs an outline (x_points,y_points), a box "
                "(x_min,y_min,x_max,y_max) or a circle (x,y,radius)")
        return []
    records: list[LesionRecord] = []
    per_image: dict[str, int] = {}
    sizes: dict[Path, tuple[int, int] | None] = {}
    for row_no, row in read_csv_rows(csv_path, log, required=REQUIRED | set(geometry)):
        rec = _parse(row, row_no, csv_path, geometry, log, per_image, sizes)
        if rec is not None:
            records.append(rec)
    check_duplicates(records, log, "lesion")
    check_classes(records, csv_path, log, "label")
    return records


def _parse(row: dict[str, str], row_no: int, csv_path: Path, geometry: tuple[str, ...],
           log: ProblemLog, per_image: dict[str, int],
           sizes: dict[Path, tuple[int, int] | None]) -> LesionRecord | None:
    n_before = len(log.problems)
    label = LABELS.get(row["label"].lower())
    if label is None:
        log.add(csv_path, row_no, "label", f"expected benign or malignant, got {row['label']!r}")
    if not row["patient"]:
        log.add(csv_path, row_no, "patient", "empty")
    if not row["image"]:
        log.add(csv_path, row_no, "image", "empty")
    view = _enum(View, row.get("view", "CC") or "CC", csv_path, row_no, "view", log)
    side = _enum(Laterality, row.get("laterality", "L") or "L", csv_path, row_no,
                 "laterality", log)
    if len(log.problems) > n_before:
        return None
    image = csv_path.parent / row["image"]
    if image not in sizes:
        sizes[image] = image_size(image, log, file=csv_path, row=row_no, field="image")
    size = sizes[image]
    if size is None:
        return None
    outline = _outline(row, row_no, csv_path, geometry, size, log)
    if outline is None:
        return None
    per_image[row["image"]] = per_image.get(row["image"], 0) + 1
    rec = LesionRecord(
        patient=row["patient"],
        lesion=row.get("lesion") or f"{row['image']}#{per_image[row['image']]}",
        view=view, laterality=side, label=label, image=image, outline=outline,  # type: ignore[arg-type]
        source=SourceRef(csv_path, row_no),
    )
    return rec if check_outline(rec, size, log, fields="/".join(geometry)) else None


def _enum(kind, value, file, row, field, log):  # type: ignore[no-untyped-def]
    try:
        return kind(value.upper())
    except ValueError:
        log.add(file, row, field, f"expected one of {[v.value for v in kind]}, got {value!r}")
        return None


def _outline(row: dict[str, str], row_no: int, csv_path: Path, geometry: tuple[str, ...],
             size: tuple[int, int], log: ProblemLog) -> tuple[tuple[float, float], ...] | None:
    if geometry[0] == "x_points":
        xs = parse_points(row["x_points"], file=csv_path, row=row_no, field="x_points", log=log)
        ys = parse_points(row["y_points"], file=csv_path, row=row_no, field="y_points", log=log)
        if xs is None or ys is None:
            return None
        if len(xs) != len(ys):
            log.add(csv_path, row_no, "x_points/y_points",
                    f"{len(xs)} x points but {len(ys)} y points")
            return None
        return tuple(zip(xs, ys, strict=True))
    values = []
    for key in geometry:
        v = parse_number(row[key], file=csv_path, row=row_no, field=key, log=log)
        if v is None:
            return None
        values.append(v)
    if geometry[0] == "x_min":
        x0, y0, x1, y1 = values
        if x1 <= x0 or y1 <= y0:
            log.add(csv_path, row_no, "x_min/x_max/y_min/y_max", "empty or inverted box")
            return None
        return ((x0, y0), (x1, y0), (x1, y1), (x0, y1))
    x, y, r = values
    if not (0 <= x < size[0] and 0 <= y < size[1]):
        log.add(csv_path, row_no, "x/y", f"centre ({x:g}, {y:g}) lies outside the "
                f"{size[0]} × {size[1]} image")
        return None
    if r <= 0:
        log.add(csv_path, row_no, "radius", f"must be > 0, got {r:g}")
        return None
    return circle_outline(x, y, r, *size)

"""Helpers shared by the loaders: CSV rows with line numbers, images, outline checks."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterator
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from trainables.datasets._problems import ProblemLog
from trainables.records import LesionRecord

Image.MAX_IMAGE_PIXELS = 40_000 * 40_000  # full-field digital mammograms are large, not bombs


def read_csv_rows(path: Path, log: ProblemLog, *, delimiter: str = ",",
                  expected: list[str] | None = None,
                  required: set[str] | None = None,
                  header_map: Callable[[str], str] | None = None,
                  ) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line_number, {column: stripped value})`` for each data row of a CSV.

    Every field is stripped (BCDR's digital subsets write ``", value"``). The header must equal
    ``expected`` (order included) or contain ``required``; otherwise the problem is logged and
    nothing is yielded. Rows with the wrong number of fields are logged and skipped.
    ``header_map`` renames the (stripped) header names first, e.g. to normalise CBIS-DDSM's
    ``breast_density`` / ``breast density`` spellings; ``expected``/``required`` use the result.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        log.add(path, None, None, f"not a UTF-8 text file ({exc.reason} at byte {exc.start})")
        return
    except OSError as exc:
        log.add(path, None, None, f"cannot be read: {exc.strerror or exc}")
        return
    if not text.strip():
        log.add(path, None, None, "the file is empty")
        return
    # csv's own line splitting (\n, \r\n, \r; quoted newlines kept): row numbers are the lines
    # an editor shows, and a stray U+2028 or \x85 inside a field does not split a row.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [h.strip() for h in next(reader)]
        if header_map is not None:
            header = [header_map(h) for h in header]
    except csv.Error as exc:
        log.add(path, 1, None, f"unreadable CSV header: {exc}")
        return
    if expected is not None and header != expected:
        missing = [c for c in expected if c not in header]
        extra = [c for c in header if c not in expected]
        detail = []
        if missing:
            detail.append(f"missing {missing}")
        if extra:
            detail.append(f"unexpected {extra}")
        if not detail:
            detail.append(f"columns out of order; expected {expected}")
        log.add(path, 1, None, "wrong columns: " + "; ".join(detail))
        return
    if required is not None and not required <= set(header):
        log.add(path, 1, None, f"wrong columns: missing {sorted(required - set(header))}")
        return
    if len(set(header)) != len(header):
        log.add(path, 1, None, f"duplicate column names in header {header}")
        return
    n_data = 0
    while True:
        line_no = reader.line_num + 1  # first line of the next record
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # e.g. a field over csv's size limit
            n_data += 1
            log.add(path, line_no, None, f"unreadable CSV row: {exc}")
            continue
        if not fields or all(not f.strip() for f in fields):
            continue
        n_data += 1
        if len(fields) != len(header):
            log.add(path, line_no, None,
                    f"has {len(fields)} fields, the header has {len(header)}")
            continue
        yield line_no, {h: f.strip() for h, f in zip(header, fields, strict=True)}
    if n_data == 0:
        log.add(path, None, None, "no data rows below the header")


def parse_points(text: str, *, file: Path, row: int, field: str,
                 log: ProblemLog) -> list[float] | None:
    """Whitespace-separated numbers (BCDR's ``lw_x_points``); logs and returns None if bad."""
    tokens = text.split()
    if not tokens:
        log.add(file, row, field, "no coordinates")
        return None
    values = []
    for tok in tokens:
        v = parse_number(tok, file=file, row=row, field=field, log=log, what="coordinate")
        if v is None:
            return None
        values.append(v)
    return values


def parse_number(text: str, *, file: Path, row: int, field: str, log: ProblemLog,
                 what: str = "value") -> float | None:
    """One finite number; logs ``non-numeric/non-finite <what>`` and returns None if bad."""
    try:
        v = float(text)
    except ValueError:
        log.add(file, row, field, f"non-numeric {what} {text!r}")
        return None
    if not math.isfinite(v):
        log.add(file, row, field, f"non-finite {what} {text!r}")
        return None
    return v


def image_size(path: Path, log: ProblemLog, *, file: Path, row: int | None,
               field: str | None) -> tuple[int, int] | None:
    """``(width, height)`` of an image from its header, or None (problem logged)."""
    if not path.is_file():
        log.add(file, row, field, f"image not found: {path}")
        return None
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        log.add(file, row, field, f"unreadable image {path}: {exc}")
    except Exception as exc:  # noqa: BLE001 -- a damaged file trips decoders in many ways
        log.add(file, row, field, f"unreadable image {path}: {type(exc).__name__}: {exc}")
    return None


def check_outline(rec: LesionRecord, size: tuple[int, int], log: ProblemLog,
                  *, fields: str) -> bool:
    """An outline must have ≥ 3 points, all inside the image (tolerance 1 px)."""
    if len(rec.outline) < 3:
        log.add(rec.source.file, rec.source.row, fields,
                f"outline has {len(rec.outline)} point(s), needs at least 3")
        return False
    w, h = size
    x0, y0, x1, y1 = rec.bbox()
    if x0 < -1 or y0 < -1 or x1 > w or y1 > h:
        log.add(rec.source.file, rec.source.row, fields,
                f"outline bounding box ({x0:g}, {y0:g})–({x1:g}, {y1:g}) lies outside the "
                f"{w} × {h} image {rec.image.name}")
        return False
    return True


def check_duplicates(records: list[LesionRecord], log: ProblemLog, key_name: str) -> None:
    """Two rows describing the same lesion view are an error (naming both rows)."""
    seen: dict[tuple[str, str, str], int] = {}
    for rec in records:
        key = (rec.patient, rec.lesion, str(rec.image))
        if key in seen:
            log.add(rec.source.file, rec.source.row, key_name,
                    f"duplicate of row {seen[key]} (patient {rec.patient}, lesion {rec.lesion}, "
                    f"image {rec.image.name})")
        else:
            seen[key] = rec.source.row


def check_classes(records: list[LesionRecord], file: Path, log: ProblemLog, field: str) -> None:
    """Both classes must be present for a binary study."""
    labels = {r.label for r in records}
    from trainables.records import Label

    for lab in Label:
        if records and lab not in labels:
            log.add(file, None, field, f"no {lab.name.lower()} lesions: the class is empty")

"""mini-MIAS loader (``Info.txt`` + ``mdbNNN.pgm``).

``Info.txt`` rows are ``REFNUM BG CLASS SEVERITY X Y RADIUS``; normal films (``NORM``) and
abnormalities without coordinates (some ``CALC`` rows) are skipped and counted, as are
non-mass classes (``CALC``, ``ARCH``, ``ASYM``) unless asked for. MIAS puts the y origin at the
bottom-left corner: it is flipped to top-left here. The circle (centre, radius) becomes a
64-point polygon, clipped to the image. Films come in left/right pairs of one woman
(mdb001/mdb002, mdb003/mdb004, ...): both get the same patient id, odd numbers left.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from trainables.datasets._common import check_classes, check_duplicates, image_size
from trainables.datasets._problems import ProblemLog
from trainables.records import DatasetError, Label, Laterality, LesionRecord, SourceRef, View

MASS_CLASSES = frozenset({"CIRC", "SPIC", "MISC"})
ALL_CLASSES = frozenset({"CALC", "CIRC", "SPIC", "MISC", "ARCH", "ASYM", "NORM"})
BACKGROUNDS = frozenset({"F", "G", "D"})
SEVERITY = {"B": Label.BENIGN, "M": Label.MALIGNANT}
_REFNUM = re.compile(r"^mdb(\d{3})$")
CIRCLE_POINTS = 64


def find_info(path: Path) -> Path:
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise DatasetError("no such file or folder", file=path)
    for pattern in ("Info.txt", "info.txt", "*/Info.txt", "*/info.txt"):
        found = sorted(path.glob(pattern))
        if found:
            return found[0]
    raise DatasetError("no mini-MIAS Info.txt here or one folder below", file=path)


def circle_outline(cx: float, cy: float, r: float, width: int, height: int,
                   n: int = CIRCLE_POINTS) -> tuple[tuple[float, float], ...]:
    """A circle as an ``n``-point polygon (top-left origin), clipped to the image."""
    pts = []
    for k in range(n):
        a = 2 * math.pi * k / n
        x = min(max(cx + r * math.cos(a), 0.0), width - 1.0)
        y = min(max(cy + r * math.sin(a), 0.0), height - 1.0)
        pts.append((x, y))
    return tuple(pts)


def load_mias(path: Path | str, log: ProblemLog, *,
              classes: frozenset[str] = MASS_CLASSES) -> list[LesionRecord]:
    """Lesion records of mini-MIAS (masses by default); problems and skips go to ``log``."""
    info = find_info(Path(path))
    root = info.parent
    try:
        text = info.read_text(encoding="utf-8", errors="strict")
        # \n, \r\n, \r only (not str.splitlines' \x0b, \x85, U+2028...): rows as editors count
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    except (UnicodeDecodeError, OSError) as exc:
        raise DatasetError(f"cannot be read as text: {exc}", file=info) from exc
    records: list[LesionRecord] = []
    per_film: dict[str, int] = {}
    sizes: dict[Path, tuple[int, int] | None] = {}
    n_rows = 0
    for row_no, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens:
            continue
        n_rows += 1
        rec = _parse(tokens, row_no, info, root, log, classes, per_film, sizes)
        if rec is not None:
            records.append(rec)
    if n_rows == 0:
        log.add(info, None, None, "the file has no rows")
    check_duplicates(records, log, "REFNUM")
    check_classes(records, info, log, "SEVERITY")
    return records


def _parse(tokens: list[str], row: int, info: Path, root: Path, log: ProblemLog,
           classes: frozenset[str], per_film: dict[str, int],
           sizes: dict[Path, tuple[int, int] | None]) -> LesionRecord | None:
    ref = tokens[0]
    m = _REFNUM.match(ref)
    if m is None:
        log.add(info, row, "REFNUM", f"expected 'mdbNNN', got {ref!r}")
        return None
    if len(tokens) < 3:
        log.add(info, row, "CLASS", f"row has {len(tokens)} fields, needs at least 3")
        return None
    bg, cls = tokens[1], tokens[2]
    if bg not in BACKGROUNDS:
        log.add(info, row, "BG", f"expected F, G or D, got {bg!r}")
        return None
    if cls not in ALL_CLASSES:
        log.add(info, row, "CLASS", f"unknown class {cls!r}; expected one of {sorted(ALL_CLASSES)}")
        return None
    if cls == "NORM":
        log.skip("normal film (CLASS = NORM)")
        return None
    if len(tokens) not in (4, 7):
        log.add(info, row, "X/Y/RADIUS", f"row has {len(tokens)} fields; expected 4 or 7")
        return None
    if tokens[3] not in SEVERITY:
        log.add(info, row, "SEVERITY", f"expected B or M, got {tokens[3]!r}")
        return None
    if len(tokens) == 4:
        log.skip("abnormality without coordinates")
        return None
    if cls not in classes:
        log.skip(f"not a selected class ({cls})")
        return None
    try:
        x, y, r = (float(t) for t in tokens[4:7])
    except ValueError:
        log.add(info, row, "X/Y/RADIUS", f"non-numeric value in {tokens[4:7]}")
        return None
    if not all(math.isfinite(v) for v in (x, y, r)) or r <= 0:
        log.add(info, row, "X/Y/RADIUS", f"invalid circle {tokens[4:7]} (radius must be > 0)")
        return None
    image = root / f"{ref}.pgm"
    if image not in sizes:
        sizes[image] = image_size(image, log, file=info, row=row, field="REFNUM")
    size = sizes[image]
    if size is None:
        return None
    w, h = size
    cy = (h - 1) - y  # bottom-left origin -> top-left
    if not (0 <= x < w and 0 <= cy < h):
        log.add(info, row, "X/Y", f"centre ({x:g}, {y:g}) lies outside the {w} × {h} image")
        return None
    number = int(m.group(1))
    per_film[ref] = per_film.get(ref, 0) + 1
    return LesionRecord(
        patient=f"mias{(number + 1) // 2:03d}",
        lesion=f"{ref}_{per_film[ref]}",
        view=View.MLO,
        laterality=Laterality.LEFT if number % 2 == 1 else Laterality.RIGHT,
        label=SEVERITY[tokens[3]],
        image=image,
        outline=circle_outline(x, cy, r, w, h),
        source=SourceRef(info, row),
    )

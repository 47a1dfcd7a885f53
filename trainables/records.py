"""The one record type every lesion-dataset loader produces.

A :class:`LesionRecord` is one *view* of one lesion: a lesion seen in a CC and an MLO view
gives two records with the same ``patient`` and ``lesion``. Outlines are pixel coordinates
with the origin at the image's top-left corner, x to the right, y down (loaders convert
datasets that use another origin, such as mini-MIAS).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path


class Label(enum.IntEnum):
    """Class label; the integer is the training target (malignant = positive class)."""

    BENIGN = 0
    MALIGNANT = 1


class View(enum.StrEnum):
    CC = "CC"
    MLO = "MLO"


class Laterality(enum.StrEnum):
    LEFT = "L"
    RIGHT = "R"


@dataclass(frozen=True)
class SourceRef:
    """Where a record came from, for error messages: file and 1-based line number."""

    file: Path
    row: int

    def __str__(self) -> str:
        return f"{self.file}, row {self.row}"


@dataclass(frozen=True)
class LesionRecord:
    """One view of one lesion.

    ``outline`` is a closed polygon as ``((x0, y0), (x1, y1), ...)`` in pixels, top-left origin
    (the closing edge from the last point back to the first is implied). ``subset`` is the
    dataset's own partition where it publishes one (CBIS-DDSM: ``"train"`` / ``"test"``), for
    ``splits.mode: official``; ``None`` elsewhere.
    """

    patient: str
    lesion: str
    view: View
    laterality: Laterality
    label: Label
    image: Path
    outline: tuple[tuple[float, float], ...]
    source: SourceRef
    subset: str | None = None

    @property
    def lesion_key(self) -> str:
        """Dataset-unique lesion identifier (patient + lesion)."""
        return f"{self.patient}/{self.lesion}"

    def bbox(self) -> tuple[float, float, float, float]:
        """Outline bounding box ``(x_min, y_min, x_max, y_max)`` in pixels."""
        xs = [p[0] for p in self.outline]
        ys = [p[1] for p in self.outline]
        return min(xs), min(ys), max(xs), max(ys)


class DatasetError(ValueError):
    """Bad dataset input. The message names the file, the row and the field."""

    def __init__(self, message: str, *, file: Path | str | None = None,
                 row: int | None = None, field: str | None = None) -> None:
        where = []
        if file is not None:
            where.append(str(file))
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        self.file, self.row, self.field = file, row, field
        self.reason = message
        super().__init__(f"{', '.join(where)}: {message}" if where else message)

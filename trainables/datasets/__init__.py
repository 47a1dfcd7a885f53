"""Lesion-dataset loaders, each reading a dataset exactly as it is distributed.

``load_dataset(path, "bcdr" | "mias" | "manifest")`` returns every lesion view as a
:class:`~trainables.records.LesionRecord`, with deliberate skips counted and every problem
found listed; ``strict=True`` (the default) raises :class:`DatasetProblems` naming the file,
row and field of each problem before anything trains.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from trainables.datasets._bcdr import find_outlines_csv, load_bcdr
from trainables.datasets._manifest import find_manifest, load_manifest
from trainables.datasets._mias import find_info, load_mias
from trainables.datasets._problems import DatasetProblems, Problem, ProblemLog
from trainables.records import DatasetError, Label, LesionRecord

DatasetFormat = Literal["bcdr", "mias", "manifest"]
FORMATS: tuple[str, ...] = get_args(DatasetFormat)


@dataclass(frozen=True)
class LoadedDataset:
    """Records of one dataset plus what was skipped (counted) and what is wrong (listed)."""

    format: str
    annotation_file: Path
    records: tuple[LesionRecord, ...]
    skipped: dict[str, int] = field(default_factory=dict)
    problems: tuple[Problem, ...] = ()

    @property
    def images(self) -> list[Path]:
        """Distinct image files used by the records, sorted."""
        return sorted({r.image for r in self.records})

    def summary(self) -> dict[str, object]:
        recs = self.records
        return {
            "format": self.format,
            "images": len(self.images),
            "lesions": len({r.lesion_key for r in recs}),
            "views": len(recs),
            "patients": len({r.patient for r in recs}),
            "benign": sum(r.label == Label.BENIGN for r in recs),
            "malignant": sum(r.label == Label.MALIGNANT for r in recs),
            "skipped": dict(self.skipped),
        }


def annotation_file(path: Path | str, fmt: str) -> Path:
    finders = {"bcdr": find_outlines_csv, "mias": find_info, "manifest": find_manifest}
    return finders[_check_format(fmt)](Path(path))


def load_dataset(path: Path | str, fmt: str, *, strict: bool = True) -> LoadedDataset:
    """Load a dataset in its native layout. ``strict`` raises if any problem was found."""
    fmt = _check_format(fmt)
    log = ProblemLog()
    loader = {"bcdr": load_bcdr, "mias": load_mias, "manifest": load_manifest}[fmt]
    records = loader(Path(path), log)
    if strict:
        log.raise_if_any()
    return LoadedDataset(fmt, annotation_file(path, fmt), tuple(records), dict(log.skipped),
                         tuple(log.problems))


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise DatasetError(f"unknown dataset format {fmt!r}; expected one of {list(FORMATS)}")
    return fmt


__all__ = [
    "FORMATS", "DatasetError", "DatasetFormat", "DatasetProblems", "LoadedDataset", "Problem",
    "annotation_file", "load_dataset",
]

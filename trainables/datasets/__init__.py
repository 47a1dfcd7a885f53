"""Lesion-dataset loaders, each reading a dataset exactly as it is distributed.

``load_dataset(path, "bcdr" | "mias" | "manifest" | "cbis-ddsm" | "inbreast")`` returns every
lesion view as a
:class:`~trainables.records.LesionRecord`, with deliberate skips counted and every problem
found listed; ``strict=True`` (the default) raises :class:`DatasetProblems` naming the file,
row and field of each problem before anything trains.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from trainables.datasets._bcdr import find_outlines_csv, load_bcdr
from trainables.datasets._cbis import CbisOptions, cbis_sources, find_cbis_csv, load_cbis
from trainables.datasets._dicom import DicomDecoderMissing
from trainables.datasets._inbreast import InbreastOptions, find_inbreast_csv, load_inbreast
from trainables.datasets._manifest import find_manifest, load_manifest
from trainables.datasets._mias import find_info, load_mias
from trainables.datasets._problems import DatasetProblems, Problem, ProblemLog
from trainables.records import DatasetError, Label, LesionRecord

DatasetFormat = Literal["bcdr", "mias", "manifest", "cbis-ddsm", "inbreast"]
FORMATS: tuple[str, ...] = get_args(DatasetFormat)
#: formats whose images are DICOM (read with pydicom; see ``_dicom.py``)
DICOM_FORMATS: tuple[str, ...] = ("cbis-ddsm", "inbreast")


@dataclass(frozen=True)
class LoadOptions:
    """Format-specific choices: CBIS-DDSM calcifications, the INbreast BI-RADS threshold."""

    cbis: CbisOptions = CbisOptions()
    inbreast: InbreastOptions = InbreastOptions()

    def label_rule(self, fmt: str) -> str:
        """How the format's labels were derived, as ``study.data check`` prints it."""
        return {
            "bcdr": "classification Benign → benign, Malign → malignant",
            "mias": "SEVERITY B → benign, M → malignant",
            "manifest": "label benign / malignant",
            "cbis-ddsm": self.cbis.label_rule(),
            "inbreast": self.inbreast.label_rule(),
        }[fmt]


@dataclass(frozen=True)
class LoadedDataset:
    """Records of one dataset plus what was skipped (counted) and what is wrong (listed)."""

    format: str
    annotation_file: Path
    records: tuple[LesionRecord, ...]
    skipped: dict[str, int] = field(default_factory=dict)
    problems: tuple[Problem, ...] = ()
    #: other files whose contents decide the records (INbreast XMLs, CBIS CSVs and masks)
    sources: tuple[Path, ...] = ()
    label_rule: str = ""

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
            "label_rule": self.label_rule,
        }


def annotation_file(path: Path | str, fmt: str) -> Path:
    finders = {"bcdr": find_outlines_csv, "mias": find_info, "manifest": find_manifest,
               "cbis-ddsm": find_cbis_csv, "inbreast": find_inbreast_csv}
    return finders[_check_format(fmt)](Path(path))


def load_dataset(path: Path | str, fmt: str, *, strict: bool = True,
                 options: LoadOptions = LoadOptions()) -> LoadedDataset:
    """Load a dataset in its native layout. ``strict`` raises if any problem was found."""
    fmt = _check_format(fmt)
    log = ProblemLog()
    path = Path(path)
    if fmt == "cbis-ddsm":
        records = load_cbis(path, log, options.cbis)
    elif fmt == "inbreast":
        records = load_inbreast(path, log, options.inbreast)
    else:
        records = {"bcdr": load_bcdr, "mias": load_mias, "manifest": load_manifest}[fmt](path, log)
    if strict:
        log.raise_if_any()
    annotation = annotation_file(path, fmt)
    return LoadedDataset(fmt, annotation, tuple(records), dict(log.skipped),
                         tuple(log.problems), _sources(path, fmt, annotation, records),
                         options.label_rule(fmt))


def _sources(path: Path, fmt: str, annotation: Path,
             records: list[LesionRecord]) -> tuple[Path, ...]:
    """Files besides the annotation file and the images that decide the records' content."""
    if fmt == "inbreast":
        xml = annotation.parent / "AllXML"
        return tuple(sorted({xml / f"{r.lesion.split('#')[0]}.xml" for r in records}))
    if fmt == "cbis-ddsm":
        csvs = [p for p in cbis_sources(path) if p != annotation]
        return tuple(csvs)
    return ()


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise DatasetError(f"unknown dataset format {fmt!r}; expected one of {list(FORMATS)}")
    return fmt


__all__ = [
    "DICOM_FORMATS", "FORMATS", "CbisOptions", "DicomDecoderMissing", "InbreastOptions",
    "LoadOptions", "DatasetError", "DatasetFormat", "DatasetProblems", "LoadedDataset", "Problem",
    "annotation_file", "load_dataset",
]

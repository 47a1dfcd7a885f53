"""Where CBIS-DDSM's images are: the TCIA DICOM download or the widely shared JPEG conversion.

Both are indexed as *case folder name* (``MASS-TRAINING_P_00001_LEFT_CC``, upper case) → image
files; the loader then tells the mammogram, the ROI mask and the crop apart by size and content.

- DICOM (NBIA Data Retriever): ``CBIS-DDSM/<case folder>/<study>/<series>/1-1.dcm``.
- JPEG conversion (Kaggle "CBIS-DDSM Breast Cancer Image Dataset"): ``jpeg/<SeriesInstanceUID>/
  1-<n>.jpg`` with ``csv/dicom_info.csv`` mapping each file (``image_path``, written as
  ``CBIS-DDSM/jpeg/<uid>/1-1.jpg``) to its case folder (``PatientID``) and series
  (``SeriesDescription``, empty on some rows). As public readers of it show; the conversion is
  8-bit and lossy, so masks are near-binary rather than binary (see :func:`mask_bbox`).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from trainables.datasets._dicom import dicom_size, read_dicom
from trainables.records import DatasetError

CASE_RE = re.compile(r"^(Mass|Calc)-(Training|Test)_(P_\d+)_(LEFT|RIGHT)_(CC|MLO)(?:_(\d+))?$",
                     re.IGNORECASE)
DICOM_INFO = "dicom_info.csv"


def index_cases(csv_dir: Path, given: Path) -> tuple[dict[str, list[Path]], Path | None]:
    """Case folder → its image files, and the ``dicom_info.csv`` used (JPEG tree) or None."""
    given = given if given.is_dir() else given.parent
    for info in dict.fromkeys([csv_dir / DICOM_INFO, given / DICOM_INFO,
                               given / "csv" / DICOM_INFO]):
        if info.is_file():
            return _index_jpeg(info), info
    candidates = [csv_dir / "CBIS-DDSM", csv_dir, given / "CBIS-DDSM", given,
                  csv_dir.parent / "CBIS-DDSM", csv_dir.parent]
    for folder in dict.fromkeys(candidates):
        if not folder.is_dir():
            continue
        cases = {d.name.upper(): sorted(d.rglob("*.dcm")) for d in folder.iterdir()
                 if d.is_dir() and CASE_RE.match(d.name)}
        if cases:
            return cases, None
    return {}, None


def _index_jpeg(info: Path) -> dict[str, list[Path]]:
    """Case folder → JPEG files, from ``dicom_info.csv``; paths resolved against its folder's
    parent (``csv/../jpeg/...``), with or without their ``CBIS-DDSM/`` prefix."""
    base = info.parent.parent if info.parent.name.lower() == "csv" else info.parent
    cases: dict[str, list[Path]] = {}
    try:
        rows = list(csv.DictReader(info.read_text(encoding="utf-8-sig").splitlines()))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"unreadable: {exc}", file=info) from exc
    for row in rows:
        case = (row.get("PatientID") or "").strip()
        rel = (row.get("image_path") or "").strip().replace("\\", "/")
        if not CASE_RE.match(case) or not rel:
            continue
        parts = [p for p in rel.split("/") if p]
        for k in range(len(parts)):
            path = base.joinpath(*parts[k:])
            if path.is_file():
                cases.setdefault(case.upper(), []).append(path)
                break
    return {k: sorted(v) for k, v in cases.items()}


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of a DICOM or JPEG/PNG file, from its header."""
    if path.suffix.lower() == ".dcm":
        return dicom_size(path)
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DatasetError(f"unreadable image: {exc}", file=path) from exc
    except Exception as exc:  # noqa: BLE001 -- damaged files trip decoders in many ways
        raise DatasetError(f"unreadable image: {type(exc).__name__}", file=path) from exc


def pixels(path: Path) -> np.ndarray:
    """``(H, W)`` grey levels of a DICOM or JPEG/PNG file."""
    if path.suffix.lower() == ".dcm":
        return read_dicom(path)
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("L") if im.mode not in ("L", "I;16") else im)
    except Exception as exc:  # noqa: BLE001
        raise DatasetError(f"unreadable image: {type(exc).__name__}: {exc}", file=path) from exc
    return arr


def mask_bbox(px: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box ``(x0, y0, x1, y1)`` if ``px`` looks like a lesion mask, else None.

    A mask is (near-)binary: besides 0 and its maximum, fewer than 1 % of its pixels hold
    in-between values (JPEG's ringing at the edges of a lossy mask), and its bright part covers
    less than half of the image. A crop or a mammogram has many grey levels.
    """
    hi = int(px.max(initial=0))
    if hi == 0:
        return None
    lo_cut, hi_cut = hi * 0.15, hi * 0.85
    middle = np.count_nonzero((px > lo_cut) & (px < hi_cut))
    bright = px >= hi / 2
    if middle > 0.01 * px.size or not bright.any() or bright.mean() > 0.5:
        return None
    ys, xs = np.nonzero(bright)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())

"""ROI extraction: a fixed-size square around each lesion, cached per dataset.

Geometry (pure, see :func:`roi_window`): a square of side ``size`` centred on the outline's
bounding box. A lesion larger than that is, by the default ``large="resize"`` policy, cropped
to its bounding square and resized down to ``size`` (``large="crop"`` keeps the fixed crop and
cuts the lesion). Parts of the window outside the image are padded (``pad="zero"``, ``"edge"``,
``"reflect"``) or the window is shifted inside the image where it fits (``pad="shift"``).

ROIs keep the image's grey levels (uint8 for 8-bit films, uint16 for 14-bit digital
mammograms); global contrast normalisation happens on the fly in the trainable.

The extracted set is cached as one ``.npz`` per dataset, keyed by a fingerprint of the source
files' contents and the ROI settings (:func:`dataset_fingerprint`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from trainables._roiset import RoiSet
from trainables.datasets import LoadedDataset
from trainables.datasets._problems import ProblemLog
from trainables.records import DatasetError, LesionRecord

log = logging.getLogger(__name__)

ROI_ALGORITHM_VERSION = 1  # bump when extraction changes: invalidates every cache
LargePolicy = Literal["resize", "crop"]
PadPolicy = Literal["zero", "edge", "reflect", "shift"]


@dataclass(frozen=True)
class RoiConfig:
    """How ROIs are cut. ``size`` in pixels (the paper: 299)."""

    size: int = 299
    large: LargePolicy = "resize"
    pad: PadPolicy = "zero"

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or self.size < 8:
            raise ValueError(f"ROI size must be an integer ≥ 8 pixels, got {self.size!r}")
        if self.large not in ("resize", "crop"):
            raise ValueError(f"large-lesion policy must be 'resize' or 'crop', got {self.large!r}")
        if self.pad not in ("zero", "edge", "reflect", "shift"):
            raise ValueError(
                f"pad policy must be zero, edge, reflect or shift, got {self.pad!r}")


@dataclass(frozen=True)
class Window:
    """A square crop window in image pixels: top-left ``(x0, y0)``, side ``side``."""

    x0: int
    y0: int
    side: int

    def outside(self, width: int, height: int) -> bool:
        return (self.x0 < 0 or self.y0 < 0 or self.x0 + self.side > width
                or self.y0 + self.side > height)


def roi_window(bbox: tuple[float, float, float, float], image_size: tuple[int, int],
               config: RoiConfig) -> Window:
    """The crop window for an outline bounding box ``(x0, y0, x1, y1)`` in a ``(w, h)`` image."""
    x0, y0, x1, y1 = bbox
    w, h = image_size
    extent = int(np.ceil(max(x1 - x0, y1 - y0))) + 1
    side = max(config.size, extent) if config.large == "resize" else config.size
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    wx, wy = int(np.floor(cx - side / 2.0 + 0.5)), int(np.floor(cy - side / 2.0 + 0.5))
    if config.pad == "shift":
        wx = min(max(wx, 0), max(w - side, 0))
        wy = min(max(wy, 0), max(h - side, 0))
    return Window(wx, wy, side)


def crop(image: np.ndarray, window: Window, pad: PadPolicy) -> np.ndarray:
    """Cut ``window`` out of a ``(H, W)`` image, padding what lies outside it."""
    h, w = image.shape
    x0, y0, s = window.x0, window.y0, window.side
    before_x, before_y = max(0, -x0), max(0, -y0)
    after_x, after_y = max(0, x0 + s - w), max(0, y0 + s - h)
    inner = image[max(y0, 0):min(y0 + s, h), max(x0, 0):min(x0 + s, w)]
    if not (before_x or before_y or after_x or after_y):
        return inner.copy()
    mode = {"zero": "constant", "shift": "constant", "edge": "edge", "reflect": "symmetric"}[pad]
    if inner.size == 0:  # window entirely outside: nothing to reflect
        return np.zeros((s, s), image.dtype)
    return np.pad(inner, ((before_y, after_y), (before_x, after_x)), mode=mode)


def resize(roi: np.ndarray, size: int) -> np.ndarray:
    """Area-style resize of a square uint8/uint16 ROI to ``size`` × ``size``, same dtype."""
    if roi.shape[0] == size:
        return roi
    im = Image.fromarray(roi.astype(np.float32), mode="F")
    out = np.asarray(im.resize((size, size), Image.Resampling.BOX), dtype=np.float32)
    info = np.iinfo(roi.dtype)
    return np.clip(np.rint(out), info.min, info.max).astype(roi.dtype)


def read_image(path: Path) -> np.ndarray:
    """A greyscale image as ``(H, W)`` uint8 or uint16 (DICOM files through pydicom)."""
    if path.suffix.lower() == ".dcm":
        from trainables.datasets._dicom import read_dicom

        return read_dicom(path)
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"unreadable image: {exc}", file=path) from exc
    except Exception as exc:  # noqa: BLE001 -- damaged files (bombs, bad tags) fail in many ways
        raise DatasetError(f"unreadable image: {type(exc).__name__}: {exc}", file=path) from exc
    if arr.ndim == 3:  # RGB(A) export of a grey film: keep one channel
        arr = arr[..., 0]
    if arr.dtype == np.uint8 or arr.dtype == np.uint16:
        return arr
    if arr.dtype.kind in "iu" and arr.min() >= 0 and arr.max() <= 65535:
        return arr.astype(np.uint16)
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    raise DatasetError(f"unsupported pixel type {arr.dtype} (expected 8- or 16-bit grey)",
                       file=path)


# ---------------------------------------------------------------------------------- fingerprints

def file_digest(path: Path, *, chunk: int = 1 << 20) -> str:
    h = hashlib.blake2b(digest_size=16)
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def source_fingerprint(dataset: LoadedDataset) -> str:
    """Digest of the annotation file and every image the records use (contents, not dates)."""
    root = dataset.annotation_file.parent
    h = hashlib.blake2b(digest_size=16)
    h.update(dataset.format.encode())
    for path in [dataset.annotation_file, *dataset.sources, *dataset.images]:
        h.update(_relative(path, root).encode() + b"\0" + file_digest(path).encode())
    if dataset.sources or dataset.format in ("cbis-ddsm", "inbreast"):
        # outlines derived from files not listed (CBIS-DDSM masks): hash what was derived
        for rec in dataset.records:
            h.update(repr((_relative(rec.image, root), rec.lesion, rec.outline,
                           int(rec.label), rec.subset)).encode())
    return h.hexdigest()


def dataset_fingerprint(source: str, config: RoiConfig) -> str:
    """Fingerprint of (source files' contents, ROI settings, extraction algorithm)."""
    payload = json.dumps({"source": source, "roi": asdict(config),
                          "algorithm": ROI_ALGORITHM_VERSION}, sort_keys=True)
    return hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()


def sample_id(salt: str, rec: LesionRecord, root: Path) -> str:
    """Anonymous id of one lesion view: keyed hash of its image path and lesion.

    The key is the dataset's source fingerprint, i.e. derived from the files' contents: the same
    sample has the same id on every machine and in every re-study of unchanged data, and
    nobody without the data can reverse it to a patient id or file name.
    """
    msg = f"{_relative(rec.image, root)}|{rec.patient}|{rec.lesion}".encode()
    return "s" + hashlib.blake2b(msg, key=bytes.fromhex(salt)[:64], digest_size=8).hexdigest()


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


# ---------------------------------------------------------------------------------- extraction

@dataclass(frozen=True)
class RoiSummary:
    """How many ROIs were cut as-is, resized down (large lesion), cut (crop policy) or padded."""

    rois: int
    fitted: int
    resized: int
    lesion_cut: int
    padded: int


def extract_rois(dataset: LoadedDataset, config: RoiConfig, *,
                 cache_dir: Path | None = None) -> tuple[RoiSet, RoiSummary]:
    """ROIs for every record, from the cache when the fingerprint matches."""
    if not dataset.records:
        raise DatasetError("the dataset has no usable lesions", file=dataset.annotation_file)
    source = source_fingerprint(dataset)
    fingerprint = dataset_fingerprint(source, config)
    cache = Path(cache_dir) / f"rois-{fingerprint}.npz" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        try:
            return _read_cache(cache, fingerprint)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ROI cache %s unreadable (%s); extracting again", cache, exc)
    rois, summary = _extract(dataset, config, source, fingerprint)
    if cache is not None:
        _write_cache(cache, rois, summary)
    return rois, summary


def _extract(dataset: LoadedDataset, config: RoiConfig, source: str,
             fingerprint: str) -> tuple[RoiSet, RoiSummary]:
    root = dataset.annotation_file.parent
    by_image: dict[Path, list[int]] = {}
    for i, rec in enumerate(dataset.records):
        by_image.setdefault(rec.image, []).append(i)
    out: list[np.ndarray | None] = [None] * len(dataset.records)
    counts = {"fitted": 0, "resized": 0, "lesion_cut": 0, "padded": 0}
    problems = ProblemLog()
    for path, idx in by_image.items():
        try:
            image = read_image(path)
        except DatasetError as exc:
            first = dataset.records[idx[0]].source
            problems.add(first.file, first.row, "image", f"{path}: {exc.reason}")
            continue
        h, w = image.shape
        for i in idx:
            rec = dataset.records[i]
            win = roi_window(rec.bbox(), (w, h), config)
            roi = crop(image, win, config.pad)
            if win.outside(w, h):
                counts["padded"] += 1
            if win.side > config.size:
                counts["resized"] += 1
            else:
                x0, y0, x1, y1 = rec.bbox()
                if max(x1 - x0, y1 - y0) + 1 > config.size:
                    counts["lesion_cut"] += 1
                else:
                    counts["fitted"] += 1
            out[i] = resize(roi, config.size)
    problems.raise_if_any()
    dtype = np.uint16 if any(r.dtype == np.uint16 for r in out if r is not None) else np.uint8
    images = np.stack([np.asarray(r, dtype=dtype) for r in out])
    recs = dataset.records
    rois = RoiSet(
        images=images,
        labels=np.array([int(r.label) for r in recs], dtype=np.int64),
        patients=np.array([r.patient for r in recs], dtype=object),
        lesions=np.array([r.lesion_key for r in recs], dtype=object),
        sample_ids=np.array([sample_id(source, r, root) for r in recs], dtype=object),
        fingerprint=fingerprint,
    )
    return rois, RoiSummary(rois=len(recs), **counts)


def _write_cache(path: Path, rois: RoiSet, summary: RoiSummary) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    try:
        np.savez(tmp, images=rois.images, labels=rois.labels,
                 patients=rois.patients.astype(str), lesions=rois.lesions.astype(str),
                 sample_ids=rois.sample_ids.astype(str), fingerprint=np.array(rois.fingerprint),
                 summary=np.array(json.dumps(asdict(summary))))
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the new one
    finally:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written cache behind


def _read_cache(path: Path, fingerprint: str) -> tuple[RoiSet, RoiSummary]:
    with np.load(path, allow_pickle=False) as z:
        if str(z["fingerprint"]) != fingerprint:
            raise ValueError("fingerprint mismatch")
        rois = RoiSet(z["images"], z["labels"], z["patients"].astype(object),
                      z["lesions"].astype(object), z["sample_ids"].astype(object), fingerprint)
        summary = RoiSummary(**json.loads(str(z["summary"])))
    log.info("ROIs read from cache %s", path)
    return rois, summary



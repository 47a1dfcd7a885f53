"""Reading mammograms stored as DICOM (pydicom), the way a training pipeline needs them.

What this module guarantees:

- **Pixels, nothing else.** Only the pixel module's attributes are read (rows, columns, bits,
  photometric interpretation, transfer syntax; the VOI window only when asked). No header value
  that identifies a person or a study (names, ids, dates, UIDs) is returned, logged or put in an
  error message: errors name the file and the attribute, never its value (technical values such
  as the transfer syntax or the bit depth excepted).
- **Decoders declared.** Uncompressed data (CBIS-DDSM and INbreast ship uncompressed, as far
  as public readers of them show) and RLE/deflate need pydicom alone. Compressed transfer
  syntaxes need a decoder plugin (``pylibjpeg`` + ``pylibjpeg-libjpeg``/``-openjpeg``, or
  ``gdcm``; pyproject's ``dicom-codecs`` extra); when it is missing :class:`DicomDecoderMissing`
  says which transfer syntax and what to install, before anything trains.
- **MONOCHROME1** (0 = white) is inverted to the MONOCHROME2 convention every other loader uses.
- **BitsStored** is respected: values are masked to the stored bits (12, 14 or 16 bits), signed
  data is shifted to unsigned, and the result is uint8 (≤ 8 bits stored) or uint16, keeping the
  grey levels (global contrast normalisation happens later, per ROI).
- **Windowing** (the VOI LUT / WindowCenter-Width) is *not* applied unless ``window=True``:
  it is a display choice that would clip tissue the network could use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainables.records import DatasetError

try:  # pydicom is a declared dependency; a clear message if an environment lacks it
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import get_decoder
except ImportError:  # pragma: no cover - exercised only where pydicom is missing
    pydicom = None  # type: ignore[assignment]

#: where to look up a decoder when a compressed transfer syntax has none
CODEC_HINT = ("pip install 'tlstudy[dicom-codecs]' (pylibjpeg, pylibjpeg-libjpeg, "
              "pylibjpeg-openjpeg) or python-gdcm")


class DicomDecoderMissing(DatasetError):
    """The file's pixel data is compressed with a transfer syntax no installed plugin decodes."""


def _require_pydicom(path: Path) -> None:
    if pydicom is None:  # pragma: no cover
        raise DatasetError("reading DICOM needs pydicom (pip install 'pydicom>=3,<4')", file=path)


def _read(path: Path, *, pixels: bool):  # type: ignore[no-untyped-def]
    _require_pydicom(path)
    if not path.is_file():
        raise DatasetError(f"DICOM file not found: {path}", file=path)
    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels, force=False)
    except InvalidDicomError as exc:
        raise DatasetError(f"not a DICOM file ({exc})", file=path) from exc
    except Exception as exc:  # noqa: BLE001 -- damaged files fail in many ways inside pydicom
        raise DatasetError(f"unreadable DICOM file: {type(exc).__name__}", file=path) from exc


def _int_attr(ds, name: str, path: Path, *, default: int | None = None) -> int:  # type: ignore[no-untyped-def]
    value = ds.get(name, default)
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise DatasetError(f"DICOM attribute {name} missing or not an integer",
                           file=path) from None
    return out


def dicom_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the header alone (pixel data not read)."""
    ds = _read(Path(path), pixels=False)
    rows, cols = _int_attr(ds, "Rows", path), _int_attr(ds, "Columns", path)
    if rows < 1 or cols < 1 or rows * cols > 40_000 * 40_000:
        raise DatasetError(f"implausible image size {cols} × {rows}", file=path)
    return cols, rows


def read_dicom(path: Path | str, *, window: bool = False) -> np.ndarray:
    """A greyscale DICOM image as ``(H, W)`` uint8 (≤ 8 bits stored) or uint16.

    Raises :class:`DicomDecoderMissing` for compressed data without a decoder and
    :class:`DatasetError` (naming the file) for anything else that is wrong.
    """
    path = Path(path)
    ds = _read(path, pixels=True)
    if "PixelData" not in ds:
        raise DatasetError("DICOM file has no pixel data", file=path)
    meta = getattr(ds, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if syntax is None:
        raise DatasetError("DICOM file meta has no TransferSyntaxUID", file=path)
    _check_decoder(syntax, path)
    samples = _int_attr(ds, "SamplesPerPixel", path, default=1)
    frames = _int_attr(ds, "NumberOfFrames", path, default=1)
    if samples != 1:
        raise DatasetError(f"expected a greyscale image, got SamplesPerPixel = {samples}",
                           file=path)
    if frames != 1:
        raise DatasetError(f"expected one frame, got NumberOfFrames = {frames}", file=path)
    bits_stored = _int_attr(ds, "BitsStored", path)
    bits_alloc = _int_attr(ds, "BitsAllocated", path)
    if not 1 <= bits_stored <= 16 or bits_alloc not in (8, 16) or bits_stored > bits_alloc:
        raise DatasetError(f"unsupported bit depth: BitsStored {bits_stored}, BitsAllocated "
                           f"{bits_alloc} (expected up to 16 bits)", file=path)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DatasetError(f"expected PhotometricInterpretation MONOCHROME1 or MONOCHROME2, "
                           f"got {photometric or 'none'}", file=path)
    try:
        raw = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 -- truncated or inconsistent pixel data
        raise DatasetError(f"unreadable DICOM pixel data: {type(exc).__name__}: "
                           f"{_safe(exc)}", file=path) from exc
    if raw.ndim != 2:
        raise DatasetError(f"expected a 2-D image, got pixel array of shape {raw.shape}",
                           file=path)
    arr = _to_unsigned(raw, bits_stored, int(ds.get("PixelRepresentation", 0) or 0))
    if photometric == "MONOCHROME1":
        arr = (2 ** bits_stored - 1) - arr
    if window:
        arr = _apply_window(ds, arr, bits_stored, path)
    return arr.astype(np.uint8 if bits_stored <= 8 and not window else np.uint16)


def _check_decoder(syntax, path: Path) -> None:  # type: ignore[no-untyped-def]
    try:
        decoder = get_decoder(syntax)
    except (NotImplementedError, ValueError):
        raise DicomDecoderMissing(f"no pixel-data decoder exists for transfer syntax "
                                  f"{syntax} ({getattr(syntax, 'name', 'unknown')})",
                                  file=path) from None
    if not decoder.is_available:
        raise DicomDecoderMissing(
            f"compressed pixel data ({syntax.name}, {syntax}) and no decoder installed for it: "
            f"{CODEC_HINT}", file=path)


def _to_unsigned(raw: np.ndarray, bits_stored: int, signed: int) -> np.ndarray:
    """Stored values as int64 in ``[0, 2**bits_stored)``."""
    arr = raw.astype(np.int64)
    if signed:
        arr = arr + 2 ** (bits_stored - 1)
    return np.clip(arr, 0, None) & (2 ** bits_stored - 1)


def _apply_window(ds, arr: np.ndarray, bits_stored: int, path: Path) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The file's VOI LUT / window, rescaled to the full uint16 range."""
    from pydicom.pixels import apply_voi_lut

    if "WindowCenter" not in ds and "VOILUTSequence" not in ds:
        raise DatasetError("windowing asked for but the file has no WindowCenter/Width or "
                           "VOI LUT", file=path)
    out = np.asarray(apply_voi_lut(arr, ds), dtype=np.float64)
    lo, hi = float(out.min()), float(out.max())
    if hi <= lo:
        return np.zeros(arr.shape, np.int64)
    return np.rint((out - lo) / (hi - lo) * 65535.0).astype(np.int64)


def _safe(exc: Exception) -> str:
    """An exception's text, cut short; pydicom's pixel errors carry sizes, not header values."""
    return str(exc).splitlines()[0][:200] if str(exc) else ""

"""Writing small, valid, uncompressed DICOM mammograms (for synthetic datasets and tests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class DicomHeader:
    """The identifying attributes written into a file (synthetic stand-ins for real ones).

    ``uid_root`` prefixes every UID written; ``series_description`` is what TCIA writes
    (``full mammogram images``, ``ROI mask images``, ``cropped images``).
    """

    patient_name: str = "ANONYMOUS"
    patient_id: str = "ANON"
    study_date: str = "20160720"
    series_description: str = ""
    laterality: str = ""
    view: str = ""
    uid_root: str = "1.2.826.0.1.3680043.10.1"
    extra: tuple[tuple[str, str], ...] = field(default_factory=tuple)


def write_dicom(path: Path | str, pixels: np.ndarray, header: DicomHeader = DicomHeader(), *,
                bits_stored: int | None = None, monochrome1: bool = False,
                uid_seed: int = 0, window: tuple[float, float] | None = None) -> Path:
    """Write ``pixels`` ((H, W) uint8 or uint16) as Explicit VR Little Endian secondary capture.

    ``monochrome1`` writes the inverted convention (the caller passes MONOCHROME2 grey levels;
    they are inverted on the way out so that a correct reader gets them back).
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

    pixels = np.asarray(pixels)
    if pixels.dtype not in (np.uint8, np.uint16) or pixels.ndim != 2:
        raise ValueError(f"pixels must be (H, W) uint8 or uint16, got {pixels.dtype} "
                         f"{pixels.shape}")
    alloc = 8 if pixels.dtype == np.uint8 else 16
    stored = bits_stored or alloc
    if int(pixels.max(initial=0)) >= 2 ** stored:
        raise ValueError(f"pixel values exceed {stored} bits stored")
    if monochrome1:
        pixels = ((2 ** stored - 1) - pixels.astype(np.int64)).astype(pixels.dtype)
    root = header.uid_root.rstrip(".")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = f"{root}.3.{uid_seed}"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = f"{root}.1.{uid_seed}"
    ds.SeriesInstanceUID = f"{root}.2.{uid_seed}"
    ds.PatientName = header.patient_name
    ds.PatientID = header.patient_id
    ds.StudyDate = header.study_date
    ds.Modality = "MG"
    if header.series_description:
        ds.SeriesDescription = header.series_description
    if header.laterality:
        ds.ImageLaterality = header.laterality
    if header.view:
        ds.ViewPosition = header.view
    for keyword, value in header.extra:
        setattr(ds, keyword, value)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = alloc
    ds.BitsStored = stored
    ds.HighBit = stored - 1
    ds.PixelRepresentation = 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = np.ascontiguousarray(pixels.astype(f"<u{alloc // 8}")).tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path

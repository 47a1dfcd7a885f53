"""DICOM pixel reading: MONOCHROME1, bits stored, windowing, missing decoders, damage."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGLosslessSV1

from trainables.datasets import DicomDecoderMissing
from trainables.datasets._dicom import dicom_size, read_dicom
from trainables.datasets._dicom_write import DicomHeader, write_dicom
from trainables.records import DatasetError
from trainables.rois import read_image


def _ramp(h: int, w: int, bits: int) -> np.ndarray:
    return (np.arange(h * w).reshape(h, w) * 37 % (2 ** bits)).astype(
        np.uint8 if bits <= 8 else np.uint16)


@pytest.mark.parametrize("bits", [8, 12, 14, 16])
def test_bits_stored_round_trip_and_dtype(tmp_path, bits):
    pixels = _ramp(30, 20, bits)
    path = write_dicom(tmp_path / "a.dcm", pixels, bits_stored=bits)
    out = read_dicom(path)
    assert out.dtype == (np.uint8 if bits <= 8 else np.uint16)
    assert np.array_equal(out, pixels)
    assert dicom_size(path) == (20, 30)
    assert np.array_equal(read_image(path), pixels)  # the ROI extractor reads DICOM too


def test_bits_above_bits_stored_are_masked(tmp_path):
    """A 12-bit image whose unused high bits hold garbage (overlay bits, sloppy writers)."""
    pixels = _ramp(10, 10, 12)
    path = write_dicom(tmp_path / "a.dcm", pixels, bits_stored=16)
    ds = pydicom.dcmread(path)
    ds.BitsStored, ds.HighBit = 12, 11
    ds.PixelData = (pixels | np.uint16(0xF000)).astype("<u2").tobytes()
    ds.save_as(path)
    assert np.array_equal(read_dicom(path), pixels)


@pytest.mark.parametrize("bits", [8, 14])
def test_monochrome1_is_inverted(tmp_path, bits):
    pixels = _ramp(16, 12, bits)
    path = write_dicom(tmp_path / "m1.dcm", pixels, bits_stored=bits, monochrome1=True)
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    assert not np.array_equal(ds.pixel_array, pixels)  # stored inverted ...
    assert np.array_equal(read_dicom(path), pixels)    # ... read back as MONOCHROME2


def test_signed_pixels_are_shifted_to_unsigned(tmp_path):
    pixels = _ramp(8, 8, 12)
    path = write_dicom(tmp_path / "s.dcm", pixels, bits_stored=12)
    ds = pydicom.dcmread(path)
    ds.PixelRepresentation = 1
    ds.PixelData = (pixels.astype(np.int16) - 2048).astype("<i2").tobytes()
    ds.save_as(path)
    assert np.array_equal(read_dicom(path), pixels)


def test_window_only_when_asked(tmp_path):
    pixels = _ramp(20, 20, 14)
    path = write_dicom(tmp_path / "w.dcm", pixels, bits_stored=14, window=(4000.0, 2000.0))
    assert np.array_equal(read_dicom(path), pixels)  # default: raw grey levels
    windowed = read_dicom(path, window=True)
    assert windowed.dtype == np.uint16 and windowed.max() == 65535 and windowed.min() == 0
    assert (windowed[pixels <= 3000] == 0).all() and (windowed[pixels >= 5000] == 65535).all()
    plain = write_dicom(tmp_path / "p.dcm", pixels, bits_stored=14)
    with pytest.raises(DatasetError, match="no WindowCenter"):
        read_dicom(plain, window=True)


def test_compressed_without_decoder_is_a_named_error(tmp_path):
    """JPEG Lossless (process 14) needs pylibjpeg-libjpeg or gdcm; neither is installed here."""
    path = write_dicom(tmp_path / "c.dcm", _ramp(8, 8, 12), bits_stored=12)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xc3" + b"\0" * 60 + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    from pydicom.pixels import get_decoder
    if get_decoder(JPEGLosslessSV1).is_available:
        pytest.skip("a JPEG Lossless decoder is installed here")
    with pytest.raises(DicomDecoderMissing, match="JPEG Lossless") as err:
        read_dicom(path)
    assert "c.dcm" in str(err.value) and "pylibjpeg" in str(err.value)
    assert err.value.file == path


@pytest.mark.parametrize("damage", ["random", "truncated", "no_pixels", "rgb", "two_frames"])
def test_damaged_files_raise_dataset_error_naming_the_file(tmp_path, damage):
    path = write_dicom(tmp_path / "d.dcm", _ramp(20, 20, 12), bits_stored=12)
    if damage == "random":
        path.write_bytes(b"not a dicom file at all" * 10)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-300])
    else:
        ds = pydicom.dcmread(path)
        if damage == "no_pixels":
            del ds.PixelData
        elif damage == "rgb":
            ds.SamplesPerPixel = 3
        else:
            ds.NumberOfFrames = 2
        ds.save_as(path)
    with pytest.raises(DatasetError) as err:
        read_dicom(path)
    assert "d.dcm" in str(err.value)


def test_errors_never_carry_header_values(tmp_path):
    header = DicomHeader(patient_name="SECRET^NAME", patient_id="SECRETID",
                         study_date="19991231", uid_root="1.2.826.0.1.3680043.10.777777")
    path = write_dicom(tmp_path / "x.dcm", _ramp(10, 10, 12), header, bits_stored=12)
    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation = "RGB"
    ds.save_as(path)
    with pytest.raises(DatasetError) as err:
        read_dicom(path)
    text = str(err.value)
    assert "RGB" in text
    assert not any(s in text for s in ("SECRET", "19991231", "777777"))

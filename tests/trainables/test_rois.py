"""ROI geometry at the image borders, extraction from native files, and the cache."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from tests.trainables.native_files import BcdrRow, default_rows, write_bcdr
from trainables.datasets import DatasetProblems, load_dataset
from trainables.rois import RoiConfig, Window, crop, extract_rois, roi_window


def test_window_is_centred_on_the_bounding_box():
    win = roi_window((40, 60, 60, 80), (200, 300), RoiConfig(size=32))
    assert win == Window(50 - 16, 70 - 16, 32)


@pytest.mark.parametrize("pad", ["zero", "edge", "reflect"])
def test_window_over_the_top_left_corner_is_padded(pad):
    image = np.arange(100 * 80, dtype=np.uint16).reshape(100, 80) + 1
    win = roi_window((0, 0, 4, 4), (80, 100), RoiConfig(size=20, pad=pad))
    assert win.outside(80, 100) and (win.x0, win.y0) == (-8, -8)
    roi = crop(image, win, pad)
    assert roi.shape == (20, 20) and roi.dtype == np.uint16
    np.testing.assert_array_equal(roi[8:, 8:], image[:12, :12])  # the inside is the image
    if pad == "zero":
        assert (roi[:8, :] == 0).all() and (roi[:, :8] == 0).all()
    elif pad == "edge":
        np.testing.assert_array_equal(roi[:8, 8], np.full(8, image[0, 0]))
    else:
        np.testing.assert_array_equal(roi[7, 8:], image[0, :12])  # mirror of the first row


def test_shift_policy_moves_the_window_inside_the_image():
    win = roi_window((70, 90, 79, 99), (80, 100), RoiConfig(size=32, pad="shift"))
    assert (win.x0, win.y0, win.side) == (48, 68, 32) and not win.outside(80, 100)


def test_large_lesion_resize_or_crop():
    bbox = (10, 10, 109, 59)  # 100 × 50 pixels, ROI 32
    resized = roi_window(bbox, (300, 300), RoiConfig(size=32, large="resize"))
    cut = roi_window(bbox, (300, 300), RoiConfig(size=32, large="crop"))
    assert resized.side == 100 and cut.side == 32
    assert resized.x0 + resized.side / 2 == pytest.approx(59.5, abs=1)


def test_extraction_from_native_films_counts_policies(tmp_path):
    rows = default_rows(4)
    rows[0] = BcdrRow(1, 1, 1, "Benign", centre=(100, 100), radius=40)  # 81 px > 64: resized
    rows[1] = BcdrRow(1, 1, 3, "Benign", centre=(12, 150), radius=10)  # near the edge: padded
    folder = write_bcdr(tmp_path, rows)
    ds = load_dataset(folder, "bcdr")
    rois, summary = extract_rois(ds, RoiConfig(size=64))
    assert rois.images.shape == (8, 64, 64) and rois.images.dtype == np.uint8
    assert summary.rois == 8 and summary.resized == 1 and summary.padded == 1
    assert summary.fitted == 7 and summary.lesion_cut == 0
    # the ROI of a fitted lesion is exactly the film's pixels around the bbox centre
    rec = ds.records[2]
    film = np.asarray(Image.open(rec.image))
    x0, y0, x1, y1 = rec.bbox()
    cx, cy = int((x0 + x1) / 2 + 0.5), int((y0 + y1) / 2 + 0.5)
    np.testing.assert_array_equal(rois.images[2], film[cy - 32:cy + 32, cx - 32:cx + 32])
    assert list(rois.labels) == [int(r.label) for r in ds.records]
    # sample ids are anonymous: no patient id nor file name in them, unique per view
    assert len(set(rois.sample_ids)) == 8
    assert not any("patient" in s or ".tif" in s for s in rois.sample_ids)


def test_digital_rois_keep_14_bit_levels(tmp_path):
    folder = write_bcdr(tmp_path, default_rows(2), digital=True)
    rois, _ = extract_rois(load_dataset(folder, "bcdr"), RoiConfig(size=32))
    assert rois.images.dtype == np.uint16 and rois.images.max() > 255


def test_cache_hit_and_invalidation(tmp_path, caplog):
    folder = write_bcdr(tmp_path / "d", default_rows(4))
    cache = tmp_path / "cache"
    ds = load_dataset(folder, "bcdr")
    first, _ = extract_rois(ds, RoiConfig(size=48), cache_dir=cache)
    files = list(cache.iterdir())
    assert len(files) == 1 and first.fingerprint in files[0].name
    stamp = files[0].stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="trainables.rois"):
        second, _ = extract_rois(load_dataset(folder, "bcdr"), RoiConfig(size=48), cache_dir=cache)
    assert "read from cache" in caplog.text and files[0].stat().st_mtime_ns == stamp
    assert second.fingerprint == first.fingerprint
    np.testing.assert_array_equal(second.images, first.images)
    assert list(second.sample_ids) == list(first.sample_ids)
    # a changed setting and a changed file each give a new fingerprint and a new cache file
    other, _ = extract_rois(ds, RoiConfig(size=48, pad="edge"), cache_dir=cache)
    img = ds.records[0].image
    arr = np.asarray(Image.open(img)).copy()
    arr[0, 0] ^= 1
    Image.fromarray(arr).save(img)
    changed, _ = extract_rois(load_dataset(folder, "bcdr"), RoiConfig(size=48), cache_dir=cache)
    assert len({first.fingerprint, other.fingerprint, changed.fingerprint}) == 3
    assert len(list(cache.iterdir())) == 3


def test_truncated_image_is_named_with_its_row(tmp_path):
    folder = write_bcdr(tmp_path, default_rows(4))
    ds = load_dataset(folder, "bcdr")
    victim = ds.records[3].image
    victim.write_bytes(victim.read_bytes()[:300])
    with pytest.raises(DatasetProblems, match=r"bcdr_f03_outlines.csv, row 5, field 'image'"):
        extract_rois(ds, RoiConfig(size=32))

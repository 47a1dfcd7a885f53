"""Synthetic BCDR-F03 generator: native layout, quirks, determinism, texture and shape by class."""

from __future__ import annotations

import csv
import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainables.datasets import load_dataset
from trainables.datasets._texture import power_law_noise
from trainables.datasets.synthetic import SynthConfig, write_synthetic_bcdr

# DATASETS.md, BCDR-F03 outlines: 18 columns in this order
F03_COLUMNS = [
    "patient_id", "study_id", "lesion_id", "segmentation_id", "image_view", "image_filename",
    "lw_x_points", "lw_y_points", "mammography_type", "mammography_nodule",
    "mammography_calcification", "mammography_microcalcification",
    "mammography_axillary_adenopathy", "mammography_architectural_distortion",
    "mammography_stroma_distortion", "age", "density", "classification",
]
FLAGS = F03_COLUMNS[8:15]
VIEW_NAMES = {1: "RCC", 2: "LCC", 3: "RO", 4: "LO"}
SMALL = dict(patients=20, width=256, height=400, radius_range=(8.0, 20.0),
             two_mass_fraction=0.3, non_mass_fraction=0.3, missing_density_fraction=0.2)


def small(**overrides) -> SynthConfig:
    return SynthConfig(**{**SMALL, **overrides})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[SynthConfig, Path, list[dict[str, str]]]:
    config = small(seed=7)
    subset = write_synthetic_bcdr(tmp_path_factory.mktemp("synth"), config)
    with open(subset / "bcdr_f03_outlines.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return config, subset, rows


def points(row: dict[str, str]) -> np.ndarray:
    xs = [int(v) for v in row["lw_x_points"].split()]
    ys = [int(v) for v in row["lw_y_points"].split()]
    assert len(xs) == len(ys)
    return np.array([xs, ys]).T


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_native_layout_and_header(dataset) -> None:
    config, subset, rows = dataset
    assert subset.name == "BCDR-F03"
    text = (subset / "bcdr_f03_outlines.csv").read_text()
    assert text.splitlines()[0] == ",".join(F03_COLUMNS)
    assert ", " not in text  # F03 uses plain commas
    assert all(len(line.split(",")) == 18 for line in text.splitlines())
    for row in rows:
        pid, sid, view = row["patient_id"], row["study_id"], VIEW_NAMES[int(row["image_view"])]
        assert row["image_filename"] == f"patient_{pid}/study_{sid}/img_{pid}_{sid}_{view}.tif"
    written = {str(p.relative_to(subset)) for p in subset.rglob("*.tif")}
    assert written == {row["image_filename"] for row in rows}  # no image without a lesion


def test_images_are_8bit_grey_films_of_the_configured_size(dataset) -> None:
    config, subset, rows = dataset
    for name in {row["image_filename"] for row in rows}:
        with Image.open(subset / name) as im:
            assert im.format == "TIFF" and im.mode == "L"
            assert im.size == (config.width, config.height)


def test_outlines_are_dense_integer_contours_inside_the_image(dataset) -> None:
    config, _, rows = dataset
    for row in rows:
        pts = points(row)
        assert len(pts) >= 16
        assert pts[:, 0].min() >= 0 and pts[:, 0].max() < config.width
        assert pts[:, 1].min() >= 0 and pts[:, 1].max() < config.height
        steps = np.abs(np.diff(np.vstack([pts, pts[:1]]), axis=0)).max(axis=1)
        assert steps.max() <= 1  # 8-connected, including the implied closing edge
        assert steps.min() >= 1  # no repeated points
        assert not np.array_equal(pts[0], pts[-1])  # not explicitly closed


def test_field_quirks_match_f03(dataset) -> None:
    _, _, rows = dataset
    densities = {row["density"] for row in rows}
    assert densities <= {"1", "2", "3", "4", "NaN"} and "NaN" in densities
    for row in rows:
        for key in ("patient_id", "study_id", "lesion_id", "segmentation_id"):
            assert row[key].isdigit()
        age = row["age"]
        assert "." in age and 20 < float(age) < 100 and len(age.split(".")[1]) == 4
        assert {row[f] for f in FLAGS} <= {"0", "1"}
        assert row["classification"] in ("Benign", "Malign")
    assert len({row["segmentation_id"] for row in rows}) == len(rows)
    non_mass = [row for row in rows if row["mammography_nodule"] == "0"]
    assert non_mass, "some calcification rows a mass loader must skip"
    assert all(row["mammography_calcification"] == "1"
               or row["mammography_microcalcification"] == "1" for row in non_mass)


def test_each_lesion_has_a_cc_and_an_mlo_view_of_one_breast(dataset) -> None:
    _, _, rows = dataset
    by_lesion: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_lesion.setdefault(row["lesion_id"], []).append(row)
    for lesion_rows in by_lesion.values():
        views = sorted(int(r["image_view"]) for r in lesion_rows)
        assert views in ([1, 3], [2, 4])  # right CC + right MLO, or left CC + left MLO
        same = {(r["patient_id"], r["study_id"], r["classification"]) for r in lesion_rows}
        assert len(same) == 1
        cc, mlo = (points(r) for r in sorted(lesion_rows, key=lambda r: r["image_view"]))
        assert not np.array_equal(cc.mean(0).round(), mlo.mean(0).round())  # moved per view
    per_patient: dict[str, int] = {}
    for row in rows:
        if row["mammography_nodule"] == "1":
            per_patient[row["patient_id"]] = per_patient.get(row["patient_id"], 0) + 1
    assert set(per_patient.values()) == {2, 4}  # one or two masses per patient


@pytest.mark.parametrize("fraction", [0.5, 0.3])
def test_labels_in_the_configured_proportion(tmp_path: Path, fraction: float) -> None:
    config = small(patients=12, width=160, height=260, radius_range=(5.0, 10.0),
                   malignant_fraction=fraction, strands=0)
    subset = write_synthetic_bcdr(tmp_path, config)
    with open(subset / "bcdr_f03_outlines.csv", newline="") as fh:
        masses = {row["lesion_id"]: row["classification"] for row in csv.DictReader(fh)
                  if row["mammography_nodule"] == "1"}
    malignant = sum(label == "Malign" for label in masses.values())
    assert malignant == round(fraction * len(masses))
    assert 0 < malignant < len(masses)


def test_real_bcdr_loader_reads_it(dataset) -> None:
    _, subset, rows = dataset
    loaded = load_dataset(subset.parent, "bcdr")  # the distribution's BCDR-F03_dataset level
    mass_rows = [r for r in rows if r["mammography_nodule"] == "1"]
    assert len(loaded.records) == len(mass_rows)
    assert loaded.summary()["malignant"] == sum(r["classification"] == "Malign" for r in mass_rows)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    config = small(patients=4, width=160, height=260, radius_range=(5.0, 10.0))
    first = digest(write_synthetic_bcdr(tmp_path / "a", config))
    again = digest(write_synthetic_bcdr(tmp_path / "b", config))
    other = digest(write_synthetic_bcdr(tmp_path / "c", small(
        patients=4, width=160, height=260, radius_range=(5.0, 10.0), seed=1)))
    assert first == again
    assert first["bcdr_f03_outlines.csv"] != other["bcdr_f03_outlines.csv"]
    assert not set(first.values()) & set(other.values())


def spectral_slope(img: np.ndarray) -> float:
    """Slope of log radially-averaged power vs log frequency over mid frequencies."""
    img = img - img.mean()
    power = np.abs(np.fft.fftshift(np.fft.fft2(img * np.hanning(img.shape[0])[:, None]
                                               * np.hanning(img.shape[1])[None, :]))) ** 2
    h, w = img.shape
    yy, xx = np.mgrid[0:h, 0:w]
    radius = np.hypot(yy - h // 2, xx - w // 2).astype(int)
    prof = np.bincount(radius.ravel(), power.ravel()) / np.bincount(radius.ravel())
    f = np.arange(3, min(h, w) // 4)
    return float(np.polyfit(np.log(f), np.log(prof[f]), 1)[0])


def test_power_law_noise_has_the_requested_spectrum() -> None:
    noise = power_law_noise(np.random.default_rng(0), (256, 256), beta=3.0)
    assert noise.dtype == np.float32 and abs(noise.std() - 1.0) < 1e-3
    assert -3.5 < spectral_slope(noise) < -2.5


def test_films_have_breast_texture_not_flat_grey(dataset) -> None:
    config, subset, rows = dataset
    with Image.open(subset / rows[0]["image_filename"]) as im:
        film = np.asarray(im, dtype=np.float64)
    dark = film < 30
    assert 0.05 < dark.mean() < 0.7  # dark background around a breast silhouette
    # a patch well inside the breast, away from the chest wall (left or right edge)
    left_breast = int(rows[0]["image_view"]) in (2, 4)
    cx = int(config.width * (0.75 if left_breast else 0.25))
    cy = config.height // 2
    patch = film[cy - 48:cy + 48, cx - 48:cx + 48]
    assert patch.min() > 30 and patch.std() > 3.0
    assert -4.0 < spectral_slope(patch) < -1.5  # power-law (1/f^beta) texture, not white noise


def solidity(pts: np.ndarray) -> float:
    """Polygon area / convex-hull area (1 for convex shapes, lower for irregular ones)."""
    def area(p: np.ndarray) -> float:
        x, y = p[:, 0].astype(float), p[:, 1].astype(float)
        return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))

    ordered = sorted(set(map(tuple, pts.tolist())))
    hull: list[tuple[int, int]] = []
    for sweep in (ordered, ordered[::-1]):  # Andrew's monotone chain
        start = len(hull)
        for p in sweep:
            while len(hull) >= start + 2 and (
                (hull[-1][0] - hull[-2][0]) * (p[1] - hull[-2][1])
                - (hull[-1][1] - hull[-2][1]) * (p[0] - hull[-2][0])) <= 0:
                hull.pop()
            hull.append(p)
        hull.pop()
    return area(pts) / area(np.array(hull))


def angular_roughness(film: np.ndarray, pts: np.ndarray) -> float:
    """Mean |grey level - its angular moving average| on rings at 1.2-1.5x the outline.

    Spicules are narrow bright spokes: they make the rings vary from one angle to the next,
    which the smooth tissue texture does not.
    """
    centre = pts.mean(0)
    order = np.argsort(np.arctan2(pts[:, 1] - centre[1], pts[:, 0] - centre[0]))
    rough = []
    for scale in (1.2, 1.35, 1.5):
        ring = centre + (pts[order] - centre) * scale
        x = np.clip(np.rint(ring[:, 0]).astype(int), 0, film.shape[1] - 1)
        y = np.clip(np.rint(ring[:, 1]).astype(int), 0, film.shape[0] - 1)
        values = film[y, x]
        k = 9
        smooth = np.convolve(np.concatenate([values[-k:], values, values[:k]]),
                             np.ones(k) / k, mode="same")[k:-k]
        rough.append(np.abs(values - smooth).mean())
    return float(np.mean(rough))


def test_malignant_masses_are_less_convex_and_spiculated(tmp_path: Path) -> None:
    config = small(patients=20, width=300, height=480, radius_range=(18.0, 26.0),
                   non_mass_fraction=0.0, two_mass_fraction=0.0, shape_overlap=0.0, seed=3)
    subset = write_synthetic_bcdr(tmp_path, config)
    with open(subset / "bcdr_f03_outlines.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    solid = {"Benign": [], "Malign": []}
    spikes = {"Benign": [], "Malign": []}  # thin bright structure just outside the outline
    for row in rows:
        pts = points(row)
        solid[row["classification"]].append(solidity(pts))
        with Image.open(subset / row["image_filename"]) as im:
            film = np.asarray(im, dtype=np.float64)
        spikes[row["classification"]].append(angular_roughness(film, pts))
    assert np.mean(solid["Malign"]) < np.mean(solid["Benign"]) - 0.03
    assert np.mean(solid["Benign"]) > 0.9
    assert np.mean(spikes["Malign"]) > 1.2 * np.mean(spikes["Benign"])


@pytest.mark.parametrize("bad", [
    dict(patients=1), dict(malignant_fraction=0.0), dict(malignant_fraction=1.0),
    dict(shape_overlap=1.5), dict(radius_range=(10.0, 5.0)), dict(radius_range=(8.0, 60.0)),
    dict(contrast_range=(0.0, 10.0)), dict(width=32), dict(texture_beta=0.5),
])
def test_config_rejects_bad_values_naming_the_field(bad: dict) -> None:
    field = next(iter(bad))
    with pytest.raises(ValueError, match=field if field != "width" else "film size"):
        small(**bad)


def test_default_config_is_f03_sized() -> None:
    config = SynthConfig()
    assert (config.width, config.height) == (720, 1167)
    assert math.isclose(config.malignant_fraction, 0.5)


def test_config_accepts_lists_from_yaml() -> None:
    config = SynthConfig(width=360, height=584, radius_range=[8, 24], contrast_range=[5, 20])
    assert config.radius_range == (8.0, 24.0) and config.contrast_range == (5.0, 20.0)
    assert hash(config) == hash(SynthConfig(width=360, height=584, radius_range=(8.0, 24.0),
                                            contrast_range=(5.0, 20.0)))

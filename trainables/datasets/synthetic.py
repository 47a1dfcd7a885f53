"""Synthetic mammography mass dataset written in BCDR-F03's native layout.

``write_synthetic_bcdr(out, SynthConfig(...))`` writes::

    out/BCDR-F03/bcdr_f03_outlines.csv                        # 18 columns, plain commas
    out/BCDR-F03/patient_<pid>/study_<sid>/img_<pid>_<sid>_<VIEW>.tif   # 8-bit greyscale

so tests and the default study exercise the real BCDR loader (``out`` plays the role of the
distribution's ``BCDR-F03_dataset/`` folder). Films carry power-law breast texture, a breast
silhouette, fibrous strands and (MLO) a pectoral muscle. Each lesion is drawn into a CC and an
MLO film of its breast, at a different position, rotation and scale per view; some patients have
two masses, some an extra calcification cluster (``mammography_nodule == 0`` rows, which a mass
loader must skip). Benign masses are round/oval and circumscribed, malignant ones irregular and
spiculated, with the overlap between the two shape distributions set by ``shape_overlap``.

Everything is a function of the config: the same config gives byte-identical files.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from trainables.datasets._masses import (
    MassShape,
    Placement,
    outline,
    render_calcifications,
    render_mass,
    sample_mass,
    sample_score,
)
from trainables.datasets._texture import Breast, film

SUBSET = "BCDR-F03"
OUTLINES_CSV = "bcdr_f03_outlines.csv"
COLUMNS = (
    "patient_id", "study_id", "lesion_id", "segmentation_id", "image_view", "image_filename",
    "lw_x_points", "lw_y_points", "mammography_type", "mammography_nodule",
    "mammography_calcification", "mammography_microcalcification",
    "mammography_axillary_adenopathy", "mammography_architectural_distortion",
    "mammography_stroma_distortion", "age", "density", "classification",
)
# image_view code -> file-name view, per (left breast?, MLO?)
_VIEWS = {(False, False): (1, "RCC"), (True, False): (2, "LCC"),
          (False, True): (3, "RO"), (True, True): (4, "LO")}


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. Sizes in pixels of the written films; grey levels on the 0–255 scale.

    Difficulty knobs. The defaults were calibrated with ``bench/synthetic_difficulty.py``
    (150 patients, seeds 0–2): the latent score alone allows at most 93.8 % accuracy; frozen
    ImageNet EfficientNet-Lite0 features + logistic regression reach 86–95 % on max(w, h, 150)
    crops at 96 px (86–92 % on the quick study's 64 px bounding-square ROIs, ~70 % on 299 px
    crops shrunk to 96 px), random-init features 49–61 %.

    - ``shape_overlap``: 0 = benign and malignant shapes fully separated (round/oval vs
      irregular/spiculated), 1 = identical shape distributions (labels carry no image signal).
      Each mass has a latent score ``s = (1 - overlap)·c + overlap·u`` with ``c ~ U(0, .5)``
      (benign) or ``U(.5, 1)`` (malignant) and ``u ~ U(0, 1)``; ``s`` drives lobulation,
      irregularity, spicule count/length and margin blur.
    - ``radius_range``: mean body radius of a mass, px (log-uniform, same for both classes).
    - ``contrast_range``: grey levels a mass adds at its centre (0.65× that just inside its
      rim), uniform, same for both classes. Tissue varies by ~10–25 grey levels within a mass's
      neighbourhood, so low values are subtle.
    - ``strands``: fibrous lines per film (spicule-like clutter); ``texture_beta``: tissue
      power-spectrum exponent (P(f) ∝ f^-β); ``grain_std``: white film grain.
    """

    patients: int = 150
    seed: int = 0
    width: int = 720
    height: int = 1167
    malignant_fraction: float = 0.5
    two_mass_fraction: float = 0.15  # patients with a second mass (same or other breast)
    non_mass_fraction: float = 0.08  # patients with an extra calcification cluster (nodule = 0)
    missing_density_fraction: float = 0.05  # patients whose density is written as NaN
    shape_overlap: float = 0.2
    radius_range: tuple[float, float] = (14.0, 45.0)
    contrast_range: tuple[float, float] = (10.0, 30.0)
    strands: int = 30
    texture_beta: float = 3.0
    grain_std: float = 2.5

    def __post_init__(self) -> None:
        for name in ("radius_range", "contrast_range"):  # YAML/JSON give lists
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
            if len(getattr(self, name)) != 2:
                raise ValueError(f"SynthConfig.{name} must be a (min, max) pair")

        def bad(field: str, why: str) -> None:
            raise ValueError(f"SynthConfig.{field}={getattr(self, field)!r}: {why}")

        if self.patients < 2:
            bad("patients", "need at least 2 patients (one per class)")
        if not 64 <= self.width <= 8192 or not 64 <= self.height <= 8192:
            bad("width", f"film size {self.width}×{self.height} must be within 64–8192 px")
        if not 0.0 < self.malignant_fraction < 1.0:
            bad("malignant_fraction", "must be strictly between 0 and 1 so both classes occur")
        for name in ("two_mass_fraction", "non_mass_fraction", "missing_density_fraction",
                     "shape_overlap"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                bad(name, "must be within [0, 1]")
        lo, hi = self.radius_range
        if not 2.0 <= lo <= hi:
            bad("radius_range", "need 2 <= min <= max (px)")
        if hi * 5.0 > min(self.width, self.height) * 0.5:
            bad("radius_range", f"masses up to {hi} px radius (plus spicules) do not fit a "
                f"{self.width}×{self.height} film; lower it or enlarge the film")
        if not 0.0 < self.contrast_range[0] <= self.contrast_range[1] <= 120.0:
            bad("contrast_range", "need 0 < min <= max <= 120 grey levels")
        if self.strands < 0:
            bad("strands", "must be >= 0")
        if self.grain_std < 0:
            bad("grain_std", "must be >= 0 grey levels")
        if not 1.0 <= self.texture_beta <= 5.0:
            bad("texture_beta", "must be within [1, 5] (mammographic tissue: about 3)")


@dataclass(frozen=True)
class _Lesion:
    lesion_id: int
    left: bool
    mass: bool
    malignant: bool


@dataclass(frozen=True)
class _Patient:
    index: int  # 0-based, selects the patient's random stream
    pid: int
    sid: int
    lesions: tuple[_Lesion, ...]


def _plan(config: SynthConfig, rng: np.random.Generator) -> list[_Patient]:
    """Patients, their lesions and labels; exactly round(fraction · masses) are malignant."""
    counts = [2 if rng.uniform() < config.two_mass_fraction else 1
              for _ in range(config.patients)]
    n_mass = sum(counts)
    n_malig = min(max(round(config.malignant_fraction * n_mass), 1), n_mass - 1)
    labels = iter(rng.permutation(np.arange(n_mass) < n_malig).tolist())
    patients, pid, sid, lid = [], 0, 0, 0
    for i, count in enumerate(counts):
        pid += int(rng.integers(1, 4))  # integer ids with gaps, as in the real files
        sid += int(rng.integers(1, 3))
        left = bool(rng.uniform() < 0.5)
        lesions = []
        for j in range(count):
            lid += 1
            side = left if j == 0 or rng.uniform() < 0.5 else not left
            lesions.append(_Lesion(lid, side, True, bool(next(labels))))
        if rng.uniform() < config.non_mass_fraction:
            lid += 1
            malignant = bool(rng.uniform() < config.malignant_fraction)
            lesions.append(_Lesion(lid, bool(rng.uniform() < 0.5), False, malignant))
        patients.append(_Patient(i, pid, sid, tuple(lesions)))
    return patients


def write_synthetic_bcdr(out: str | Path, config: SynthConfig = SynthConfig()) -> Path:
    """Write the dataset under ``out`` and return the subset folder ``out/BCDR-F03``."""
    subset = Path(out) / SUBSET
    subset.mkdir(parents=True, exist_ok=True)
    root = np.random.SeedSequence(config.seed)
    streams = root.spawn(config.patients + 1)
    patients = _plan(config, np.random.default_rng(streams[0]))
    rows: list[list[str]] = []
    seg = 0
    for patient in patients:
        for row in _render_patient(subset, patient, config,
                                   np.random.default_rng(streams[patient.index + 1])):
            seg += 1
            row[3] = str(seg)
            rows.append(row)
    # written last, and whole or not at all: its presence says the dataset is complete
    tmp = subset / f".{OUTLINES_CSV}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(COLUMNS)
            writer.writerows(rows)
        os.replace(tmp, subset / OUTLINES_CSV)
    finally:
        tmp.unlink(missing_ok=True)
    return subset


def _render_patient(subset: Path, patient: _Patient, config: SynthConfig,
                    rng: np.random.Generator) -> list[list[str]]:
    """Draw the patient's films, write them, and return their CSV rows (lesion, view order)."""
    age = rng.uniform(32.0, 86.0)
    density = int(rng.integers(1, 5))
    density_text = "NaN" if rng.uniform() < config.missing_density_fraction else str(density)
    shapes: dict[int, MassShape] = {}
    contrasts: dict[int, float] = {}
    flags: dict[int, list[int]] = {}
    for lesion in patient.lesions:
        if lesion.mass:
            score = sample_score(rng, lesion.malignant, config.shape_overlap)
            shapes[lesion.lesion_id] = sample_mass(rng, score, config.radius_range)
            contrasts[lesion.lesion_id] = float(rng.uniform(*config.contrast_range))
        flags[lesion.lesion_id] = _flags(rng, lesion, shapes.get(lesion.lesion_id))

    outlines: dict[tuple[int, bool], tuple[int, str, np.ndarray]] = {}
    for left in sorted({lesion.left for lesion in patient.lesions}):
        for mlo in (False, True):
            code, view = _VIEWS[(left, mlo)]
            pid, sid = patient.pid, patient.sid
            name = f"patient_{pid}/study_{sid}/img_{pid}_{sid}_{view}.tif"
            img, breast = film(rng, config.width, config.height, left=left, mlo=mlo,
                               density=density, beta=config.texture_beta, strands=config.strands)
            taken: list[tuple[float, float, float]] = []
            for lesion in patient.lesions:
                if lesion.left != left:
                    continue
                points = _draw_lesion(rng, img, breast, lesion, shapes, contrasts, config, taken)
                outlines[(lesion.lesion_id, mlo)] = (code, name, points)
            if config.grain_std:
                img += np.float32(config.grain_std) * rng.standard_normal(img.shape, np.float32)
            path = subset / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), mode="L").save(path)

    rows = []
    for lesion in patient.lesions:
        for mlo in (False, True):
            code, name, points = outlines[(lesion.lesion_id, mlo)]
            rows.append([
                str(patient.pid), str(patient.sid), str(lesion.lesion_id), "", str(code), name,
                " ".join(map(str, points[:, 0].tolist())),
                " ".join(map(str, points[:, 1].tolist())),
                *map(str, flags[lesion.lesion_id]),
                f"{age:.4f}", density_text, "Malign" if lesion.malignant else "Benign",
            ])
    return rows


def _flags(rng: np.random.Generator, lesion: _Lesion, shape: MassShape | None) -> list[int]:
    """mammography_type, nodule, calcification, microcalcification, axillary adenopathy,
    architectural distortion, stroma distortion (0/1; type is always 0 here)."""
    if not lesion.mass:
        micro = int(rng.uniform() < 0.7)
        return [0, 0, 1 - micro, micro, 0, 0, 0]
    spiculated = shape is not None and len(shape.spicules) > 0
    return [0, 1, int(rng.uniform() < 0.1), int(rng.uniform() < 0.1),
            int(rng.uniform() < 0.05), int(spiculated and rng.uniform() < 0.3),
            int(rng.uniform() < 0.05)]


def _draw_lesion(rng: np.random.Generator, img: np.ndarray, breast: Breast, lesion: _Lesion,
                 shapes: dict[int, MassShape], contrasts: dict[int, float], config: SynthConfig,
                 taken: list[tuple[float, float, float]]) -> np.ndarray:
    """Place one lesion in this view (away from others already placed), draw it, return outline."""
    if lesion.mass:
        shape = shapes[lesion.lesion_id]
        scale = float(rng.uniform(0.9, 1.1))
        reach = shape.extent() * scale
    else:
        spread = float(rng.uniform(0.7 * config.radius_range[0], 0.8 * config.radius_range[1]))
        reach = spread + 6.0
    cx, cy = _free_spot(rng, breast, reach, taken)
    taken.append((cx, cy, reach))
    if not lesion.mass:
        return render_calcifications(rng, img, cx, cy, spread)
    place = Placement(cx, cy, float(rng.uniform(0.0, 2 * math.pi)), scale)
    render_mass(img, shape, place, contrasts[lesion.lesion_id])
    return outline(shape, place)


def _free_spot(rng: np.random.Generator, breast: Breast, reach: float,
               taken: list[tuple[float, float, float]]) -> tuple[float, float]:
    """A centre whose disc of radius ``reach`` lies in the breast, clear of placed lesions."""
    spot = breast.inner_point(rng, reach)
    for _ in range(50):
        if all(math.hypot(spot[0] - x, spot[1] - y) > reach + r for x, y, r in taken):
            break
        spot = breast.inner_point(rng, reach)
    return spot

"""Synthetic CBIS-DDSM and INbreast datasets in their native DICOM layouts.

The films, masses and labels are those of :mod:`trainables.datasets.synthetic` (same config,
same seed → the same lesions); they are rewritten the way each dataset is distributed:

CBIS-DDSM (TCIA download, ``write_synthetic_cbis``)::

    out/mass_case_description_{train,test}_set.csv, calc_case_description_{train,test}_set.csv
    out/CBIS-DDSM/Mass-Training_P_00001_LEFT_CC/<date-DDSM-n>/
        1.000000-full mammogram images-n/1-1.dcm
    out/CBIS-DDSM/Mass-Training_P_00001_LEFT_CC_1/<date-DDSM-n>/
        1.000000-ROI mask images-n/1-1.dcm (and 1-2.dcm)

with the CSV paths written as TCIA's UID paths (``.../<StudyUID>/<SeriesUID>/000000.dcm``) that
do not match the downloaded folders, the mask and crop of one abnormality in one series folder
(``1-1.dcm``/``1-2.dcm``, in either order) or in two, the cropped/mask columns swapped on every
fifth row, and path values carrying a quoted trailing line break.

INbreast (``write_synthetic_inbreast``)::

    out/INbreast.csv                 # ';'-separated, one row per image, BI-RADS per image
    out/AllDICOMs/<FileName>_<patient hash>_MG_<L|R>_<CC|ML>_ANON.dcm   # 14 bits stored
    out/AllXML/<FileName>.xml        # OsiriX plist: Images[0].ROIs[].Point_px "(x, y)"

Every DICOM header carries synthetic identifying values (names, ids, dates, UIDs) built from
``header_mark`` so a privacy scan can look for them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import plistlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from trainables.datasets._dicom_write import DicomHeader, write_dicom
from trainables.datasets.synthetic import OUTLINES_CSV, SynthConfig, write_synthetic_bcdr

CBIS_MASS_COLUMNS = (
    "patient_id", "breast_density", "left or right breast", "image view", "abnormality id",
    "abnormality type", "mass shape", "mass margins", "assessment", "pathology", "subtlety",
    "image file path", "cropped image file path", "ROI mask file path",
)
CBIS_CALC_COLUMNS = (
    "patient_id", "breast density", "left or right breast", "image view", "abnormality id",
    "abnormality type", "calc type", "calc distribution", "assessment", "pathology", "subtlety",
    "image file path", "cropped image file path", "ROI mask file path",
)
INBREAST_COLUMNS = ("Patient ID", "Patient age", "Laterality", "View", "Acquisition date",
                    "File Name", "ACR", "Bi-Rads")
UID_ROOT = "1.3.6.1.4.1.9590.100.1.2"  # the root of TCIA's CBIS-DDSM UIDs


@dataclass(frozen=True)
class _View:
    """One lesion in one view, as the BCDR-layout synthetic data describes it."""

    pid: int
    lesion: int
    left: bool
    mlo: bool
    malignant: bool
    mass: bool
    image: Path
    points: np.ndarray  # (K, 2) x, y
    density: str


def _bcdr_views(config: SynthConfig, tmp: Path) -> list[_View]:
    subset = write_synthetic_bcdr(tmp, config)
    out = []
    with open(subset / OUTLINES_CSV, newline="") as fh:
        for row in csv.DictReader(fh):
            code = int(row["image_view"])
            xs = [float(v) for v in row["lw_x_points"].split()]
            ys = [float(v) for v in row["lw_y_points"].split()]
            out.append(_View(int(row["patient_id"]), int(row["lesion_id"]), code in (2, 4),
                             code in (3, 4), row["classification"] == "Malign",
                             row["mammography_nodule"] == "1", subset / row["image_filename"],
                             np.array([xs, ys]).T, row["density"]))
    return out


def _mask(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) uint8 0/255 polygon mask."""
    im = Image.new("L", size, 0)
    ImageDraw.Draw(im).polygon([tuple(p) for p in points.tolist()], fill=255, outline=255)
    return np.asarray(im)


def _uid(*parts: object) -> str:
    digest = int(hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=12).hexdigest(),
                 16)
    return f"{UID_ROOT}.{digest}"


def header_uid_root(mark: str) -> str:
    """The UID root of the synthetic headers written with ``header_mark=mark`` (digits only,
    distinctive enough for a privacy scan to search for)."""
    digits = int(hashlib.blake2b(mark.encode(), digest_size=8).hexdigest(), 16) % 10**12
    return f"1.2.826.0.1.3680043.10.{digits + 10**12}"


def _header(mark: str, pid: str, what: str, seed: int, **kw: str) -> DicomHeader:
    return DicomHeader(patient_name=f"{mark}^NAME^{pid}", patient_id=f"{mark}ID{pid}",
                       study_date="20160720", series_description=what,
                       uid_root=header_uid_root(mark),
                       extra=(("InstitutionName", f"{mark} HOSPITAL"),
                              ("AccessionNumber", f"{mark}ACC{seed}")), **kw)


# ------------------------------------------------------------------------------------ CBIS-DDSM

def write_synthetic_cbis(out: str | Path, config: SynthConfig | None = None, *,
                         test_fraction: float = 0.25, header_mark: str = "SYNTH") -> Path:
    """Write a CBIS-DDSM-layout dataset under ``out`` (returned). Patients are ``P_%05d``;
    about ``test_fraction`` of them are in the official test CSVs."""
    out, config = Path(out), config or SynthConfig()
    rng = np.random.default_rng(config.seed + 17)
    with tempfile.TemporaryDirectory() as tmp:
        views = _bcdr_views(config, Path(tmp))
        pids = sorted({v.pid for v in views})
        test = set(rng.choice(pids, size=max(1, round(test_fraction * len(pids))),
                              replace=False).tolist())
        rows: dict[tuple[str, str], list[list[str]]] = {}
        abn: dict[tuple[int, bool, bool, bool], int] = {}
        written: set[str] = set()
        for n, v in enumerate(views):
            kind = "Mass" if v.mass else "Calc"
            split = "Test" if v.pid in test else "Training"
            side = "LEFT" if v.left else "RIGHT"
            view = "MLO" if v.mlo else "CC"
            pid = f"P_{v.pid:05d}"
            key = (v.pid, v.left, v.mlo, v.mass)
            abn[key] = abn.get(key, 0) + 1
            case = f"{kind}-{split}_{pid}_{side}_{view}"
            film = np.asarray(Image.open(v.image), dtype=np.uint16) * 257
            if case not in written:
                full = out / "CBIS-DDSM" / case / f"07-20-2016-DDSM-{10000 + n}"
                full = full / f"1.000000-full mammogram images-{20000 + n}" / "1-1.dcm"
                write_dicom(full, film, _header(header_mark, pid, "full mammogram images", n,
                                                laterality=side[0], view=view), uid_seed=n)
                written.add(case)
            mask = _mask(v.points, (film.shape[1], film.shape[0]))
            ys, xs = np.nonzero(mask)
            m = 8
            crop = film[max(ys.min() - m, 0):ys.max() + m, max(xs.min() - m, 0):xs.max() + m]
            roi_case = out / "CBIS-DDSM" / f"{case}_{abn[key]}" / f"07-21-2016-DDSM-{30000 + n}"
            one_series = n % 2 == 0
            mask_dir = roi_case / f"1.000000-ROI mask images-{40000 + n}"
            crop_dir = mask_dir if one_series else roi_case / f"1.000000-cropped images-{50000 + n}"
            mask_name, crop_name = ("1-1.dcm", "1-2.dcm") if n % 3 else ("1-2.dcm", "1-1.dcm")
            if not one_series:
                mask_name = crop_name = "1-1.dcm"
            write_dicom(mask_dir / mask_name, mask, _header(header_mark, pid, "ROI mask images",
                                                             n), uid_seed=100000 + n)
            write_dicom(crop_dir / crop_name, np.ascontiguousarray(crop),
                        _header(header_mark, pid, "cropped images", n), uid_seed=200000 + n)
            study, series = _uid(pid, case, "study"), _uid(pid, case, "series")
            roi_study = _uid(pid, case, abn[key], "roi")
            crop_path = f"{case}_{abn[key]}/{roi_study}/{_uid(pid, case, abn[key], 'c')}/000000.dcm"
            mask_path = f"{case}_{abn[key]}/{roi_study}/{_uid(pid, case, abn[key], 'm')}/000001.dcm"
            if n % 5 == 4:  # the two columns swapped on some rows, as in the real CSVs
                crop_path, mask_path = mask_path, crop_path
            density = v.density if v.density != "NaN" else "2"
            birads = str(int(rng.integers(4, 6)) if v.malignant else int(rng.integers(2, 4)))
            pathology = ("MALIGNANT" if v.malignant else
                         ("BENIGN" if n % 4 else "BENIGN_WITHOUT_CALLBACK"))
            descr = (["IRREGULAR", "SPICULATED"] if v.malignant else ["OVAL", "CIRCUMSCRIBED"])
            if not v.mass:
                descr = ["PLEOMORPHIC", "CLUSTERED"]
            rows.setdefault((kind.lower(), split), []).append([
                pid, density, side, view, str(abn[key]),
                kind.lower() if v.mass else "calcification",
                *descr, birads, pathology, str(int(rng.integers(1, 6))),
                f"{case}/{study}/{series}/000000.dcm",
                crop_path + ("\n" if n % 7 == 3 else ""), mask_path + ("\n" if n % 6 == 1 else ""),
            ])
    for kind in ("mass", "calc"):
        for split, name in (("Training", "train"), ("Test", "test")):
            columns = CBIS_MASS_COLUMNS if kind == "mass" else CBIS_CALC_COLUMNS
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            writer.writerow(columns)
            writer.writerows(rows.get((kind, split), []))
            (out / f"{kind}_case_description_{name}_set.csv").write_text(buf.getvalue())
    return out


# ------------------------------------------------------------------------------------- INbreast

BIRADS_BENIGN = ("2", "3")
BIRADS_MALIGNANT = ("4a", "4b", "4c", "5", "6")


def write_synthetic_inbreast(out: str | Path, config: SynthConfig | None = None, *,
                             header_mark: str = "SYNTH") -> Path:
    """Write an INbreast-layout dataset under ``out`` (returned); masses only (the synthetic
    calcification clusters become ``Calcification`` ROIs of single points)."""
    out, config = Path(out), config or SynthConfig()
    rng = np.random.default_rng(config.seed + 29)
    with tempfile.TemporaryDirectory() as tmp:
        views = _bcdr_views(config, Path(tmp))
        by_image: dict[Path, list[_View]] = {}
        for v in views:
            by_image.setdefault(v.image, []).append(v)
        lines = [";".join(INBREAST_COLUMNS)]
        hashes: dict[int, str] = {}
        for n, (image, lesions) in enumerate(sorted(by_image.items())):
            v0 = lesions[0]
            phash = hashes.setdefault(v0.pid, hashlib.blake2b(
                f"{header_mark}{v0.pid}".encode(), digest_size=8).hexdigest())
            file_name = str(20586900 + 37 * n + int(rng.integers(0, 30)))
            side, view = ("L" if v0.left else "R"), ("ML" if v0.mlo else "CC")
            film = (np.asarray(Image.open(image), dtype=np.uint16) * 64)  # 14 bits stored
            write_dicom(out / "AllDICOMs" / f"{file_name}_{phash}_MG_{side}_{view}_ANON.dcm",
                        film, _header(header_mark, phash, "", n, laterality=side,
                                      view="MLO" if v0.mlo else "CC"),
                        bits_stored=14, uid_seed=n)
            masses = [v for v in lesions if v.mass]
            malignant = any(v.malignant for v in masses)
            birads = (str(rng.choice(BIRADS_MALIGNANT)) if malignant
                      else str(rng.choice(BIRADS_BENIGN)) if masses else "1")
            _write_xml(out / "AllXML" / f"{file_name}.xml", lesions, film.shape)
            density = v0.density if v0.density != "NaN" else ""
            lines.append(";".join(["removed", "removed", side, "MLO" if v0.mlo else "CC",
                                   "201001", file_name, density, birads]))
    (out / "INbreast.csv").write_text("\n".join(lines) + "\n")
    return out


def _write_xml(path: Path, lesions: list[_View], shape: tuple[int, ...]) -> None:
    rois = []
    for v in lesions:
        pts = v.points if v.mass else v.points[:1]
        rois.append({
            "Area": 0.0, "Center": "(0, 0, 0)", "Dev": 0.0, "IndexInImage": len(rois),
            "Max": 0.0, "Mean": 0.0, "Min": 0.0, "Name": "Mass" if v.mass else "Calcification",
            "NumberOfPoints": len(pts),
            "Point_mm": [f"({x * 0.07:.6f}, {y * 0.07:.6f}, 0.000000)" for x, y in pts.tolist()],
            "Point_px": [f"({x:.6f}, {y:.6f})" for x, y in pts.tolist()],
            "Total": 0.0, "Type": 15 if v.mass else 19,
        })
    doc = {"Images": [{"ImageHeight": int(shape[0]), "ImageIndex": 0, "ImageWidth": int(shape[1]),
                       "NumberOfROIs": len(rois), "ROIs": rois}]}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        plistlib.dump(doc, fh, fmt=plistlib.FMT_XML)


def write_synthetic_cbis_jpeg(out: str | Path, config: SynthConfig | None = None) -> Path:
    """The CBIS-DDSM dataset of :func:`write_synthetic_cbis` as the widely shared JPEG
    conversion: ``out/csv/`` (the four case CSVs + ``dicom_info.csv``) and
    ``out/jpeg/<SeriesInstanceUID>/1-<n>.jpg`` (8-bit, lossy: masks become near-binary)."""
    import pydicom

    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp:
        src = write_synthetic_cbis(Path(tmp) / "cbis", config)
        (out / "csv").mkdir(parents=True, exist_ok=True)
        for p in src.glob("*_case_description_*_set.csv"):
            (out / "csv" / p.name).write_bytes(p.read_bytes())
        info = [["file_path", "image_path", "PatientID", "SeriesDescription",
                 "SeriesInstanceUID", "Rows", "Columns"]]
        for n, dcm in enumerate(sorted((src / "CBIS-DDSM").rglob("*.dcm"))):
            case = dcm.relative_to(src / "CBIS-DDSM").parts[0]
            series = _uid(str(dcm.parent.relative_to(src)))
            ds = pydicom.dcmread(dcm)
            px = ds.pixel_array
            px8 = (px >> 8).astype(np.uint8) if px.dtype == np.uint16 else px.astype(np.uint8)
            rel = Path("jpeg") / series / dcm.with_suffix(".jpg").name
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(px8).save(out / rel, quality=90)
            what = "" if n % 4 == 3 else str(ds.get("SeriesDescription", ""))  # empty at times
            info.append([f"CBIS-DDSM/dicom/{n}.dcm", f"CBIS-DDSM/{rel.as_posix()}", case, what,
                         series, str(px.shape[0]), str(px.shape[1])])
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(info)
    (out / "csv" / "dicom_info.csv").write_text(buf.getvalue())
    return out

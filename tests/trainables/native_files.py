"""Writers of small datasets in the native layouts of DATASETS.md, for the tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from trainables.datasets._bcdr import DIGITAL_COLUMNS, FILM_COLUMNS


@dataclass
class BcdrRow:
    patient: int
    lesion: int
    view: int  # 1 RCC, 2 LCC, 3 RO, 4 LO
    label: str = "Benign"
    centre: tuple[int, int] = (100, 150)
    radius: int = 20
    nodule: int = 1
    study: int | None = None
    series: int = 0

    @property
    def view_name(self) -> str:
        return {1: "RCC", 2: "LCC", 3: "RO", 4: "LO"}[self.view]

    def filename(self, digital: bool) -> str:
        sid = self.study if self.study is not None else self.patient
        series = f"_{self.series}" if digital else ""
        return (f"patient_{self.patient}/study_{sid}/"
                f"img_{self.patient}_{sid}{series}_{self.view_name}.tif")

    def outline(self) -> tuple[list[int], list[int]]:
        """Dense integer contour (about 1 px steps), not explicitly closed."""
        n = max(12, int(2 * np.pi * self.radius))
        a = np.arange(n) * 2 * np.pi / n
        xs = np.rint(self.centre[0] + self.radius * np.cos(a)).astype(int)
        ys = np.rint(self.centre[1] + self.radius * np.sin(a)).astype(int)
        return xs.tolist(), ys.tolist()


def default_rows(n_patients: int = 6) -> list[BcdrRow]:
    """Each patient: one mass seen in CC and MLO; labels alternate; one calcification row."""
    rows = []
    for p in range(1, n_patients + 1):
        label = "Benign" if p % 2 else "Malign"
        right = p % 3 != 0
        cc, mlo = (1, 3) if right else (2, 4)
        rows.append(BcdrRow(p, 1, cc, label, centre=(80 + p, 120), radius=15 + p))
        rows.append(BcdrRow(p, 1, mlo, label, centre=(90, 140 + p), radius=14 + p))
    rows.append(BcdrRow(1, 2, 1, "Benign", centre=(60, 60), radius=5, nodule=0))
    return rows


def write_bcdr(top: Path, rows: list[BcdrRow], *, digital: bool = False,
               size: tuple[int, int] = (200, 300), seed: int = 0,
               csv_edit=None) -> Path:  # type: ignore[no-untyped-def]
    """Write ``top/BCDR-<S>_dataset/BCDR-<S>/`` and return the subset folder.

    ``csv_edit(lines) -> lines`` may corrupt the CSV text before it is written.
    """
    sub = "D01" if digital else "F03"
    folder = top / f"BCDR-{sub}_dataset" / f"BCDR-{sub}"
    rng = np.random.default_rng(seed)
    w, h = size
    for row in rows:
        path = folder / row.filename(digital)
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if digital:
            img = rng.integers(0, 2**14, size=(h, w), dtype=np.uint16)
        else:
            img = rng.integers(0, 256, size=(h, w), dtype=np.uint8)
        Image.fromarray(img).save(path)
    columns = DIGITAL_COLUMNS if digital else FILM_COLUMNS
    sep = ", " if digital else ","
    lines = [",".join(columns)]
    for seg, row in enumerate(rows, start=1):
        xs, ys = row.outline()
        values = {
            "patient_id": row.patient, "study_id": row.study or row.patient,
            "series": row.series, "lesion_id": row.lesion, "segmentation_id": seg,
            "image_view": row.view, "image_filename": row.filename(digital),
            "lw_x_points": " ".join(map(str, xs)), "lw_y_points": " ".join(map(str, ys)),
            "mammography_type": 1, "mammography_nodule": row.nodule,
            "mammography_calcification": 1 - row.nodule, "mammography_microcalcification": 0,
            "mammography_axillary_adenopathy": 0, "mammography_architectural_distortion": 0,
            "mammography_stroma_distortion": 0,
            "age": 57 if digital else 42.6767, "density": "NaN" if seg % 3 == 0 else 2,
            "classification": row.label,
        }
        lines.append(sep.join(str(values[c]) for c in columns))
    if csv_edit is not None:
        lines = csv_edit(lines)
    name = f"bcdr_{sub.lower()}_outlines.csv"
    (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def write_mias(folder: Path, lines: list[str], *, size: int = 256, seed: int = 0) -> Path:
    """``Info.txt`` with ``lines`` and a PGM for every REFNUM mentioned."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for ref in sorted({ln.split()[0] for ln in lines if ln.split()}):
        img = rng.integers(0, 256, size=(size, size), dtype=np.uint8)
        Image.fromarray(img).save(folder / f"{ref}.pgm")
    (folder / "Info.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def write_manifest(folder: Path, header: str, rows: list[str], *,
                   images: list[str] | None = None, size: tuple[int, int] = (128, 160)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in images or []:
        img = rng.integers(0, 256, size=(size[1], size[0]), dtype=np.uint8)
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / name)
    path = folder / "manifest.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path

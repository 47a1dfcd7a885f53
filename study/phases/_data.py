"""The study's data: synthesise if asked, load, extract ROIs (cached), split."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from search_spaces import StudySpec
from study.scheduling._restudy import data_fingerprint
from trainables._roiset import RoiSet
from trainables.balance import balance_index, balance_rois
from trainables.datasets import CbisOptions, InbreastOptions, LoadOptions, load_dataset
from trainables.records import DatasetError
from trainables.rois import RoiConfig, RoiSummary, extract_rois
from trainables.splits import Split, SplitConfig, make_splits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyData:
    rois: RoiSet
    summary: RoiSummary
    splits: tuple[Split, ...]
    dataset_path: Path
    counts: dict[str, object]
    #: ``evaluation.external`` sets by name, ROIs cut with the study's own ROI settings
    external: dict[str, RoiSet] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """What a re-study compares: the ROI set's fingerprint, and the external sets'."""
        return data_fingerprint(self.rois.fingerprint,
                                {n: r.fingerprint for n, r in self.external.items()})


def prepare_data(spec: StudySpec, root: Path) -> StudyData:
    """ROIs and outer splits of the spec's dataset. Raises ``DatasetError`` on bad input."""
    ds = spec.dataset
    if ds.is_synthetic:
        from trainables.datasets.synthetic import SynthConfig, write_synthetic_bcdr

        config = SynthConfig(**ds.synth_kwargs())
        path = ds.path or root / "data" / f"synthetic-p{config.patients}-s{config.seed}"
        if not (path / "BCDR-F03" / "bcdr_f03_outlines.csv").is_file():
            log.info("writing the synthetic dataset to %s", path)
            write_synthetic_bcdr(path, config)
    else:
        assert ds.path is not None
        path = ds.path
    loaded = load_dataset(path, ds.format, options=load_options(ds.options))
    roi = RoiConfig(size=spec.roi.size, large=spec.roi.large, pad=spec.roi.pad)  # type: ignore[arg-type]
    rois, summary = extract_rois(loaded, roi, cache_dir=root / "cache" / "rois")
    s = spec.splits
    subsets = np.array([getattr(r, "subset", None) for r in loaded.records], dtype=object)
    if ds.balance != "none" and s.mode == "official":  # records ↔ ROIs stay 1:1 below
        kept = balance_index(rois.labels, rois.lesions, ds.balance, s.seed)  # type: ignore[arg-type]
        subsets = subsets[kept]
    rois = balance_rois(rois, ds.balance, s.seed)  # type: ignore[arg-type]
    if s.mode == "official":  # the dataset's published train/test split
        from trainables.official_split import official_split

        splits = [official_split(rois.labels, rois.patients, subsets,
                                 val_fraction=s.val_fraction, seed=s.seed)]
    else:
        splits = make_splits(rois, SplitConfig(
            n_splits=s.n_splits, test_fraction=s.test_fraction, val_fraction=s.val_fraction,
            seed=s.seed, mode=s.mode, scheme=s.scheme,  # type: ignore[arg-type]
            repeats=s.repeats))
    external = {e.name: _external_rois(e.path, e.format, roi, root, e.options)
                for e in spec.evaluation.external}
    return StudyData(rois, summary, tuple(splits), Path(path), loaded.summary(), external)


def load_options(options: tuple[tuple[str, Any], ...]) -> LoadOptions:
    """A space file's loader options (``DatasetSpec.options``) as the loaders take them."""
    o = dict(options)
    return LoadOptions(CbisOptions(calcifications=bool(o.get("calcifications", False))),
                       InbreastOptions(str(o.get("birads_malignant_from", "4a"))))


def _external_rois(path: Path, fmt: str, roi: RoiConfig, root: Path,
                   options: tuple[tuple[str, Any], ...] = ()) -> RoiSet:
    """An external validation set, loaded strictly and cut like the study's own ROIs."""
    loaded = load_dataset(path, fmt, options=load_options(options))
    rois, _ = extract_rois(loaded, roi, cache_dir=root / "cache" / "rois")
    if len(set(rois.labels.tolist())) < 2:
        raise DatasetError("an external validation set needs both classes", file=path)
    return rois

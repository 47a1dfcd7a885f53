"""The study's data: synthesise if asked, load, extract ROIs (cached), split."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from search_spaces import StudySpec
from trainables._roiset import RoiSet
from trainables.balance import balance_rois
from trainables.datasets import load_dataset
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
    loaded = load_dataset(path, ds.format)
    roi = RoiConfig(size=spec.roi.size, large=spec.roi.large, pad=spec.roi.pad)  # type: ignore[arg-type]
    rois, summary = extract_rois(loaded, roi, cache_dir=root / "cache" / "rois")
    s = spec.splits
    rois = balance_rois(rois, ds.balance, s.seed)  # type: ignore[arg-type]
    splits = make_splits(rois, SplitConfig(n_splits=s.n_splits, test_fraction=s.test_fraction,
                                           val_fraction=s.val_fraction, seed=s.seed,
                                           mode=s.mode, scheme=s.scheme,  # type: ignore[arg-type]
                                           repeats=s.repeats))
    return StudyData(rois, summary, tuple(splits), Path(path), loaded.summary())

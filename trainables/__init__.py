"""Everything PyTorch-side of tlstudy: lesion datasets, ROIs, splits, backbones, regimes and the
training loop. Imports no Ray and no MLflow, so a GPU box with torch alone can run it.

Data path::

    load_dataset(path, fmt) -> LoadedDataset (lesion records)
    extract_rois(dataset, RoiConfig(size=299), cache_dir=...) -> (RoiSet, RoiSummary)
    balance_rois(rois, "undersample", seed) -> RoiSet     # optional: as many benign as malignant
    make_splits(rois, SplitConfig()) -> [Split, ...]   # patient-grouped stratified k-fold, seeded
"""

from trainables._roiset import RoiSet
from trainables.datasets import DatasetProblems, LoadedDataset, load_dataset
from trainables.records import DatasetError, Label, Laterality, LesionRecord, SourceRef, View
from trainables.rois import RoiConfig, RoiSummary, extract_rois
from trainables.splits import Split, SplitConfig, make_splits


def __getattr__(name: str):  # the torch-heavy parts load on first use
    if name == "TrainConfig":
        from trainables.config import TrainConfig

        return TrainConfig
    if name in ("run_trial", "TrialResult"):
        from trainables import train

        return getattr(train, name)
    raise AttributeError(f"module 'trainables' has no attribute {name!r}")

__all__ = [
    "DatasetError", "DatasetProblems", "Label", "Laterality", "LesionRecord", "LoadedDataset",
    "RoiConfig", "RoiSet", "RoiSummary", "SourceRef", "Split", "SplitConfig", "TrainConfig",
    "TrialResult", "View", "extract_rois", "load_dataset", "make_splits", "run_trial",
]

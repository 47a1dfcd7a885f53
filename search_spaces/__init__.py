"""Declarative study definitions (YAML) and their validation.

``load_spec("quick")`` (or a path) gives a frozen :class:`StudySpec`; every problem in a file is
a :class:`SpecError` naming the file, key path and reason. Imports nothing heavy.
"""

from ._names import HYPERPARAMETERS, PAPER_VARIANTS, canonical_variant
from .spec import (
    SHIPPED,
    AshaSpec,
    DatasetSpec,
    EvaluationSpec,
    ParamSpec,
    ResourceSpec,
    RoiSpec,
    SearchSpec,
    SpecError,
    SplitSpec,
    StudySpec,
    TrainSpec,
    check_resources,
    load_spec,
    shipped_path,
    spec_from_dict,
)

__all__ = [
    "HYPERPARAMETERS", "PAPER_VARIANTS", "SHIPPED", "AshaSpec", "DatasetSpec", "EvaluationSpec",
    "ParamSpec", "ResourceSpec", "RoiSpec", "SearchSpec", "SpecError", "SplitSpec", "StudySpec",
    "TrainSpec", "canonical_variant", "check_resources", "load_spec", "shipped_path",
    "spec_from_dict",
]

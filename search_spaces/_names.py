"""Closed sets this package must agree on with ``trainables`` (mirrored, not imported: importing
``trainables`` pulls in torch). ``tests/search_spaces`` checks the mirrors against the real
dataclasses, so a renamed field there fails a test here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from ._reader import check_number, describe

#: The paper's seven variants, in its table order (``trainables.regimes.PAPER_VARIANTS``).
PAPER_VARIANTS: tuple[str, ...] = ("RI", "FE", "1FT", "2FT", "3FT", "AllFT", "FTED")
_KINDS = ("RI", "FE", "AllFT", "FTED")
_KFT = re.compile(r"^(\d+)FT$", re.IGNORECASE)

DATASET_FORMATS: tuple[str, ...] = ("bcdr", "mias", "manifest", "cbis-ddsm",
                                    "inbreast")  # trainables.datasets.FORMATS
ROI_LARGE: tuple[str, ...] = ("resize", "crop")
ROI_PAD: tuple[str, ...] = ("zero", "edge", "reflect", "shift")
SPLIT_MODES: tuple[str, ...] = ("patient", "image", "official")  # official: CBIS-DDSM's own
SPLIT_SCHEMES: tuple[str, ...] = ("repeated", "kfold")
BALANCES: tuple[str, ...] = ("none", "undersample")  # trainables.balance.BALANCES
ANALYSIS_UNITS: tuple[str, ...] = ("lesion", "patient", "view")
SEARCH_MODES: tuple[str, ...] = ("nested", "shared")
ROLES: tuple[str, ...] = ("scientific", "nuisance", "fixed")
#: The validation metric search acts on (ASHA's rungs, Optuna's objective) and its direction.
#: Only the validation loss for now: the trainable picks its best epoch (early stopping, the
#: restored weights) by validation loss, and a search ranking trials by accuracy or AUC would
#: judge them at an epoch the trial itself did not choose.
METRICS: dict[str, Literal["min", "max"]] = {"val_loss": "min"}

#: ``trainables.datasets.synthetic.SynthConfig`` fields -> "int" | "float" | "pair".
SYNTH_FIELDS: dict[str, str] = {
    "patients": "int", "seed": "int", "width": "int", "height": "int",
    "malignant_fraction": "float", "two_mass_fraction": "float", "non_mass_fraction": "float",
    "missing_density_fraction": "float", "shape_overlap": "float", "radius_range": "pair",
    "contrast_range": "pair", "strands": "int", "texture_beta": "float", "grain_std": "float",
}


def canonical_variant(text: str) -> str:
    """``"allft"`` -> ``"AllFT"``, ``"2ft"`` -> ``"2FT"`` (as ``trainables.parse_variant``).

    Raises:
        ValueError: not a variant name.
    """
    s = str(text).strip()
    match = _KFT.match(s)
    if match:
        k = int(match.group(1))
        if k < 1:
            raise ValueError(f"{s!r}: kFT needs k >= 1 (0FT trains the head only: use FE)")
        return f"{k}FT"
    for kind in _KINDS:
        if s.lower() == kind.lower():
            return kind
    raise ValueError(f"unknown variant {s!r}; variants are RI, FE, kFT (k >= 1, e.g. 1FT, 2FT, "
                     "3FT), AllFT, FTED")


# --------------------------------------------------------------------------- hyperparameters


@dataclass(frozen=True)
class Domain:
    """What values a hyperparameter takes. ``target``: the dataclass it configures."""

    target: Literal["regime", "train"]
    type: Literal["float", "int", "bool", "str"]
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: tuple[str, ...] = ()
    fted_only: bool = False  # only FTED reads it

    @property
    def numeric(self) -> bool:
        return self.type in ("float", "int")

    def check(self, value: Any) -> str | None:
        """``None`` if ``value`` is valid, else the reason."""
        if self.type == "bool":
            ok = isinstance(value, bool)
            return None if ok else f"expected true or false, got {describe(value)}"
        if self.type == "str":
            if value in self.choices:
                return None
            return f"expected one of {', '.join(self.choices)}, got {describe(value)}"
        if self.type == "int" and (not isinstance(value, int) or isinstance(value, bool)):
            return f"expected an integer, got {describe(value)}"
        return check_number(value, gt=self.gt, ge=self.ge, lt=self.lt, le=self.le)


#: Every name a study file may fix or search, with its domain. RegimeConfig fields (``variant``
#: is the study's grid, ``n_classes`` comes from the data) and the TrainConfig fields that are
#: hyperparameters rather than machinery.
HYPERPARAMETERS: dict[str, Domain] = {
    "base_lr": Domain("regime", "float", gt=0.0),
    "lam": Domain("regime", "float", ge=0.0, fted_only=True),
    "depth": Domain("regime", "str", choices=("normalized", "index"), fted_only=True),
    "granularity": Domain("regime", "str", choices=("layer", "block"), fted_only=True),
    "momentum": Domain("regime", "float", ge=0.0, lt=1.0),
    "weight_decay": Domain("regime", "float", ge=0.0),
    "head_hidden": Domain("regime", "int", ge=1),
    "head_pool": Domain("regime", "str", choices=("flatten", "avg")),
    "dropout": Domain("regime", "float", ge=0.0, lt=1.0),
    "batch_size": Domain("train", "int", ge=2),
    "plateau_factor": Domain("train", "float", gt=0.0, lt=1.0),
    "plateau_patience": Domain("train", "int", ge=0),
    "augment": Domain("train", "bool"),
    "max_shift": Domain("train", "float", ge=0.0, lt=1.0),
    "max_rotation_deg": Domain("train", "float", ge=0.0, le=180.0),
    "hflip": Domain("train", "bool"),
}

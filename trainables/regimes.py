"""Fine-tuning regimes: the paper's seven variants, exactly, and their learning-rate plans.

| variant        | trains                          | init       | optimiser (paper)    | base LR   |
|----------------|---------------------------------|------------|----------------------|-----------|
| RI             | everything                      | random     | Adam                 | 1e-4      |
| FE             | head only (backbone frozen)     | ImageNet   | SGD, momentum 0.9    | 1e-4      |
| kFT (1/2/3FT)  | head + last k parameterised blocks | ImageNet | SGD, momentum 0.9  | 1e-4      |
| AllFT          | everything                      | ImageNet   | SGD, momentum 0.9    | 1e-4      |
| FTED           | everything, per-layer rates     | ImageNet   | SGD, momentum 0.9    | t0 = 1e-3 |

**FTED.** Layer l learns at ``t_l = t0 · exp(−λ · d_l)``, where ``d_l`` is its distance from
the output: ``d = 0`` for the backbone's last parameterised layer, growing toward the input;
the head learns at ``t0``. With ``λ > 0`` rates decay toward the input, as the paper's text
asks ("1E-3 for the last convolutional layers ... decrease ... as we move backwards").

- ``depth="normalized"`` (default): ``d_l = (L − 1 − i) / (L − 1)`` in [0, 1] for the i-th of
  L layers (input to output), so the first layer learns at ``t0 · e^−λ`` whatever the depth.
- ``depth="index"``: ``d_l = L − 1 − i``, the raw layer count; each layer is ``e^λ`` times
  slower than the next one up.
- ``granularity="layer"`` (default, as in the paper): a *layer* is a module owning
  parameters, taken in registration order, with a normalisation layer (BatchNorm) merged into
  the layer before it (a conv and its BN share a rate): 94 layers for Inception-v3 (its 94
  convolutions), 49 for EfficientNet-Lite0. Inside an Inception module the parallel branches
  are ordered as registered. ``granularity="block"``: one rate per parameterised block.
- ``λ = 0`` gives every parameter ``t0``: exactly AllFT at that base rate.

**The paper's "λ = −3, l the number of layers".** Taken literally, ``t0 · exp(3 · l)`` grows
with ``l``: if l counts from the output (t0 at the top, as the text says) rates *grow* toward
the input, contradicting the text; the sign is inconsistent with its own words. Here the
decay always goes toward the input and λ is its positive magnitude: the paper's setting is
``lam=3``. Read with the default normalised depth, ``lam=3`` means the first layer learns
``e^−3 ≈ 1/20`` as fast as the last (1e-3 -> 5e-5). With ``depth="index"``, ``lam=3`` divides
the rate by 20 per layer, so all but the top few layers get rates below 1e-10 (effectively
frozen); ``lam = 3 / (L − 1)`` under "index" reproduces normalised ``lam=3``. Negative λ is
rejected.

**Plateau schedule.** :class:`PlateauScheduler` divides *every* group's rate by 10 when the
validation loss stops improving, by scaling a single common factor, so FTED's ratios survive
exactly. (torch's ``ReduceLROnPlateau`` scales per group but skips a group whose change is
below ``eps=1e-8`` and clamps each group at ``min_lr`` separately; both flatten a decay.)
"""

from __future__ import annotations

import enum
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .backbones import Block, create_backbone, is_norm, mark_frozen_norm
from .head import HEAD_BLOCK, POOLS, Classifier, Head, Pool

logger = logging.getLogger(__name__)

DEFAULT_LR = 1e-4  # paper: SGD (fine-tuning) and Adam (RI)
DEFAULT_FTED_T0 = 1e-3  # paper: FTED's rate at the last convolutional layers
DEFAULT_LAM = 3.0  # paper's |λ|; see the module docstring for the sign
DEFAULT_HEAD_HIDDEN = 256  # not given in the paper
DEFAULT_PLATEAU_PATIENCE = 10  # Keras' ReduceLROnPlateau default (the paper used Keras)

Depth = Literal["normalized", "index"]
Granularity = Literal["layer", "block"]
DEPTHS: tuple[str, ...] = ("normalized", "index")
GRANULARITIES: tuple[str, ...] = ("layer", "block")


# --------------------------------------------------------------------------- variants


class Kind(enum.StrEnum):
    """Closed set of regime kinds; ``KFT`` carries its k in :class:`Variant`."""

    RI = "RI"
    FE = "FE"
    KFT = "kFT"
    ALLFT = "AllFT"
    FTED = "FTED"


#: The paper's seven variants, in its table order.
PAPER_VARIANTS: tuple[str, ...] = ("RI", "FE", "1FT", "2FT", "3FT", "AllFT", "FTED")
_KFT = re.compile(r"^(\d+)FT$", re.IGNORECASE)


@dataclass(frozen=True)
class Variant:
    """A regime kind, with ``k`` (number of fine-tuned blocks) for kFT."""

    kind: Kind
    k: int = 0

    def __post_init__(self) -> None:
        if self.kind is Kind.KFT and self.k < 1:
            raise ValueError(f"kFT needs k >= 1 (k=0 trains the head only: use FE), got {self.k}")
        if self.kind is not Kind.KFT and self.k != 0:
            raise ValueError(f"k is only meaningful for kFT, got k={self.k} for {self.kind}")

    @property
    def name(self) -> str:
        """Canonical spelling: RI, FE, 1FT, 2FT, ..., AllFT, FTED."""
        return f"{self.k}FT" if self.kind is Kind.KFT else self.kind.value

    @property
    def pretrained(self) -> bool:
        """Whether the backbone starts from ImageNet weights (all but RI)."""
        return self.kind is not Kind.RI

    @property
    def optimizer(self) -> Literal["adam", "sgd"]:
        """Paper's optimiser: Adam when training from scratch, SGD with momentum otherwise."""
        return "adam" if self.kind is Kind.RI else "sgd"

    def __str__(self) -> str:
        return self.name


def parse_variant(text: str | Variant) -> Variant:
    """``"2FT"`` -> ``Variant(Kind.KFT, 2)``; case-insensitive (``"allft"``, ``"fted"``).

    Raises:
        ValueError: not a variant name (the message lists the valid ones).
    """
    if isinstance(text, Variant):
        return text
    s = str(text).strip()
    match = _KFT.match(s)
    if match:
        return Variant(Kind.KFT, int(match.group(1)))
    for kind in Kind:
        if kind is not Kind.KFT and s.lower() == kind.value.lower():
            return Variant(kind)
    raise ValueError(
        f"unknown variant {text!r}; use one of {', '.join(PAPER_VARIANTS)} (or kFT for any k >= 1)"
    )


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class RegimeConfig:
    """How to build and optimise a model for one variant.

    Attributes:
        variant: variant name (canonicalised, e.g. ``"allft"`` -> ``"AllFT"``).
        base_lr: learning rate (FTED: t0, the head's and last layer's rate); ``None`` -> paper
            default (1e-4; FTED 1e-3). See :attr:`lr`.
        lam: FTED decay λ >= 0 (paper's λ = −3 is ``lam=3``; module docstring); other variants
            ignore it.
        depth: FTED depth convention, ``"normalized"`` (d in [0, 1]) or ``"index"``.
        granularity: FTED rate per parameterised ``"layer"`` or per ``"block"``.
        momentum: SGD momentum (ignored by RI's Adam).
        weight_decay: L2 coefficient on trainable weights (matrices and kernels); biases and
            normalisation parameters never decay, frozen parameters have no group at all.
        head_hidden: width of the head's two dense layers.
        head_pool: ``"flatten"`` (paper) or ``"avg"``.
        dropout: head dropout probability (paper 0.5).
        n_classes: number of logits.
    """

    variant: str
    base_lr: float | None = None
    lam: float = DEFAULT_LAM
    depth: Depth = "normalized"
    granularity: Granularity = "layer"
    momentum: float = 0.9
    weight_decay: float = 0.0
    head_hidden: int = DEFAULT_HEAD_HIDDEN
    head_pool: Pool = "flatten"
    dropout: float = 0.5
    n_classes: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "variant", parse_variant(self.variant).name)
        if self.base_lr is not None and not (math.isfinite(self.base_lr) and self.base_lr > 0):
            raise ValueError(f"base_lr must be a positive number or None, got {self.base_lr}")
        if not math.isfinite(self.lam) or self.lam < 0:
            raise ValueError(
                f"lam must be >= 0 (rates decay toward the input for lam > 0), got {self.lam}; "
                "the paper's 'lambda = -3' is lam=3 here (see trainables.regimes)"
            )
        if self.depth not in DEPTHS:
            raise ValueError(f"depth must be one of {DEPTHS}, got {self.depth!r}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(
                f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}"
            )
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.head_hidden < 1:
            raise ValueError(f"head_hidden must be >= 1, got {self.head_hidden}")
        if self.head_pool not in POOLS:
            raise ValueError(f"head_pool must be one of {POOLS}, got {self.head_pool!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {self.n_classes}")

    @property
    def parsed(self) -> Variant:
        """The variant as a :class:`Variant`."""
        return parse_variant(self.variant)

    @property
    def lr(self) -> float:
        """Resolved base rate: ``base_lr`` or the paper default (FTED t0 1e-3, else 1e-4)."""
        if self.base_lr is not None:
            return self.base_lr
        return DEFAULT_FTED_T0 if self.parsed.kind is Kind.FTED else DEFAULT_LR


# --------------------------------------------------------------------------- freezing


def freeze(*modules: nn.Module) -> None:
    """The one freezing helper: no gradients, and normalisation layers in eval mode for good.

    Frozen BatchNorm layers neither normalise with batch statistics nor update their running
    statistics, also after later ``model.train()`` calls (models built here honour the mark).
    """
    for module in modules:
        for param in module.parameters():
            param.requires_grad_(False)
        for sub in module.modules():
            if is_norm(sub):
                mark_frozen_norm(sub)


def trainable_blocks(blocks: list[Block], variant: Variant) -> list[str]:
    """Names of the blocks a variant trains (``blocks`` = backbone's block map + head).

    Raises:
        ValueError: kFT with k larger than the number of parameterised backbone blocks.
    """
    if variant.kind in (Kind.RI, Kind.ALLFT, Kind.FTED):
        return [b.name for b in blocks]
    if variant.kind is Kind.FE:
        return [HEAD_BLOCK]
    body = [b.name for b in blocks if b.name != HEAD_BLOCK and b.parameterised]
    if variant.k > len(body):
        raise ValueError(
            f"{variant} fine-tunes {variant.k} blocks but the backbone has {len(body)} "
            f"parameterised blocks; use k <= {len(body)} or AllFT"
        )
    return [*body[len(body) - variant.k :], HEAD_BLOCK]


def build_model(
    backbone: str,
    regime: RegimeConfig,
    *,
    input_size: int,
    pretrained: bool = True,
    weights: str | Path | None = None,
) -> Classifier:
    """Backbone + head for ``regime``, with the regime's frozen parts frozen.

    The model maps (N, 1, S, S) grey or (N, 3, S, S) RGB float32 images, ``S = input_size``,
    on the ImageNet-normalised scale (e.g. per-image standardised), to (N, n_classes) logits;
    grey input is replicated to RGB inside. RI never loads weights (``pretrained`` and
    ``weights`` are ignored); the other variants load them when ``pretrained`` or ``weights``.

    Raises:
        ValueError: unknown backbone, input too small, k too large.
        WeightsNotFoundError: pretrained weights requested but absent.
    """
    variant = regime.parsed
    if not variant.pretrained:
        if weights is not None:
            logger.info("%s trains from random init; ignoring weights=%s", variant, weights)
        pretrained, weights = False, None
    elif not pretrained and weights is None:
        logger.info("%s without pretrained weights: the backbone starts random", variant)
    body = create_backbone(backbone, pretrained=pretrained, weights=weights)
    head = Head(
        body.feature_shape(input_size),
        hidden=regime.head_hidden,
        pool=regime.head_pool,
        dropout=regime.dropout,
        n_classes=regime.n_classes,
    )
    model = Classifier(body, head, input_size=input_size, regime=regime)
    keep = set(trainable_blocks(model.blocks, variant))
    freeze(*(b.module for b in model.blocks if b.name not in keep))
    return model


# --------------------------------------------------------------------------- FTED maths


def layer_depths(n_layers: int, depth: Depth) -> list[float]:
    """Distance from the output of layers 0 .. n-1 (input to output); the last is 0.

    ``"index"``: n-1-i. ``"normalized"``: (n-1-i) / (n-1), in [0, 1] (0 when n = 1).
    """
    if n_layers < 1:
        return []
    if depth == "index":
        return [float(n_layers - 1 - i) for i in range(n_layers)]
    if depth == "normalized":
        span = max(n_layers - 1, 1)
        return [(n_layers - 1 - i) / span for i in range(n_layers)]
    raise ValueError(f"depth must be one of {DEPTHS}, got {depth!r}")


def fted_scales(n_layers: int, lam: float, depth: Depth) -> list[float]:
    """exp(−λ · d_l) for layers input -> output: multipliers of t0, the last one is 1."""
    return [math.exp(-lam * d) for d in layer_depths(n_layers, depth)]


@dataclass(frozen=True, eq=False)
class Layer:
    """A parameterised layer: a module owning parameters (+ the norm layer right after it)."""

    name: str
    block: str
    params: tuple[nn.Parameter, ...]


def parameterised_layers(block: Block) -> list[Layer]:
    """The layers of ``block`` in registration order; norm layers join the layer before."""
    names: list[str] = []
    params: list[list[nn.Parameter]] = []
    for name, module in block.module.named_modules():
        own = list(module.parameters(recurse=False))
        if not own:
            continue
        if is_norm(module) and params:
            params[-1].extend(own)
        else:
            names.append(f"{block.name}.{name}" if name else block.name)
            params.append(own)
    return [Layer(n, block.name, tuple(p)) for n, p in zip(names, params, strict=True)]


# --------------------------------------------------------------------------- param groups


@dataclass(frozen=True, eq=False)
class GroupPlan:
    """One planned optimiser group before weight-decay splitting: rate = base · lr_scale."""

    block: str
    layer: str | None
    params: tuple[nn.Parameter, ...]
    lr_scale: float


def plan_groups(model: Classifier, regime: RegimeConfig) -> list[GroupPlan]:
    """Trainable parameters grouped by rate: per block, or per FTED layer/block.

    Frozen parameters (``requires_grad=False``) appear in no group.
    """
    variant = regime.parsed
    plans: list[GroupPlan] = []
    if variant.kind is Kind.FTED:
        body = [b for b in model.backbone.blocks if b.parameterised]
        if regime.granularity == "layer":
            layers = [layer for b in body for layer in parameterised_layers(b)]
            scales = fted_scales(len(layers), regime.lam, regime.depth)
            plans += [
                GroupPlan(layer.block, layer.name, layer.params, s)
                for layer, s in zip(layers, scales, strict=True)
            ]
        else:
            scales = fted_scales(len(body), regime.lam, regime.depth)
            plans += [
                GroupPlan(b.name, None, tuple(b.module.parameters()), s)
                for b, s in zip(body, scales, strict=True)
            ]
        plans.append(GroupPlan(HEAD_BLOCK, None, tuple(model.head.parameters()), 1.0))
    else:
        plans += [
            GroupPlan(b.name, None, tuple(b.module.parameters()), 1.0) for b in model.blocks
        ]
    kept = [
        GroupPlan(p.block, p.layer, tuple(q for q in p.params if q.requires_grad), p.lr_scale)
        for p in plans
    ]
    return [p for p in kept if p.params]


def param_groups(model: Classifier, regime: RegimeConfig) -> list[dict[str, Any]]:
    """Optimiser param groups: keys params, lr, lr_scale, block, layer, weight_decay.

    With ``weight_decay > 0`` each planned group splits into a decaying part (tensors with
    ndim >= 2: conv kernels, dense matrices) and a non-decaying part (biases, norm affine).
    """
    groups: list[dict[str, Any]] = []
    for plan in plan_groups(model, regime):
        common = {"lr": regime.lr * plan.lr_scale, "lr_scale": plan.lr_scale,
                  "block": plan.block, "layer": plan.layer}
        if regime.weight_decay > 0:
            decay = [p for p in plan.params if p.ndim >= 2]
            rest = [p for p in plan.params if p.ndim < 2]
            if decay:
                groups.append({"params": decay, "weight_decay": regime.weight_decay, **common})
            if rest:
                groups.append({"params": rest, "weight_decay": 0.0, **common})
        else:
            groups.append({"params": list(plan.params), "weight_decay": 0.0, **common})
    return groups


def make_optimizer(model: Classifier, regime: RegimeConfig | None = None) -> torch.optim.Optimizer:
    """Adam (RI) or SGD with momentum (all others) over the trainable parameters only.

    ``regime`` defaults to the one the model was built with. Every group carries ``lr``,
    ``lr_scale`` (rate / base rate), ``block`` and ``layer`` (FTED layer name or None).
    """
    regime = regime if regime is not None else model.regime
    if regime is None:
        raise ValueError("model has no regime; pass one (build models with build_model)")
    groups = param_groups(model, regime)
    if not groups:
        raise ValueError(f"{regime.variant}: the model has no trainable parameters")
    if regime.parsed.optimizer == "adam":
        return torch.optim.Adam(groups, lr=regime.lr)
    return torch.optim.SGD(groups, lr=regime.lr, momentum=regime.momentum)


# --------------------------------------------------------------------------- plateau schedule


class PlateauScheduler:
    """Multiply every group's rate by ``factor`` when the validation loss plateaus.

    All rates are ``initial_lr[g] · scale`` with one common ``scale``, so per-group ratios (the
    FTED decay) are kept exactly; ``min_scale`` clamps the common scale, never a single group.
    A loss improves when it is below ``best · (1 − threshold)``; after ``patience`` epochs
    without improvement the scale drops and ``cooldown`` epochs are ignored.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        factor: float = 0.1,
        patience: int = DEFAULT_PLATEAU_PATIENCE,
        threshold: float = 1e-4,
        cooldown: int = 0,
        min_scale: float = 0.0,
    ) -> None:
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        if patience < 0 or cooldown < 0:
            raise ValueError(f"patience and cooldown must be >= 0, got {patience}, {cooldown}")
        if not 0 <= min_scale <= 1:
            raise ValueError(f"min_scale must be in [0, 1], got {min_scale}")
        self.optimizer = optimizer
        self.factor, self.patience, self.threshold = factor, patience, threshold
        self.cooldown, self.min_scale = cooldown, min_scale
        self.initial_lrs = [float(g["lr"]) for g in optimizer.param_groups]
        self.scale = 1.0
        self.best = math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.num_reductions = 0

    def step(self, val_loss: float) -> bool:
        """Record one epoch's validation loss; returns True when the rates were reduced."""
        val_loss = float(val_loss)
        if val_loss < self.best * (1 - self.threshold):
            self.best, self.num_bad_epochs = val_loss, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs <= self.patience:
            return False
        self.num_bad_epochs, self.cooldown_counter = 0, self.cooldown
        new_scale = max(self.scale * self.factor, self.min_scale)
        if new_scale >= self.scale * (1 - 1e-9):  # already at min_scale (up to rounding)
            return False
        self.scale = new_scale
        self.num_reductions += 1
        self._apply()
        logger.info("plateau: learning rates x%g (scale now %g)", self.factor, self.scale)
        return True

    def _apply(self) -> None:
        for group, lr0 in zip(self.optimizer.param_groups, self.initial_lrs, strict=True):
            group["lr"] = lr0 * self.scale

    def state_dict(self) -> dict[str, Any]:
        """Plain-data state (for checkpoints)."""
        keys = ("factor", "patience", "threshold", "cooldown", "min_scale", "initial_lrs",
                "scale", "best", "num_bad_epochs", "cooldown_counter", "num_reductions")
        return {k: getattr(self, k) for k in keys}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output and re-apply the rates to the optimiser."""
        if len(state["initial_lrs"]) != len(self.optimizer.param_groups):
            raise ValueError(
                f"scheduler state has {len(state['initial_lrs'])} groups, the optimiser "
                f"{len(self.optimizer.param_groups)}"
            )
        for key, value in state.items():
            setattr(self, key, list(value) if key == "initial_lrs" else value)
        self._apply()


def make_plateau_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    factor: float = 0.1,
    patience: int = DEFAULT_PLATEAU_PATIENCE,
    threshold: float = 1e-4,
    cooldown: int = 0,
    min_scale: float = 0.0,
) -> PlateauScheduler:
    """The paper's schedule (÷10 on plateau) as a ratio-keeping :class:`PlateauScheduler`."""
    return PlateauScheduler(
        optimizer, factor=factor, patience=patience, threshold=threshold,
        cooldown=cooldown, min_scale=min_scale,
    )


# --------------------------------------------------------------------------- inspection


def lr_table(model: Classifier, optimizer: torch.optim.Optimizer | None = None) -> list[dict]:
    """Per block (input to output, head last): what trains at what rate.

    Rows ``{"block": str, "params": int, "trainable": int, "lr_min": float | None,
    "lr_max": float | None}``: parameter counts are scalars; rates are the min/max over the
    block's trainable parameters, read from ``optimizer``'s current groups (so they reflect
    plateau reductions) or, without one, planned from ``model.regime``. ``None`` when nothing
    in the block trains.
    """
    groups = (
        optimizer.param_groups
        if optimizer is not None
        else (param_groups(model, model.regime) if model.regime is not None else [])
    )
    rate = {id(p): float(g["lr"]) for g in groups for p in g["params"]}
    rows = []
    for block in model.blocks:
        params = list(block.module.parameters())
        rates = [rate[id(p)] for p in params if p.requires_grad and id(p) in rate]
        rows.append({
            "block": block.name,
            "params": sum(p.numel() for p in params),
            "trainable": sum(p.numel() for p in params if p.requires_grad),
            "lr_min": min(rates) if rates else None,
            "lr_max": max(rates) if rates else None,
        })
    return rows

"""Regimes: what trains, what stays bit-identical, FTED rates, optimiser groups, plateau."""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import pytest
import torch
from torch import nn

from trainables.backbones import is_norm
from trainables.head import Classifier
from trainables.regimes import (
    PAPER_VARIANTS,
    Kind,
    RegimeConfig,
    Variant,
    build_model,
    fted_scales,
    layer_depths,
    lr_table,
    make_optimizer,
    make_plateau_scheduler,
    param_groups,
    parameterised_layers,
    parse_variant,
)

SMALL = {"inception_v3": 75, "efficientnet_lite0": 64}
# Blocks each variant trains, written out from the block maps (not derived by the code).
LAST_BLOCKS = {
    "inception_v3": ["Mixed_7a", "Mixed_7b", "Mixed_7c"],
    "efficientnet_lite0": ["stage5", "stage6", "head_conv"],
}


def small_model(backbone: str, variant: str, **regime) -> Classifier:
    """A model at the smallest input; real ImageNet weights for Lite0, random Inception."""
    regime.setdefault("head_hidden", 16)
    return build_model(
        backbone,
        RegimeConfig(variant, **regime),
        input_size=SMALL[backbone],
        pretrained=backbone == "efficientnet_lite0",
    )


def expected_trainable_blocks(backbone: str, variant: str, all_blocks: list[str]) -> set[str]:
    if variant in ("RI", "AllFT", "FTED"):
        return set(all_blocks)
    if variant == "FE":
        return {"head"}
    k = int(variant[0])
    return {*LAST_BLOCKS[backbone][3 - k :], "head"}


def one_step(model: Classifier, opt: torch.optim.Optimizer, seed: int = 0) -> None:
    size = model.input_size
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 1, size, size, generator=gen)  # grey ROIs, fed as is
    y = torch.tensor([0, 1, 0, 1])
    torch.manual_seed(seed)  # dropout
    model.train()
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


# ------------------------------------------------------------------------------ variants


def test_parse_variant_accepts_the_papers_seven_and_any_k():
    assert [parse_variant(v).name for v in PAPER_VARIANTS] == list(PAPER_VARIANTS)
    assert parse_variant("allft") == Variant(Kind.ALLFT)
    assert parse_variant("5ft") == Variant(Kind.KFT, 5)
    assert parse_variant(" FTED ").kind is Kind.FTED
    assert parse_variant("RI").optimizer == "adam" and not parse_variant("RI").pretrained
    assert all(parse_variant(v).optimizer == "sgd" for v in PAPER_VARIANTS[1:])
    with pytest.raises(ValueError, match="RI, FE, 1FT, 2FT, 3FT, AllFT, FTED"):
        parse_variant("fine-tune")
    with pytest.raises(ValueError, match="use FE"):
        parse_variant("0FT")


def test_regime_config_canonicalises_and_validates():
    cfg = RegimeConfig("allft")
    assert cfg.variant == "AllFT" and cfg.lr == 1e-4
    assert RegimeConfig("fted").lr == 1e-3
    assert RegimeConfig("RI", base_lr=3e-4).lr == 3e-4
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lam = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="lam=3"):
        RegimeConfig("FTED", lam=-3)
    for bad in ({"depth": "layers"}, {"granularity": "stage"}, {"base_lr": 0.0},
                {"momentum": 1.0}, {"dropout": 1.0}, {"head_pool": "max"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            RegimeConfig("FTED", **bad)


def test_k_larger_than_the_block_map_is_rejected():
    with pytest.raises(ValueError, match="9 parameterised blocks"):
        small_model("efficientnet_lite0", "10FT")


# ----------------------------------------------- exact trainable sets, one optimiser step


@pytest.mark.parametrize("variant", PAPER_VARIANTS)
@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "inception_v3"])
def test_variant_trains_exactly_its_blocks_and_nothing_else(backbone, variant):
    model = small_model(backbone, variant, base_lr=0.05)
    blocks = {b.name: b for b in model.blocks}
    want = expected_trainable_blocks(backbone, variant, list(blocks))

    # 1. the exact set of trainable parameters, counted against the block map
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    expected = {id(p) for name in want for p in blocks[name].module.parameters()}
    assert trainable == expected
    table = {row["block"]: row for row in lr_table(model)}
    for name, block in blocks.items():
        assert table[name]["params"] == block.num_params
        assert table[name]["trainable"] == (block.num_params if name in want else 0)

    # 2. optimiser holds only trainable parameters
    opt = make_optimizer(model)
    grouped = [p for g in opt.param_groups for p in g["params"]]
    assert len(grouped) == len(set(map(id, grouped))) and set(map(id, grouped)) == trainable
    assert isinstance(opt, torch.optim.Adam if variant == "RI" else torch.optim.SGD)

    # 3. frozen BatchNorm stays in eval mode across model.train()
    model.train()
    for name, block in blocks.items():
        for m in block.module.modules():
            if is_norm(m):
                assert m.training == (name in want), f"{name}: {m}"

    # 4. one step: frozen tensors and BN statistics bit-identical, trainable ones moved
    before = {k: v.clone() for k, v in model.state_dict().items()}
    one_step(model, opt)
    after = model.state_dict()
    owner = {k: k.split(".")[2] if k.startswith("backbone.") else "head" for k in before}
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    for key in before:
        if owner[key] not in want:
            assert key not in moved, f"frozen {key} changed"
    # Every trainable tensor got a gradient; those whose update is visible in float32 moved.
    # (Some get an exactly-zero gradient by design: a BN bias feeding, through linear layers
    # only, another BN in train mode that subtracts the batch mean.)
    lr = lr_per_param(opt.param_groups)
    trained = {k: p for k, p in model.named_parameters() if p.requires_grad}
    for key, p in trained.items():
        assert p.grad is not None, f"trainable {key} got no gradient"
        visible = lr[id(p)] * p.grad.abs().max() > 1e-6 * (1 + p.abs().max())
        if visible or variant == "RI":  # Adam's first step moves by ~lr whatever the scale
            assert key in moved or not p.grad.any(), f"trainable {key} did not move"
    learnt = {owner[k] for k in trained if k in moved}
    assert learnt == {name for name in want if blocks[name].parameterised}
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    for key in stats:
        assert (key in moved) == (owner[key] in want), key
    assert {id(p) for p in opt.state} == trainable  # no state for frozen parameters
    model.eval()
    assert not any(m.training for m in model.modules())


def test_frozen_norm_mode_survives_copies_and_nested_train_calls():
    model = small_model("efficientnet_lite0", "1FT")
    clone = copy.deepcopy(model)
    for m in (model, clone):
        m.train()
        m.backbone.train()
        stem_bn = m.backbone.blocks[0].module[1]
        head_bn = m.backbone.blocks[-1].module[1]
        assert not stem_bn.training and head_bn.training


def test_model_maps_grey_images_to_two_logits():
    model = small_model("efficientnet_lite0", "FE").eval()
    grey = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        logits = model(grey)
        assert logits.shape == (3, 2)
        assert torch.equal(logits, model(grey.expand(-1, 3, -1, -1).contiguous()))


def test_flatten_head_keeps_the_whole_map_and_avg_pools_it():
    flat = small_model("efficientnet_lite0", "FE", head_hidden=8)
    avg = small_model("efficientnet_lite0", "FE", head_hidden=8, head_pool="avg")
    assert flat.head.layers.fc1.in_features == 1280 * 2 * 2
    assert avg.head.layers.fc1.in_features == 1280
    assert flat.head.layers.drop.p == 0.5 and flat.head.layers.logits.out_features == 2


def test_random_init_never_needs_weight_files(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty hub cache
    model = build_model("inception_v3", RegimeConfig("RI", head_hidden=8), input_size=75,
                        weights=tmp_path / "absent.pth")
    assert all(p.requires_grad for p in model.parameters())


# ------------------------------------------------------------------------------ FTED maths


def test_layer_depths_and_scales_at_their_edges():
    assert layer_depths(0, "normalized") == []
    assert layer_depths(1, "normalized") == [0.0] == layer_depths(1, "index")
    assert layer_depths(5, "normalized") == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert layer_depths(5, "index") == [4.0, 3.0, 2.0, 1.0, 0.0]
    assert fted_scales(4, 0.0, "index") == [1.0] * 4
    scales = fted_scales(10, 3.0, "normalized")
    assert scales[-1] == 1.0 and scales[0] == pytest.approx(math.exp(-3))
    with pytest.raises(ValueError):
        layer_depths(3, "depth")  # type: ignore[arg-type]


def lr_per_param(groups) -> dict[int, float]:
    return {id(p): g["lr"] for g in groups for p in g["params"]}


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "inception_v3"])
@pytest.mark.parametrize("depth", ["normalized", "index"])
def test_fted_rates_decay_toward_the_input(backbone, depth):
    lam = 3.0 if depth == "normalized" else 0.05
    model = small_model(backbone, "FTED", lam=lam, depth=depth)
    groups = make_optimizer(model).param_groups
    assert groups[-1]["block"] == "head" and groups[-1]["lr"] == 1e-3  # head at t0
    body = groups[:-1]
    layers = [layer for b in model.backbone.blocks for layer in parameterised_layers(b)]
    assert [g["layer"] for g in body] == [layer.name for layer in layers]  # one group per layer
    rates = [g["lr"] for g in body]
    assert rates[-1] == 1e-3  # last parameterised layer at t0
    assert all(a < b for a, b in zip(rates, rates[1:], strict=False))  # monotone in depth
    n = len(rates)
    if depth == "normalized":
        assert rates[0] == pytest.approx(1e-3 * math.exp(-3.0))
    else:
        assert rates[0] == pytest.approx(1e-3 * math.exp(-lam * (n - 1)))
        ratios = [b / a for a, b in zip(rates, rates[1:], strict=False)]
        assert ratios == pytest.approx([math.exp(lam)] * (n - 1))
    for g in groups:
        assert g["lr_scale"] == pytest.approx(g["lr"] / 1e-3)


def test_fted_block_granularity_gives_one_rate_per_block():
    model = small_model("efficientnet_lite0", "FTED", granularity="block", lam=2.0)
    rows = lr_table(model)
    assert all(r["lr_min"] == r["lr_max"] for r in rows)
    rates = [r["lr_min"] for r in rows]
    assert rates[-2:] == [1e-3, 1e-3]  # head_conv and head at t0
    assert all(a < b for a, b in zip(rates[:-1], rates[1:-1], strict=False))
    assert rates[0] == pytest.approx(1e-3 * math.exp(-2.0))


def test_fted_with_lambda_zero_is_allft():
    torch.manual_seed(1)
    fted = small_model("efficientnet_lite0", "FTED", lam=0.0, base_lr=1e-2)
    torch.manual_seed(1)
    allft = small_model("efficientnet_lite0", "AllFT", base_lr=1e-2)
    assert all(torch.equal(a, b) for a, b in
               zip(fted.state_dict().values(), allft.state_dict().values(), strict=True))
    opt_fted, opt_all = make_optimizer(fted), make_optimizer(allft)
    names = {id(p): n for n, p in fted.named_parameters()}
    names_all = {id(p): n for n, p in allft.named_parameters()}
    lr_fted = {names[i]: lr for i, lr in lr_per_param(opt_fted.param_groups).items()}
    lr_all = {names_all[i]: lr for i, lr in lr_per_param(opt_all.param_groups).items()}
    assert lr_fted == lr_all and set(lr_all.values()) == {1e-2}
    one_step(fted, opt_fted)
    one_step(allft, opt_all)
    assert all(torch.equal(a, b) for a, b in
               zip(fted.state_dict().values(), allft.state_dict().values(), strict=True))


def test_weight_decay_skips_biases_norms_and_frozen_parameters():
    model = small_model("efficientnet_lite0", "2FT", weight_decay=1e-4)
    groups = param_groups(model, model.regime)
    assert {g["block"] for g in groups} == {"stage6", "head_conv", "head"}
    for g in groups:
        assert all(p.requires_grad for p in g["params"])
        if g["weight_decay"] > 0:
            assert all(p.ndim >= 2 for p in g["params"])
        else:
            assert all(p.ndim < 2 for p in g["params"])


# ------------------------------------------------------------------------- plateau schedule


def fted_optimizer(**regime) -> tuple[Classifier, torch.optim.Optimizer]:
    model = small_model("efficientnet_lite0", "FTED", **regime)
    return model, make_optimizer(model)


def ratios(opt: torch.optim.Optimizer) -> list[float]:
    top = opt.param_groups[-1]["lr"]
    return [g["lr"] / top for g in opt.param_groups]


def test_plateau_divides_every_group_by_ten_and_keeps_fted_ratios():
    model, opt = fted_optimizer()
    start = [g["lr"] for g in opt.param_groups]
    before = ratios(opt)
    sched = make_plateau_scheduler(opt, patience=2)
    assert [sched.step(x) for x in (1.0, 0.9, 0.95, 0.95)] == [False] * 4  # 2 bad epochs: wait
    assert sched.step(0.95)  # the third bad epoch reduces
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([lr / 10 for lr in start])
    assert ratios(opt) == pytest.approx(before, rel=1e-12)
    table = lr_table(model, opt)
    assert table[-1]["lr_max"] == pytest.approx(1e-4)  # the table shows current rates
    assert sched.step(0.5) is False and sched.num_bad_epochs == 0  # improvement resets


def test_plateau_keeps_ratios_where_torchs_scheduler_flattens_them():
    """torch's ReduceLROnPlateau skips changes below eps=1e-8 and clamps min_lr per group."""
    _, ours = fted_optimizer(depth="index", lam=0.5)
    _, theirs = fted_optimizer(depth="index", lam=0.5)
    _, clamped = fted_optimizer(depth="index", lam=0.5)
    before = ratios(ours)
    sched = make_plateau_scheduler(ours, patience=0)
    torch_sched = torch.optim.lr_scheduler.ReduceLROnPlateau(theirs, patience=0)
    torch_min = torch.optim.lr_scheduler.ReduceLROnPlateau(clamped, patience=0, min_lr=1e-6)
    for _ in range(4):
        for s in (sched, torch_sched, torch_min):
            s.step(1.0)  # no improvement after the first epoch
    assert sched.num_reductions == 3
    assert ratios(ours) == pytest.approx(before, rel=1e-12)
    assert ratios(theirs) != pytest.approx(before, rel=1e-3)  # tiny groups never reduced
    assert ratios(clamped) != pytest.approx(before, rel=1e-3)  # small groups clamped


def test_plateau_min_scale_clamps_the_common_scale_only():
    _, opt = fted_optimizer()
    before = ratios(opt)
    top = opt.param_groups[-1]["lr"]
    sched = make_plateau_scheduler(opt, patience=0, min_scale=1e-2)
    reduced = [sched.step(1.0) for _ in range(6)]
    assert reduced == [False, True, True, False, False, False]
    assert opt.param_groups[-1]["lr"] == pytest.approx(top * 1e-2)
    assert ratios(opt) == pytest.approx(before, rel=1e-12)


def test_plateau_state_round_trips_through_a_checkpoint():
    _, opt = fted_optimizer()
    sched = make_plateau_scheduler(opt, patience=1, cooldown=1)
    for loss in (1.0, 1.0, 1.0, 0.99):
        sched.step(loss)
    state = json.loads(json.dumps(sched.state_dict()))  # plain data
    _, opt2 = fted_optimizer()
    sched2 = make_plateau_scheduler(opt2)
    sched2.load_state_dict(state)
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
    assert sched2.state_dict() == sched.state_dict()
    for loss in (1.0, 1.0, 1.0):
        assert sched.step(loss) == sched2.step(loss)
    with pytest.raises(ValueError, match="groups"):
        make_plateau_scheduler(make_optimizer(small_model("efficientnet_lite0", "FE"))) \
            .load_state_dict(state)


# ------------------------------------------------------------------------------- lr table


def test_lr_table_reports_blocks_counts_and_rates():
    model = small_model("efficientnet_lite0", "1FT")
    rows = lr_table(model)
    assert [r["block"] for r in rows] == [b.name for b in model.blocks]
    assert list(rows[0]) == ["block", "params", "trainable", "lr_min", "lr_max"]
    assert sum(r["params"] for r in rows) == sum(p.numel() for p in model.parameters())
    frozen, trained = rows[:-2], rows[-2:]
    assert all(r["trainable"] == 0 and r["lr_min"] is None for r in frozen)
    assert all(r["trainable"] == r["params"] and r["lr_min"] == r["lr_max"] == 1e-4
               for r in trained)
    assert lr_table(model, make_optimizer(model)) == rows

"""Backbones: block maps, shapes, grey input, weight loading (real files, no downloads)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from trainables.backbones import (
    WeightsNotFoundError,
    available_backbones,
    create_backbone,
    default_input_size,
)
from trainables.backbones import efficientnet_lite0 as lite0
from trainables.backbones import inception_v3 as inc

INCEPTION_BLOCKS = [
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
    "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
    "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c",
]
LITE0_BLOCKS = ["stem", *(f"stage{i}" for i in range(7)), "head_conv"]
SMALL = {"inception_v3": 75, "efficientnet_lite0": 64}


@pytest.fixture(scope="module")
def lite0_pretrained():
    return create_backbone("efficientnet_lite0", pretrained=True)


def test_registry_lists_both_and_rejects_unknown():
    assert {"inception_v3", "efficientnet_lite0"} <= set(available_backbones())
    assert default_input_size("inception_v3") == 299
    assert default_input_size("efficientnet_lite0") == 224
    with pytest.raises(ValueError, match="available: .*inception_v3"):
        create_backbone("resnet9000")


@pytest.mark.parametrize(
    ("name", "blocks"), [("inception_v3", INCEPTION_BLOCKS), ("efficientnet_lite0", LITE0_BLOCKS)]
)
def test_block_map_is_ordered_and_covers_every_parameter_once(name, blocks):
    bb = create_backbone(name, pretrained=False)
    assert [b.name for b in bb.blocks] == blocks
    owner: dict[int, str] = {}
    for block in bb.blocks:
        for p in block.module.parameters():
            assert id(p) not in owner, f"{block.name} shares a parameter with {owner[id(p)]}"
            owner[id(p)] = block.name
    assert set(owner) == {id(p) for p in bb.parameters()}
    assert sum(b.num_params for b in bb.blocks) == sum(p.numel() for p in bb.parameters())


def test_inception_structure_matches_the_paper():
    bb = create_backbone("inception_v3", pretrained=False)
    convs = [b for b in bb.blocks if b.name.startswith("Conv2d_")]
    pools = [b for b in bb.blocks if b.name.startswith("maxpool")]
    mixed = [b for b in bb.blocks if b.name.startswith("Mixed_")]
    assert (len(convs), len(pools), len(mixed)) == (5, 2, 11)
    for b in convs:  # each stem convolution is followed by batch norm
        kinds = [type(m) for m in b.module.children()]
        assert kinds == [nn.Conv2d, nn.BatchNorm2d]
    assert not any(b.parameterised for b in pools)
    assert not any("AuxLogits" in n or n.startswith("fc") for n, _ in bb.named_parameters())


@pytest.mark.parametrize(
    ("name", "size", "shape"),
    [
        ("inception_v3", 299, (2048, 8, 8)),
        ("inception_v3", 75, (2048, 1, 1)),
        ("efficientnet_lite0", 224, (1280, 7, 7)),
        ("efficientnet_lite0", 64, (1280, 2, 2)),
    ],
)
def test_feature_shape(name, size, shape):
    bb = create_backbone(name, pretrained=False)
    assert bb.feature_shape(size) == shape
    assert bb.num_features == shape[0]
    assert bb.training  # feature_shape restores the mode


@pytest.mark.parametrize("name", ["inception_v3", "efficientnet_lite0"])
def test_grey_input_is_replicated_to_rgb(name):
    bb = create_backbone(name, pretrained=False).eval()
    s = SMALL[name]
    grey = torch.randn(2, 1, s, s)
    with torch.no_grad():
        out = bb(grey)
        assert torch.equal(out, bb(grey.repeat(1, 3, 1, 1)))
    assert out.shape == (2, *bb.feature_shape(s))


@pytest.mark.parametrize("name", ["inception_v3", "efficientnet_lite0"])
def test_too_small_input_is_rejected(name):
    bb = create_backbone(name, pretrained=False)
    too_small = bb.min_input_size - 1
    with pytest.raises(ValueError, match=f"at least {bb.min_input_size} px"):
        bb(torch.zeros(1, 1, too_small, too_small))
    with pytest.raises(ValueError, match="shape"):
        bb(torch.zeros(1, 2, 80, 80))


# ----------------------------------------------------------------- EfficientNet-Lite0 weights


def test_lite0_package_weights_map_one_to_one(lite0_pretrained):
    package = torch.load(lite0.package_weights_path(), map_location="cpu", weights_only=True)
    assert len(package) == lite0.N_TENSORS == 296
    reference = lite0._timm_model().state_dict()
    mapped = lite0.to_timm_keys(package, reference)
    assert list(mapped) == list(reference)
    for (src, a), (dst, b) in zip(package.items(), mapped.items(), strict=True):
        assert a is b and a.shape == reference[dst].shape, (src, dst)
    # the running statistics landed on BN buffers: variances are non-negative and mostly > 0
    variances = torch.cat([v for k, v in mapped.items() if k.endswith("running_var")])
    assert variances.min() >= 0 and (variances > 0).float().mean() > 0.99
    # and the backbone holds them: stem conv and last BN equal the package tensors
    stem_conv, stem_bn = lite0_pretrained.blocks[0].module
    assert torch.equal(stem_conv.weight, package["_conv_stem.weight"])
    head_bn = lite0_pretrained.blocks[-1].module[1]
    assert torch.equal(head_bn.running_var, package["_bn1.running_var"])


def test_lite0_mapping_rejects_wrong_tensors():
    reference = lite0._timm_model().state_dict()
    state = dict(reference)
    state.pop(next(iter(state)))
    with pytest.raises(ValueError, match="expected 296 tensors"):
        lite0.to_timm_keys(state, reference)
    shuffled = dict(reversed(list(reference.items())))
    renamed = {f"x{i}": v for i, v in enumerate(shuffled.values())}
    with pytest.raises(ValueError, match="does not fit"):
        lite0.to_timm_keys(renamed, reference)


def test_lite0_mapped_weights_recognise_a_photo():
    """Sanity check of the mapping: scikit-learn's temple photo lands in ImageNet's buildings."""
    from sklearn.datasets import load_sample_image
    from timm.data import ImageNetInfo

    model = lite0.create_timm_model(pretrained=True).eval()
    image = torch.tensor(np.asarray(load_sample_image("china.jpg")), dtype=torch.float32)
    x = nn.functional.interpolate(image.permute(2, 0, 1)[None] / 255, size=(224, 224),
                                  mode="bilinear", antialias=True)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        probs = model((x - mean) / std).softmax(-1)[0]
    info = ImageNetInfo()
    top5 = [info.index_to_description(int(i)) for i in probs.topk(5).indices]
    buildings = ("church", "palace", "monastery", "bell cote", "stupa", "mosque", "boathouse")
    assert any(word in label for label in top5[:3] for word in buildings), top5
    assert probs.max() > 0.2  # a confident, non-degenerate prediction


def test_lite0_weights_from_an_explicit_file(tmp_path, lite0_pretrained):
    path = tmp_path / "lite0_timm.pth"
    torch.save(lite0.create_timm_model(pretrained=True).state_dict(), path)  # timm naming
    bb = create_backbone("efficientnet_lite0", weights=path)
    for a, b in zip(bb.state_dict().values(), lite0_pretrained.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(WeightsNotFoundError, match="nowhere.pth"):
        create_backbone("efficientnet_lite0", weights=tmp_path / "nowhere.pth")


# ----------------------------------------------------------------------- Inception-v3 weights


def test_inception_hub_file_name_is_torchvisions():
    url = torchvision.models.Inception_V3_Weights.IMAGENET1K_V1.url
    assert os.path.basename(url) == inc.WEIGHTS_FILE == "inception_v3_google-0cc3c7bd.pth"


def test_missing_inception_weights_name_the_file_and_how_to_stage_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    expected = tmp_path / "torch" / "hub" / "checkpoints" / inc.WEIGHTS_FILE
    assert inc.default_weights_path() == expected
    with pytest.raises(WeightsNotFoundError) as info:
        create_backbone("inception_v3", pretrained=True)
    message = str(info.value)
    assert "inception_v3_google-0cc3c7bd.pth" in message
    assert str(expected) in message  # where to put it
    assert "weights='IMAGENET1K_V1'" in message  # how to stage it
    assert "--weights" in message
    with pytest.raises(WeightsNotFoundError, match="elsewhere.pth"):
        create_backbone("inception_v3", weights=tmp_path / "elsewhere.pth")
    assert isinstance(info.value, FileNotFoundError)


def test_inception_weights_load_from_hub_cache_and_explicit_file(tmp_path, monkeypatch):
    # A file shaped like torchvision's (aux classifier and 1000-way fc included), random values.
    source = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    path = cache / inc.WEIGHTS_FILE
    torch.save(source.state_dict(), path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    expected = {k: v for k, v in source.state_dict().items() if not k.startswith(("Aux", "fc"))}
    for bb in (create_backbone("inception_v3"), create_backbone("inception_v3", weights=path)):
        got = {k.removeprefix("body."): v for k, v in bb.state_dict().items()}
        assert got.keys() == expected.keys()
        assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_inception_rejects_a_foreign_state_dict(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="not a torchvision Inception-v3 state dict"):
        create_backbone("inception_v3", weights=path)

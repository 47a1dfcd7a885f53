"""Per-sample augmentation, GCN and resizing, on small CPU tensors."""

import math

import numpy as np
import pytest
import torch

from trainables.augment import AugmentParams, gcn, prepare_batch, random_affine, resize, warp


def _raw(n=8, s=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, s, s), generator=g, dtype=torch.uint8)


def test_each_sample_in_a_batch_gets_its_own_transform():
    one = _raw(1, 32)
    batch = one.expand(16, 32, 32).contiguous()  # 16 copies of the same ROI
    out = prepare_batch(batch, 32, augment=AugmentParams(), generator=torch.Generator())
    flat = out.flatten(1)
    dist = torch.cdist(flat, flat)
    off_diagonal = dist[~torch.eye(16, dtype=torch.bool)]
    assert off_diagonal.min() > 1.0, "two samples of one batch got the same transform"
    theta = random_affine(16, AugmentParams(), torch.Generator().manual_seed(1))
    assert torch.unique(theta.flatten(1), dim=0).shape[0] == 16


def test_draws_respect_ranges_and_flip_half_the_time():
    p = AugmentParams(max_shift=0.25, max_rotation_deg=40.0, hflip=True)
    theta = random_affine(4000, p, torch.Generator().manual_seed(0))
    a, b, c, d = theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1]
    det = a * d - b * c
    flipped = det < 0
    assert 0.45 < flipped.float().mean() < 0.55
    angle = torch.atan2(c * torch.where(flipped, -1.0, 1.0), d)
    assert angle.abs().max() <= math.radians(40) + 1e-6
    assert angle.min() < math.radians(-35) and angle.max() > math.radians(35)
    shifts = theta[:, :, 2]
    assert shifts.abs().max() <= 0.5 + 1e-6 and shifts.abs().max() > 0.45  # 0.25 of side 2


def test_zero_ranges_are_the_identity():
    x = gcn(_raw(4, 16).unsqueeze(1).float())
    p = AugmentParams(max_shift=0.0, max_rotation_deg=0.0, hflip=False)
    out = warp(x, random_affine(4, p, torch.Generator()))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_flip_only_mirrors_horizontally():
    x = gcn(_raw(64, 8).unsqueeze(1).float())
    p = AugmentParams(max_shift=0.0, max_rotation_deg=0.0, hflip=True)
    out = warp(x, random_affine(64, p, torch.Generator().manual_seed(3)))
    same = torch.isclose(out, x, atol=1e-5).flatten(1).all(1)
    mirrored = torch.isclose(out, x.flip(-1), atol=1e-5).flatten(1).all(1)
    assert (same ^ mirrored).all() and same.any() and mirrored.any()


def test_gcn_per_image_zero_mean_unit_std_and_flat_image_safe():
    x = _raw(5, 16).float().unsqueeze(1) * torch.arange(1, 6).view(5, 1, 1, 1)
    x[0] = 7.0  # flat image
    y = gcn(x)
    torch.testing.assert_close(y.mean(dim=(1, 2, 3)), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(y[1:].std(dim=(1, 2, 3), correction=0), torch.ones(4))
    assert torch.isfinite(y).all() and (y[0] == 0).all()


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_prepare_batch_resizes_and_keeps_dtype_contract(dtype):
    raw = torch.from_numpy(np.random.default_rng(0).integers(0, 200, (3, 48, 48)).astype(dtype))
    raw = raw.to(torch.int32) if dtype == np.uint16 else raw
    out = prepare_batch(raw, 32)
    assert out.shape == (3, 1, 32, 32) and out.dtype == torch.float32
    assert resize(out, 32) is out


def test_same_generator_state_same_batch():
    raw = _raw(6, 24)
    a = prepare_batch(raw, 24, augment=AugmentParams(), generator=torch.Generator().manual_seed(5))
    b = prepare_batch(raw, 24, augment=AugmentParams(), generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="Generator"):
        prepare_batch(raw, 24, augment=AugmentParams())

"""Tests of training.losses and training.metrics on hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from training.losses import (
    LossConfig,
    depth_loss,
    depth_loss_parts,
    dice_score,
    gradient_loss,
    mask_loss,
    mask_loss_parts,
    ssim,
    total_loss,
)
from training.metrics import DEPTH_EPS, METRIC_KEYS, SegDepthMetrics, constant_baseline, mean_depth


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------- losses


def test_loss_config_defaults_are_densedepth():
    cfg = LossConfig()
    assert (cfg.depth_loss, cfg.w_l1, cfg.w_ssim, cfg.w_grad) == ("dense", 1.0, 1.0, 1.0)
    assert cfg.w_l2 == 0.0  # the squared-error term is opt-in
    with pytest.raises(ValueError, match="depth_loss"):
        LossConfig(depth_loss="l2")
    with pytest.raises(ValueError, match="w_bce"):
        LossConfig(w_bce=-1.0)


@pytest.mark.parametrize("gaussian", [True, False])
@pytest.mark.parametrize("window", [7, 11])
def test_ssim_identity_and_noise(gaussian, window):
    x = _rand(2, 1, 48, 48)
    assert ssim(x, x, window=window, gaussian=gaussian).item() == pytest.approx(1.0, abs=1e-5)
    g = torch.Generator().manual_seed(1)
    values = [
        ssim(x, (x + s * torch.randn(x.shape, generator=g)).clamp(0, 1), window=window, gaussian=gaussian).item()
        for s in (0.02, 0.1, 0.3)
    ]
    assert 1.0 > values[0] > values[1] > values[2]


def test_ssim_small_images_differentiable_and_autocast_safe():
    x = _rand(1, 1, 5, 6).requires_grad_()
    y = _rand(1, 1, 5, 6, seed=1)
    s = ssim(x, y)  # window shrinks to 5
    s.backward()
    assert torch.isfinite(x.grad).all()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        a, b = _rand(2, 1, 32, 32), _rand(2, 1, 32, 32, seed=1)
        v = ssim(a.bfloat16(), b.bfloat16())
    assert v.dtype == torch.float32
    assert v.item() == pytest.approx(ssim(a.bfloat16().float(), b.bfloat16().float()).item(), abs=1e-6)


def test_dense_depth_loss_values():
    t = _rand(2, 1, 32, 32)
    assert depth_loss(t, t, LossConfig()).item() == pytest.approx(0.0, abs=1e-5)
    # a constant offset: L1 = 0.1 and no image-gradient error
    only_l1 = LossConfig(w_l1=1.0, w_ssim=0.0, w_grad=0.0)
    assert depth_loss(t + 0.1, t, only_l1).item() == pytest.approx(0.1, abs=1e-6)
    assert gradient_loss(t + 0.1, t).item() == pytest.approx(0.0, abs=1e-6)
    # the squared-error term: half the pixels off by 0.2, half exact -> MSE 0.02, L1 0.1
    only_l2 = LossConfig(w_l1=0.0, w_ssim=0.0, w_grad=0.0, w_l2=3.0)
    off = t.clone()
    off[..., :16, :] += 0.2
    parts = depth_loss_parts(off, t, only_l2)
    assert parts["depth_l2"].item() == pytest.approx(0.02, rel=1e-4)
    assert parts["depth_l1"].item() == pytest.approx(0.1, rel=1e-4)
    assert parts["depth"].item() == pytest.approx(3.0 * 0.02, rel=1e-4)
    assert depth_loss((t * 0.8 + 0.1).clamp(0, 1), t).item() > 0
    pred = t.clone().requires_grad_()
    depth_loss((pred * 0.5), t).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_cosine_depth_loss():
    cfg = LossConfig(depth_loss="cosine")
    t = _rand(3, 1, 16, 16) + 0.1
    assert depth_loss(2 * t, t, cfg).item() == pytest.approx(0.0, abs=1e-6)  # scale invariant
    a = torch.zeros(1, 1, 2, 2)
    b = torch.zeros(1, 1, 2, 2)
    a[..., 0, 0] = 1.0
    b[..., 1, 1] = 1.0
    assert depth_loss(a, b, cfg).item() == pytest.approx(1.0, abs=1e-6)  # orthogonal
    loss, parts = total_loss(t, torch.zeros_like(t), t, torch.zeros_like(t), cfg)
    assert "depth_cosine" in parts and "depth_ssim" not in parts
    assert parts["depth"] == pytest.approx(0.0, abs=1e-6)


def test_mask_loss_perfect_logits_and_empty_masks():
    target = torch.zeros(2, 1, 16, 16)
    target[0, :, 4:10, 4:10] = 1.0
    perfect = (target * 2 - 1) * 30.0
    parts = mask_loss_parts(perfect, target)
    assert parts["mask_bce"].item() < 1e-6
    assert parts["mask_dice"].item() < 1e-6
    assert mask_loss(perfect, target).item() < 1e-5
    # empty target + empty prediction: Dice is 1 thanks to the smoothing; wrong prediction costs
    empty = torch.zeros(1, 1, 8, 8)
    assert dice_score(torch.full_like(empty, -30.0), empty).item() == pytest.approx(1.0)
    assert math.isfinite(mask_loss(torch.zeros_like(empty), empty).item())
    assert mask_loss(torch.full_like(empty, 30.0), empty).item() > 1.0
    # logits are bf16-safe: computed in float32
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        v = mask_loss(perfect.bfloat16(), target)
    assert v.dtype == torch.float32 and v.item() < 1e-4


def test_total_loss_combines_weighted_parts():
    d, t = _rand(2, 1, 32, 32), _rand(2, 1, 32, 32, seed=1)
    logits, m = torch.randn(2, 1, 32, 32), (_rand(2, 1, 32, 32, seed=2) > 0.5).float()
    cfg = LossConfig(w_depth=2.0, w_mask=0.5, w_l2=4.0)
    loss, parts = total_loss(d, logits, t, m, cfg)
    assert set(parts) == {"loss", "depth", "mask", "depth_l1", "depth_ssim", "depth_grad", "depth_l2", "mask_bce",
                          "mask_dice"}
    assert all(isinstance(v, float) for v in parts.values())
    assert parts["loss"] == pytest.approx(loss.item())
    assert loss.item() == pytest.approx(2.0 * parts["depth"] + 0.5 * parts["mask"], rel=1e-6)
    assert parts["depth"] == pytest.approx(
        cfg.w_l1 * parts["depth_l1"] + parts["depth_ssim"] + parts["depth_grad"] + 4.0 * parts["depth_l2"], rel=1e-6
    )
    # (B,H,W) targets are accepted; shape mismatches are not
    total_loss(d, logits, t[:, 0], m[:, 0], cfg)
    with pytest.raises(ValueError):
        total_loss(d, logits, t[:, :, :16], m, cfg)


# ---------------------------------------------------------------------------------------------- metrics


def _ones_logits(mask):
    return mask.float() * 2 - 1  # > 0 exactly where mask


def test_iou_dice_hand_example():
    pred = torch.zeros(1, 1, 2, 2)
    true = torch.zeros(1, 1, 2, 2)
    pred[0, 0, 0, :] = 1  # pixels (0,0), (0,1)
    true[0, 0, :, 0] = 1  # pixels (0,0), (1,0)  -> I = 1, U = 3
    m = SegDepthMetrics()
    m.update(torch.full_like(pred, 0.5), torch.full_like(pred, 0.5), _ones_logits(pred), true)
    r = m.compute()
    assert r["mask_iou"] == pytest.approx(1 / 3)
    assert r["mask_dice"] == pytest.approx(0.5)
    assert r["mask_iou_per_image"] == pytest.approx(1 / 3)
    # a second image with an empty union: split-level IoU unchanged, per-image mean (1/3 + 1) / 2
    zero = torch.zeros_like(pred)
    m.update(torch.full_like(pred, 0.5), torch.full_like(pred, 0.5), _ones_logits(zero), zero)
    r = m.compute()
    assert r["mask_iou"] == pytest.approx(1 / 3)
    assert r["mask_iou_per_image"] == pytest.approx(2 / 3)
    assert r["n_images"] == 2


def test_depth_rmse_absrel_log10_of_known_errors():
    t = torch.full((2, 1, 4, 4), 0.5)
    m = SegDepthMetrics()
    m.update(t + 0.1, t, torch.zeros_like(t), torch.zeros_like(t))
    r = m.compute()
    assert r["depth_rmse"] == pytest.approx(0.1, abs=1e-7)
    assert r["depth_absrel"] == pytest.approx(0.2, abs=1e-7)
    assert r["depth_log10"] == pytest.approx(math.log10(0.6 / 0.5), abs=1e-7)
    assert r["depth_delta1"] == 1.0
    assert set(METRIC_KEYS) <= set(r)


def test_delta_thresholds():
    true = torch.full((1, 1, 1, 4), 0.4)
    ratios = torch.tensor([1.1, 1.5, 1.9, 2.5]).view(1, 1, 1, 4)  # 1.25, 1.5625, 1.953125
    pred = true * ratios
    pred[..., 1] = true[..., 1] / 1.5  # under-estimates count the same way
    m = SegDepthMetrics()
    m.update(pred, true, torch.zeros_like(true), torch.zeros_like(true))
    r = m.compute()
    assert (r["depth_delta1"], r["depth_delta2"], r["depth_delta3"]) == (0.25, 0.5, 0.75)


def test_eps_clamp_makes_zero_depth_safe():
    true = torch.tensor([0.0, 0.0, 0.5, 0.5]).view(1, 1, 1, 4)
    pred = torch.tensor([0.0, 1e-4, 0.5, 0.5]).view(1, 1, 1, 4)
    m = SegDepthMetrics()
    m.update(pred, true, torch.zeros_like(true), torch.zeros_like(true))
    r = m.compute()
    assert DEPTH_EPS == 1e-3
    assert r["depth_absrel"] == 0.0 and r["depth_log10"] == 0.0 and r["depth_delta1"] == 1.0
    assert r["depth_rmse"] == pytest.approx(math.sqrt(1e-8 / 4))  # RMSE is unclamped


def test_metrics_do_not_depend_on_batching():
    g = torch.Generator().manual_seed(0)
    dp, dt = torch.rand(8, 1, 24, 24, generator=g), torch.rand(8, 1, 24, 24, generator=g)
    ml = torch.randn(8, 1, 24, 24, generator=g)
    mt = (torch.rand(8, 1, 24, 24, generator=g) > 0.6).float()
    mt[3] = 0
    ml[3] = -1  # one image with an empty union
    one, many = SegDepthMetrics(), SegDepthMetrics()
    one.update(dp, dt, ml, mt)
    for i in range(8):
        many.update(dp[i : i + 1], dt[i : i + 1], ml[i : i + 1], mt[i : i + 1])
    a, b = one.compute(), many.compute()
    assert a.keys() == b.keys()
    for k in a:
        assert abs(a[k] - b[k]) < 1e-9, k
    # state tensors (for all-reduce across ranks) add up to the whole split
    halves = [SegDepthMetrics(), SegDepthMetrics()]
    halves[0].update(dp[:5], dt[:5], ml[:5], mt[:5])
    halves[1].update(dp[5:], dt[5:], ml[5:], mt[5:])
    merged = SegDepthMetrics()
    merged.load_state_tensor(halves[0].state_tensor() + halves[1].state_tensor() + SegDepthMetrics().state_tensor())
    c = merged.compute()
    for k in a:
        assert abs(a[k] - c[k]) < 1e-9, k
    many.reset()
    assert math.isnan(many.compute()["depth_rmse"])


def test_metrics_shape_mismatch():
    m = SegDepthMetrics()
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError):
        m.update(x, x, x, torch.zeros(1, 1, 4, 5))


def test_constant_baseline():
    g = torch.Generator().manual_seed(0)
    depth = torch.rand(6, 1, 8, 8, generator=g)
    mask = torch.zeros(6, 1, 8, 8)
    mask[:, :, 2:4, 2:6] = 1  # 8 of 64 pixels per image
    batches = [(depth[:4], mask[:4]), (depth[4:], mask[4:])]
    mu = mean_depth(batches)
    assert mu == pytest.approx(depth.double().mean().item())
    out = constant_baseline(batches)
    bg, fg, best = out["all_background"], out["all_foreground"], out["best_constant"]
    assert bg["depth_constant"] == pytest.approx(mu)
    assert bg["depth_rmse"] == pytest.approx(depth.double().std(unbiased=False).item(), rel=1e-9)
    assert bg["mask_iou"] == 0.0 and bg["mask_dice"] == 0.0
    assert fg["mask_iou"] == pytest.approx(8 / 64)
    assert best["mask_constant"] == 1.0 and best["mask_iou"] == fg["mask_iou"]
    # a given constant (e.g. the train mean), and one-shot iterators need it
    out2 = constant_baseline(iter(batches), depth_value=0.25)
    assert out2["all_background"]["depth_constant"] == 0.25
    with pytest.raises(ValueError, match="re-iterable"):
        constant_baseline(iter(batches))

"""Tests of training.models: shapes, ranges, registry, shared encoder, encoder weights, optimisation."""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision

from training.losses import LossConfig, total_loss
from training.models import (
    ARCHITECTURES,
    DepthMaskNet,
    ModelConfig,
    build_model,
    count_parameters,
)

torch.set_num_threads(min(2, torch.get_num_threads()))

# (lo, hi) parameter counts in millions of ONE network of each architecture (width=1).
PARAM_RANGES_M = {
    "unet-small": (1.5, 2.5),  # 1.96M
    "unet-resnet18": (13.0, 15.5),  # 14.34M
    "unet-resnet34": (23.0, 26.0),  # 24.44M
    "resnet50-upproj": (55.0, 75.0),  # 63.57M (original: ~67.6M)
    "autoencoder": (10.0, 25.0),  # 16.51M (original: ~16.4M)
}


def _inputs(batch: int, size: int | tuple[int, int], seed: int = 0):
    h, w = (size, size) if isinstance(size, int) else size
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, h, w, generator=g), torch.randn(batch, 3, h, w, generator=g)


def _tiny(**kw) -> DepthMaskNet:
    return build_model(ModelConfig(depth_arch="unet-small", mask_arch="unet-small", width=0.25, **kw))


def test_registry_lists_all_architectures():
    assert set(ARCHITECTURES) == set(PARAM_RANGES_M)


@pytest.mark.parametrize("arch", list(PARAM_RANGES_M))
def test_shapes_range_and_params(arch):
    torch.manual_seed(0)
    # the two originals are built as their pair; the others as depth = mask = arch
    mask_arch = {"resnet50-upproj": "autoencoder", "autoencoder": "resnet50-upproj"}.get(arch, arch)
    cfg = ModelConfig(depth_arch=arch, mask_arch=mask_arch)
    model = build_model(cfg)
    assert model.config == cfg
    depth_net = model.depth_net if cfg.depth_arch == arch else model.mask_net
    lo, hi = PARAM_RANGES_M[arch]
    n = count_parameters(depth_net) / 1e6
    assert lo <= n <= hi, f"{arch}: {n:.2f}M params"
    model.train()  # BatchNorm in training mode, as in the trainer
    with torch.no_grad():
        for size in (32, 64):
            bg, fg = _inputs(2, size)
            depth, logits = model(bg, fg)
            assert depth.shape == (2, 1, size, size) and logits.shape == (2, 1, size, size)
            assert depth.dtype == torch.float32 and logits.dtype == torch.float32
            assert torch.isfinite(depth).all() and torch.isfinite(logits).all()
            assert depth.min() >= 0 and depth.max() <= 1
        model.eval()
        depth, logits = model(*_inputs(1, (32, 96)))  # eval mode, batch 1, non-square multiple of 32
        assert depth.shape == logits.shape == (1, 1, 32, 96)


@pytest.mark.parametrize("arch", ["unet-small", "unet-resnet18"])
def test_other_sizes(arch):
    model = build_model(ModelConfig(depth_arch=arch, mask_arch=arch, width=0.5)).eval()
    with torch.no_grad():
        for size in [(96, 128), (40, 56)]:  # a multiple of 32, and a size that is not
            depth, logits = model(*_inputs(1, size))
            assert depth.shape == logits.shape == (1, 1, *size)


def test_unknown_arch_is_value_error():
    with pytest.raises(ValueError, match="nope") as info:
        ModelConfig(depth_arch="nope")
    for name in ARCHITECTURES:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="bogus"):
        ModelConfig(mask_arch="bogus")


def test_bad_width_and_shape_mismatch():
    with pytest.raises(ValueError, match="width"):
        ModelConfig(width=0)
    model = _tiny()
    with pytest.raises(ValueError, match="same shape"):
        model(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 64, 64))


def test_mask_width_narrows_only_the_mask_network():
    same = _tiny()
    narrow = _tiny(mask_width=0.125)
    assert count_parameters(narrow.depth_net) == count_parameters(same.depth_net)
    assert count_parameters(narrow.mask_net) < count_parameters(same.mask_net) / 3
    depth, logits = narrow(torch.zeros(2, 3, 32, 32), torch.zeros(2, 3, 32, 32))
    assert depth.shape == logits.shape == (2, 1, 32, 32)
    assert ModelConfig(width=0.5).mask_net_width == 0.5 and ModelConfig(mask_width=0.25).mask_net_width == 0.25
    with pytest.raises(ValueError, match="mask_width"):
        ModelConfig(mask_width=0)
    with pytest.raises(ValueError, match="separate networks"):
        ModelConfig(shared_encoder=True, mask_width=0.5)


def test_defaults_build():
    cfg = ModelConfig()
    assert cfg.depth_arch in ARCHITECTURES and cfg.mask_arch in ARCHITECTURES and not cfg.shared_encoder
    assert cfg.encoder_weights is None and cfg.width == 1.0


@pytest.mark.parametrize("arch", ["unet-resnet18", "unet-small"])
def test_shared_encoder_really_shares(arch):
    width = 0.25 if arch == "unet-small" else 0.5
    shared = build_model(ModelConfig(depth_arch=arch, mask_arch=arch, shared_encoder=True, width=width))
    separate = build_model(ModelConfig(depth_arch=arch, mask_arch=arch, width=width))
    enc = shared.encoders()
    assert enc["depth"] is enc["mask"] is shared.encoder
    n_enc = count_parameters(shared.encoder)
    assert count_parameters(shared) == count_parameters(separate) - n_enc
    assert not hasattr(shared, "depth_net")

    bg, fg = _inputs(2, 32)
    # each head alone sends gradient into the one encoder
    for pick in (0, 1):
        shared.zero_grad(set_to_none=True)
        out = shared(bg, fg)[pick]
        out.square().mean().backward()
        enc_grads = [p.grad for p in shared.encoder.parameters()]
        assert all(g is not None for g in enc_grads) and any(g.abs().sum() > 0 for g in enc_grads)
        used, unused = (shared.depth_decoder, shared.mask_decoder)[pick], (shared.mask_decoder, shared.depth_decoder)[pick]
        assert all(p.grad is not None for p in used.parameters())
        assert all(p.grad is None for p in unused.parameters())


def test_shared_encoder_rejected_where_unsupported():
    with pytest.raises(ValueError, match="shared_encoder"):
        ModelConfig(depth_arch="resnet50-upproj", mask_arch="autoencoder", shared_encoder=True)
    with pytest.raises(ValueError, match="shared_encoder"):
        ModelConfig(depth_arch="autoencoder", mask_arch="autoencoder", shared_encoder=True)
    with pytest.raises(ValueError, match="depth_arch == mask_arch"):
        ModelConfig(depth_arch="unet-resnet18", mask_arch="unet-resnet34", shared_encoder=True)


def _resnet18_state(seed: int = 1):
    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None).state_dict()


def test_encoder_weights_torchvision_resnet(tmp_path):
    state = _resnet18_state()
    path = tmp_path / "resnet18.pt"
    torch.save(state, path)
    model = build_model(ModelConfig(depth_arch="unet-resnet18", mask_arch="unet-resnet18", width=0.25,
                                    encoder_weights=str(path)))
    assert model.encoder_weights_loaded == ("depth", "mask")
    for enc in model.encoders().values():
        mine = enc.state_dict()
        assert set(mine) == set(state) - {"fc.weight", "fc.bias"}
        for key, value in mine.items():
            if key == "conv1.weight":
                assert value.shape == (64, 6, 7, 7)
                assert torch.equal(value, torch.cat([state[key], state[key]], 1) * 0.5)
            else:
                assert torch.equal(value, state[key]), key
    # bg == fg_bg through the adapted conv1 equals the original 3-channel conv
    x = torch.randn(1, 3, 32, 32)
    enc = model.depth_net.encoder
    ref = torch.nn.functional.conv2d(x, state["conv1.weight"], stride=2, padding=3)
    assert torch.allclose(enc.conv1(torch.cat([x, x], 1)), ref, atol=1e-5)


def test_encoder_weights_round_trip_of_our_encoder(tmp_path):
    src = build_model(ModelConfig(depth_arch="unet-small", mask_arch="unet-small", width=0.25, shared_encoder=True))
    path = tmp_path / "enc.pt"
    torch.save({"state_dict": src.encoder.state_dict()}, path)  # wrapped form is accepted too
    dst = build_model(ModelConfig(depth_arch="unet-small", mask_arch="unet-small", width=0.25,
                                  encoder_weights=str(path)))
    for enc in dst.encoders().values():
        for (k1, v1), (k2, v2) in zip(src.encoder.state_dict().items(), enc.state_dict().items()):
            assert k1 == k2 and torch.equal(v1, v2)


def test_encoder_weights_errors(tmp_path):
    cfg = dict(depth_arch="unet-resnet18", mask_arch="unet-resnet18", width=0.25)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"this is not a torch file")
    with pytest.raises(ValueError, match="cannot read"):
        build_model(ModelConfig(**cfg, encoder_weights=str(corrupt)))

    not_a_dict = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], not_a_dict)
    with pytest.raises(ValueError, match="state_dict"):
        build_model(ModelConfig(**cfg, encoder_weights=str(not_a_dict)))

    wrong_shape = _resnet18_state()
    wrong_shape["layer1.0.conv1.weight"] = torch.zeros(64, 64, 5, 5)
    p = tmp_path / "wrong_shape.pt"
    torch.save(wrong_shape, p)
    with pytest.raises(ValueError, match="layer1.0.conv1.weight"):
        build_model(ModelConfig(**cfg, encoder_weights=str(p)))

    torch.manual_seed(0)
    r34 = tmp_path / "resnet34.pt"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), r34)
    with pytest.raises(ValueError, match="unexpected keys"):
        build_model(ModelConfig(**cfg, encoder_weights=str(r34)))

    with pytest.raises(FileNotFoundError):
        build_model(ModelConfig(**cfg, encoder_weights=str(tmp_path / "missing.pt")))


def test_encoder_weights_partial_fit_warns(tmp_path):
    path = tmp_path / "resnet18.pt"
    torch.save(_resnet18_state(), path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = build_model(ModelConfig(depth_arch="unet-resnet18", mask_arch="unet-small", width=0.25,
                                        encoder_weights=str(path)))
    assert model.encoder_weights_loaded == ("depth",)
    assert any("loaded into ['depth'] only" in str(w.message) for w in caught)


def test_channels_last_matches_contiguous():
    torch.manual_seed(0)
    model = build_model(ModelConfig(depth_arch="unet-resnet18", mask_arch="unet-small", width=0.25)).eval()
    bg, fg = _inputs(2, 64)
    with torch.no_grad():
        ref = model(bg, fg)
        model = model.to(memory_format=torch.channels_last)
        out = model(bg.contiguous(memory_format=torch.channels_last), fg.contiguous(memory_format=torch.channels_last))
    for a, b in zip(ref, out):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_bf16_autocast_forward_and_loss():
    model = _tiny()
    bg, fg = _inputs(2, 32)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        depth, logits = model(bg, fg)
        loss, parts = total_loss(depth, logits, torch.rand(2, 1, 32, 32), torch.zeros(2, 1, 32, 32), LossConfig())
    assert depth.dtype == logits.dtype == torch.float32 and loss.dtype == torch.float32
    assert torch.isfinite(loss) and all(v == v for v in parts.values())
    loss.backward()


def test_a_few_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = _tiny()
    # a learnable toy task: a bright square pasted on noise is the mask and is nearer than a depth ramp
    g = torch.Generator().manual_seed(3)
    bg = torch.randn(4, 3, 32, 32, generator=g)
    fg = bg.clone()
    mask_true = torch.zeros(4, 1, 32, 32)
    depth_true = torch.linspace(1.0, 0.2, 32).view(1, 1, 32, 1).expand(4, 1, 32, 32).clone()
    for i, (y, x) in enumerate([(4, 4), (10, 16), (18, 6), (20, 20)]):
        fg[i, :, y : y + 10, x : x + 10] = 2.0
        mask_true[i, :, y : y + 10, x : x + 10] = 1.0
        depth_true[i, :, y : y + 10, x : x + 10] = 0.1
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        depth, logits = model(bg, fg)
        loss, _ = total_loss(depth, logits, depth_true, mask_true)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.75 * losses[0], losses

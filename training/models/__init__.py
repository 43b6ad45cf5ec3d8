"""Depth + mask networks for depthmask.

``build_model(ModelConfig(...))`` returns a :class:`DepthMaskNet` whose ``forward(bg, fg_bg)`` gives
``(depth, mask_logits)``, both ``(B, 1, H, W)`` at the input size: depth through a sigmoid (in ``[0, 1]``), the mask
as logits. Both outputs are float32 (also under bf16 autocast); the inputs are concatenated to 6 channels.

Architectures (``ARCHITECTURES``): ``unet-small``, ``unet-resnet18``, ``unet-resnet34`` (U-Nets), and the
project's originals ``resnet50-upproj`` (depth, FCRN) and ``autoencoder`` (mask). All are built from scratch
(``weights=None``); ``encoder_weights`` loads a *local* state_dict.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .registry import ARCHITECTURES, ArchSpec, get_arch
from .weights import adapt_state_dict, load_encoder_state, read_state_dict

__all__ = [
    "ARCHITECTURES",
    "ArchSpec",
    "DepthMaskNet",
    "ModelConfig",
    "build_model",
    "count_parameters",
    "get_arch",
    "load_encoder_state",
    "load_encoder_weights",
    "read_state_dict",
]


@dataclass(frozen=True)
class ModelConfig:
    """Which networks to build.

    depth_arch / mask_arch: names from ``ARCHITECTURES``. Default ``unet-small`` for both, chosen by measurement
        (``tools/bench_models.py``, 2-core CPU, fwd+bwd+AdamW at 64 px, batch 16): the pair trains ~2.4x faster
        than ``unet-resnet18`` and ~3x faster than ``unet-resnet34`` pairs with 1/7 of the parameters (2 x 1.96M),
        and stays the fastest at 224 px. For GPU runs prefer ``unet-resnet34`` / ``unet-resnet18`` (optionally
        ``shared_encoder=True``), whose encoders also accept torchvision resnet weights.
    shared_encoder: one encoder feeding a depth and a mask decoder. Needs ``depth_arch == mask_arch`` and an
        architecture with a separable encoder (``unet-*``); ``ValueError`` otherwise.
    encoder_weights: path of a local state_dict (a torchvision resnet's, or one of our encoders'
        ``.state_dict()``) loaded with ``torch.load(..., weights_only=True)`` into every encoder it fits; a 3-channel
        ``conv1`` is copied into both halves of the 6-channel one, scaled by 0.5. ``ValueError`` if it fits none.
    width: channel multiplier (> 0). ResNet-based archs: decoder only. ``unet-small`` and ``autoencoder``: every
        layer (they have no pretrained-compatible encoder). ``width=0.25`` with ``unet-small`` gives a ~120k-param
        test model.
    mask_width: the mask network's own multiplier (> 0); ``None``: ``width``. The mask is the easier task, so a
        narrower mask network leaves compute to the depth network. Separate networks only.
    """

    depth_arch: str = "unet-small"
    mask_arch: str = "unet-small"
    shared_encoder: bool = False
    encoder_weights: str | None = None
    width: float = 1.0
    mask_width: float | None = None

    @property
    def mask_net_width(self) -> float:
        return self.width if self.mask_width is None else self.mask_width

    def __post_init__(self) -> None:
        validate_config(self)


def validate_config(config: ModelConfig) -> None:
    """``ValueError`` for unknown architectures, an impossible ``shared_encoder`` or a non-positive width."""
    depth = get_arch(config.depth_arch)
    mask = get_arch(config.mask_arch)
    widths = {"width": config.width} if config.mask_width is None else {"width": config.width,
                                                                       "mask_width": config.mask_width}
    for name, value in widths.items():
        if not (isinstance(value, (int, float)) and value > 0):
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    if config.shared_encoder and config.mask_width not in (None, config.width):
        raise ValueError("mask_width needs separate networks: with shared_encoder=True both tasks share one width")
    if config.shared_encoder:
        shareable = [name for name, spec in ARCHITECTURES.items() if spec.shareable]
        if not (depth.shareable and mask.shareable):
            raise ValueError(
                f"shared_encoder=True is not supported for depth_arch={config.depth_arch!r}, "
                f"mask_arch={config.mask_arch!r}; architectures that can share an encoder: {', '.join(shareable)}"
            )
        if config.depth_arch != config.mask_arch:
            raise ValueError(
                "shared_encoder=True needs depth_arch == mask_arch (one encoder, two decoders), got "
                f"{config.depth_arch!r} and {config.mask_arch!r}"
            )


class TaskNet(nn.Module):
    """One encoder + one decoder: 6-channel input -> 1-channel logits at the input size."""

    def __init__(self, spec: ArchSpec, width: float) -> None:
        super().__init__()
        self.encoder = spec.build_encoder(width)
        self.decoder = spec.build_decoder(tuple(self.encoder.out_channels), width)

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x), x)


class DepthMaskNet(nn.Module):
    """Predicts (depth in [0,1], mask logits) from ``bg`` and ``fg_bg``.

    Separate networks: submodules ``depth_net`` and ``mask_net`` (each a :class:`TaskNet` with ``.encoder`` and
    ``.decoder``). Shared encoder: ``encoder``, ``depth_decoder``, ``mask_decoder``. ``encoders()`` lists the
    encoder module(s) by task either way (the same object twice when shared).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        validate_config(config)
        self.config = config
        depth_spec, mask_spec = get_arch(config.depth_arch), get_arch(config.mask_arch)
        if config.shared_encoder:
            self.encoder = depth_spec.build_encoder(config.width)
            channels = tuple(self.encoder.out_channels)
            self.depth_decoder = depth_spec.build_decoder(channels, config.width)
            self.mask_decoder = mask_spec.build_decoder(channels, config.width)
        else:
            self.depth_net = TaskNet(depth_spec, config.width)
            self.mask_net = TaskNet(mask_spec, config.mask_net_width)
        self.encoder_weights_loaded: tuple[str, ...] = ()

    def encoders(self) -> dict[str, nn.Module]:
        if self.config.shared_encoder:
            return {"depth": self.encoder, "mask": self.encoder}
        return {"depth": self.depth_net.encoder, "mask": self.mask_net.encoder}

    def forward(self, bg: Tensor, fg_bg: Tensor) -> tuple[Tensor, Tensor]:
        if bg.shape != fg_bg.shape:
            raise ValueError(f"bg and fg_bg must have the same shape, got {tuple(bg.shape)} and {tuple(fg_bg.shape)}")
        x = torch.cat([bg, fg_bg], dim=1)
        if self.config.shared_encoder:
            features = self.encoder(x)
            depth_logits = self.depth_decoder(features, x)
            mask_logits = self.mask_decoder(features, x)
        else:
            depth_logits = self.depth_net(x)
            mask_logits = self.mask_net(x)
        # float32 outputs also under bf16 autocast: the sigmoid and the losses see full precision.
        return torch.sigmoid(depth_logits.float()), mask_logits.float()


def load_encoder_weights(model: DepthMaskNet, path: str | os.PathLike) -> tuple[str, ...]:
    """Load the state_dict at ``path`` into every encoder of ``model`` it fits; return the tasks loaded.

    ``ValueError`` (with the reasons) when it fits no encoder or the file is unreadable/corrupt; a warning when it
    fits only one of two different encoders.
    """
    state = read_state_dict(path)
    encoders = model.encoders()
    unique: dict[int, tuple[list[str], nn.Module]] = {}
    for task, enc in encoders.items():
        unique.setdefault(id(enc), ([], enc))[0].append(task)
    loaded: list[str] = []
    errors: list[str] = []
    for tasks, enc in unique.values():
        try:
            adapted = adapt_state_dict(enc, state)
        except ValueError as exc:
            errors.append(f"{'/'.join(tasks)} encoder: {exc}")
            continue
        enc.load_state_dict(adapted, strict=True)
        loaded.extend(tasks)
    if not loaded:
        raise ValueError(f"encoder weights {os.fspath(path)} fit no encoder of the model: " + " | ".join(errors))
    if errors:
        warnings.warn(f"encoder weights {os.fspath(path)} loaded into {loaded} only; " + " | ".join(errors), stacklevel=2)
    model.encoder_weights_loaded = tuple(loaded)
    return tuple(loaded)


def build_model(config: ModelConfig | None = None) -> DepthMaskNet:
    """Build a :class:`DepthMaskNet` (random init) and load ``config.encoder_weights`` if given."""
    config = ModelConfig() if config is None else config
    model = DepthMaskNet(config)
    if config.encoder_weights is not None:
        load_encoder_weights(model, config.encoder_weights)
    return model


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of (unique) parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


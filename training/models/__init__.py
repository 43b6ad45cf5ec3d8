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

import torch
from torch import Tensor, nn

from ..model_config import ModelConfig, validate_config
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


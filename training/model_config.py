"""Which networks to build: `ModelConfig` and its validation, without importing torch (the CLI reads the
defaults and choices from here, so `--help` is instant). The builders live in `training.models`."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config_errors import ConfigValueError, check_fields

# Every architecture name, in the order the CLI lists them (training.models.registry builds each one).
ARCHITECTURE_NAMES = ("unet-small", "unet-resnet18", "unet-resnet34", "resnet50-upproj", "autoencoder")
# Architectures whose encoder can feed both a depth and a mask decoder (ModelConfig.shared_encoder).
SHAREABLE = frozenset({"unet-small", "unet-resnet18", "unet-resnet34"})


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

    @classmethod
    def for_new_run(cls, **values: Any) -> "ModelConfig":
        """The configuration of a run about to start: its ``encoder_weights`` must exist, checked first. (A
        configuration read back from a checkpoint is not checked for them: they were loaded when its run
        started, perhaps on another machine.)"""
        weights = values.get("encoder_weights")
        if weights is not None and not Path(weights).is_file():
            raise ConfigValueError("encoder_weights", f"{weights} does not exist")
        return cls(**values)


def validate_config(config: ModelConfig) -> None:
    """``ConfigValueError`` (a ValueError) for unknown architectures, an impossible ``shared_encoder`` or a
    non-positive width; the choices the networks depend on are checked before the widths."""
    for name in ("depth_arch", "mask_arch"):
        arch = getattr(config, name)
        if arch not in ARCHITECTURE_NAMES:
            problem = f"unknown architecture {arch!r}; valid architectures: {', '.join(ARCHITECTURE_NAMES)}"
            raise ConfigValueError(name, problem, message=problem)
    if config.shared_encoder and config.mask_width not in (None, config.width):
        raise ConfigValueError("mask_width", "needs separate networks; with {shared_encoder} both tasks use {width}",
                               mentions=("shared_encoder", "width"),
                               message="mask_width needs separate networks: with shared_encoder=True both tasks "
                                       "share one width")
    if config.shared_encoder and config.depth_arch != config.mask_arch:
        raise ConfigValueError(
            "shared_encoder", "needs the same {depth_arch} and {mask_arch} (one encoder, two heads), got "
            f"{config.depth_arch} and {config.mask_arch}", mentions=("depth_arch", "mask_arch"),
            message="shared_encoder=True needs depth_arch == mask_arch (one encoder, two decoders), got "
                    f"{config.depth_arch!r} and {config.mask_arch!r}")
    check_fields(config, (("width", _width(config.width), "a positive number up to 16"),
                          ("mask_width", config.mask_width is None or _width(config.mask_width),
                           "a positive number up to 16")))
    if config.shared_encoder and config.depth_arch not in SHAREABLE:
        shareable = [name for name in ARCHITECTURE_NAMES if name in SHAREABLE]
        # field None: the message names the fields itself, on the command line too (as it always has)
        raise ConfigValueError(None, f"shared_encoder=True is not supported for depth_arch={config.depth_arch!r}, "
                               f"mask_arch={config.mask_arch!r}; architectures that can share an encoder: "
                               f"{', '.join(shareable)}")


def _width(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and 0 < value <= 16)

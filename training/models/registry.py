"""Registry of architecture names -> encoder/decoder builders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..model_config import ARCHITECTURE_NAMES, SHAREABLE
from .original import AutoEncoderDecoder, AutoEncoderEncoder, UpProjDecoder
from .unet import ResNetEncoder, SmallUNetDecoder, SmallUNetEncoder, UNetDecoder


@dataclass(frozen=True)
class ArchSpec:
    """How to build one architecture.

    ``build_encoder(width)`` returns an encoder (``forward(x) -> list[Tensor]``, attribute ``out_channels``);
    ``build_decoder(encoder_channels, width)`` returns a decoder (``forward(features, x) -> (B,1,H,W) logits``).
    ``shareable``: the encoder may be shared by a depth and a mask decoder (``ModelConfig.shared_encoder``).
    """

    name: str
    description: str
    build_encoder: Callable[[float], nn.Module]
    build_decoder: Callable[[tuple[int, ...], float], nn.Module]

    @property
    def shareable(self) -> bool:
        return self.name in SHAREABLE


ARCHITECTURES: dict[str, ArchSpec] = {
    spec.name: spec
    for spec in (
        ArchSpec(
            "unet-small",
            "plain 4-level U-Net, channels 16..256 (~2.0M params)",
            lambda width: SmallUNetEncoder(base=16, width=width),
            lambda channels, width: SmallUNetDecoder(channels),
        ),
        ArchSpec(
            "unet-resnet18",
            "torchvision ResNet-18 encoder (6-ch conv1) + U-Net decoder (~14.3M params)",
            lambda width: ResNetEncoder("resnet18"),
            lambda channels, width: UNetDecoder(channels, width=width),
        ),
        ArchSpec(
            "unet-resnet34",
            "torchvision ResNet-34 encoder (6-ch conv1) + U-Net decoder (~24.4M params)",
            lambda width: ResNetEncoder("resnet34"),
            lambda channels, width: UNetDecoder(channels, width=width),
        ),
        ArchSpec(
            "resnet50-upproj",
            "original depth net: ResNet-50 + Laina et al. up-projection decoder (~63.6M params)",
            lambda width: ResNetEncoder("resnet50"),
            lambda channels, width: UpProjDecoder(channels, width=width),
        ),
        ArchSpec(
            "autoencoder",
            "original mask net: plain conv encoder-decoder without skips (~16.5M params)",
            lambda width: AutoEncoderEncoder(width=width),
            lambda channels, width: AutoEncoderDecoder(channels, width=width),
        ),
    )
}


def get_arch(name: str) -> ArchSpec:
    """The :class:`ArchSpec` called ``name``; ``ValueError`` naming the valid ones otherwise."""
    try:
        return ARCHITECTURES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown architecture {name!r}; valid architectures: {', '.join(ARCHITECTURES)}") from None

if tuple(ARCHITECTURES) != ARCHITECTURE_NAMES:  # the names the CLI offers are exactly the ones built here
    raise ImportError(f"training.model_config.ARCHITECTURE_NAMES {ARCHITECTURE_NAMES} differ from the registry's "
                      f"{tuple(ARCHITECTURES)}")

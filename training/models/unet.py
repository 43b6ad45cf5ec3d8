"""U-Net style networks: torchvision-ResNet encoders with a skip-connection decoder, and a small plain U-Net.

Every encoder maps the 6-channel input ``cat(bg, fg_bg)`` to a list of feature maps (shallowest first) and
exposes ``out_channels``; every decoder maps ``(features, x)`` to one logit channel at the input's size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchvision
from torch import Tensor, nn

from .blocks import ConvBNReLU, DoubleConv, Head, init_weights, scaled, upsample_to

IN_CHANNELS = 6

_RESNETS = {
    "resnet18": torchvision.models.resnet18,
    "resnet34": torchvision.models.resnet34,
    "resnet50": torchvision.models.resnet50,
}


class ResNetEncoder(nn.Module):
    """A torchvision ResNet (``weights=None``) without avgpool/fc, first conv widened to 6 input channels.

    The submodules keep torchvision's names (``conv1``, ``bn1``, ``layer1`` ... ``layer4``), so a torchvision
    ``state_dict`` (minus ``fc.*``) maps onto this module key for key.

    Returns 5 feature maps at strides 2, 4, 8, 16, 32.
    """

    def __init__(self, name: str, in_channels: int = IN_CHANNELS) -> None:
        super().__init__()
        if name not in _RESNETS:
            raise ValueError(f"unknown resnet {name!r}; valid: {sorted(_RESNETS)}")
        self.resnet_name = name
        net = _RESNETS[name](weights=None)
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.bn1 = net.bn1
        self.relu = net.relu
        self.maxpool = net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        expansion = 4 if name == "resnet50" else 1
        self.out_channels: tuple[int, ...] = (64, 64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion)

    def forward(self, x: Tensor) -> list[Tensor]:
        f0 = self.relu(self.bn1(self.conv1(x)))  # /2
        f1 = self.layer1(self.maxpool(f0))  # /4
        f2 = self.layer2(f1)  # /8
        f3 = self.layer3(f2)  # /16
        f4 = self.layer4(f3)  # /32
        return [f0, f1, f2, f3, f4]


class UNetDecoder(nn.Module):
    """U-Net decoder for a 5-level encoder (strides 2..32).

    Each stage: bilinear upsample to the skip's size -> concat skip -> two conv-bn-relu. A last stage upsamples to
    the input size and concatenates the raw 6-channel input (cheap edge cue for the mask), then one conv-bn-relu
    and a 1x1 head.
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        widths: Sequence[int] = (256, 128, 64, 32, 16),
        width: float = 1.0,
        in_channels: int = IN_CHANNELS,
    ) -> None:
        super().__init__()
        if len(encoder_channels) != 5 or len(widths) != 5:
            raise ValueError("UNetDecoder expects 5 encoder levels and 5 decoder widths")
        w = [scaled(c, width) for c in widths]
        skips = list(encoder_channels[:-1])[::-1]  # /16, /8, /4, /2
        stages = []
        prev = encoder_channels[-1]
        for skip_ch, out_ch in zip(skips, w[:4]):
            stages.append(DoubleConv(prev + skip_ch, out_ch))
            prev = out_ch
        self.stages = nn.ModuleList(stages)
        self.final = ConvBNReLU(prev + in_channels, w[4])
        self.head = Head(w[4])
        init_weights(self)

    def forward(self, features: list[Tensor], x: Tensor) -> Tensor:
        y = features[-1]
        for stage, skip in zip(self.stages, reversed(features[:-1])):
            y = stage(torch.cat([upsample_to(y, skip.shape[-2:]), skip], dim=1))
        y = self.final(torch.cat([upsample_to(y, x.shape[-2:]), x], dim=1))
        return self.head(y)


class SmallUNetEncoder(nn.Module):
    """Plain U-Net encoder: double conv at full resolution, then 4 x (maxpool -> double conv).

    Channels ``base * (1, 2, 4, 8, 16)`` scaled by ``width``; returns 5 maps at strides 1, 2, 4, 8, 16.
    """

    def __init__(self, base: int = 16, width: float = 1.0, in_channels: int = IN_CHANNELS) -> None:
        super().__init__()
        ch = [scaled(base * m, width) for m in (1, 2, 4, 8, 16)]
        self.out_channels: tuple[int, ...] = tuple(ch)
        self.inc = DoubleConv(in_channels, ch[0])
        self.downs = nn.ModuleList(DoubleConv(a, b) for a, b in zip(ch[:-1], ch[1:]))
        self.pool = nn.MaxPool2d(2)
        init_weights(self)

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = [self.inc(x)]
        for down in self.downs:
            feats.append(down(self.pool(feats[-1])))
        return feats


class SmallUNetDecoder(nn.Module):
    """Mirror of :class:`SmallUNetEncoder`: 4 x (bilinear up -> concat skip -> double conv), 1x1 head."""

    def __init__(self, encoder_channels: Sequence[int]) -> None:
        super().__init__()
        ch = list(encoder_channels)
        stages = []
        prev = ch[-1]
        for skip_ch in reversed(ch[:-1]):
            stages.append(DoubleConv(prev + skip_ch, skip_ch))
            prev = skip_ch
        self.stages = nn.ModuleList(stages)
        self.head = Head(prev)
        init_weights(self)

    def forward(self, features: list[Tensor], x: Tensor) -> Tensor:
        y = features[-1]
        for stage, skip in zip(self.stages, reversed(features[:-1])):
            y = stage(torch.cat([upsample_to(y, skip.shape[-2:]), skip], dim=1))
        return self.head(upsample_to(y, x.shape[-2:]))

"""The project's original networks, re-implemented.

* ``resnet50-upproj`` (depth): ResNet-50 encoder + up-projection decoder after Laina et al. 2016, "Deeper Depth
  Prediction with Fully Convolutional Residual Networks" (FCRN).
* ``autoencoder`` (mask): a plain convolutional encoder-decoder without skip connections.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .blocks import DoubleConv, Head, init_weights, scaled, upsample_to
from .unet import IN_CHANNELS


class UpProjection(nn.Module):
    """Laina et al.'s up-projection block.

    ``up(x2) -> conv5x5 -> BN -> ReLU -> conv3x3 -> BN`` plus a projection branch ``up(x2) -> conv5x5 -> BN``;
    the two are summed and passed through a ReLU. The paper's unpooling (value in the top-left of each 2x2 cell,
    zeros elsewhere) is replaced by nearest-neighbour upsampling, which keeps the same receptive field and
    parameter count and is friendlier to channels_last / autocast kernels.
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.branch = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 5, padding=2, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
        )
        self.projection = nn.Sequential(nn.Conv2d(in_ch, out_ch, 5, padding=2, bias=False), nn.BatchNorm2d(out_ch))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x = upsample_to(x, (x.shape[-2] * 2, x.shape[-1] * 2), mode="nearest")
        return self.relu(self.branch(x) + self.projection(x))


class UpProjDecoder(nn.Module):
    """FCRN decoder: 1x1 conv 2048->1024 + BN, 4 up-projections (1024->512->256->128->64), 3x3 conv -> 1 channel
    (at stride 2), bilinear upsampling to the input size. Uses only the deepest encoder feature (no skips)."""

    def __init__(self, encoder_channels: Sequence[int], width: float = 1.0) -> None:
        super().__init__()
        ch = [scaled(c, width) for c in (1024, 512, 256, 128, 64)]
        self.reduce = nn.Sequential(nn.Conv2d(encoder_channels[-1], ch[0], 1, bias=False), nn.BatchNorm2d(ch[0]))
        self.up = nn.Sequential(*(UpProjection(a, b) for a, b in zip(ch[:-1], ch[1:])))
        self.out = nn.Conv2d(ch[-1], 1, 3, padding=1)
        init_weights(self)
        self.out.reset_parameters()  # small initial logits

    def forward(self, features: list[Tensor], x: Tensor) -> Tensor:
        y = self.up(self.reduce(features[-1]))
        return upsample_to(self.out(y), x.shape[-2:])


AUTOENCODER_CHANNELS = (32, 64, 128, 256, 512)
AUTOENCODER_BOTTLENECK = 512


class AutoEncoderEncoder(nn.Module):
    """Plain conv encoder: 5 x (double conv -> maxpool), then a double-conv bottleneck at stride 32.

    Channels ``(32, 64, 128, 256, 512)`` and bottleneck 512, all scaled by ``width``. Returns a single feature
    map (the code) in a list, so the decoder cannot see skip connections.
    """

    def __init__(self, width: float = 1.0, in_channels: int = IN_CHANNELS) -> None:
        super().__init__()
        ch = [scaled(c, width) for c in AUTOENCODER_CHANNELS]
        bott = scaled(AUTOENCODER_BOTTLENECK, width)
        stages = []
        prev = in_channels
        for c in ch:
            stages.append(nn.Sequential(DoubleConv(prev, c), nn.MaxPool2d(2)))
            prev = c
        self.stages = nn.Sequential(*stages)
        self.bottleneck = DoubleConv(prev, bott)
        self.out_channels: tuple[int, ...] = (bott,)
        init_weights(self)

    def forward(self, x: Tensor) -> list[Tensor]:
        return [self.bottleneck(self.stages(x))]


class AutoEncoderDecoder(nn.Module):
    """Mirror of :class:`AutoEncoderEncoder`: 5 x (bilinear up x2 -> double conv), 1x1 head at the input size."""

    def __init__(self, encoder_channels: Sequence[int], width: float = 1.0) -> None:
        super().__init__()
        ch = [scaled(c, width) for c in AUTOENCODER_CHANNELS][::-1]
        stages = []
        prev = encoder_channels[-1]
        for c in ch:
            stages.append(DoubleConv(prev, c))
            prev = c
        self.stages = nn.ModuleList(stages)
        self.head = Head(prev)
        init_weights(self)

    def forward(self, features: list[Tensor], x: Tensor) -> Tensor:
        y = features[-1]
        for stage in self.stages:
            y = stage(upsample_to(y, (y.shape[-2] * 2, y.shape[-1] * 2)))
        return self.head(upsample_to(y, x.shape[-2:]))


__all__ = [
    "AutoEncoderDecoder",
    "AutoEncoderEncoder",
    "UpProjDecoder",
    "UpProjection",
]

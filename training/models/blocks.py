"""Small building blocks shared by the architectures in :mod:`training.models`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def scaled(channels: int, width: float, minimum: int = 4) -> int:
    """``channels * width`` rounded to an int, never below ``minimum``."""
    return max(minimum, int(round(channels * width)))


class ConvBNReLU(nn.Sequential):
    """``conv(k x k, no bias) -> BatchNorm -> ReLU``."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class DoubleConv(nn.Sequential):
    """Two :class:`ConvBNReLU` 3x3 blocks (the classic U-Net stage)."""

    def __init__(self, in_ch: int, out_ch: int, mid_ch: int | None = None) -> None:
        mid_ch = out_ch if mid_ch is None else mid_ch
        super().__init__(ConvBNReLU(in_ch, mid_ch), ConvBNReLU(mid_ch, out_ch))


def upsample_to(x: Tensor, size: tuple[int, int] | torch.Size, mode: str = "bilinear") -> Tensor:
    """Resize ``x`` to spatial ``size`` (no-op when it already has that size)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=tuple(size), mode="nearest")
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=False)


class Head(nn.Conv2d):
    """1x1 conv to one output channel (depth logit or mask logit)."""

    def __init__(self, in_ch: int) -> None:
        super().__init__(in_ch, 1, kernel_size=1, bias=True)


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal for convs (ReLU nets), BN to identity, zero biases; heads keep the default init."""
    for m in module.modules():
        if isinstance(m, Head):
            # PyTorch's default (fan-in) init keeps the initial logits small.
            m.reset_parameters()
        elif isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

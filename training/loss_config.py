"""Loss weights (`LossConfig`) without importing torch, so the CLI reads its defaults instantly; the losses
themselves are in training.losses."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .config_errors import ConfigValueError, check_fields

DEPTH_LOSSES = ("dense", "cosine")


@dataclass(frozen=True)
class LossConfig:
    """Loss weights.

    depth_loss: ``"dense"`` = ``w_l1 * L1 + w_ssim * (1 - SSIM) / 2 + w_grad * gradient-L1 + w_l2 * MSE``
        (DenseDepth, plus a squared-error term: L1 pulls an ambiguous pixel to the median of what it could be,
        MSE to the mean, which minimises RMSE in theory; measured at ``w_l2=10`` it did not help, so it is off
        by default, docs/benchmarks.md);
        ``"cosine"`` = ``1 - cos(pred, target)`` over each flattened sample, averaged (the original project's).
    w_bce, w_dice: mask loss = ``w_bce * BCEWithLogits + w_dice * (1 - soft Dice)``.
    w_depth, w_mask: task weights in :func:`total_loss`.
    dice_smooth: additive smoothing of the per-sample soft Dice.
    ssim_window: gaussian window size (sigma 1.5) of the SSIM term.
    """

    depth_loss: str = "dense"
    w_l1: float = 1.0  # DenseDepth's 0.1 gave a worse held-out RMSE here (docs/benchmarks.md)
    w_ssim: float = 1.0
    w_grad: float = 1.0
    w_l2: float = 0.0
    w_bce: float = 1.0
    w_dice: float = 1.0
    w_depth: float = 1.0
    w_mask: float = 1.0
    dice_smooth: float = 1.0
    ssim_window: int = 11

    def __post_init__(self) -> None:
        if self.depth_loss not in DEPTH_LOSSES:
            raise ConfigValueError("depth_loss", f"unknown value {self.depth_loss!r}; valid: {', '.join(DEPTH_LOSSES)}",
                                   message=f"unknown depth_loss {self.depth_loss!r}; valid: {', '.join(DEPTH_LOSSES)}")
        weights = ("w_l1", "w_ssim", "w_grad", "w_l2", "w_bce", "w_dice", "w_depth", "w_mask", "dice_smooth")
        check_fields(self, (*((name, _finite_at_least_0(getattr(self, name)), "a finite number >= 0")
                              for name in weights),
                            ("ssim_window", isinstance(self.ssim_window, int) and self.ssim_window >= 1
                             and self.ssim_window % 2 == 1, "a positive odd int")))


def _finite_at_least_0(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value >= 0

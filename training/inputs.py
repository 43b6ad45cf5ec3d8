"""Decoded RGB images -> the network's normalised inputs, in one place.

The network's contract: ``model(bg, fg_bg)`` on float32 RGB NCHW, each input standardised with the mean and std
(RGB, on the [0, 1] scale) of its dataset's training split: ``(pixel / 255 - mean) / std``. The training loop does
this to whole batches with `training.data.BatchNormalizer`; this module feeds it images that do not come from a
dataset (dm-predict, export parity checks), so both paths share one implementation.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .data import BatchNormalizer

_NO_TARGETS = {"mask": torch.zeros(0, dtype=torch.uint8), "depth": torch.zeros(0, dtype=torch.uint8),
               "index": torch.zeros(0, dtype=torch.long)}


def as_nchw_uint8(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 numpy RGB (what cv2 gives after BGR -> RGB) or an (N, 3, H, W) tensor -> NCHW tensor.
    A numpy batch is viewed, not copied (channels_last in memory, as the loader's batches)."""
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
            raise ValueError(f"expected (N, H, W, 3) uint8 RGB images, got {images.shape} {images.dtype}")
        return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected an (N, 3, H, W) tensor, got shape {tuple(images.shape)}")
    return images


def network_inputs(bg: np.ndarray | torch.Tensor, fg_bg: np.ndarray | torch.Tensor,
                   normalization: dict[str, Any] | BatchNormalizer, device: torch.device | str = "cpu",
                   channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(bg, fg_bg) as the network takes them: float32 NCHW on `device`, normalised by `normalization`
    (a checkpoint's ``normalization`` dict, `normalization_of`, or a BatchNormalizer already on the device).
    Images: RGB uint8, (N, H, W, 3) arrays or (N, 3, H, W) tensors."""
    normalizer = normalization if isinstance(normalization, BatchNormalizer) else \
        BatchNormalizer(normalization, device, channels_last)
    out = normalizer({"bg": as_nchw_uint8(bg), "fg_bg": as_nchw_uint8(fg_bg), **_NO_TARGETS})
    return out["bg"], out["fg_bg"]

"""Decoded RGB images -> the network's normalised inputs, in one place.

The network's contract: ``model(bg, fg_bg)`` on float32 RGB NCHW, each input standardised with the mean and std
(RGB, on the [0, 1] scale) of its dataset's training split: ``(pixel / 255 - mean) / std``. The training loop does
this with `BatchNormalizer`: to the loader's whole batches (after the host-to-device copy), to the sample grids'
decoded samples (`sample_inputs`) and to images that do not come from a dataset (dm-predict, export parity
checks, `network_inputs`), so every path shares one implementation.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch

from pipeline import images as image_rules
from pipeline.codecs import DEPTH_MAX

class BatchNormalizer:
    """uint8/uint16 batch -> float tensors on `device`: images standardised with the dataset's
    per-channel mean/std, mask in {0, 1}, depth on [0, 1]. Runs after the host-to-device copy."""

    def __init__(self, stats: dict[str, Any], device: torch.device | str = "cpu",
                 channels_last: bool = False):
        self.device = torch.device(device)
        self.channels_last = channels_last

        def vec(name: str, key: str) -> torch.Tensor:
            return torch.tensor(stats[name][key], dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

        self.mean = {k: vec(k, "mean") * 255 for k in ("bg", "fg_bg")}
        self.inv_std = {k: 1.0 / (vec(k, "std") * 255) for k in ("bg", "fg_bg")}

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        non_blocking = self.device.type == "cuda"
        out = {}
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        for k in ("bg", "fg_bg"):
            x = batch[k].to(self.device, non_blocking=non_blocking)
            # one conversion straight into the wanted layout, then in place: 3.5x faster on CPU than
            # (x.float() - mean) * inv_std followed by a layout copy
            out[k] = x.to(torch.float32, memory_format=layout).sub_(self.mean[k]).mul_(self.inv_std[k])
        out["mask"] = batch["mask"].to(self.device, non_blocking=non_blocking).float()
        out["depth"] = batch["depth"].to(self.device, non_blocking=non_blocking).to(torch.float32) / DEPTH_MAX
        out["index"] = batch["index"]
        return out

    def denormalize(self, x: torch.Tensor, key: str) -> torch.Tensor:
        """Back to [0, 1] RGB, for pictures."""
        return (x / self.inv_std[key] + self.mean[key]) / 255.0


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


def sample_inputs(samples: list[dict[str, Any]], size: int, normalization: dict[str, Any] | BatchNormalizer,
                  device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Decoded dataset samples (`DatasetReader.decode`: BGR bg and fg_bg at the stored size) as the network takes
    them at `size` x `size` (area-averaged when shrinking, as the loader's)."""
    def images(key: str) -> np.ndarray:
        return np.stack([cv2.cvtColor(image_rules.resize(s[key], size, size), cv2.COLOR_BGR2RGB) for s in samples])

    return network_inputs(images("bg"), images("fg_bg"), normalization, device)

"""Compositing recipe batches on the training device (dm-train --composite-on device).

The DataLoader workers send only each batch's placements and augmentation draws
(DepthMaskDataset.placement_batch: sample index, background, cut-out variant, x, y, object depth; the
mirror and the photometric colour matrix drawn from (seed, epoch, index) as the workers' augmentation
draws them). `DeviceCompositor.finish` turns such a batch into the batch the workers
would have sent, on the device: composite_torch at the stored size (bit-equal to compose.py), an area
resize to the stage size, the mirror, then the photometry.

Equality with the workers' path (tests/test_device_composite.py):
- at the stored size without augmentation every field is equal; with the mirror, mask and depth are
  equal and the photometry (the same colour matrix, in float32 where cv2.transform uses fixed point) is
  within 1 grey level;
- at a smaller stage size the resize is area resampling written as two float32 matrix products (cv2
  INTER_AREA's definition: fractional overlaps weighted), NOT bit-equal to cv2.resize(INTER_AREA),
  whose summation order and fixed-point paths differ: values within a level or so, the 0 / 1 mask
  flips where a pixel is covered almost exactly half (tested close).
Crop/rotation (--augment-scale < 1, --augment-rotation > 0) and the camera effects (--jpeg-roundtrip,
--sensor-noise, --blur) are refused with --composite-on device (DepthMaskDataset says so in one line).

The assets (every background, every cut-out variant any placement can use) are built once per run on
the device (CompositeAssets); a batch is a few gathers and scatters, no Python loop over samples.
Batches that already hold images (composite_on="workers", or a materialised dataset) pass through.
"""
from __future__ import annotations

from typing import Any

import torch

from .composite_torch import CompositeAssets, composite_batch, possible_variants
from .data import DepthMaskDataset


class DeviceCompositor:
    """Composites `dataset`'s placement batches on `device` (`finish`); built once per run."""

    def __init__(self, dataset: DepthMaskDataset, device: torch.device | str):
        store = dataset.reader.store
        self.dataset = dataset
        self.device = torch.device(device)
        # RGB throughout (the batches' channel order): channels are composited independently, so reversing
        # them in the assets gives the BGR composite with its channels reversed
        backgrounds = [(image[:, :, ::-1], bg_input[:, :, ::-1], depth) for image, bg_input, depth in store.backgrounds]
        variants = {k: bgra[:, :, [2, 1, 0, 3]] for k, bgra in possible_variants(store).items()}
        self.assets = CompositeAssets.build(backgrounds, variants, self.device)
        keys = list(self.assets.variant_index)
        self._level_min = min(k[2] for k in keys)
        table = torch.full((max(k[0] for k in keys) + 1, 2, max(k[2] for k in keys) - self._level_min + 1), -1,
                           dtype=torch.int64)
        for (f, m, k), row in self.assets.variant_index.items():
            table[f, int(m), k - self._level_min] = row
        self._rows = table.to(self.device)

    def finish(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A placement batch -> bg, fg_bg (N, 3, S, S) uint8 RGB, mask (N, 1, S, S) uint8 0 / 1, depth
        (N, 1, S, S) int32 (uint16 values), index, on the device at the dataset's current size; a batch
        that already holds images is returned as it is."""
        if "fg_bg" in batch:
            return batch
        dev = self.device
        p = {k: v.to(dev, non_blocking=True) for k, v in batch.items() if k != "index"}
        variant = self._rows[p["fg"], p["flip"], p["level"] - self._level_min]
        out = composite_batch(self.assets, p["bg"], variant, p["x"], p["y"])
        bg, fg_bg = out["bg"].permute(0, 3, 1, 2), out["fg_bg"].permute(0, 3, 1, 2)  # NHWC memory, NCHW shape
        mask = (out["mask"] > 0).to(torch.uint8).unsqueeze(1)
        depth = out["depth"].unsqueeze(1)
        size = self.dataset.size
        if bg.shape[-1] != size:
            bg, fg_bg = area_resize(bg, size, 255), area_resize(fg_bg, size, 255)
            mask = area_resize(mask, size, 1)  # 0 / 1 stays 0 / 1 (>= half covered), as the workers' resize
            depth = area_resize(depth, size, 65535, torch.int32)
        if "mirror" in p:
            m = p["mirror"][:, None, None, None]
            bg, fg_bg = torch.where(m, bg.flip(-1), bg), torch.where(m, fg_bg.flip(-1), fg_bg)
            mask, depth = torch.where(m, mask.flip(-1), mask), torch.where(m, depth.flip(-1), depth)
            bg, fg_bg = photometric(bg, p["colour"]), photometric(fg_bg, p["colour"])
        return {"bg": bg, "fg_bg": fg_bg, "mask": mask, "depth": depth, "index": batch["index"]}


def area_weights(stored: int, size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(size, stored) float32 matrix of area resampling (cv2.INTER_AREA's definition when shrinking): output
    pixel i averages the source interval [i * r, (i + 1) * r), r = stored / size, each source pixel weighted
    by its overlap with it."""
    r = stored / size
    edges = torch.arange(size + 1, dtype=torch.float64) * r
    lo, hi = edges[:-1, None], edges[1:, None]
    j = torch.arange(stored, dtype=torch.float64)[None, :]
    overlap = (torch.minimum(hi, j + 1) - torch.maximum(lo, j)).clamp_(min=0)
    return (overlap / r).to(torch.float32).to(device)


def area_resize(x: torch.Tensor, size: int, top: int, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """(N, C, H, W) integer images area-resampled to size x size (two matrix products with area_weights) and
    rounded half up: cv2.INTER_AREA's result up to float rounding (within 1 level; not promised bit-equal)."""
    w = area_weights(x.shape[-1], size, x.device)
    y = torch.matmul(torch.matmul(w, x.to(torch.float32)), w.T)
    return y.add_(0.5).floor_().clamp_(0, top).to(dtype)


def photometric(images: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """transforms.photometric on (N, 3, H, W) uint8 RGB with per-sample colour matrices (N, 3, 4) float32
    (transforms.colour_matrices): the matrix product in float32, rounded half to even and saturated.
    cv2.transform computes it in fixed point: within 1 level."""
    y = torch.einsum("nij,njhw->nihw", colour[:, :, :3], images.to(torch.float32))
    return y.add_(colour[:, :, 3, None, None]).round_().clamp_(0, 255).to(torch.uint8)


def device_compositor(dataset: DepthMaskDataset, device: torch.device | str) -> Any:
    """The training loop's hook where a batch reaches the device: DeviceCompositor(...).finish for a dataset
    composited on the device, else the identity."""
    if getattr(dataset, "composite_on", "workers") != "device":
        return lambda batch: batch
    return DeviceCompositor(dataset, device).finish


__all__ = ["DeviceCompositor", "area_resize", "area_weights", "device_compositor", "photometric"]

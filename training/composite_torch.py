"""Batched compositing of recipe samples in torch, on any device, bit for bit pipeline/compose.py.

The assets live as tensors (on the GPU when asked): backgrounds (the lossless pixels, the network's
`bg` input, the depth) and every foreground variant the placements use (a cut-out, mirrored or not,
at a scale level), each padded to one window size with alpha 0 and pre-multiplied once. A batch is
then a few gathers and one scatter per field, with no Python loop over samples or pixels:

- fg_bg: the background gathered, and inside each object's window
  `divide_by_255_rounded(bg * (255 - a) + c * a)` (compose.composite's integer math);
- mask: 255 where alpha >= ALPHA_MASK_THRESHOLD inside the window (compose.paste_mask);
- depth: the background's depth; the object's depth is min(depth at the contact pixel, every depth
  under the mask) (compose.object_depth), pasted on the mask (compose.paste_depth).

Integer arithmetic in int32 (torch's uint16 has few kernels), so the results equal the numpy
reference exactly on CPU and CUDA alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from pipeline.compose import MASK_ON, prepare_foreground

ForegroundKey = tuple[int, bool, int]  # (foreground index, flipped, scale level)


def divide_by_255_rounded(values: torch.Tensor) -> torch.Tensor:
    """round(v / 255) for integer v in [0, 65025], as compose.divide_by_255_rounded (int32 in, uint8 out)."""
    v = values + 128
    return ((v + (v >> 8)) >> 8).to(torch.uint8)


@dataclass
class CompositeAssets:
    """Asset tensors on one device. Build with `CompositeAssets.build`; `variant_index` maps a
    (fg, flip, level) key to its row in the foreground tensors."""

    bg_pixels: torch.Tensor  # (B, H, W, 3) uint8, the lossless background composites are made of
    bg_inputs: torch.Tensor  # (B, H, W, 3) uint8, what the network sees as bg
    bg_depths: torch.Tensor  # (B, H, W) int32
    fg_colour: torch.Tensor  # (F, h, w, 3) int32: colour * alpha (pre-multiplied)
    fg_inverse_alpha: torch.Tensor  # (F, h, w, 1) int32: 255 - alpha (255 in the padding)
    fg_mask: torch.Tensor  # (F, h, w) bool: alpha >= threshold (False in the padding)
    fg_sizes: torch.Tensor  # (F, 2) int64: each variant's (height, width)
    fg_contact: torch.Tensor  # (F, 2) int64: each variant's contact pixel (row, column) in its window
    variant_index: dict[ForegroundKey, int]

    @classmethod
    def build(cls, backgrounds: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
              variants: Mapping[ForegroundKey, np.ndarray], device: torch.device | str = "cpu") -> "CompositeAssets":
        """backgrounds: per background (pixels BGR uint8, bg input BGR uint8, depth uint16), as
        RecipeStore.backgrounds; variants: per (fg, flip, level) key the un-mirrored BGRA cut-out."""
        keys = sorted(variants)
        if not keys:
            raise ValueError("no foreground variants to composite")
        prepared = [prepare_foreground(variants[k], flip=k[1]) for k in keys]
        h = max(p.height for p in prepared)
        w = max(p.width for p in prepared)
        colour = np.zeros((len(keys), h, w, 3), np.int32)
        inverse = np.full((len(keys), h, w, 1), 255, np.int32)
        mask = np.zeros((len(keys), h, w), bool)
        for i, p in enumerate(prepared):
            colour[i, : p.height, : p.width] = p.premultiplied
            inverse[i, : p.height, : p.width] = p.inverse_alpha[:, :, :1]
            mask[i, : p.height, : p.width] = p.mask
        dev = torch.device(device)
        return cls(
            bg_pixels=torch.from_numpy(np.stack([b[0] for b in backgrounds])).to(dev),
            bg_inputs=torch.from_numpy(np.stack([b[1] for b in backgrounds])).to(dev),
            bg_depths=torch.from_numpy(np.stack([b[2] for b in backgrounds]).astype(np.int32)).to(dev),
            fg_colour=torch.from_numpy(colour).to(dev), fg_inverse_alpha=torch.from_numpy(inverse).to(dev),
            fg_mask=torch.from_numpy(mask).to(dev),
            fg_sizes=torch.tensor([[p.height, p.width] for p in prepared], dtype=torch.int64, device=dev),
            fg_contact=torch.tensor([[p.contact_row, p.contact_col] for p in prepared], dtype=torch.int64,
                                    device=dev),
            variant_index={k: i for i, k in enumerate(keys)})

    @property
    def device(self) -> torch.device:
        return self.bg_pixels.device

    def variant_rows(self, fg: np.ndarray, flip: np.ndarray, level: np.ndarray | None = None) -> torch.Tensor:
        """Rows of the foreground tensors for per-sample (fg, flip, level) arrays (a KeyError names a missing one)."""
        level = np.zeros(len(fg), np.int64) if level is None else level
        rows = [self.variant_index[(int(f), bool(m), int(k))] for f, m, k in zip(fg, flip, level)]
        return torch.tensor(rows, dtype=torch.int64, device=self.device)


def all_variants(foregrounds: Sequence[np.ndarray], flip: bool) -> dict[ForegroundKey, np.ndarray]:
    """Every (fg, flip, level 0) variant of a fixed-placement recipe: what per-epoch placements may draw."""
    return {(f, m, 0): bgra for f, bgra in enumerate(foregrounds) for m in ((False, True) if flip else (False,))}


def possible_variants(store) -> dict[ForegroundKey, np.ndarray]:
    """Every (fg, flip, level) variant any placement of a RecipeStore can use, stored or per-epoch: both
    mirrorings when the plan flips, and for depth-scaled layouts every level from the cut-out's lowest
    (placement.lowest_level) to LEVEL_MAX; each the un-mirrored BGRA cut-out at its level."""
    from pipeline.placement import LEVEL_MAX, lowest_level

    flips = (False, True) if store.plan.flip else (False,)
    out = {}
    for f, bgra in enumerate(store.foregrounds):
        levels = range(lowest_level(bgra.shape[1], bgra.shape[0]), LEVEL_MAX + 1) \
            if store.placement == "depth-scaled" else (0,)
        for k in levels:
            cut = store.foreground_at(f, k)
            out.update({(f, m, k): cut for m in flips})
    return out


def used_variants(placements: Sequence[Mapping[str, np.ndarray]],
                  foreground_at: Callable[[int, int], np.ndarray]) -> dict[ForegroundKey, np.ndarray]:
    """The (fg, flip, level) variants some placements use (depth-scaled layouts draw scale levels), each
    cut-out from `foreground_at(fg, level)` (RecipeStore.foreground_at)."""
    keys = set()
    for p in placements:
        keys.update(zip(map(int, p["fg"]), map(bool, p["flip"]), map(int, p["level"])))
    return {k: foreground_at(k[0], k[2]) for k in keys}


def composite_batch(assets: CompositeAssets, bg: torch.Tensor, variant: torch.Tensor, x: torch.Tensor,
                    y: torch.Tensor) -> dict[str, torch.Tensor]:
    """A batch of samples: bg (N, H, W, 3) uint8 network input, fg_bg (N, H, W, 3) uint8, mask (N, H, W)
    uint8 0 / 255, depth (N, H, W) int32, object_depth (N,) int32. bg, variant, x, y: (N,) int64 on the
    assets' device; every object's box must lie inside the image (as the plan's placements do)."""
    n = bg.shape[0]
    _, fh, fw, _ = assets.fg_colour.shape
    rows = y[:, None, None] + torch.arange(fh, device=bg.device)[None, :, None]  # (N, fh, 1)
    cols = x[:, None, None] + torch.arange(fw, device=bg.device)[None, None, :]  # (N, 1, fw)
    size = assets.fg_sizes[variant]
    inside = ((torch.arange(fh, device=bg.device)[None, :, None] < size[:, 0, None, None])
              & (torch.arange(fw, device=bg.device)[None, None, :] < size[:, 1, None, None]))  # (N, fh, fw)
    height, width = assets.bg_depths.shape[1:]
    rows_c = rows.clamp(max=height - 1).expand(n, fh, fw)
    cols_c = cols.clamp(max=width - 1).expand(n, fh, fw)
    sample = torch.arange(n, device=bg.device)[:, None, None].expand(n, fh, fw)
    bg_win = bg[:, None, None].expand(n, fh, fw)

    fg_bg = assets.bg_pixels[bg]
    window = assets.bg_pixels[bg_win, rows_c, cols_c].to(torch.int32)  # (N, fh, fw, 3)
    blended = divide_by_255_rounded(window * assets.fg_inverse_alpha[variant] + assets.fg_colour[variant])
    fg_bg[sample[inside], rows_c[inside], cols_c[inside]] = blended[inside]

    on = assets.fg_mask[variant]  # (N, fh, fw), False outside each cut-out
    mask = torch.zeros((n, height, width), dtype=torch.uint8, device=bg.device)
    mask[sample[on], rows_c[on], cols_c[on]] = MASK_ON

    depth = assets.bg_depths[bg]
    covered = torch.where(on, assets.bg_depths[bg_win, rows_c, cols_c], torch.iinfo(torch.int32).max)
    contact = assets.fg_contact[variant]
    at_contact = assets.bg_depths[bg, y + contact[:, 0], x + contact[:, 1]]
    object_depth = torch.minimum(at_contact, covered.flatten(1).amin(dim=1))
    depth[sample[on], rows_c[on], cols_c[on]] = object_depth[:, None, None].expand(n, fh, fw)[on]
    return {"bg": assets.bg_inputs[bg], "fg_bg": fg_bg, "mask": mask, "depth": depth, "object_depth": object_depth}


def composite_placements(assets: CompositeAssets, placements: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """composite_batch for RecipeStore.placements(...)'s dict of arrays (bg, fg, flip, x, y, level)."""
    dev = assets.device
    return composite_batch(assets, torch.as_tensor(np.asarray(placements["bg"], np.int64), device=dev),
                           assets.variant_rows(placements["fg"], placements["flip"], placements["level"]),
                           torch.as_tensor(np.asarray(placements["x"], np.int64), device=dev),
                           torch.as_tensor(np.asarray(placements["y"], np.int64), device=dev))


__all__ = ["CompositeAssets", "all_variants", "possible_variants", "used_variants", "composite_batch",
           "composite_placements", "divide_by_255_rounded"]

"""Pure image math of one sample: alpha compositing, the mask, and the composited depth.

All integer arithmetic, so results are identical on every machine and with any number of workers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MASK_ON = 255
ALPHA_MASK_THRESHOLD = 128  # alpha >= 128 (of 255) is object; the mask comes from alpha, never from colour


@dataclass(frozen=True)
class PreparedForeground:
    """A foreground cut-out pre-multiplied once, so compositing a sample is two integer ops."""

    premultiplied: np.ndarray  # (h, w, 3) uint16: colour * alpha
    inverse_alpha: np.ndarray  # (h, w, 3) uint16: 255 - alpha, repeated over channels
    mask: np.ndarray  # (h, w) bool: alpha >= ALPHA_MASK_THRESHOLD
    contact_row: int  # lowest mask row: where the object touches the ground
    contact_col: int  # middle of the mask on that row

    @property
    def height(self) -> int:
        return self.mask.shape[0]

    @property
    def width(self) -> int:
        return self.mask.shape[1]


def prepare_foreground(bgra: np.ndarray, *, flip: bool = False) -> PreparedForeground:
    if bgra.ndim != 3 or bgra.shape[2] != 4 or bgra.dtype != np.uint8:
        raise ValueError(f"foreground must be (h, w, 4) uint8 BGRA, got {bgra.shape} {bgra.dtype}")
    if flip:
        bgra = bgra[:, ::-1]
    alpha = bgra[:, :, 3:4].astype(np.uint16)
    mask = bgra[:, :, 3] >= ALPHA_MASK_THRESHOLD
    if not mask.any():
        raise ValueError("foreground alpha has no pixel >= 128: its mask would be empty")
    rows = np.flatnonzero(mask.any(axis=1))
    contact_row = int(rows[-1])
    cols = np.flatnonzero(mask[contact_row])
    return PreparedForeground(
        premultiplied=np.ascontiguousarray(bgra[:, :, :3].astype(np.uint16) * alpha),
        inverse_alpha=np.ascontiguousarray(np.repeat(255 - alpha, 3, axis=2)),
        mask=np.ascontiguousarray(mask),
        contact_row=contact_row,
        contact_col=int((cols[0] + cols[-1]) // 2),
    )


def divide_by_255_rounded(values: np.ndarray) -> np.ndarray:
    """round(v / 255) for uint16 v in [0, 65025], without a division (exact over that range)."""
    v = values + np.uint16(128)
    return ((v + (v >> 8)) >> 8).astype(np.uint8)


def composite(bg: np.ndarray, fg: PreparedForeground, x: int, y: int) -> np.ndarray:
    """fg alpha-blended onto a copy of bg with its top-left corner at (x, y); must fit inside bg."""
    out = bg.copy()
    roi = out[y : y + fg.height, x : x + fg.width]
    blended = roi.astype(np.uint16)
    blended *= fg.inverse_alpha
    blended += fg.premultiplied
    roi[...] = divide_by_255_rounded(blended)
    return out


def paste_mask(size: tuple[int, int], fg: PreparedForeground, x: int, y: int) -> np.ndarray:
    """Binary uint8 mask (0 / 255) of the object, from its alpha."""
    mask = np.zeros(size, np.uint8)
    mask[y : y + fg.height, x : x + fg.width][fg.mask] = MASK_ON
    return mask


def object_depth(bg_depth: np.ndarray, fg: PreparedForeground, x: int, y: int) -> int:
    """The depth the object stands at: the background's depth at its ground-contact pixel, pulled
    nearer where needed so the object is never behind any background pixel it covers."""
    contact = bg_depth[y + fg.contact_row, x + fg.contact_col]
    covered = bg_depth[y : y + fg.height, x : x + fg.width][fg.mask]
    return int(min(contact, covered.min()))


def paste_depth(bg_depth: np.ndarray, fg: PreparedForeground, x: int, y: int, value: int | None = None) -> np.ndarray:
    """The scene's depth with the object: the background depth, and the object's depth on its mask."""
    depth = bg_depth.copy()
    depth[y : y + fg.height, x : x + fg.width][fg.mask] = object_depth(bg_depth, fg, x, y) if value is None else value
    return depth


def pasted_depth_sums(bg_sum: int, bg_sum_sq: int, bg_depth: np.ndarray, fg: PreparedForeground, x: int, y: int,
                      value: int) -> tuple[int, int]:
    """Exact (sum, sum of squares) of paste_depth(...) from the background's, touching only the
    pixels the object replaces (much cheaper than summing the whole image again)."""
    covered = bg_depth[y : y + fg.height, x : x + fg.width][fg.mask].astype(np.int64)
    n = covered.size
    return (bg_sum - int(covered.sum()) + value * n,
            bg_sum_sq - int((covered * covered).sum()) + value * value * n)


def depth_to_uint16(depth_m: np.ndarray, far_m: float) -> np.ndarray:
    """Metric z-depth -> stored value: round(65535 * clip(depth / far, 0, 1)), at least 1 (0 is
    reserved by the background-relative depth codec to mean "unchanged")."""
    normalised = np.clip(np.asarray(depth_m, np.float64) / far_m, 0.0, 1.0)
    return np.maximum(np.rint(normalised * 65535.0), 1).astype(np.uint16)

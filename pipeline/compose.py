"""Pure image math of one sample: alpha compositing, the mask, and the composited depth.

All integer arithmetic, so results are identical on every machine and with any number of workers.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

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
    composite_into(out, fg, x, y)
    return out


def composite_into(image: np.ndarray, fg: PreparedForeground, x: int, y: int) -> np.ndarray:
    """composite() in place: only the object's box of `image` is read and rewritten (its one temporary is
    box-sized). Returns `image`."""
    roi = image[y : y + fg.height, x : x + fg.width]
    blended = roi.astype(np.uint16)
    blended *= fg.inverse_alpha
    blended += fg.premultiplied
    roi[...] = divide_by_255_rounded(blended)
    return image


def swap_channels(fg: PreparedForeground) -> PreparedForeground:
    """The same cut-out for images in the other channel order (BGR <-> RGB): composite / composite_into
    of an RGB background with it give exactly the BGR results with their channels reversed."""
    return replace(fg, premultiplied=np.ascontiguousarray(fg.premultiplied[:, :, ::-1]))


def paste_mask(size: tuple[int, int], fg: PreparedForeground, x: int, y: int) -> np.ndarray:
    """Binary uint8 mask (0 / 255) of the object, from its alpha."""
    return paste_mask_into(np.zeros(size, np.uint8), fg, x, y)


def paste_mask_into(mask: np.ndarray, fg: PreparedForeground, x: int, y: int, on: int = MASK_ON) -> np.ndarray:
    """paste_mask() into an array the caller has cleared: `on` (MASK_ON, or 1 for a 0 / 1 mask) on the
    object's pixels. Returns `mask`."""
    mask[y : y + fg.height, x : x + fg.width][fg.mask] = on
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
    return paste_depth_into(depth, fg, x, y, object_depth(bg_depth, fg, x, y) if value is None else value)


def paste_depth_into(depth: np.ndarray, fg: PreparedForeground, x: int, y: int, value: int) -> np.ndarray:
    """paste_depth() in place on a copy of the background's depth the caller made: `value` (the object's
    depth, object_depth()) on the object's pixels. Returns `depth`."""
    depth[y : y + fg.height, x : x + fg.width][fg.mask] = value
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

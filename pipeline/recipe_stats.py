"""Exact sums of many recipe samples at once, without compositing them (the recipe build's statistics).

A sample differs from its background only inside the object's box, and there only where the
foreground's alpha is not 0 (the covered pixels). Where alpha is 255 the composite is the
foreground's colour; only the partly transparent edge pixels need compose.py's blend. So a sample's
fg_bg sums are its background's
- minus the background's under the covered pixels, read as horizontal runs from per-row prefix
  sums of the background,
- plus the foreground colour's over the opaque pixels (fixed per foreground),
- plus the blend's over the edge pixels, computed per pixel with compose.py's integer rule;
and likewise:
- the depth: the background depth's sums minus those under the mask's runs plus the object's depth
  times the mask's pixel count; the object's depth (compose.object_depth: the minimum of the contact
  pixel and every depth under the mask) comes from per-row tables of range minimums.

Everything is int64 arithmetic on exact integers, so the results equal summing each rebuilt sample
(tests/test_recipe_stats.py checks it against compose.py's per-sample functions).

For speed, positions are flat indices into flat arrays and every per-item step is a `take` or an
elementwise op on a 1-D array, one channel at a time (numpy's fancy indexing of (n, 3) rows and its
reductions along axis 0 are several times slower); what depends only on the samples' foregrounds
(a `SampleLayout`) is gathered once and can be reused for every background showing the same
foregrounds in the same order.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import cv2
import numpy as np

from .compose import PreparedForeground, divide_by_255_rounded

_SQUARES_U8 = (np.arange(256, dtype=np.uint32) ** 2).astype(np.uint16).reshape(1, 256)  # cv2.LUT table


def runs(mask: np.ndarray) -> np.ndarray:
    """(row, start, stop) of each horizontal run of True in a 2-D bool array, row by row: (n, 3) int64."""
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), np.int8)
    padded[:, 1:-1] = mask
    step = np.diff(padded, axis=1)
    rows, starts = np.nonzero(step == 1)
    _, stops = np.nonzero(step == -1)  # row-major order: the n-th stop closes the n-th start
    return np.stack([rows, starts, stops], axis=1).astype(np.int64)


def _floor_log2(n: np.ndarray) -> np.ndarray:
    """floor(log2(n)) of positive integers below 2**53, exactly: frexp gives n = m * 2**e, 0.5 <= m < 1."""
    return np.frexp(np.asarray(n, np.float64))[1].astype(np.int64) - 1


# ---- one background ------------------------------------------------------------------------------
@dataclass(frozen=True)
class BackgroundTables:
    """One (h, w) background as flat arrays. Per-row prefix sums have w + 1 entries a row (entry
    r * (w + 1) + c: the sum of row r's columns 0..c-1); range minimums have `levels` planes
    (entry k * h * w + r * w + c: the minimum depth of row r's columns c .. c + 2**k - 1)."""

    height: int
    width: int
    planes: np.ndarray  # (3, h * w) uint8: the colour, channel by channel
    row_sums: np.ndarray  # (3, h * (w + 1)) int64
    row_squares: np.ndarray  # (3, h * (w + 1)) int64
    depth: np.ndarray  # (h * w,) uint16
    depth_row_sums: np.ndarray  # (h * (w + 1),) int64
    depth_row_squares: np.ndarray  # (h * (w + 1),) int64
    depth_min: np.ndarray  # (levels * h * w,) uint16
    sums: np.ndarray  # (3,) int64: the whole image's
    squares: np.ndarray  # (3,) int64
    depth_sum: int
    depth_square: int


def _row_prefix(values: np.ndarray) -> np.ndarray:
    """Per-row prefix sums of (..., h, w) int64 values, flattened to (..., h * (w + 1))."""
    out = np.zeros(values.shape[:-1] + (values.shape[-1] + 1,), np.int64)
    np.cumsum(values, axis=-1, out=out[..., 1:])
    return out.reshape(values.shape[:-2] + (-1,))


def range_minimums(depth: np.ndarray) -> np.ndarray:
    """(levels, h, w): level k holds min(depth[r, c : c + 2**k]) (past the row's end: the dtype's maximum)."""
    h, w = depth.shape
    levels = max(1, w.bit_length())
    out = np.full((levels, h, w), np.iinfo(depth.dtype).max, depth.dtype)
    out[0] = depth
    for k in range(1, levels):
        half = 1 << (k - 1)
        np.minimum(out[k - 1, :, : w - half], out[k - 1, :, half:], out=out[k, :, : w - half])
    return out


def background_tables(image: np.ndarray, depth: np.ndarray) -> BackgroundTables:
    """Tables of a (h, w, 3) uint8 image and its (h, w) uint16 depth."""
    h, w = depth.shape
    planes = np.ascontiguousarray(image.transpose(2, 0, 1))
    wide, deep = planes.astype(np.int64), depth.astype(np.int64)
    row_sums, row_squares = _row_prefix(wide), _row_prefix(wide * wide)
    depth_row_sums, depth_row_squares = _row_prefix(deep), _row_prefix(deep * deep)
    ends = np.arange(1, h + 1) * (w + 1) - 1  # each row's total
    return BackgroundTables(
        height=h, width=w, planes=planes.reshape(3, -1), row_sums=row_sums, row_squares=row_squares,
        depth=np.ascontiguousarray(depth).reshape(-1), depth_row_sums=depth_row_sums,
        depth_row_squares=depth_row_squares, depth_min=range_minimums(depth).reshape(-1),
        sums=row_sums[:, ends].sum(axis=1), squares=row_squares[:, ends].sum(axis=1),
        depth_sum=int(depth_row_sums[ends].sum()), depth_square=int(depth_row_squares[ends].sum()))


# ---- one foreground ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ForegroundTables:
    """What the statistics need of one prepared foreground (a foreground at one flip and scale) on
    (h, w) images. Positions are flat, relative to the box's top-left: in a background's prefix sums
    (row * (w + 1) + col), range minimums (level * h * w + row * w + col) or pixels (row * w + col)."""

    covered_start: np.ndarray  # runs where alpha > 0: prefix positions of their first column
    covered_stop: np.ndarray  # ... and of the column after their last
    opaque_sums: np.ndarray  # (3,) int64: the colour's sum where alpha == 255, per channel
    opaque_squares: np.ndarray  # (3,) int64: the same of the squares
    edge_at: np.ndarray  # pixel positions where 0 < alpha < 255
    edge_inverse_alpha: np.ndarray  # (e,) uint16: 255 - alpha there
    edge_premultiplied: np.ndarray  # (3, e) uint16: colour * alpha there, per channel
    mask_start: np.ndarray  # runs of the mask (alpha >= 128), as covered_start / covered_stop
    mask_stop: np.ndarray
    mask_min_first: np.ndarray  # range-minimum positions covering each mask run: its first 2**k columns
    mask_min_last: np.ndarray  # ... and its last 2**k (k = floor(log2(run length)))
    mask_count: int
    contact: int  # pixel position of the ground-contact pixel


def foreground_tables(fg: PreparedForeground, height: int, width: int) -> ForegroundTables:
    alpha = 255 - fg.inverse_alpha[:, :, 0].astype(np.int64)
    opaque = alpha == 255
    colour = fg.premultiplied[opaque].astype(np.int64) // 255
    edge = (alpha > 0) & ~opaque
    edge_rows, edge_cols = np.nonzero(edge)
    covered_runs, mask_runs = runs(alpha > 0), runs(fg.mask)
    row, start, stop = mask_runs.T
    level = _floor_log2(stop - start)
    at_level = level * height * width + row * width
    return ForegroundTables(
        covered_start=covered_runs[:, 0] * (width + 1) + covered_runs[:, 1],
        covered_stop=covered_runs[:, 0] * (width + 1) + covered_runs[:, 2],
        opaque_sums=colour.sum(axis=0), opaque_squares=(colour * colour).sum(axis=0),
        edge_at=edge_rows.astype(np.int64) * width + edge_cols, edge_inverse_alpha=fg.inverse_alpha[:, :, 0][edge],
        edge_premultiplied=np.ascontiguousarray(fg.premultiplied[edge].T),
        mask_start=row * (width + 1) + start, mask_stop=row * (width + 1) + stop,
        mask_min_first=at_level + start, mask_min_last=at_level + stop - (1 << level),
        mask_count=int(fg.mask.sum()), contact=fg.contact_row * width + fg.contact_col)


# ---- many samples ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SampleLayout:
    """The foreground tables of n samples concatenated sample by sample (items: runs or pixels)."""

    covered_counts: np.ndarray  # (n,) runs per sample
    covered_start: np.ndarray
    covered_stop: np.ndarray
    opaque_sums: np.ndarray  # (n, 3)
    opaque_squares: np.ndarray  # (n, 3)
    edge_counts: np.ndarray  # (n,) edge pixels per sample
    edge_at: np.ndarray
    edge_inverse_alpha: np.ndarray
    edge_premultiplied: np.ndarray  # (3, E)
    mask_counts: np.ndarray  # (n,) mask runs per sample
    mask_start: np.ndarray
    mask_stop: np.ndarray
    mask_min_first: np.ndarray
    mask_min_last: np.ndarray
    mask_pixels: np.ndarray  # (n,)
    contact: np.ndarray  # (n,)


def sample_layout(fgs: Sequence[ForegroundTables]) -> SampleLayout:
    """The layout of samples showing foregrounds `fgs` (one entry per sample, repeats allowed)."""

    def joined(name: str, axis: int = 0) -> np.ndarray:
        return np.concatenate([getattr(f, name) for f in fgs], axis=axis)

    def counts(name: str) -> np.ndarray:
        return np.array([len(getattr(f, name)) for f in fgs], np.int64)

    return SampleLayout(
        covered_counts=counts("covered_start"), covered_start=joined("covered_start"),
        covered_stop=joined("covered_stop"),
        opaque_sums=np.stack([f.opaque_sums for f in fgs]), opaque_squares=np.stack([f.opaque_squares for f in fgs]),
        edge_counts=counts("edge_at"), edge_at=joined("edge_at"), edge_inverse_alpha=joined("edge_inverse_alpha"),
        edge_premultiplied=joined("edge_premultiplied", axis=1), mask_counts=counts("mask_start"),
        mask_start=joined("mask_start"), mask_stop=joined("mask_stop"), mask_min_first=joined("mask_min_first"),
        mask_min_last=joined("mask_min_last"), mask_pixels=np.array([f.mask_count for f in fgs], np.int64),
        contact=np.array([f.contact for f in fgs], np.int64))


@dataclass(frozen=True)
class SampleSums:
    """Per sample: the exact sums of the composite's fg_bg (per channel, stored order), the mask and
    the depth as compose.py builds them, and the object's depth."""

    fg_bg_sums: np.ndarray  # (n, 3) int64
    fg_bg_squares: np.ndarray  # (n, 3) int64
    mask_on: np.ndarray  # (n,) int64: mask pixels (value MASK_ON)
    depth_sums: np.ndarray  # (n,) int64
    depth_squares: np.ndarray  # (n,) int64
    object_depth: np.ndarray  # (n,) int64

    def select(self, which: np.ndarray) -> "SampleSums":
        """The sums of some of the samples (an index or boolean array)."""
        return SampleSums(*(getattr(self, f.name)[which] for f in fields(self)))


def _segment_sums(values: np.ndarray, counts: np.ndarray, largest: int | None = None) -> np.ndarray:
    """int64 sums of consecutive segments, of lengths `counts`, of `values` along its last axis (empty
    segments: 0). Unsigned values of at most `largest` are added up in uint32 where no segment's sum
    can reach 2**32 (about 3x faster than converting every value to int64)."""
    fits = largest is not None and len(counts) and int(counts.max()) * largest < 1 << 32
    out = np.zeros(values.shape[:-1] + (len(counts),), np.int64)
    full = counts > 0
    if full.any():
        firsts = (np.cumsum(counts) - counts)[full]
        out[..., full] = np.add.reduceat(values, firsts, axis=-1, dtype=np.uint32 if fits else np.int64)
    return out


def sample_sums(bg: BackgroundTables, layout: SampleLayout, x: np.ndarray, y: np.ndarray) -> SampleSums:
    """The sums of the samples of `layout` composited onto `bg` with their boxes' top-left at
    (x[i], y[i]) (every box inside the image; the tables made for images of bg's size)."""
    x, y = np.asarray(x, np.int64).reshape(-1), np.asarray(y, np.int64).reshape(-1)
    corner = y * bg.width + x
    prefix_corner = y * (bg.width + 1) + x
    uncovered_sums, uncovered_squares = _uncovered_sums(bg, layout, prefix_corner)
    edge_sums, edge_squares = _edge_sums(bg, layout, corner)
    depth_sums, depth_squares = _depth_off_mask(bg, layout, prefix_corner)
    value = _object_depth(bg, layout, corner)
    n = layout.mask_pixels
    return SampleSums(fg_bg_sums=uncovered_sums + layout.opaque_sums + edge_sums,
                      fg_bg_squares=uncovered_squares + layout.opaque_squares + edge_squares, mask_on=n,
                      depth_sums=depth_sums + value * n, depth_squares=depth_squares + value * value * n,
                      object_depth=value)


def _run_totals(prefix: np.ndarray, first: np.ndarray, last: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per sample, the total of `prefix`'s image over the sample's runs (their placed prefix positions)."""
    return _segment_sums(prefix.take(last) - prefix.take(first), counts)


def _uncovered_sums(bg: BackgroundTables, layout: SampleLayout, corner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sample and channel, the background's sums outside the covered pixels (alpha > 0)."""
    at = np.repeat(corner, layout.covered_counts)
    runs_of = (at + layout.covered_start, at + layout.covered_stop, layout.covered_counts)
    under = np.stack([_run_totals(bg.row_sums[c], *runs_of) for c in range(3)], axis=1)
    under_squares = np.stack([_run_totals(bg.row_squares[c], *runs_of) for c in range(3)], axis=1)
    return bg.sums - under, bg.squares - under_squares


def _edge_sums(bg: BackgroundTables, layout: SampleLayout, corner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sample and channel, the sums of the blend over the partly transparent pixels (the three
    channels as the rows of one (3, E) array)."""
    counts = layout.edge_counts
    blended = np.take(bg.planes, np.repeat(corner, counts) + layout.edge_at, axis=1).astype(np.uint16)
    blended *= layout.edge_inverse_alpha
    blended += layout.edge_premultiplied
    blended = divide_by_255_rounded(blended)
    return (_segment_sums(blended, counts, 255).T,
            _segment_sums(cv2.LUT(blended, _SQUARES_U8), counts, 255 * 255).T)


def _depth_off_mask(bg: BackgroundTables, layout: SampleLayout, corner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sample, the background depth's sum and sum of squares outside the object's mask."""
    at = np.repeat(corner, layout.mask_counts)
    runs_of = (at + layout.mask_start, at + layout.mask_stop, layout.mask_counts)
    return (bg.depth_sum - _run_totals(bg.depth_row_sums, *runs_of),
            bg.depth_square - _run_totals(bg.depth_row_squares, *runs_of))


def _object_depth(bg: BackgroundTables, layout: SampleLayout, corner: np.ndarray) -> np.ndarray:
    """compose.object_depth per sample: the minimum of the contact pixel and every depth under the mask."""
    at = np.repeat(corner, layout.mask_counts)
    run_min = np.minimum(bg.depth_min.take(at + layout.mask_min_first), bg.depth_min.take(at + layout.mask_min_last))
    # every mask has a pixel (compose.prepare_foreground), so no segment is empty
    lowest = np.minimum.reduceat(run_min, np.cumsum(layout.mask_counts) - layout.mask_counts)
    return np.minimum(lowest, bg.depth.take(corner + layout.contact)).astype(np.int64)


__all__ = ["BackgroundTables", "ForegroundTables", "SampleLayout", "SampleSums", "background_tables",
           "foreground_tables", "range_minimums", "runs", "sample_layout", "sample_sums"]

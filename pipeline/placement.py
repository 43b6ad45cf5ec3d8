"""Where each object stands and how large it is: the 'fixed' layout and the 'depth-scaled' one.

fixed (format version 1's layout): every cut-out is pasted at its own size; x, y from the plan's
counter-based hash (plan.placements).

depth-scaled: an object's pixel size follows the depth at its ground contact, so a car at the
horizon is small and one in front of the camera large, as the depth the same sample teaches says.
With a nominal real-world width W (metres) per object and the camera's focal length f (pixels), an
object whose contact point lies at z-depth z is W * f / z pixels wide. That scale is quantised to a
small ladder of levels, scale(k) = 2^(k / LEVELS_PER_OCTAVE) for LEVEL_MIN <= k <= LEVEL_MAX, and
the scaled cut-out of (foreground, level) is a pure function (`scale_foreground`), so a reader that
re-composites samples (recipe datasets) scales each asset once per level and pastes with the same
integer compositing as the build (compose.py).

The placement of a sample stays a pure function of (seed, index, the background's depth and ground
row, the foreground's size and nominal width): up to PLACEMENT_TRIES contact points (row on the
ground, column anywhere) are drawn from the counter-based hash; the first that lies on open ground
and whose ideal scale lies on the ladder is taken, else the last with its level clamped. Open
ground is read from the depth alone: the ground's z-depth depends only on the image row (a camera
without roll), and anything standing on it is nearer, so a pixel is open ground where its depth is
the largest of its row. The object's box is anchored with its
bottom row on the contact row and centred on the contact column, then shifted to fit the image.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .compose import PreparedForeground, prepare_foreground
from .errors import DepthmaskError
from .plan import placements, uniform01

PLACEMENTS = ("fixed", "depth-scaled")
# The embedded kit's default; folders are always "fixed". depth-scaled stays an option: in an equal CPU
# budget it helped the real-photo composites (mask IoU 0.708 -> 0.732) but lost 0.021 IoU on the fixed
# layout's own val split (issue 10 section 4, measured by helper S).
DEFAULT_PROCEDURAL_PLACEMENT = "fixed"
LEVELS_PER_OCTAVE = 4
LEVEL_MIN = -10  # 2^(-10/4) = 0.177: a 160 px car becomes 28 px wide
LEVEL_MAX = 0  # never enlarged: the cut-outs are drawn at their largest useful size
MIN_SCALED_SIDE = 6  # no level makes a cut-out narrower or lower than this many pixels
PLACEMENT_TRIES = 12
_STREAM_ROW, _STREAM_COL = 3, 4  # (plan.py's placements use streams 1 and 2)

# scale(k) in 16.16 fixed point, so sizes are integer arithmetic on every platform
_SCALE_Q16 = {k: int(round(65536 * 2.0 ** (k / LEVELS_PER_OCTAVE))) for k in range(LEVEL_MIN, LEVEL_MAX + 1)}
# the ideal scale s is at level k when 2^((k - 1/2) / 4) <= s < 2^((k + 1/2) / 4)
_LEVEL_EDGES = np.array([2.0 ** ((k + 0.5) / LEVELS_PER_OCTAVE) for k in range(LEVEL_MIN - 1, LEVEL_MAX + 1)])


def level_scale(level: int) -> float:
    """The scale factor of a level (the exact value the sizes are computed from)."""
    return _SCALE_Q16[level] / 65536.0


def scaled_size(width: int, height: int, level: int) -> tuple[int, int]:
    """(width, height) of a cut-out scaled to `level`: round(side * scale), at least 1 pixel."""
    q = _SCALE_Q16[level]
    return max(1, (width * q + 32768) >> 16), max(1, (height * q + 32768) >> 16)


def lowest_level(width: int, height: int) -> int:
    """The smallest level at which neither side of the cut-out falls below MIN_SCALED_SIDE (or its own
    size, for cut-outs smaller than that)."""
    for level in range(LEVEL_MIN, LEVEL_MAX + 1):
        w, h = scaled_size(width, height, level)
        if w >= min(width, MIN_SCALED_SIDE) and h >= min(height, MIN_SCALED_SIDE):
            return level
    return LEVEL_MAX


def scale_foreground(bgra: np.ndarray, level: int) -> np.ndarray:
    """A BGRA cut-out scaled to `level`: area resampling of the colour pre-multiplied by alpha (edges keep
    the object's colour), then un-premultiplied; level 0 is the cut-out itself. A pure function of
    (cut-out, level): the build and any reader that re-composites get the same bytes. The mask never
    vanishes: if no alpha reaches the mask threshold, the most opaque pixel is raised to it."""
    if level == 0:
        return bgra
    h, w = bgra.shape[:2]
    size = scaled_size(w, h, level)
    alpha = bgra[:, :, 3].astype(np.float32) * np.float32(1.0 / 255.0)
    pre = cv2.resize(bgra[:, :, :3].astype(np.float32) * alpha[:, :, None], size, interpolation=cv2.INTER_AREA)
    a = cv2.resize(alpha, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0])
    colour = pre.reshape(size[1], size[0], 3) / np.maximum(a, np.float32(1e-6))[:, :, None]
    a8 = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    c8 = np.clip(np.rint(colour), 0, 255).astype(np.uint8)
    c8[a8 == 0] = 0
    if a8.max() < 128:  # a thin object made thinner than half a pixel: keep one pixel of mask
        r, c = np.unravel_index(int(np.argmax(a8)), a8.shape)
        a8[r, c] = 128
        c8[r, c] = bgra[:, :, :3].reshape(-1, 3)[int(np.argmax(bgra[:, :, 3]))]
    return np.ascontiguousarray(np.dstack([c8, a8]))


class ScaledForegrounds:
    """Prepared (pre-multiplied) cut-outs per (foreground, level, flip), made on first use and kept:
    what a build worker (or a re-compositing reader) pastes."""

    def __init__(self, foregrounds: list[np.ndarray]):
        self.foregrounds = foregrounds
        self._cache: dict[tuple[int, int, bool], PreparedForeground] = {}

    def get(self, fg: int, level: int, flip: bool) -> PreparedForeground:
        key = (fg, level, flip)
        prepared = self._cache.get(key)
        if prepared is None:
            prepared = prepare_foreground(scale_foreground(self.foregrounds[fg], level), flip=flip)
            self._cache[key] = prepared
        return prepared


@dataclass(frozen=True)
class DepthScale:
    """What depth-scaled placement needs beyond the plan: each foreground's nominal real-world width
    (metres spanned by its full pixel width), the depth maps' metres per stored unit, and the focal
    length in pixels."""

    widths_m: np.ndarray  # (n_foregrounds,) float64
    metres_per_unit: float  # stored uint16 depth value -> metres (far_m / 65535)
    focal_px: float


def procedural_depth_scale(n_foregrounds: int, *, seed: int, size: int) -> DepthScale:
    """The DepthScale of the embedded kit: each procedural object's real width, metric depth up to FAR_M,
    the kit's nominal focal length."""
    from . import scenes

    return DepthScale(np.array([scenes.foreground_width_m(i, seed=seed) for i in range(n_foregrounds)]),
                      scenes.FAR_M / 65535, scenes.nominal_focal_px(size))


def ideal_scale(width_m: np.ndarray, width_px: np.ndarray, depth_m: np.ndarray, focal_px: float) -> np.ndarray:
    """The scale at which an object of real width width_m, drawn width_px wide, appears at z-depth depth_m."""
    return np.asarray(width_m, np.float64) * focal_px / (np.maximum(depth_m, 1e-3) * np.asarray(width_px, np.float64))


def level_of(scale: np.ndarray) -> np.ndarray:
    """The ladder level nearest (in log scale) to each ideal scale, unclamped below LEVEL_MIN - 1 / above
    LEVEL_MAX + 1 (they are then off the ladder)."""
    return np.searchsorted(_LEVEL_EDGES, np.asarray(scale, np.float64), side="right").astype(np.int64) + LEVEL_MIN - 1


def depth_scaled_placements(seed: int, key: np.ndarray, fg: np.ndarray, fg_width: np.ndarray, fg_height: np.ndarray,
                            bg: np.ndarray, bg_depths: list[np.ndarray], ground_top: np.ndarray, size: int,
                            scale: DepthScale) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, level) per sample: see the module's docstring."""
    key = np.asarray(key, np.int64)
    fg, bg = np.asarray(fg, np.int64), np.asarray(bg, np.int64)
    fg_width, fg_height = np.asarray(fg_width, np.int64), np.asarray(fg_height, np.int64)
    ground_top = np.clip(np.asarray(ground_top, np.int64), 0, size - 1)
    lowest = np.array([lowest_level(int(w), int(h)) for w, h in zip(fg_width, fg_height)], np.int64)
    n = len(key)
    row, col = np.zeros(n, np.int64), np.zeros(n, np.int64)
    level = np.zeros(n, np.int64)
    open_ = np.ones(n, bool)  # still looking for a contact point on open ground whose scale is on the ladder
    row_max = {int(b): bg_depths[int(b)].max(axis=1) for b in np.unique(bg)}
    for attempt in range(PLACEMENT_TRIES):
        r = ground_top + np.floor(uniform01(seed, key, _STREAM_ROW + 2 * attempt) * (size - ground_top)).astype(np.int64)
        c = np.floor(uniform01(seed, key, _STREAM_COL + 2 * attempt) * size).astype(np.int64)
        z = np.empty(n, np.float64)
        ground = np.empty(n, bool)
        for b in np.unique(bg):
            sel = bg == b
            stored = bg_depths[int(b)][r[sel], c[sel]]
            z[sel] = stored.astype(np.float64) * scale.metres_per_unit
            ground[sel] = stored >= row_max[int(b)][r[sel]]
        k = level_of(ideal_scale(scale.widths_m[fg], fg_width, z, scale.focal_px))
        take = open_ & ((ground & (k >= lowest) & (k <= LEVEL_MAX)) | (attempt == PLACEMENT_TRIES - 1))
        row[take], col[take], level[take] = r[take], c[take], np.clip(k[take], lowest[take], LEVEL_MAX)
        open_ &= ~take
    q = np.array([_SCALE_Q16[int(k)] for k in level], np.int64)
    width = np.maximum(1, (fg_width * q + 32768) >> 16)
    height = np.maximum(1, (fg_height * q + 32768) >> 16)
    x = np.clip(col - width // 2, 0, size - width)
    y = np.clip(row - height + 1, 0, size - height)
    return x, y, level


def validate_placement(placement: str, *, procedural_backgrounds: bool, procedural_foregrounds: bool,
                       per_sample_depth: bool) -> None:
    """depth-scaled needs metric depth and objects of known real size: the embedded scenes and objects."""
    if placement not in PLACEMENTS:
        raise DepthmaskError(f"--placement: expected fixed or depth-scaled, got {placement!r}")
    if placement == "depth-scaled" and not (procedural_backgrounds and procedural_foregrounds and not per_sample_depth):
        raise DepthmaskError("--placement depth-scaled: needs the embedded scenes and objects (metric depth and "
                             "objects of known real size); a build from folders or with per-sample model depth "
                             "uses --placement fixed")


def fixed_placements(seed: int, key: np.ndarray, fg_width: np.ndarray, fg_height: np.ndarray,
                     ground_top: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, level 0) per sample: format version 1's layout, byte for byte."""
    x, y = placements(seed, key, fg_width, fg_height, ground_top, size)
    return x, y, np.zeros(len(x), np.int64)

"""The sample plan: which (background, foreground, placement, flip) each global sample index holds.

Everything here is a pure function of the counts and the seed, so any sample (or shard) can be
regenerated alone, in any process, in any order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import DepthmaskError

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_PLACEMENT_STREAM_X = 1
_PLACEMENT_STREAM_Y = 2
_SPLIT_STREAM = 0x5B117


@dataclass(frozen=True)
class SamplePlan:
    """Sample index i = ((bg * n_fg + fg) * positions + position) * variants + flip."""

    n_backgrounds: int
    n_foregrounds: int
    positions: int
    flip: bool
    limit: int | None = None

    def __post_init__(self) -> None:
        for name in ("n_backgrounds", "n_foregrounds", "positions"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise DepthmaskError(f"{name.removeprefix('n_')}: must be a whole number >= 1, got {value!r}")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise DepthmaskError(f"limit: must be a whole number >= 1, got {self.limit!r}")

    @property
    def variants(self) -> int:
        return 2 if self.flip else 1

    @property
    def full_count(self) -> int:
        return self.n_backgrounds * self.n_foregrounds * self.positions * self.variants

    @property
    def count(self) -> int:
        return self.full_count if self.limit is None else min(self.limit, self.full_count)

    def locate(self, index: np.ndarray | int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Sample index (array) -> (bg, fg, position, flipped) arrays."""
        index = np.asarray(index, dtype=np.int64)
        flipped = (index % self.variants).astype(bool) if self.flip else np.zeros(index.shape, bool)
        pair = index // self.variants
        position = pair % self.positions
        combo = pair // self.positions
        fg = combo % self.n_foregrounds
        bg = combo // self.n_foregrounds
        return bg, fg, position, flipped

    def placement_key(self, index: np.ndarray) -> np.ndarray:
        """The flipped twin shares its placement: both variants of a pair get the same key."""
        return np.asarray(index, dtype=np.int64) // self.variants


def mix64(seed: int, key: np.ndarray, stream: int) -> np.ndarray:
    """SplitMix64 of (seed, stream, key): a counter-based generator, vectorised, platform-independent."""
    with np.errstate(over="ignore"):
        z = np.asarray(key, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z ^= np.uint64((seed * 0xD1B54A32D192ED03 + stream * 0x8CB92BA72F3D8DD7) & 0xFFFFFFFFFFFFFFFF)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return z & _MASK64


def uniform01(seed: int, key: np.ndarray, stream: int) -> np.ndarray:
    """Uniform floats in [0, 1) with 53 random bits, exact in IEEE double on every platform."""
    return (mix64(seed, key, stream) >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def placements(
    seed: int,
    key: np.ndarray,
    fg_width: np.ndarray,
    fg_height: np.ndarray,
    ground_top: np.ndarray,
    size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-left (x, y) of each foreground, drawn from (seed, key).

    x is uniform over every column where the object fits. The object's bottom row (its ground
    contact) is uniform over the rows from ``ground_top`` (first row where ground is visible; 0 when
    unknown) to the last row, so procedural objects stand on the ground rather than in the sky.
    """
    fg_width = np.asarray(fg_width, np.int64)
    fg_height = np.asarray(fg_height, np.int64)
    x = np.floor(uniform01(seed, key, _PLACEMENT_STREAM_X) * (size - fg_width + 1)).astype(np.int64)
    lowest_bottom = np.clip(np.maximum(np.asarray(ground_top, np.int64), fg_height - 1), 0, size - 1)
    span = size - lowest_bottom
    bottom = lowest_bottom + np.floor(uniform01(seed, key, _PLACEMENT_STREAM_Y) * span).astype(np.int64)
    return x, bottom - fg_height + 1


@dataclass(frozen=True)
class Split:
    """Held-out backgrounds and foregrounds. 'train' pairs use neither, 'val' pairs use both;
    pairs that mix a held-out asset with a training one are 'mixed' and belong to neither, so no
    background or foreground seen in training appears in validation."""

    val_backgrounds: tuple[int, ...]
    val_foregrounds: tuple[int, ...]

    def assign(self, bg: np.ndarray, fg: np.ndarray) -> np.ndarray:
        """Per sample: 0 = train, 1 = val, 2 = mixed."""
        bg_val = np.isin(bg, self.val_backgrounds)
        fg_val = np.isin(fg, self.val_foregrounds)
        return np.where(bg_val & fg_val, 1, np.where(bg_val | fg_val, 2, 0)).astype(np.int8)


SPLIT_NAMES = ("train", "val", "mixed")


def make_split(n_backgrounds: int, n_foregrounds: int, val_fraction: float, seed: int) -> Split:
    if not 0.0 <= val_fraction < 1.0:
        raise DepthmaskError(f"--val-fraction: must be in [0, 1), got {val_fraction}")
    return Split(
        val_backgrounds=_held_out(n_backgrounds, val_fraction, seed, 0),
        val_foregrounds=_held_out(n_foregrounds, val_fraction, seed, 1),
    )


def _held_out(n: int, fraction: float, seed: int, kind: int) -> tuple[int, ...]:
    if fraction == 0.0 or n < 2:
        return ()
    k = min(n - 1, max(1, round(n * fraction)))
    order = np.random.default_rng([seed, _SPLIT_STREAM, kind]).permutation(n)
    return tuple(sorted(int(i) for i in order[:k]))

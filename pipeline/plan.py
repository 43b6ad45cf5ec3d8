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

    @property
    def per_background(self) -> int:
        return self.n_foregrounds * self.positions * self.variants

    @property
    def used_backgrounds(self) -> int:
        """Backgrounds with at least one sample (index order is background-major: a prefix)."""
        return min(self.n_backgrounds, -(-self.count // self.per_background))

    @property
    def used_foregrounds(self) -> int:
        """Foregrounds with at least one sample: all of them unless only background 0 is used."""
        if self.used_backgrounds > 1:
            return self.n_foregrounds
        return min(self.n_foregrounds, -(-self.count // (self.positions * self.variants)))

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


def needed_backgrounds(limit: int | None, n_foregrounds: int, positions: int, flip: bool) -> int | None:
    """How many backgrounds the first `limit` samples use (None: no limit, all of them), known before
    any background exists, so only those are rendered or loaded."""
    if limit is None:
        return None
    return -(-limit // (n_foregrounds * positions * (2 if flip else 1)))


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


SPLIT_NAMES = ("train", "val", "unseen_bg", "unseen_fg")
SPLIT_RULE = ("train: neither the background nor the foreground is held out; val: both are; unseen_bg: a held-out "
              "background with a training foreground; unseen_fg: a training background with a held-out foreground. "
              "A kind with no held-out asset (a single one used) is no criterion: val is then the held-out assets "
              "of the other kind, shown with the shared one, and unseen_bg / unseen_fg are empty")


@dataclass(frozen=True)
class Split:
    """Held-out backgrounds and foregrounds. 'train' pairs use neither and 'val' pairs use both, so no
    background or foreground seen in training appears in validation; pairs that mix a held-out asset
    with a training one are the generalisation splits 'unseen_bg' and 'unseen_fg'.

    An empty held-out list means that kind is not held out (one asset of it is used): then 'val' is
    every sample of the other kind's held-out assets, and nothing is 'unseen_*'."""

    val_backgrounds: tuple[int, ...]
    val_foregrounds: tuple[int, ...]

    def assign(self, bg: np.ndarray, fg: np.ndarray) -> np.ndarray:
        """Per sample, the index into SPLIT_NAMES: 0 train, 1 val, 2 unseen_bg, 3 unseen_fg."""
        bg_val = np.isin(bg, self.val_backgrounds)
        fg_val = np.isin(fg, self.val_foregrounds)
        if not self.val_backgrounds:  # a kind not held out follows the other
            bg_val = fg_val
        if not self.val_foregrounds:
            fg_val = bg_val
        return np.where(bg_val & fg_val, 1, np.where(bg_val, 2, np.where(fg_val, 3, 0))).astype(np.int8)

    def counts(self, plan: SamplePlan) -> dict[str, int]:
        """Samples per split, computed per (background, foreground) pair of the plan (no array of the
        sample count's length)."""
        # the pairs with samples only, so each pair's first index is below count + positions * variants
        n_fg = plan.n_foregrounds if plan.used_backgrounds > 1 else plan.used_foregrounds
        bg = np.repeat(np.arange(plan.used_backgrounds, dtype=np.int64), n_fg)
        fg = np.tile(np.arange(n_fg, dtype=np.int64), plan.used_backgrounds)
        per_pair = plan.positions * plan.variants
        samples = np.clip(plan.count - (bg * plan.n_foregrounds + fg) * per_pair, 0, per_pair)
        assigned = self.assign(bg, fg)
        return {name: int(samples[assigned == k].sum()) for k, name in enumerate(SPLIT_NAMES)}


def manifest_counts(counts: dict[str, int]) -> dict[str, int]:
    """split.counts as the manifest stores them: each split, plus 'mixed' (version 1's name for the
    samples in neither train nor val) kept as unseen_bg + unseen_fg."""
    return {**counts, "mixed": counts["unseen_bg"] + counts["unseen_fg"]}


def make_split(n_backgrounds: int, n_foregrounds: int, val_fraction: float, seed: int) -> Split:
    """Hold out round(n * val_fraction) (at least 1, at most n - 1) of the n backgrounds and of the n
    foregrounds a plan uses (SamplePlan.used_backgrounds / used_foregrounds): with every asset used this
    is the split of the whole set; a small build holds out among the assets it has."""
    if not 0.0 <= val_fraction < 1.0:
        raise DepthmaskError(f"--val-fraction: must be in [0, 1), got {val_fraction}")
    return Split(
        val_backgrounds=_held_out(n_backgrounds, val_fraction, seed, 0),
        val_foregrounds=_held_out(n_foregrounds, val_fraction, seed, 1),
    )


def plan_split(plan: SamplePlan, val_fraction: float, seed: int) -> Split:
    """The split of a plan: held-out assets among those it uses."""
    return make_split(plan.used_backgrounds, plan.used_foregrounds, val_fraction, seed)


def empty_val_reason(plan: SamplePlan, split: Split, val_fraction: float) -> str | None:
    """Why a plan's val split is empty (None when it is not), in words for the build's warning."""
    if split.counts(plan)["val"]:
        return None
    if val_fraction == 0.0:
        return "--val-fraction is 0"
    if plan.used_backgrounds < 2 and plan.used_foregrounds < 2:
        return "the plan uses a single background and a single foreground, so nothing can be held out"
    return "no sample pairs a held-out background with a held-out foreground"


def _held_out(n: int, fraction: float, seed: int, kind: int) -> tuple[int, ...]:
    if fraction == 0.0 or n < 2:
        return ()
    k = min(n - 1, max(1, round(n * fraction)))
    order = np.random.default_rng([seed, _SPLIT_STREAM, kind]).permutation(n)
    return tuple(sorted(int(i) for i in order[:k]))

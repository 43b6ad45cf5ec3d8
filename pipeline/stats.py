"""Exact per-channel statistics: integer sums and sums of squares, merged by addition.

Per image, OpenCV's sumElems gives exact integer sums (its float64 accumulators hold every partial
sum exactly below 2**53), squares of uint8 come from a lookup table, and squares of uint16 from a
float64 dot product (each product < 2**32 and partial sums < 2**53, so again exact). Images are
added up in Python ints, so the dataset's mean and std are exact, never a mean of per-image stds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

# field -> (channels, maximum stored value): the [0, 1] scale is value / maximum
FIELDS: dict[str, tuple[int, int]] = {"fg_bg": (3, 255), "bg": (3, 255), "mask": (1, 255), "depth": (1, 65535)}

_SQUARES_U8 = (np.arange(256, dtype=np.uint32) ** 2).astype(np.uint16).reshape(1, 256)


def image_sums(image: np.ndarray) -> tuple[list[int], list[int]]:
    """Exact per-channel (sums, sums of squares) of a uint8 or uint16 image, channels in stored order."""
    channels = 1 if image.ndim == 2 else image.shape[2]
    if image.dtype == np.uint8:
        sums = cv2.sumElems(image)
        squares = cv2.sumElems(cv2.LUT(image, _SQUARES_U8))
        return [int(sums[c]) for c in range(channels)], [int(squares[c]) for c in range(channels)]
    if image.dtype == np.uint16:
        flat = image.reshape(-1, channels).astype(np.float64)
        sums = flat.sum(axis=0)
        squares = [float(flat[:, c] @ flat[:, c]) for c in range(channels)]
        return [int(s) for s in sums], [int(s) for s in squares]
    raise ValueError(f"statistics need uint8 or uint16 images, got {image.dtype}")


@dataclass
class ChannelSums:
    """Running exact sums for one field."""

    channels: int
    pixels: int = 0  # per channel
    sums: list[int] = field(default_factory=list)
    squares: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sums = self.sums or [0] * self.channels
        self.squares = self.squares or [0] * self.channels

    def add(self, sums: list[int], squares: list[int], pixels: int, times: int = 1) -> None:
        self.pixels += pixels * times
        for c in range(self.channels):
            self.sums[c] += sums[c] * times
            self.squares[c] += squares[c] * times

    def merge(self, other: "ChannelSums") -> None:
        self.add(other.sums, other.squares, other.pixels)

    def to_json(self) -> dict[str, Any]:
        # decimal strings: these integers outgrow 2**53 (and 2**64), which JSON numbers do not hold safely
        return {"pixels": str(self.pixels), "sum": [str(s) for s in self.sums],
                "sum_sq": [str(s) for s in self.squares]}

    @classmethod
    def of_image(cls, image: np.ndarray) -> "ChannelSums":
        """The exact sums of one uint8 or uint16 image (e.g. a stored background, decoded)."""
        sums, squares = image_sums(image)
        out = cls(len(sums))
        out.add(sums, squares, image.shape[0] * image.shape[1])
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ChannelSums":
        sums = [int(s) for s in data["sum"]]
        return cls(channels=len(sums), pixels=int(data["pixels"]), sums=sums,
                   squares=[int(s) for s in data["sum_sq"]])

    def mean_std(self, maximum: int) -> tuple[list[float], list[float]]:
        """Population mean and std on the [0, 1] scale, from exact integer moments."""
        if self.pixels == 0:
            return [math.nan] * self.channels, [math.nan] * self.channels
        n = self.pixels
        means, stds = [], []
        for s, q in zip(self.sums, self.squares):
            # var * n^2 = n*q - s^2, an exact integer; only the final division rounds
            means.append(s / (n * maximum))
            stds.append(math.sqrt(n * q - s * s) / (n * maximum))
        return means, stds


class StatsAccumulator:
    """Exact sums per split and field."""

    def __init__(self) -> None:
        self.by_split: dict[str, dict[str, ChannelSums]] = {}

    def _sums(self, split: str, name: str) -> ChannelSums:
        fields = self.by_split.setdefault(split, {})
        if name not in fields:
            fields[name] = ChannelSums(FIELDS[name][0])
        return fields[name]

    def add_image(self, split: str, name: str, image: np.ndarray, times: int = 1) -> None:
        sums, squares = image_sums(image)
        self._sums(split, name).add(sums, squares, image.shape[0] * image.shape[1], times)

    def add_sums_raw(self, split: str, name: str, sums: list[int], squares: list[int], pixels: int) -> None:
        """Sums computed elsewhere, exactly (e.g. derived from a background's)."""
        self._sums(split, name).add(sums, squares, pixels)

    def add_sums(self, split: str, name: str, sums: ChannelSums, times: int = 1) -> None:
        self._sums(split, name).add(sums.sums, sums.squares, sums.pixels, times)

    def merge(self, other: "StatsAccumulator") -> None:
        for split, fields in other.by_split.items():
            for name, sums in fields.items():
                self._sums(split, name).merge(sums)

    def to_json(self) -> dict[str, Any]:
        return {split: {name: s.to_json() for name, s in sorted(fields.items())}
                for split, fields in sorted(self.by_split.items())}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "StatsAccumulator":
        acc = cls()
        for split, fields in data.items():
            for name, sums in fields.items():
                acc.by_split.setdefault(split, {})[name] = ChannelSums.from_json(sums)
        return acc

    def total(self, splits: tuple[str, ...] | None = None) -> dict[str, ChannelSums]:
        out: dict[str, ChannelSums] = {}
        for split, fields in self.by_split.items():
            if splits is not None and split not in splits:
                continue
            for name, sums in fields.items():
                out.setdefault(name, ChannelSums(sums.channels)).merge(sums)
        return out


def summarise(sums_by_field: dict[str, ChannelSums]) -> dict[str, Any]:
    """Manifest form: mean/std per channel in RGB order on [0, 1], plus the exact sums behind them."""
    out = {}
    for name, sums in sorted(sums_by_field.items()):
        mean, std = sums.mean_std(FIELDS[name][1])
        if FIELDS[name][0] == 3:  # stored BGR (OpenCV order) -> reported RGB
            mean, std = mean[::-1], std[::-1]
        out[name] = {"mean": mean, "std": std, "channel_order": "RGB" if len(mean) == 3 else "L",
                     "exact_sums_stored_order": sums.to_json()}
    return out

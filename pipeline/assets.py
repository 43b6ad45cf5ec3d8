"""The assets a build composes: backgrounds (colour + exact depth) and foreground cut-outs.

The embedded default renders them procedurally (pipeline.scenes); other sources plug in here by
returning the same AssetSet.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from .compose import depth_to_uint16

# Rows of ground below the horizon kept clear of the horizon line itself when placing objects.
GROUND_MARGIN_ROWS = 4


@dataclass(frozen=True)
class AssetSet:
    backgrounds: list[np.ndarray]  # (size, size, 3) uint8 BGR
    background_depths: list[np.ndarray]  # (size, size) uint16: depth / far * 65535
    ground_tops: list[int]  # first row where objects may touch the ground (0 = anywhere)
    foregrounds: list[np.ndarray]  # (h, w, 4) uint8 BGRA
    background_names: list[str]
    foreground_names: list[str]
    source: dict[str, Any]  # how the assets were made, for the manifest
    depth: dict[str, Any]  # depth semantics, for the manifest

    def describe(self) -> dict[str, Any]:
        """Per-asset names and content hashes: a changed asset is detected on resume."""
        return {
            "source": self.source,
            "backgrounds": [{"name": n, "sha256": array_hash(img, d)}
                            for n, img, d in zip(self.background_names, self.backgrounds, self.background_depths)],
            "foregrounds": [{"name": n, "sha256": array_hash(fg), "width": int(fg.shape[1]), "height": int(fg.shape[0])}
                            for n, fg in zip(self.foreground_names, self.foregrounds)],
        }


def array_hash(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def procedural_assets(n_backgrounds: int, n_foregrounds: int, *, seed: int, size: int) -> AssetSet:
    """The embedded default: rendered street/yard scenes with exact depth, and car-like cut-outs."""
    from . import scenes

    backgrounds = scenes.render_backgrounds(n_backgrounds, seed=seed, size=size)
    foregrounds = scenes.render_foregrounds(n_foregrounds, seed=seed)
    return AssetSet(
        backgrounds=[b.image for b in backgrounds],
        background_depths=[depth_to_uint16(b.depth_m, scenes.FAR_M) for b in backgrounds],
        ground_tops=[int(np.clip(b.horizon_row + GROUND_MARGIN_ROWS, 0, size - 1)) for b in backgrounds],
        foregrounds=foregrounds,
        background_names=[f"procedural-bg-{i:04d}" for i in range(n_backgrounds)],
        foreground_names=[f"procedural-fg-{i:04d}" for i in range(n_foregrounds)],
        source={"kind": "procedural", "seed": seed, "generator": "pipeline.scenes",
                "generator_version": scenes.GENERATOR_VERSION},
        depth={
            "kind": "z-depth",
            "units_of_far": "metres",
            "near_m": 0.0,
            "far_m": float(scenes.FAR_M),
            "stored": "uint16 PNG; normalised depth = value / 65535 = clip(z_m / far_m, 0, 1)",
            "sky": 1.0,
            "exact": True,
            "object_rule": "object depth = min(background depth at its ground-contact pixel, "
                           "every background depth it covers); constant over the object's mask",
        },
    )

"""pipeline.recipe_stats: the recipe build's statistics of many samples at once equal, field by field,
the sums of each sample composited by compose.py (fg_bg, mask, depth, the object's depth), and a
recipe build's statistics equal the sums over every sample RecipeStore.render rebuilds, with fixed and
depth-scaled placements."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import read_manifest_json, tiny_options
from pipeline.assets import procedural_background, procedural_foregrounds
from pipeline.compose import composite, object_depth, paste_depth, paste_mask, prepare_foreground
from pipeline.placement import lowest_level, scale_foreground
from pipeline.recipe_build import build_recipes
from pipeline.recipe_stats import (background_tables, foreground_tables, range_minimums, runs, sample_layout,
                                   sample_sums)
from pipeline.recipes import RecipeStore
from pipeline.stats import StatsAccumulator, image_sums, summarise


def _synthetic_foregrounds() -> list[np.ndarray]:
    """Cut-outs the procedural set lacks: binary alpha (no edge pixel), no opaque pixel, one pixel,
    a mask touching every side of its box, alpha with holes."""
    rng = np.random.default_rng(3)
    binary = np.zeros((9, 13, 4), np.uint8)
    binary[..., :3] = rng.integers(0, 256, (9, 13, 3))
    binary[2:8, 1:12, 3] = 255
    soft = rng.integers(0, 256, (7, 5, 4), dtype=np.uint8)
    soft[..., 3] = np.clip(soft[..., 3], 128, 254)  # every pixel on the mask, none opaque
    dot = np.zeros((1, 1, 4), np.uint8)
    dot[0, 0] = (10, 200, 30, 255)
    holes = rng.integers(0, 256, (16, 11, 4), dtype=np.uint8)
    holes[::3, ::2, 3] = 0
    legs = np.zeros((4, 7, 4), np.uint8)  # the contact pixel (middle of the lowest row) is off the mask
    legs[..., :3] = 90
    legs[:, 0, 3] = legs[:, 6, 3] = 255
    legs[0, :, 3] = 200
    return [binary, soft, dot, holes, legs]


def _reference(image: np.ndarray, depth: np.ndarray, fg, x: int, y: int) -> dict[str, object]:
    value = object_depth(depth, fg, x, y)
    (fg_sum, fg_sq), (d_sum, d_sq) = image_sums(composite(image, fg, x, y)), image_sums(paste_depth(depth, fg, x, y, value))
    return {"fg_bg_sums": fg_sum, "fg_bg_squares": fg_sq, "depth_sums": d_sum[0], "depth_squares": d_sq[0],
            "object_depth": value, "mask_on": int((paste_mask(image.shape[:2], fg, x, y) > 0).sum())}


@pytest.mark.parametrize("size", [192, 227])
def test_sample_sums_equal_the_composited_samples(size):
    cutouts, _ = procedural_foregrounds(6, seed=2)
    prepared = [prepare_foreground(scale_foreground(c, level), flip=flip)
                for c in cutouts for level in sorted({0, -4, lowest_level(c.shape[1], c.shape[0])}) for flip in (False, True)]
    prepared += [prepare_foreground(c) for c in _synthetic_foregrounds()]
    tables = [foreground_tables(p, size, size) for p in prepared]
    rng = np.random.default_rng(size)
    for index in range(2):
        scene = procedural_background(index, seed=5, size=size)
        # every variant at a random place, then at the four corners of the image
        which = np.concatenate([rng.permutation(len(prepared))] + [np.arange(len(prepared))] * 4)
        w = np.array([prepared[i].width for i in which])
        h = np.array([prepared[i].height for i in which])
        corner = np.repeat(np.arange(5), len(prepared))
        x = np.where(corner == 0, (rng.random(len(which)) * (size - w + 1)).astype(int),
                     np.where(corner % 2 == 1, 0, size - w))
        y = np.where(corner == 0, (rng.random(len(which)) * (size - h + 1)).astype(int),
                     np.where(corner <= 2, 0, size - h))
        got = sample_sums(background_tables(scene.image, scene.depth), sample_layout([tables[i] for i in which]), x, y)
        for j, i in enumerate(which):
            want = _reference(scene.image, scene.depth, prepared[i], int(x[j]), int(y[j]))
            for name, value in want.items():
                assert np.array_equal(getattr(got, name)[j], value), (index, j, name)


def test_sample_sums_on_random_pixels():
    """Random colours and depths: every rule is hit (e.g. a contact pixel off the mask nearer than it)."""
    rng = np.random.default_rng(11)
    size = 192
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    depth = rng.integers(1, 65536, (size, size), dtype=np.uint16)
    prepared = [prepare_foreground(c, flip=flip) for c in _synthetic_foregrounds() for flip in (False, True)]
    tables = [foreground_tables(p, size, size) for p in prepared]
    which = rng.integers(0, len(prepared), 300)
    x = np.array([rng.integers(0, size - prepared[i].width + 1) for i in which])
    y = np.array([rng.integers(0, size - prepared[i].height + 1) for i in which])
    got = sample_sums(background_tables(image, depth), sample_layout([tables[i] for i in which]), x, y)
    for j, i in enumerate(which):
        for name, value in _reference(image, depth, prepared[i], int(x[j]), int(y[j])).items():
            assert np.array_equal(getattr(got, name)[j], value), (j, name)


def test_runs_and_range_minimums():
    mask = np.array([[0, 1, 1, 0, 1], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], bool)
    assert runs(mask).tolist() == [[0, 1, 3], [0, 4, 5], [2, 0, 5]]
    depth = np.random.default_rng(0).integers(0, 65536, (3, 11), dtype=np.uint16)
    table = range_minimums(depth)
    for k in range(table.shape[0]):
        for c in range(depth.shape[1] - (1 << k) + 1):
            assert np.array_equal(table[k, :, c], depth[:, c : c + (1 << k)].min(axis=1)), (k, c)


@pytest.mark.parametrize("placement", ["fixed", "depth-scaled"])
def test_recipe_statistics_equal_the_rebuilt_samples(tmp_path: Path, placement):
    options = tiny_options(tmp_path / "r", placement=placement, limit=48, shard_size=20)
    build_recipes(options, progress=False, log=lambda m: None)
    manifest, store = read_manifest_json(tmp_path / "r"), RecipeStore.open(tmp_path / "r")
    acc = StatsAccumulator()
    for i in range(len(store)):
        sample = store.render(i)
        split = "all"
        for name in ("fg_bg", "mask", "depth", "bg"):
            acc.add_image(split, name, sample[name])
    want = summarise(acc.total())
    for name in ("fg_bg", "mask", "depth", "bg"):
        assert manifest["stats"]["all"][name] == want[name], name

"""Placement: the fixed layout is the plan's, byte for byte; depth-scaled sizes follow the contact depth."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline import placement as pl
from pipeline.compose import ALPHA_MASK_THRESHOLD
from pipeline.errors import DepthmaskError
from pipeline.plan import placements
from pipeline.scenes import FAR_M, foreground_kind, foreground_width_m, nominal_focal_px, render_foreground
from pipeline.scenes.camera import Camera, ground_depth

SIZE = 224


def _ground_depth_map(cam: Camera) -> np.ndarray:
    """uint16 depth of an empty ground plane (sky above the horizon), as the build stores it."""
    rows = np.arange(SIZE, dtype=np.float64)[:, None] * np.ones((1, SIZE))
    z = np.minimum(ground_depth(rows, 0, cam), FAR_M)
    return np.maximum(np.rint(z / FAR_M * 65535), 1).astype(np.uint16)


def _disc(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    inside = ((yy + 0.5 - h / 2) / (h / 2)) ** 2 + ((xx + 0.5 - w / 2) / (w / 2)) ** 2 <= 1
    fg = np.zeros((h, w, 4), np.uint8)
    fg[..., 0], fg[..., 1], fg[..., 2] = 40, 90, 200
    fg[..., 3] = np.where(inside, 255, 0)
    return fg


def test_fixed_is_the_plans_layout():
    key = np.arange(500, dtype=np.int64)
    w, h, top = np.full(500, 120), np.full(500, 50), np.full(500, 100)
    x, y, level = pl.fixed_placements(7, key, w, h, top, SIZE)
    ex, ey = placements(7, key, w, h, top, SIZE)
    assert np.array_equal(x, ex) and np.array_equal(y, ey) and not level.any()


def test_scaled_foreground_sizes_and_mask():
    fg = _disc(60, 150)
    assert pl.scale_foreground(fg, 0) is fg
    for level in range(pl.LEVEL_MIN, pl.LEVEL_MAX + 1):
        out = pl.scale_foreground(fg, level)
        w, h = pl.scaled_size(150, 60, level)
        assert out.shape == (h, w, 4) and out.dtype == np.uint8
        assert (out[..., 3] >= ALPHA_MASK_THRESHOLD).any()
        assert abs(w / 150 - 2 ** (level / pl.LEVELS_PER_OCTAVE)) < 1 / 150 + 1e-9
        assert np.array_equal(out, pl.scale_foreground(fg, level))  # a pure function
    # a one-pixel line scaled far down keeps one pixel of mask
    line = np.zeros((40, 3, 4), np.uint8)
    line[:, 1] = (255, 255, 255, 255)
    assert (pl.scale_foreground(line, pl.LEVEL_MIN)[..., 3] >= ALPHA_MASK_THRESHOLD).sum() >= 1


def test_level_of_rounds_in_log_scale():
    for k in range(pl.LEVEL_MIN, pl.LEVEL_MAX + 1):
        s = pl.level_scale(k)
        assert pl.level_of(np.array([s, s * 1.08, s / 1.08])).tolist() == [k, k, k]
    assert pl.level_of(np.array([2.0]))[0] > pl.LEVEL_MAX
    assert pl.level_of(np.array([0.01]))[0] < pl.LEVEL_MIN


def _depth_scaled(n: int, width_px: int = 150, height_px: int = 60, width_m: float = 4.5, seed: int = 5,
                  first: int = 0):
    cam = Camera(height_m=1.6, pitch_deg=-6.0, yaw_deg=0.0, hfov_deg=67.5, size=SIZE)
    depth = _ground_depth_map(cam)
    top = int(np.floor(cam.size / 2 + cam.focal_px * np.tan(np.radians(cam.pitch_deg)))) + 4
    key = np.arange(first, first + n, dtype=np.int64)
    scale = pl.DepthScale(np.array([width_m]), FAR_M / 65535, cam.focal_px)
    zeros = np.zeros(n, np.int64)
    x, y, level = pl.depth_scaled_placements(seed, key, zeros, np.full(n, width_px), np.full(n, height_px), zeros,
                                             [depth], np.full(n, top), SIZE, scale)
    return x, y, level, depth, cam, scale


def test_depth_scaled_size_follows_the_contact_depth():
    n = 400
    x, y, level, depth, cam, scale = _depth_scaled(n)
    w, h = pl.scaled_size(150, 60, 0)
    widths = np.array([pl.scaled_size(150, 60, int(k))[0] for k in level])
    heights = np.array([pl.scaled_size(150, 60, int(k))[1] for k in level])
    assert (x >= 0).all() and (x + widths <= SIZE).all() and (y >= 0).all() and (y + heights <= SIZE).all()
    assert level.min() >= pl.LEVEL_MIN and level.max() <= pl.LEVEL_MAX and len(set(level.tolist())) >= 5
    bottom = y + heights - 1
    z = depth[bottom, x + widths // 2].astype(np.float64) * scale.metres_per_unit
    ideal = pl.level_of(pl.ideal_scale(4.5, 150, z, cam.focal_px))
    on_ladder = (ideal >= pl.LEVEL_MIN) & (ideal <= pl.LEVEL_MAX)
    assert on_ladder.mean() > 0.9  # rejection finds a contact point whose scale is on the ladder
    assert np.array_equal(level[on_ladder], ideal[on_ladder])  # the pixel size is W * f / z, quantised
    # nearer (lower in the image) means larger
    assert np.corrcoef(bottom, level)[0, 1] > 0.9


def test_depth_scaled_is_a_pure_function_of_the_index():
    x, y, level, *_ = _depth_scaled(300)
    x2, y2, level2, *_ = _depth_scaled(100, first=150)
    assert np.array_equal(x[150:250], x2) and np.array_equal(y[150:250], y2) and np.array_equal(level[150:250], level2)
    other = _depth_scaled(300, seed=6)
    assert not np.array_equal(x, other[0])


def test_depth_scaled_stands_on_open_ground():
    """A wall across the lower half is nearer than the ground of its rows: contacts avoid it."""
    cam = Camera(height_m=1.6, pitch_deg=-6.0, yaw_deg=0.0, hfov_deg=67.5, size=SIZE)
    depth = _ground_depth_map(cam)
    depth[:, :112] = 1500  # a wall 1.4 m away over the left half (nearer than any ground)
    n = 300
    scale = pl.DepthScale(np.array([1.75]), FAR_M / 65535, cam.focal_px)
    key, zeros = np.arange(n, dtype=np.int64), np.zeros(n, np.int64)
    x, y, level = pl.depth_scaled_placements(1, key, zeros, np.full(n, 100), np.full(n, 60), zeros, [depth],
                                             np.full(n, 100), SIZE, scale)
    widths = np.array([pl.scaled_size(100, 60, int(k))[0] for k in level])
    centre = x + widths // 2
    assert (centre >= 112).mean() > 0.95


def test_procedural_foregrounds_have_a_real_width():
    for i in range(30):
        kind = foreground_kind(i, seed=0)
        assert foreground_width_m(i, seed=0) > 0
        assert render_foreground(i, seed=0).shape[1] > 0 and isinstance(kind, str)
    assert 140 < nominal_focal_px(224) < 195


def test_validate_placement():
    pl.validate_placement("fixed", procedural_backgrounds=False, procedural_foregrounds=False, per_sample_depth=True)
    pl.validate_placement("depth-scaled", procedural_backgrounds=True, procedural_foregrounds=True,
                          per_sample_depth=False)
    with pytest.raises(DepthmaskError, match="--placement"):
        pl.validate_placement("depth", procedural_backgrounds=True, procedural_foregrounds=True, per_sample_depth=False)
    with pytest.raises(DepthmaskError, match="embedded scenes"):
        pl.validate_placement("depth-scaled", procedural_backgrounds=True, procedural_foregrounds=False,
                              per_sample_depth=False)


# -- in the build ---------------------------------------------------------------------------------


def test_depth_scaled_build_is_deterministic_and_records_its_levels(tmp_path):
    from conftest import build_tiny, read_manifest_json, shard_hashes
    from pipeline import DatasetReader
    from pipeline.report import verify_dataset
    from pipeline.scenes import render_foregrounds

    one = build_tiny(tmp_path / "one", placement="depth-scaled")
    two = build_tiny(tmp_path / "two", placement="depth-scaled", workers=2)
    m1, m2 = read_manifest_json(one), read_manifest_json(two)
    assert shard_hashes(m1) == shard_hashes(m2)  # whatever the number of workers
    assert m1["build"]["content"]["placement"] == "depth-scaled"
    assert verify_dataset(one, workers=1).ok
    reader = DatasetReader(one)
    scaled = pl.ScaledForegrounds(render_foregrounds(m1["plan"]["foregrounds"], seed=m1["build"]["seed"]))
    levels = set()
    for i in range(0, len(reader), 5):
        record, sample = reader.record(i), reader.decode(i)
        level = record["scale_level"]
        levels.add(level)
        prepared = scaled.get(record["fg"], level, record["flip"])  # what a re-compositing reader pastes
        assert int((sample["mask"] > 0).sum()) == int(prepared.mask.sum())
        assert (sample["mask"][record["y"]:record["y"] + prepared.height, record["x"]:record["x"] + prepared.width]
                > 0).sum() == prepared.mask.sum()
    assert len(levels) >= 2 and max(levels) <= pl.LEVEL_MAX


def test_fixed_keeps_format_version_1s_content_and_records(tmp_path):
    from conftest import build_tiny, read_manifest_json, tiny_options
    from pipeline import DatasetReader

    root = build_tiny(tmp_path / "fixed", placement="fixed", limit=16)
    assert "placement" not in read_manifest_json(root)["build"]["content"]
    assert "scale_level" not in DatasetReader(root).record(3)
    assert tiny_options(tmp_path / "x").resolved_placement == pl.DEFAULT_PROCEDURAL_PLACEMENT


def test_folder_builds_are_fixed_and_refuse_depth_scaled(tmp_path):
    from conftest import tiny_options
    from pipeline.assets import UserInputs
    from pipeline.options import validate_options

    inputs = UserInputs(fg_dir=tmp_path)
    assert tiny_options(tmp_path / "f", inputs=inputs).resolved_placement == "fixed"
    with pytest.raises(DepthmaskError, match="--placement depth-scaled"):
        validate_options(tiny_options(tmp_path / "f", inputs=inputs, placement="depth-scaled"))

"""The procedural scene kit: exact depth, determinism, and the properties the dataset builder needs."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from pipeline.scenes import (
    FAR_M,
    GENERATOR_VERSION,
    Background,
    build_scene,
    ground_depth,
    horizon_row,
    ray_through,
    render_background,
    render_backgrounds,
    render_foreground,
    render_foregrounds,
)
from pipeline.scenes import foreground_kind, foreground_width_m
from pipeline.scenes.foregrounds import CAR_WIDTH_M, KINDS, MAX_SIDE

SEED = 3
N_BG = 24
N_FG = 104


@pytest.fixture(scope="module")
def backgrounds() -> list[Background]:
    return render_backgrounds(N_BG, seed=SEED)


@pytest.fixture(scope="module")
def foregrounds() -> list[np.ndarray]:
    return render_foregrounds(N_FG, seed=SEED)


# -- an independent, scalar reference ray caster ----------------------------------------------


def reference_hit(scene, row: int, col: int):
    """(z-depth, what) of the nearest surface through pixel (row, col), by plain scalar maths."""
    cam = scene.camera
    # an independent construction of the unit viewing ray from the camera angles
    p, y = math.radians(cam.pitch_deg), math.radians(cam.yaw_deg)
    fwd = np.array([math.sin(y) * math.cos(p), math.sin(p), math.cos(y) * math.cos(p)])
    right = np.array([math.cos(y), 0.0, -math.sin(y)])
    up = np.cross(fwd, right)
    f = cam.size / 2 / math.tan(math.radians(cam.hfov_deg) / 2)
    d = f * fwd + (col + 0.5 - cam.size / 2) * right - (row + 0.5 - cam.size / 2) * up
    d /= np.linalg.norm(d)
    o = np.array([cam.x_m, cam.height_m, cam.z_m])
    best, what = math.inf, "sky"
    if d[1] < 0:
        best, what = -o[1] / d[1], "ground"
    for k, b in enumerate(scene.boxes):
        t0, t1 = -math.inf, math.inf
        for i in range(3):
            if abs(d[i]) < 1e-15:
                if not b.lo[i] <= o[i] <= b.hi[i]:
                    t0, t1 = math.inf, -math.inf
                continue
            a, c = (b.lo[i] - o[i]) / d[i], (b.hi[i] - o[i]) / d[i]
            t0, t1 = max(t0, min(a, c)), min(t1, max(a, c))
        if 0 < t0 <= t1 and t0 < best:
            best, what = t0, k
    if what == "sky":
        return FAR_M, what
    z = best * float(d @ fwd)  # distance along the ray -> distance along the optical axis
    return min(z, FAR_M), what


# -- backgrounds ------------------------------------------------------------------------------


def test_background_shapes_and_types(backgrounds):
    assert len(backgrounds) == N_BG
    for b in backgrounds:
        assert b.image.shape == (224, 224, 3) and b.image.dtype == np.uint8 and b.image.flags.c_contiguous
        assert b.depth_m.shape == (224, 224) and b.depth_m.dtype == np.float32
        assert isinstance(b.horizon_row, int)
        assert b.image.std() > 10, "a scene, not a flat colour"
    small = render_background(0, seed=SEED, size=96)
    assert small.image.shape == (96, 96, 3) and small.depth_m.shape == (96, 96)
    assert isinstance(GENERATOR_VERSION, str)


def test_backgrounds_are_deterministic_and_independent_of_count(backgrounds):
    a, b = render_background(5, seed=SEED), render_background(5, seed=SEED)
    assert a.image.tobytes() == b.image.tobytes() and a.depth_m.tobytes() == b.depth_m.tobytes()
    assert a.image.tobytes() == backgrounds[5].image.tobytes()
    assert a.depth_m.tobytes() == backgrounds[5].depth_m.tobytes()
    assert a.horizon_row == backgrounds[5].horizon_row
    assert render_backgrounds(8, seed=SEED)[5].image.tobytes() == a.image.tobytes()
    other = render_background(5, seed=SEED + 1)
    assert other.image.tobytes() != a.image.tobytes()
    assert other.depth_m.tobytes() != a.depth_m.tobytes()
    # the same scene rendered at another size has the same geometry
    assert build_scene(5, seed=SEED, size=96).boxes == build_scene(5, seed=SEED).boxes


def test_depth_range_and_sky(backgrounds):
    for b in backgrounds:
        d = b.depth_m
        assert np.isfinite(d).all()
        assert d.min() > 0.5, "camera is >= 1.2 m up and looks at most ~50 degrees down"
        assert d.max() <= FAR_M
    depth = np.stack([b.depth_m for b in backgrounds])
    far = (depth == np.float32(FAR_M)).mean()
    assert 0.03 < far < 0.45, far
    near = (depth < 8).mean()
    mid = ((depth >= 8) & (depth < FAR_M)).mean()
    assert near > 0.2 and mid > 0.15, (near, mid)


def test_depth_is_exact_against_a_reference_ray_caster(backgrounds):
    rng = np.random.default_rng(0)
    kinds = {"sky": 0, "ground": 0, "box": 0}
    for index in range(6):
        scene = build_scene(index, seed=SEED)
        depth = backgrounds[index].depth_m
        for row, col in rng.integers(0, 224, size=(120, 2)):
            expect, what = reference_hit(scene, int(row), int(col))
            kinds["box" if isinstance(what, int) else what] += 1
            assert depth[row, col] == pytest.approx(expect, rel=2e-5, abs=1e-5), (index, row, col, what)
    assert min(kinds.values()) > 10, kinds


def test_ground_depth_is_analytic(backgrounds):
    scene = build_scene(1, seed=SEED)
    cam = scene.camera
    bg = backgrounds[1]
    rows, cols = np.mgrid[0:224, 0:224]
    g = ground_depth(rows, cols, cam)
    # where nothing stands on the ground, the rendered depth is the ground plane's (clipped to FAR_M)
    on_ground = [(r, c) for r, c in zip(rows.ravel()[::97], cols.ravel()[::97])
                 if reference_hit(scene, r, c)[1] == "ground"]
    assert len(on_ground) > 50
    for r, c in on_ground:
        assert bg.depth_m[r, c] == pytest.approx(min(g[r, c], FAR_M), rel=1e-6)
        # the hit point is on y = 0 and its distance along the optical axis is the depth
        ray = ray_through(cam, r, c)
        point = cam.origin + g[r, c] * ray
        assert abs(point[1]) < 1e-9
        assert float((point - cam.origin) @ cam.forward) == pytest.approx(g[r, c], rel=1e-12)
    # textbook form: distance along the ray h / sin(angle below the horizon), times cos(angle off axis)
    r = 200
    below = math.atan((r + 0.5 - 112) / cam.focal_px) - math.radians(cam.pitch_deg)
    off_axis = math.atan((r + 0.5 - 112) / cam.focal_px)
    z = cam.height_m / math.sin(below) * math.cos(off_axis)
    assert ground_depth(r, 111, cam) == pytest.approx(z, rel=1e-9)
    assert ground_depth(r, 0, cam) == ground_depth(r, 223, cam), "z-depth of the ground depends on the row only"


def test_horizon_row_separates_sky_from_ground():
    for index in range(8):
        cam = build_scene(index, seed=SEED).camera
        h = horizon_row(cam)
        if index < 2:
            assert render_background(index, seed=SEED, size=64).horizon_row == horizon_row(
                build_scene(index, seed=SEED, size=64).camera)
        assert 0 < h < 223, "pitch -2..-10 degrees keeps the horizon in the upper half"
        assert h < 112
        assert math.isinf(ground_depth(h - 1, 0, cam))
        assert math.isfinite(ground_depth(h + 1, 0, cam))


def test_box_faces_match_geometry(backgrounds):
    """A pixel on a box face: the 3D point at the rendered depth lies on that face's plane."""
    checked = 0
    for index in range(8):
        scene = build_scene(index, seed=SEED)
        cam = scene.camera
        depth = backgrounds[index].depth_m
        for r in range(4, 224, 11):
            for c in range(4, 224, 11):
                _, what = reference_hit(scene, r, c)
                if not isinstance(what, int) or depth[r, c] >= FAR_M:
                    continue
                box = scene.boxes[what]
                p = cam.origin + float(depth[r, c]) * ray_through(cam, r, c)
                lo, hi = np.array(box.lo), np.array(box.hi)
                assert ((p > lo - 1e-3) & (p < hi + 1e-3)).all()
                assert np.minimum(np.abs(p - lo), np.abs(p - hi)).min() < 1e-3  # on the surface
                checked += 1
    assert checked > 100


def test_jpeg_budget(backgrounds):
    sizes = [len(cv2.imencode(".jpg", b.image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1]) for b in backgrounds]
    assert np.mean(sizes) < 9.5 * 1024, np.mean(sizes)


# -- foregrounds ------------------------------------------------------------------------------


def test_foreground_shapes_and_crop(foregrounds):
    assert len(foregrounds) == N_FG
    widths = []
    for fg in foregrounds:
        assert fg.ndim == 3 and fg.shape[2] == 4 and fg.dtype == np.uint8 and fg.flags.c_contiguous
        h, w = fg.shape[:2]
        assert 16 <= w <= MAX_SIDE and 16 <= h <= MAX_SIDE
        a = fg[..., 3]
        # tightly cropped to the alpha > 0 box; the object touches the ground near the bottom row (a
        # contact shadow, alpha < 128, may reach a few rows lower)
        assert a[0].any() and a[-1].any() and a[:, 0].any() and a[:, -1].any()
        assert (a[-8:] >= 128).any(), "an opaque contact within the last rows"
        assert (a >= 128).mean() > 0.12
        assert (fg[..., :3][a == 0] == 0).all()
        widths.append(w)
    assert min(widths) < 40 and max(widths) > 140
    kinds = {foreground_kind(i, seed=SEED) for i in range(N_FG)}
    assert len(kinds) >= 12 and {"person", "animal", "pole_sign", "box"} <= kinds
    cars = [i for i in range(N_FG) if foreground_kind(i, seed=SEED) in CAR_WIDTH_M]
    assert 0.3 * N_FG < len(cars) < 0.6 * N_FG


def test_contact_shadows_are_never_object(foregrounds):
    """A shadow darkens the ground under the object with alpha below the mask threshold: the mask
    (alpha >= 128) is the object's, pixel for pixel."""
    from pipeline.scenes import effects

    for i in range(12):
        fg = render_foregrounds(1, seed=SEED + i)[0]
        shadowed = effects.contact_shadow(np.random.default_rng(i), fg)
        before, after = fg[..., 3] >= 128, shadowed[..., 3] >= 128

        def box(m):
            rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
            return m[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]

        assert np.array_equal(box(before), box(after))
        assert shadowed.shape[0] >= fg.shape[0]
        assert int(shadowed[..., 3][~after].sum()) > int(fg[..., 3][~before].sum())  # more shadow, not object


def test_foreground_real_widths_are_the_first_draws():
    for i in range(N_FG):
        kind, width_m = foreground_kind(i, seed=SEED), foreground_width_m(i, seed=SEED)
        assert kind in CAR_WIDTH_M or kind in {k.name for k in KINDS}
        assert 0.2 <= width_m <= 6.0
        assert width_m == CAR_WIDTH_M.get(kind, width_m)


def test_foreground_alpha_is_antialiased(foregrounds):
    for fg in foregrounds:
        a = fg[..., 3]
        edge = ((a > 0) & (a < 255)).sum()
        assert edge > fg.shape[1], "soft edges all around the silhouette"
        # interior pixels (away from the outline and any defocus) are fully opaque
        padded = np.pad((a >= 128).astype(np.uint8), 6)
        inner = (cv2.erode(padded, np.ones((11, 11), np.uint8)) > 0)[6:-6, 6:-6]
        if inner.sum() > 50:
            assert (a[inner] >= 128).mean() > 0.99 and (a[inner] == 255).mean() > 0.8


def test_dark_opaque_pixels_exist(foregrounds):
    def dark(fg):
        return ((fg[..., 3] == 255) & (fg[..., :3].max(axis=2) <= 12)).sum()

    counts = [dark(fg) for fg in foregrounds]
    assert sum(c > 20 for c in counts) > N_FG // 4, "tyres at least, in the vehicles"
    assert max(counts) > 500, "some black car bodies"


def test_foregrounds_are_deterministic(foregrounds):
    a = render_foreground(7, seed=SEED)
    assert a.tobytes() == render_foreground(7, seed=SEED).tobytes() == foregrounds[7].tobytes()
    assert render_foregrounds(9, seed=SEED)[7].tobytes() == a.tobytes()
    assert render_foreground(7, seed=SEED + 1).tobytes() != a.tobytes()


def test_preview_tool_writes_a_contact_sheet(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "preview_scenes.py"
    spec = importlib.util.spec_from_file_location("preview_scenes", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "sheet.png"
    assert tool.main([str(out), "--backgrounds", "2", "--foregrounds", "3", "--size", "64"]) == 0
    sheet = cv2.imread(str(out))
    assert sheet is not None and sheet.shape[0] > 64 and sheet.shape[1] >= 4 * 64

"""Stage 2 of a procedural background: ray casting, giving each pixel's nearest surface and its
exact z-depth (rays have unit forward component, so a hit's ray parameter is its z-depth).

Works on any object with the scene's `camera` and `boxes` (pipeline.scenes.layout.Scene).
"""
from __future__ import annotations

import math

import numpy as np

from .camera import NEAR_M, Camera, pixel_rays, project_camera, project_polygon, rays_at, to_camera

FAR_M = 60.0
SKY, GROUND = -2, -1  # hit ids below 0; boxes are 0..K-1

def _faces(box):
    c = corners(box)
    idx = [(0, 1, 3, 2), (4, 5, 7, 6), (0, 1, 5, 4), (2, 3, 7, 6), (0, 2, 6, 4), (1, 3, 7, 5)]
    return [c[list(f)] for f in idx]


def corners(box) -> np.ndarray:
    """The 8 corners (8, 3) of an axis-aligned box, x-major."""
    lo, hi = box.lo, box.hi
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])


def _screen_rect(cam: Camera, box, scale: int):
    """Conservative pixel rectangle (r0, r1, c0, c1) covered by the box at this scale, or None."""
    c = to_camera(cam, corners(box))
    if (c[:, 2] > NEAR_M).all():
        p = project_camera(cam, c, scale)
    else:  # partly behind the camera: clip each face against the near plane
        pts = [project_polygon(cam, f, scale) for f in _faces(box)]
        pts = [q for q in pts if len(q)]
        if not pts:
            return None
        p = np.concatenate(pts)
    n = cam.size * scale
    c0 = int(np.clip(math.floor(p[:, 0].min()) - 1, 0, n))
    c1 = int(np.clip(math.ceil(p[:, 0].max()) + 1, 0, n))
    r0 = int(np.clip(math.floor(p[:, 1].min()) - 1, 0, n))
    r1 = int(np.clip(math.ceil(p[:, 1].max()) + 1, 0, n))
    if c0 >= c1 or r0 >= r1:
        return None
    return r0, r1, c0, c1


def _slab(box, o: np.ndarray, inv: list[np.ndarray], dtype):
    """Ray/box slab test. Returns (tnear, tfar, entry axis) per ray; a hit needs 0 < tnear <= tfar."""
    tmin, tmax = [], []
    for i in range(3):
        a = dtype(box.lo[i] - o[i]) * inv[i]
        b = dtype(box.hi[i] - o[i]) * inv[i]
        tmin.append(np.minimum(a, b))
        tmax.append(np.maximum(a, b))
    tnear = np.maximum(np.maximum(tmin[0], tmin[1]), tmin[2])
    tfar = np.minimum(np.minimum(tmax[0], tmax[1]), tmax[2])
    # the entry face lies on the axis whose slab is entered last
    axis = np.where(tmin[0] == tnear, 0, np.where(tmin[1] == tnear, 1, 2)).astype(np.int8)
    return tnear, tfar, axis


def _ground_hits(cam: Camera, dy: np.ndarray, dtype):
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(dy < 0, dtype(cam.height_m) / np.where(dy < 0, -dy, 1), np.inf).astype(dtype)
    return t, np.where(np.isfinite(t), GROUND, SKY).astype(np.int32)


def _inverse(rays: np.ndarray, dtype) -> list[np.ndarray]:
    safe = np.where(rays == 0, dtype(1e-30), rays)
    return [np.ascontiguousarray(1.0 / safe[..., i]).astype(dtype) for i in range(3)]


def screen_rects(scene, scale: int = 1) -> list:
    """Per box, the pixel rectangle it may cover (None when out of view): culls ray/box tests."""
    return [_screen_rect(scene.camera, b, scale) for b in scene.boxes]


def cast(scene, scale: int = 1, dtype=np.float64, rects=None):
    """Nearest hits of all pixel-centre rays at ``scale``.

    Returns rays (S, S, 3) with unit forward component, t (S, S) = z-depth of the hit (inf for sky),
    hit (S, S) int32 (SKY, GROUND or box index) and axis (S, S) int8 (face normal axis of box hits).
    """
    cam = scene.camera
    rays = pixel_rays(cam, scale, dtype)
    o = cam.origin.astype(dtype)
    t, hit = _ground_hits(cam, rays[..., 1], dtype)
    axis = np.full(t.shape, 1, dtype=np.int8)
    inv = _inverse(rays, dtype)
    rects = screen_rects(scene, scale) if rects is None else rects
    for k, (box, rect) in enumerate(zip(scene.boxes, rects)):
        if rect is None:
            continue
        r0, r1, c0, c1 = rect
        tnear, tfar, ax = _slab(box, o, [v[r0:r1, c0:c1] for v in inv], dtype)
        tb = t[r0:r1, c0:c1]
        m = (tnear <= tfar) & (tnear > 0) & (tnear < tb)
        if m.any():
            tb[m] = tnear[m]
            hit[r0:r1, c0:c1][m] = k
            axis[r0:r1, c0:c1][m] = ax[m]
    return rays, t, hit, axis


def cast_points(scene, x: np.ndarray, y: np.ndarray, dtype=np.float64, rects=None):
    """Like cast, for rays through arbitrary continuous image points (x, y) (flat arrays)."""
    cam = scene.camera
    rays = rays_at(cam, x, y, dtype)
    o = cam.origin.astype(dtype)
    t, hit = _ground_hits(cam, rays[:, 1], dtype)
    axis = np.full(t.shape, 1, dtype=np.int8)
    inv = _inverse(rays, dtype)
    rects = screen_rects(scene, 1) if rects is None else rects
    for k, (box, rect) in enumerate(zip(scene.boxes, rects)):
        if rect is None:
            continue
        r0, r1, c0, c1 = rect
        idx = np.flatnonzero((x >= c0) & (x <= c1) & (y >= r0) & (y <= r1))
        if not len(idx):
            continue
        tnear, tfar, ax = _slab(box, o, [v[idx] for v in inv], dtype)
        m = (tnear <= tfar) & (tnear > 0) & (tnear < t[idx])
        if m.any():
            j = idx[m]
            t[j] = tnear[m]
            hit[j] = k
            axis[j] = ax[m]
    return rays, t, hit, axis


def depth_map(scene) -> np.ndarray:
    """Exact z-depth at output resolution (pixel-centre rays), clipped to FAR_M; sky = FAR_M."""
    _, t, _, _ = cast(scene, 1, np.float64)
    return np.ascontiguousarray(np.minimum(t, FAR_M).astype(np.float32))


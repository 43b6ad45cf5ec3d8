"""Pinhole camera of the procedural scenes: rays, projection and the analytic ground depth.

World frame: x right, y up (ground is y = 0), z along the street. Image rows grow downwards and
pixel (row, col) has its centre at continuous image coordinates (col + 0.5, row + 0.5).

Every ray is scaled so that its component along the optical axis is exactly 1: the ray parameter
t of a hit is then the hit's z-depth (distance along the optical axis), with no extra projection.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NEAR_M = 0.05  # near plane used when clipping polygons for projection
HFOV_RANGE_DEG = (60.0, 75.0)  # the procedural cameras' horizontal field of view, drawn uniformly


@dataclass(frozen=True)
class Camera:
    """A roll-free pinhole camera with a square image of ``size`` pixels."""

    height_m: float  # camera centre above the ground plane
    pitch_deg: float  # negative looks down
    yaw_deg: float  # rotation about +y; 0 looks along +z, positive turns towards +x
    hfov_deg: float  # horizontal (= vertical, square image) field of view
    size: int
    x_m: float = 0.0
    z_m: float = 0.0

    @property
    def origin(self) -> np.ndarray:
        return np.array([self.x_m, self.height_m, self.z_m], dtype=np.float64)

    @property
    def forward(self) -> np.ndarray:
        p, y = math.radians(self.pitch_deg), math.radians(self.yaw_deg)
        return np.array([math.sin(y) * math.cos(p), math.sin(p), math.cos(y) * math.cos(p)])

    @property
    def right(self) -> np.ndarray:
        y = math.radians(self.yaw_deg)
        return np.array([math.cos(y), 0.0, -math.sin(y)])

    @property
    def up(self) -> np.ndarray:
        p, y = math.radians(self.pitch_deg), math.radians(self.yaw_deg)
        return np.array([-math.sin(p) * math.sin(y), math.cos(p), -math.sin(p) * math.cos(y)])

    @property
    def focal_px(self) -> float:
        return (self.size / 2.0) / math.tan(math.radians(self.hfov_deg) / 2.0)


def nominal_focal_px(size: int) -> float:
    """Focal length in pixels of a camera in the middle of the kit's field-of-view range: what depth-scaled
    placement assumes when only a background's depth is known (the true one is within ~12 %)."""
    return (size / 2.0) / math.tan(math.radians(sum(HFOV_RANGE_DEG) / 2) / 2.0)


def pixel_rays(cam: Camera, scale: int = 1, dtype=np.float64) -> np.ndarray:
    """(S, S, 3) ray directions (S = size * scale) through the centres of the (sub)pixels.

    Rays are NOT unit length: dot(ray, forward) == 1, so a hit at origin + t * ray has z-depth t.
    """
    n = cam.size * scale
    centres = (np.arange(n, dtype=np.float64) + 0.5) / scale - cam.size / 2.0
    a = (centres / cam.focal_px).astype(dtype)  # per column: offset along right
    b = (centres / cam.focal_px).astype(dtype)  # per row: offset along -up
    f, r, u = cam.forward.astype(dtype), cam.right.astype(dtype), cam.up.astype(dtype)
    rays = np.empty((n, n, 3), dtype=dtype)
    for i in range(3):  # component-wise: same arithmetic as ray_through, f + a * r - b * u
        rays[:, :, i] = (f[i] + a[None, :] * r[i]) - b[:, None] * u[i]
    return rays


def rays_at(cam: Camera, x: np.ndarray, y: np.ndarray, dtype=np.float64) -> np.ndarray:
    """(N, 3) z-normalised rays through continuous image points (x = col + 0.5 at pixel centres)."""
    a = ((np.asarray(x, np.float64) - cam.size / 2.0) / cam.focal_px).astype(dtype)
    b = ((np.asarray(y, np.float64) - cam.size / 2.0) / cam.focal_px).astype(dtype)
    f, r, u = cam.forward.astype(dtype), cam.right.astype(dtype), cam.up.astype(dtype)
    rays = np.empty((len(a), 3), dtype=dtype)
    for i in range(3):
        rays[:, i] = (f[i] + a * r[i]) - b * u[i]
    return rays


def ray_through(cam: Camera, row: float, col: float) -> np.ndarray:
    """The (z-normalised) ray through the centre of pixel (row, col)."""
    a = (col + 0.5 - cam.size / 2.0) / cam.focal_px
    b = (row + 0.5 - cam.size / 2.0) / cam.focal_px
    return (cam.forward + a * cam.right) - b * cam.up


def ground_depth(row, col, cam: Camera):
    """Analytic z-depth of the ground plane y = 0 at pixel centre (row, col); inf above the horizon.

    With the ray scaled to unit forward component, origin + t * ray reaches y = 0 at
    t = height / (-ray_y), and t is the z-depth. Accepts scalars or broadcastable arrays.
    """
    row = np.asarray(row, dtype=np.float64)
    b = (row + 0.5 - cam.size / 2.0) / cam.focal_px
    dy = (cam.forward[1] + 0.0) - b * cam.up[1]  # right has no y component: col does not matter
    dy = np.broadcast_to(dy, np.broadcast(row, np.asarray(col)).shape)
    with np.errstate(divide="ignore"):
        t = np.where(dy < 0, cam.height_m / np.where(dy < 0, -dy, 1.0), np.inf)
    return t if t.ndim else float(t)


def horizon_y(cam: Camera) -> float:
    """Continuous image y (rows, downwards) of the horizon line: rays there are horizontal."""
    return cam.size / 2.0 + cam.focal_px * math.tan(math.radians(cam.pitch_deg))


def horizon_row(cam: Camera) -> int:
    """The image row containing the horizon line (may lie outside [0, size) for steep pitches)."""
    return int(math.floor(horizon_y(cam)))


def to_camera(cam: Camera, points: np.ndarray) -> np.ndarray:
    """World points (..., 3) to camera coordinates (x right, y up, z forward)."""
    d = np.asarray(points, dtype=np.float64) - cam.origin
    return np.stack([d @ cam.right, d @ cam.up, d @ cam.forward], axis=-1)


def clip_near(poly_cam: np.ndarray, near: float = NEAR_M) -> np.ndarray:
    """Sutherland-Hodgman clip of a camera-space polygon (n, 3) to z >= near."""
    out = []
    n = len(poly_cam)
    for i in range(n):
        p, q = poly_cam[i], poly_cam[(i + 1) % n]
        pin, qin = p[2] >= near, q[2] >= near
        if pin:
            out.append(p)
        if pin != qin:
            s = (near - p[2]) / (q[2] - p[2])
            out.append(p + s * (q - p))
    return np.array(out, dtype=np.float64).reshape(-1, 3)


def project_camera(cam: Camera, pts_cam: np.ndarray, scale: int = 1) -> np.ndarray:
    """Camera-space points (n, 3) with z > 0 to continuous image coordinates (n, 2) as (x, y)."""
    f = cam.focal_px
    x = cam.size / 2.0 + f * pts_cam[:, 0] / pts_cam[:, 2]
    y = cam.size / 2.0 - f * pts_cam[:, 1] / pts_cam[:, 2]
    return np.stack([x, y], axis=1) * scale


def project_polygon(cam: Camera, poly_world: np.ndarray, scale: int = 1) -> np.ndarray:
    """World polygon (n, 3) clipped to the near plane and projected: (m, 2) image (x, y), maybe empty."""
    clipped = clip_near(to_camera(cam, poly_world))
    if len(clipped) < 3:
        return np.zeros((0, 2))
    return project_camera(cam, clipped, scale)

"""Procedural street / yard / lot backgrounds with exact per-pixel z-depth.

A scene is a ground plane (y = 0) plus a handful of axis-aligned boxes (buildings, walls, fences,
hedges, containers, crates) seen by a pinhole camera. Depth is ray cast at the output resolution
through pixel centres, so it is the exact z-depth of the nearest surface (clipped to FAR_M, sky
at FAR_M). Colour is 2x2 supersampled where the visible surface changes (object outlines, the
horizon) and averaged, exactly what a 2x render + INTER_AREA gives there; inside a surface one
pixel-centre sample suffices because every texture is box-filtered analytically over the pixel
(see textures.py). That is ~3x cheaper than shading every pixel 4 times, with the same result.

Layout: x right, y up, z along the street (streets run along +z). Boxes never contain the camera.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from . import textures as tx
from .camera import (NEAR_M, Camera, horizon_row, pixel_rays, project_camera, project_polygon, rays_at,
                     to_camera)

FAR_M = 60.0
KIND_BG = 0x6267  # rng stream tag of backgrounds ('bg')
SUPERSAMPLE = 2
_LAYOUT_TRIES = 12  # layouts drawn per background until one passes _layout_ok

SKY, GROUND = -2, -1  # hit ids below 0; boxes are 0..K-1

# material codes of box faces
BRICK, PLASTER, CONCRETE, GLASS, WOOD_V, WOOD_H, METAL, HEDGE = range(8)


@dataclass(frozen=True)
class Background:
    image: np.ndarray  # (H, W, 3) uint8 BGR
    depth_m: np.ndarray  # (H, W) float32 z-depth in metres, <= FAR_M; sky == FAR_M
    horizon_row: int  # image row of the horizon line (may be outside the image)


@dataclass(frozen=True)
class Box:
    """An axis-aligned box volume and how its faces look. Colours are BGR floats in [0, 1]."""

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    material: int
    colour: tuple[float, float, float]
    roof: tuple[float, float, float] | None = None  # top-face colour of buildings (None: material)
    windows: tuple[float, float, float, float, float] | None = None  # floor_h, bay, win_w, win_h, sill
    trim: tuple[float, float, float] = (0.85, 0.85, 0.85)  # window frames / mullions
    glass: tuple[float, float, float] = (0.30, 0.24, 0.20)
    panel: tuple[float, float] = (3.0, 1.5)  # concrete panel joints (w, h); plank width for wood


@dataclass(frozen=True)
class Ground:
    kind: str  # "street", "yard" or "lot"
    base: tuple[float, float, float]  # yard/lot ground or the verge beyond the sidewalk
    base_material: str  # "grass", "gravel", "asphalt", "tiles"
    road_half: float = 0.0  # street: road |x| < road_half
    sidewalk: float = 0.0
    asphalt: tuple[float, float, float] = (0.30, 0.30, 0.31)
    paving: tuple[float, float, float] = (0.62, 0.64, 0.66)
    line: tuple[float, float, float] = (0.88, 0.90, 0.90)
    centre_line: bool = True
    crosswalk_z: float | None = None
    path: tuple[float, float] | None = None  # yard: paved path x range
    parking_z: float | None = None  # lot: row of parking bays starting at this z


@dataclass(frozen=True)
class Sky:
    zenith: tuple[float, float, float]
    horizon: tuple[float, float, float]
    sun_dir: tuple[float, float, float]  # unit vector towards the sun
    sun: tuple[float, float, float]  # direct light colour (weak when overcast)
    ambient: tuple[float, float, float]
    cloud: float  # 0 = clear, ~1 = mostly cloudy
    fog_m: float  # haze distance scale


@dataclass(frozen=True)
class Scene:
    camera: Camera
    boxes: tuple[Box, ...]
    ground: Ground
    sky: Sky
    noise_seed: int


# --------------------------------------------------------------------------------------------
# palettes (RGB, converted to BGR floats)


def _bgr(rgb, rng=None, jitter=0.0):
    c = np.array(rgb[::-1], dtype=np.float64) / 255.0
    if rng is not None and jitter:
        c = c * rng.uniform(1.0 - jitter, 1.0 + jitter) * rng.uniform(1 - jitter / 2, 1 + jitter / 2, 3)
    return tuple(float(v) for v in np.clip(c, 0.0, 1.0))


BRICKS = [(150, 72, 52), (168, 92, 64), (122, 62, 46), (178, 122, 92), (188, 158, 112), (140, 84, 70)]
PLASTERS = [(226, 216, 196), (236, 234, 226), (204, 184, 152), (192, 200, 208), (230, 202, 172),
            (176, 192, 162), (212, 174, 152), (222, 210, 150)]
CONCRETES = [(160, 160, 154), (142, 142, 140), (186, 180, 170), (120, 122, 126)]
GLASSES = [(48, 66, 84), (60, 82, 92), (40, 54, 70), (70, 84, 96)]
METALS = [(150, 44, 34), (34, 72, 130), (42, 102, 64), (204, 122, 44), (124, 124, 124), (90, 60, 40)]
WAREHOUSES = [(170, 172, 170), (150, 156, 160), (196, 188, 170), (120, 140, 150), (176, 160, 130)]
WOODS = [(142, 102, 62), (112, 82, 52), (162, 132, 92), (132, 126, 116), (96, 66, 44)]
HEDGES = [(52, 92, 42), (62, 104, 52), (44, 78, 40), (74, 100, 48)]
ROOFS = [(72, 72, 74), (92, 82, 76), (112, 62, 52), (60, 64, 70)]
WINDOW_GLASS = [(52, 62, 76), (40, 50, 62), (72, 86, 102), (34, 40, 46)]
FRAMES = [(226, 226, 220), (64, 64, 62), (120, 84, 56), (200, 200, 196)]


def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


# --------------------------------------------------------------------------------------------
# scene layout


def _building(rng, lo, hi):
    kind = rng.random()
    floor_h = float(rng.uniform(2.9, 3.6))
    windows = (floor_h, float(rng.uniform(2.4, 4.0)), 0.0, 0.0, float(rng.uniform(0.8, 1.0)))
    ww = float(rng.uniform(0.9, min(1.8, windows[1] - 0.6)))
    wh = float(rng.uniform(1.2, min(1.9, floor_h - windows[4] - 0.4)))
    windows = (floor_h, windows[1], ww, wh, windows[4])
    common = dict(roof=_bgr(_pick(rng, ROOFS), rng, 0.1), trim=_bgr(_pick(rng, FRAMES), rng, 0.05),
                  glass=_bgr(_pick(rng, WINDOW_GLASS), rng, 0.1))
    if kind < 0.33:
        return Box(lo, hi, BRICK, _bgr(_pick(rng, BRICKS), rng, 0.12), windows=windows, **common)
    if kind < 0.70:
        return Box(lo, hi, PLASTER, _bgr(_pick(rng, PLASTERS), rng, 0.06), windows=windows, **common)
    if kind < 0.88 or hi[1] < 9:
        return Box(lo, hi, CONCRETE, _bgr(_pick(rng, CONCRETES), rng, 0.08), windows=windows,
                   panel=(float(rng.uniform(2.5, 4.5)), floor_h), **common)
    common["trim"] = _bgr(_pick(rng, [(180, 184, 188), (70, 72, 76)]), rng, 0.05)
    return Box(lo, hi, GLASS, _bgr(_pick(rng, GLASSES), rng, 0.1), panel=(1.5, floor_h), **common)


def _wall(rng, lo, hi):
    m = rng.random()
    if m < 0.35:
        return Box(lo, hi, BRICK, _bgr(_pick(rng, BRICKS), rng, 0.12))
    if m < 0.7:
        return Box(lo, hi, CONCRETE, _bgr(_pick(rng, CONCRETES), rng, 0.08),
                   panel=(float(rng.uniform(1.8, 3.5)), 10.0))
    return Box(lo, hi, PLASTER, _bgr(_pick(rng, PLASTERS), rng, 0.06))


def _fence(rng, lo, hi):
    return Box(lo, hi, WOOD_V, _bgr(_pick(rng, WOODS), rng, 0.1), panel=(float(rng.uniform(0.12, 0.2)), 0.0))


def _crate(rng, lo, hi):
    return Box(lo, hi, WOOD_H, _bgr(_pick(rng, WOODS), rng, 0.1), panel=(float(rng.uniform(0.12, 0.2)), 0.0))


def _container(rng, lo, hi, palette=None):
    return Box(lo, hi, METAL, _bgr(_pick(rng, palette or METALS), rng, 0.1))


def _hedge(rng, lo, hi):
    return Box(lo, hi, HEDGE, _bgr(_pick(rng, HEDGES), rng, 0.1))


def _box_at(cx, cz, sx, sz, h, y0=0.0):
    return (cx - sx / 2, y0, cz - sz / 2), (cx + sx / 2, y0 + h, cz + sz / 2)


def _polar(rng, cam_xz, yaw_deg, half_spread_deg, r0, r1):
    a = math.radians(yaw_deg + rng.uniform(-half_spread_deg, half_spread_deg))
    r = rng.uniform(r0, r1)
    return cam_xz[0] + r * math.sin(a), cam_xz[1] + r * math.cos(a)


def _sky(rng) -> Sky:
    k = rng.random()
    az = rng.uniform(0, 2 * math.pi)
    if k < 0.5:  # clear
        el = rng.uniform(25, 65)
        zen, hor = (rng.uniform(60, 95), rng.uniform(115, 145), rng.uniform(195, 225)), (190, 212, 234)
        sun, amb, cloud, fog = (1.0, 0.97, 0.9), (0.42, 0.45, 0.5), rng.uniform(0.0, 0.45), rng.uniform(160, 400)
        sun_s = rng.uniform(0.6, 0.75)
    elif k < 0.7:  # hazy / pale
        el = rng.uniform(20, 60)
        zen, hor = (rng.uniform(115, 140), rng.uniform(155, 175), rng.uniform(200, 220)), (214, 220, 226)
        sun, amb, cloud, fog = (1.0, 0.96, 0.9), (0.5, 0.52, 0.55), rng.uniform(0.1, 0.5), rng.uniform(80, 160)
        sun_s = rng.uniform(0.45, 0.6)
    elif k < 0.9:  # overcast
        el = rng.uniform(30, 70)
        g = rng.uniform(140, 175)
        zen, hor = (g, g + 4, g + 10), (min(g + 50, 225),) * 2 + (min(g + 54, 230),)
        sun, amb, cloud, fog = (1.0, 1.0, 1.0), (0.78, 0.79, 0.8), 0.0, rng.uniform(90, 200)
        sun_s = rng.uniform(0.08, 0.16)
    else:  # low sun, warm
        el = rng.uniform(6, 16)
        zen, hor = (rng.uniform(60, 90), rng.uniform(80, 110), rng.uniform(140, 175)), (246, 178, 118)
        sun, amb, cloud, fog = (1.0, 0.72, 0.46), (0.38, 0.36, 0.42), rng.uniform(0.0, 0.5), rng.uniform(120, 260)
        sun_s = rng.uniform(0.7, 0.85)
    e = math.radians(el)
    sun_dir = (math.cos(e) * math.sin(az), math.sin(e), math.cos(e) * math.cos(az))
    return Sky(zenith=_bgr(zen), horizon=_bgr(hor), sun_dir=sun_dir,
               sun=tuple(float(v * sun_s) for v in sun[::-1]), ambient=tuple(float(v) for v in amb[::-1]),
               cloud=float(cloud), fog_m=float(fog))


def _camera(rng, size, yaw, x=0.0, z=0.0) -> Camera:
    return Camera(height_m=float(rng.uniform(1.2, 2.2)), pitch_deg=float(rng.uniform(-10.0, -2.0)),
                  yaw_deg=float(yaw), hfov_deg=float(rng.uniform(60.0, 75.0)), size=size, x_m=float(x), z_m=float(z))


def _street(rng, size):
    rw = rng.uniform(3.2, 7.5)
    sw = rng.uniform(1.8, 4.5)
    cx = rng.uniform(-(rw + sw * 0.6), rw + sw * 0.6)
    yaw = rng.uniform(-28, 28) if rng.random() < 0.65 else rng.choice([-1, 1]) * rng.uniform(28, 65)
    cam = _camera(rng, size, yaw, x=cx)
    boxes = []
    for side in (-1, 1):
        if rng.random() < 0.12:
            continue
        base_front = rw + sw + rng.uniform(0.0, 2.0)
        z = rng.uniform(-25.0, 0.0)
        zmax = rng.uniform(50.0, 95.0)
        n = 0
        while z < zmax and n < 6:
            length = rng.uniform(7.0, 24.0)
            if rng.random() < 0.22:  # gap, maybe closed by a wall or fence along the frontage
                gap = rng.uniform(3.0, 12.0)
                if rng.random() < 0.6:
                    h = rng.uniform(1.0, 2.2)
                    x0 = side * (rw + sw + 0.1)
                    lo, hi = (min(x0, x0 + side * 0.25), 0.0, z), (max(x0, x0 + side * 0.25), h, z + gap)
                    boxes.append(_wall(rng, lo, hi) if rng.random() < 0.6 else _fence(rng, lo, hi))
                z += gap
                continue
            front = base_front + (rng.uniform(0.0, 4.0) if rng.random() < 0.3 else 0.0)
            r = rng.random()
            h = rng.uniform(3.5, 7.0) if r < 0.3 else rng.uniform(7.0, 15.0) if r < 0.8 else rng.uniform(15.0, 28.0)
            depth = rng.uniform(8.0, 18.0)
            x0, x1 = sorted((side * front, side * (front + depth)))
            boxes.append(_building(rng, (x0, 0.0, z), (x1, h, z + length)))
            z += length
            n += 1
    if rng.random() < 0.4:  # a building closing the street
        z0 = rng.uniform(38.0, 56.0)
        w = rw + sw + rng.uniform(6.0, 20.0)
        boxes.append(_building(rng, (-w, 0.0, z0), (w, rng.uniform(6.0, 20.0), z0 + 12.0)))
    for _ in range(int(rng.integers(0, 4))):  # street furniture on the sidewalk
        side = rng.choice([-1, 1])
        cxz = side * (rw + rng.uniform(0.6, max(0.7, sw - 0.6))), rng.uniform(5.0, 35.0)
        r = rng.random()
        if r < 0.45:
            s = rng.uniform(0.5, 1.2)
            boxes.append(_crate(rng, *_box_at(*cxz, s, s * rng.uniform(0.8, 1.3), s * rng.uniform(0.7, 1.1))))
        elif r < 0.75:
            boxes.append(_hedge(rng, *_box_at(*cxz, 0.9, rng.uniform(3.0, 8.0), rng.uniform(0.8, 1.6))))
        else:
            boxes.append(_wall(rng, *_box_at(*cxz, 1.6, rng.uniform(2.0, 3.5), rng.uniform(2.2, 2.8))))
    ground = Ground(
        kind="street",
        base=_bgr(_pick(rng, [(92, 122, 62), (130, 124, 110), (150, 148, 142)]), rng, 0.08),
        base_material=str(rng.choice(["grass", "gravel", "tiles"])),
        road_half=float(rw), sidewalk=float(sw),
        asphalt=_bgr((rng.uniform(60, 95),) * 3, rng, 0.04),
        paving=_bgr(_pick(rng, [(160, 162, 166), (178, 170, 160), (150, 140, 136)]), rng, 0.06),
        line=_bgr((236, 236, 232) if rng.random() < 0.75 else (230, 190, 70)),
        centre_line=bool(rng.random() < 0.8),
        crosswalk_z=float(rng.uniform(8.0, 30.0)) if rng.random() < 0.3 else None,
    )
    return cam, boxes, ground


def _yard(rng, size):
    yaw = rng.uniform(-180.0, 180.0)
    cam = _camera(rng, size, yaw)
    cxz = (0.0, 0.0)
    boxes = []
    for _ in range(int(rng.integers(1, 3))):  # houses
        x, z = _polar(rng, cxz, yaw, 28, 12.0, 38.0)
        boxes.append(_building(rng, *_box_at(x, z, rng.uniform(8, 16), rng.uniform(7, 12), rng.uniform(3.5, 8.5))))
    for _ in range(int(rng.integers(1, 4))):  # far buildings
        x, z = _polar(rng, cxz, yaw, 40, 40.0, 56.0)
        boxes.append(_building(rng, *_box_at(x, z, rng.uniform(10, 25), rng.uniform(10, 25), rng.uniform(6, 22))))
    for _ in range(int(rng.integers(1, 4))):  # fences, walls and hedges
        x, z = _polar(rng, cxz, yaw, 35, 6.0, 28.0)
        length, thick, h = rng.uniform(6.0, 25.0), rng.uniform(0.08, 0.3), rng.uniform(1.0, 2.2)
        sx, sz = (length, thick) if rng.random() < 0.5 else (thick, length)
        r = rng.random()
        if r < 0.4:
            boxes.append(_fence(rng, *_box_at(x, z, sx, sz, h)))
        elif r < 0.7:
            boxes.append(_wall(rng, *_box_at(x, z, sx, sz, h)))
        else:
            boxes.append(_hedge(rng, *_box_at(x, z, max(sx, 1.0), max(sz, 1.0), h)))
    for _ in range(int(rng.integers(0, 3))):  # sheds
        x, z = _polar(rng, cxz, yaw, 30, 8.0, 25.0)
        lo, hi = _box_at(x, z, rng.uniform(2.0, 4.0), rng.uniform(2.0, 4.0), rng.uniform(2.1, 2.8))
        boxes.append(_fence(rng, lo, hi) if rng.random() < 0.6 else _container(rng, lo, hi))
    for _ in range(int(rng.integers(0, 4))):  # crates
        x, z = _polar(rng, cxz, yaw, 30, 6.0, 18.0)
        s = rng.uniform(0.5, 1.2)
        boxes.append(_crate(rng, *_box_at(x, z, s, s * rng.uniform(0.8, 1.4), s * rng.uniform(0.7, 1.1))))
    g = rng.random()
    if g < 0.6:
        base, mat = _bgr(_pick(rng, [(88, 124, 58), (104, 132, 66), (76, 110, 52), (118, 128, 70)]), rng, 0.08), "grass"
    else:
        base, mat = _bgr(_pick(rng, [(150, 140, 120), (132, 116, 92), (164, 158, 146)]), rng, 0.08), "gravel"
    path = None
    if rng.random() < 0.5:
        px = rng.uniform(-6.0, 6.0)
        path = (float(px), float(px + rng.uniform(1.2, 3.0)))
    ground = Ground(kind="yard", base=base, base_material=mat, path=path,
                    paving=_bgr(_pick(rng, [(170, 162, 150), (150, 150, 150), (180, 140, 120)]), rng, 0.06))
    return cam, boxes, ground


def _lot(rng, size):
    yaw = rng.uniform(-180.0, 180.0)
    cam = _camera(rng, size, yaw)
    cxz = (0.0, 0.0)
    boxes = []
    for _ in range(int(rng.integers(1, 4))):  # warehouses / blocks
        x, z = _polar(rng, cxz, yaw, 35, 22.0, 52.0)
        lo, hi = _box_at(x, z, rng.uniform(12, 40), rng.uniform(12, 40), rng.uniform(6, 14))
        boxes.append(_building(rng, lo, hi) if rng.random() < 0.5 else _container(rng, lo, hi, WAREHOUSES))
    for _ in range(int(rng.integers(1, 5))):  # shipping containers, sometimes stacked
        x, z = _polar(rng, cxz, yaw, 35, 8.0, 35.0)
        length = 6.06 if rng.random() < 0.5 else 12.19
        sx, sz = (length, 2.44) if rng.random() < 0.5 else (2.44, length)
        boxes.append(_container(rng, *_box_at(x, z, sx, sz, 2.59)))
        if rng.random() < 0.35:
            boxes.append(_container(rng, *_box_at(x, z, sx, sz, 2.59, y0=2.59)))
    if rng.random() < 0.7:  # perimeter wall
        x, z = _polar(rng, cxz, yaw, 20, 15.0, 40.0)
        along_x = rng.random() < 0.5
        length = rng.uniform(20.0, 50.0)
        boxes.append(_wall(rng, *_box_at(x, z, length if along_x else 0.3, 0.3 if along_x else length,
                                          rng.uniform(2.0, 3.2))))
    for _ in range(int(rng.integers(0, 3))):
        x, z = _polar(rng, cxz, yaw, 30, 6.0, 16.0)
        s = rng.uniform(0.6, 1.2)
        boxes.append(_crate(rng, *_box_at(x, z, s, s, s * rng.uniform(0.7, 1.0))))
    concrete = rng.random() < 0.35
    ground = Ground(kind="lot", base=_bgr((150, 150, 146) if concrete else (rng.uniform(70, 100),) * 3, rng, 0.05),
                    base_material="tiles" if concrete else "asphalt",
                    line=_bgr((236, 236, 232) if rng.random() < 0.7 else (230, 190, 70)),
                    parking_z=None if concrete else float(rng.uniform(4.0, 14.0)))
    return cam, boxes, ground


def _clear_of_camera(box: Box, cam: Camera, margin: float = 0.6) -> bool:
    o = cam.origin
    return not all(box.lo[i] - margin <= o[i] <= box.hi[i] + margin for i in range(3))


def _layout_ok(scene: Scene) -> bool:
    """A coarse 32x32 cast: enough buildings/objects in view, some sky, not a wall right in the face."""
    probe = replace(scene, camera=replace(scene.camera, size=32))
    _, t, hit, _ = cast(probe, 1, np.float32, rects=[(0, 32, 0, 32)] * len(scene.boxes))  # no culling
    boxes = hit >= 0
    sky = (hit == SKY).mean()
    close_wall = (boxes & (t < 5.0)).mean()
    return 0.12 <= boxes.mean() <= 0.7 and sky >= 0.04 and close_wall < 0.3


def build_scene(index: int, *, seed: int, size: int = 224) -> Scene:
    """The 3D description of background ``index``: a pure function of (index, seed); size only sets pixels.

    Layouts are drawn until a coarse probe finds them well composed (a few tries at most); the rng
    stream continues across tries, so the result is still a pure function of (index, seed).
    """
    rng = np.random.default_rng([seed, KIND_BG, index])
    for _ in range(_LAYOUT_TRIES):
        r = rng.random()
        cam, boxes, ground = (_street if r < 0.5 else _yard if r < 0.8 else _lot)(rng, size)
        boxes = tuple(b for b in boxes if _clear_of_camera(b, cam))
        scene = Scene(camera=cam, boxes=boxes, ground=ground, sky=_sky(rng), noise_seed=int(rng.integers(2**31)))
        if _layout_ok(scene):
            break
    return scene


# --------------------------------------------------------------------------------------------
# ray casting


def _faces(box: Box):
    c = _corners(box)
    idx = [(0, 1, 3, 2), (4, 5, 7, 6), (0, 1, 5, 4), (2, 3, 7, 6), (0, 2, 6, 4), (1, 3, 7, 5)]
    return [c[list(f)] for f in idx]


def _corners(box: Box) -> np.ndarray:
    lo, hi = box.lo, box.hi
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])


def _screen_rect(cam: Camera, box: Box, scale: int):
    """Conservative pixel rectangle (r0, r1, c0, c1) covered by the box at this scale, or None."""
    c = to_camera(cam, _corners(box))
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


def _slab(box: Box, o: np.ndarray, inv: list[np.ndarray], dtype):
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


def screen_rects(scene: Scene, scale: int = 1) -> list:
    """Per box, the pixel rectangle it may cover (None when out of view): culls ray/box tests."""
    return [_screen_rect(scene.camera, b, scale) for b in scene.boxes]


def cast(scene: Scene, scale: int = 1, dtype=np.float64, rects=None):
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


def cast_points(scene: Scene, x: np.ndarray, y: np.ndarray, dtype=np.float64, rects=None):
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


def depth_map(scene: Scene) -> np.ndarray:
    """Exact z-depth at output resolution (pixel-centre rays), clipped to FAR_M; sky = FAR_M."""
    _, t, _, _ = cast(scene, 1, np.float64)
    return np.ascontiguousarray(np.minimum(t, FAR_M).astype(np.float32))


# --------------------------------------------------------------------------------------------
# shading


def _shadow_mask(scene: Scene, scale: int) -> np.ndarray:
    """Where box shadows fall on the ground, as float32 in [0, 1] (softened at the edges)."""
    cam, L = scene.camera, np.asarray(scene.sky.sun_dir)
    n = cam.size * scale
    mask = np.zeros((n, n), np.uint8)
    shift = 4
    for box in scene.boxes:
        c = _corners(box)
        g = c - (c[:, 1:2] / L[1]) * L[None, :]  # along the sun direction down to y = 0
        hull = cv2.convexHull(g[:, [0, 2]].astype(np.float32)).reshape(-1, 2).astype(np.float64)
        poly = np.stack([hull[:, 0], np.zeros(len(hull)), hull[:, 1]], axis=1)
        img = project_polygon(cam, poly, scale)
        if len(img) < 3:
            continue
        pts = np.clip(np.round(img * (1 << shift)), -(2**26), 2**26).astype(np.int32)
        cv2.fillPoly(mask, [pts], 255, cv2.LINE_8, shift)
    mask = cv2.GaussianBlur(mask, (5, 5), 0)
    return mask.astype(np.float32) / 255.0


def _rows(a: np.ndarray, m: np.ndarray) -> np.ndarray:
    """a[m] for a C-contiguous (N, 3) float32 array and a boolean mask m (N,).

    Done through a 12-byte void view: numpy's boolean indexing of 2-D arrays is ~20x slower.
    """
    return a.view(np.dtype((np.void, 12))).reshape(-1)[m].view(np.float32).reshape(-1, 3)


def _set_rows(a: np.ndarray, m: np.ndarray, values: np.ndarray) -> None:
    """a[m] = values for (N, 3) float32 arrays (see _rows)."""
    v = np.ascontiguousarray(values, dtype=np.float32)
    a.view(np.dtype((np.void, 12))).reshape(-1)[m] = v.view(np.dtype((np.void, 12))).reshape(-1)


def _const(colour, n: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(colour, np.float32), (n, 3))


def _ground_albedo(scene: Scene, x, z, fp, table):
    g = scene.ground
    N = len(x)
    out = np.empty((N, 3), np.float32)

    def base_tex(sel):
        xs, zs, f = x[sel], z[sel], fp[sel]
        b = _const(g.base, len(xs))
        if g.base_material == "grass":
            return tx.grass(xs, zs, f, b, table)
        if g.base_material == "gravel":
            return tx.gravel(xs, zs, f, b, table)
        if g.base_material == "tiles":
            return tx.tiles(xs, zs, f, b, table, 1.0)
        return tx.asphalt(xs, zs, f, b, table)

    everything = np.ones(N, bool)
    if g.kind == "street":
        ax = np.abs(x)
        road = ax < g.road_half
        walk = (~road) & (ax < g.road_half + g.sidewalk)
        verge = ~(road | walk)
        if road.any():
            xs, zs, f = x[road], z[road], fp[road]
            a = tx.asphalt(xs, zs, f, _const(g.asphalt, len(xs)), table)
            edge = g.road_half - 0.35
            line = tx.interval_cov(np.abs(xs), edge - 0.08, edge + 0.08, f)
            if g.centre_line:
                dash = tx.interval_cov(np.mod(zs, 9.0), 0.0, 4.5, f) if g.road_half < 5.5 else 1.0
                line = np.maximum(line, tx.interval_cov(xs, -0.08, 0.08, f) * dash)
            if g.crosswalk_z is not None:
                stripes = 1.0 - tx.periodic_lines(xs, 1.0, 0.25, f)
                band = tx.interval_cov(zs, g.crosswalk_z, g.crosswalk_z + 3.0, f)
                line = np.maximum(line, stripes * band * (np.abs(xs) < edge - 0.3))
            wear = np.clip(0.85 + 0.25 * tx.fbm(table, xs + 5.0, zs, 1.5, f), 0.0, 1.0)
            _set_rows(out, road, tx.mix(a, g.line, line * wear))
        if walk.any():
            xs, zs, f = x[walk], z[walk], fp[walk]
            p = tx.tiles(xs, zs, f, _const(g.paving, len(xs)), table, 1.2)
            kerb = tx.interval_cov(np.abs(xs), g.road_half, g.road_half + 0.18, f)
            _set_rows(out, walk, tx.mix(p, np.float32(0.78), kerb))
        if verge.any():
            _set_rows(out, verge, base_tex(verge))
    elif g.kind == "yard":
        out[:] = base_tex(everything)
        if g.path is not None:
            cov = tx.interval_cov(x, g.path[0], g.path[1], fp)
            sel = cov > 0
            if sel.any():
                p = tx.tiles(x[sel], z[sel], fp[sel], _const(g.paving, int(sel.sum())), table, 0.6)
                _set_rows(out, sel, tx.mix(_rows(out, sel), p, cov[sel]))
    else:  # lot
        out[:] = base_tex(everything)
        if g.parking_z is not None:
            lines = tx.periodic_lines(x, 2.6, 0.06, fp) * tx.interval_cov(z, g.parking_z, g.parking_z + 5.0, fp)
            lines = np.maximum(lines, tx.interval_cov(z, g.parking_z - 0.06, g.parking_z + 0.06, fp))
            out[:] = tx.mix(out, g.line, lines * 0.85)
    return out


def _box_albedo(scene: Scene, P, n_axis, bid, fp, table, sky_h, sky_z):
    """Albedo of box hits: material texture, window grids on facades, roofs on building tops."""
    boxes = scene.boxes

    def per_box(values, dtype=np.float32, idx=bid):
        return np.asarray(values, dtype).take(idx, axis=0)

    lo = per_box([b.lo for b in boxes])
    hi = per_box([b.hi for b in boxes])
    mat = per_box([b.material for b in boxes], np.int8)
    colour = per_box([b.colour for b in boxes])
    panel = per_box([b.panel for b in boxes])
    top = n_axis == 1
    along_z = n_axis == 0
    # face coordinates: s along the face, y up it (tops use world x, z)
    s = np.where(top, P[:, 0], np.where(along_z, P[:, 2] - lo[:, 2], P[:, 0] - lo[:, 0]))
    y = np.where(top, P[:, 2], P[:, 1] - lo[:, 1])
    out = colour.copy()
    for m in np.unique(mat):
        sel = mat == m
        a = (s[sel], y[sel], fp[sel], _rows(colour, sel), table)
        if m == BRICK:
            res = tx.brick(*a)
        elif m == PLASTER:
            res = tx.plaster(*a)
        elif m == CONCRETE:
            res = tx.concrete(*a, panel[sel, 0], panel[sel, 1])
        elif m == GLASS:
            trim = per_box([b.trim for b in boxes], idx=bid[sel])
            res = tx.glass_facade(*a, trim, sky_h, sky_z, panel[sel, 1])
        elif m in (WOOD_V, WOOD_H):
            res = tx.wood(*a, panel[sel, 0], (m == WOOD_V) & ~top[sel])
        elif m == METAL:
            res = tx.metal(*a)
        else:  # HEDGE
            res = tx.shade(tx.hedge(*a), np.where(top[sel], 1.12, 1.0))
        _set_rows(out, sel, res)
    w = per_box([b.windows is not None and b.material != GLASS for b in boxes], bool) & ~top
    if w.any():
        bw = bid[w]
        win = per_box([b.windows if b.windows is not None else (3, 3, 1, 1, 1) for b in boxes], idx=bw)
        face_len = np.where(along_z, hi[:, 2] - lo[:, 2], hi[:, 0] - lo[:, 0])[w]
        trim = per_box([b.trim for b in boxes], idx=bw)
        glass = per_box([b.glass for b in boxes], idx=bw)
        face_h = (hi[:, 1] - lo[:, 1])[w]
        _set_rows(out, w, tx.windows(s[w], y[w], fp[w], _rows(out, w), face_len, face_h, win, table, trim, glass))
    r = per_box([b.roof is not None for b in boxes], bool) & top
    if r.any():
        roof = per_box([b.roof if b.roof is not None else (0, 0, 0) for b in boxes], idx=bid[r])
        _set_rows(out, r, tx.gravel(s[r], y[r], fp[r], roof, table))
    return out, lo


def shade(scene: Scene, rays, t, hit, axis, fp_px, shadow) -> np.ndarray:
    """Colours (N, 3) float32 BGR in [0, 1] of N samples (flat arrays from cast / cast_points).

    fp_px: the pixel footprint, in output pixels, that textures are box-filtered over.
    shadow: (N,) ground shadow coverage in [0, 1].
    """
    cam, sky = scene.camera, scene.sky
    rays = np.ascontiguousarray(rays, dtype=np.float32)
    t = t.astype(np.float32)
    table = tx.noise_table(np.random.default_rng([scene.noise_seed, 1]))
    norm = np.sqrt(rays[:, 0] ** 2 + rays[:, 1] ** 2 + rays[:, 2] ** 2)
    img = np.empty((len(t), 3), np.float32)
    sky_h, sky_z = np.asarray(sky.horizon, np.float32), np.asarray(sky.zenith, np.float32)
    L = np.asarray(sky.sun_dir, np.float32)
    sun, amb = np.asarray(sky.sun, np.float32), np.asarray(sky.ambient, np.float32)
    o = cam.origin.astype(np.float32)
    pix = (np.asarray(fp_px, np.float32) / np.float32(cam.focal_px)) * np.ones(len(t), np.float32)

    s_sel = hit == SKY
    if s_sel.any():
        unit = _rows(rays, s_sel) / norm[s_sel, None]
        _set_rows(img, s_sel, tx.sky(unit, sky_z, sky_h, L, sun * 0.8, sky.cloud, table))

    g_sel = hit == GROUND
    if g_sel.any():
        tg, ng = t[g_sel], norm[g_sel]
        r = _rows(rays, g_sel)
        P = o + tg[:, None] * r
        cosi = np.maximum(-r[:, 1] / ng, 0.03)
        fp = tg * ng * pix[g_sel] / np.sqrt(cosi)
        alb = _ground_albedo(scene, P[:, 0], P[:, 2], fp, table)
        light = amb + sun * (max(float(L[1]), 0.0) * (1.0 - shadow[g_sel]))[:, None]
        _set_rows(img, g_sel, alb * light)

    b_sel = hit >= 0
    if b_sel.any():
        tb, nb, ab = t[b_sel], norm[b_sel], axis[b_sel]
        r = _rows(rays, b_sel)
        P = o + tb[:, None] * r
        # outward face normal: opposite to the ray along the entry axis
        comp = np.where(ab == 0, r[:, 0], np.where(ab == 1, r[:, 1], r[:, 2]))
        sgn = -np.sign(comp)
        nrm = np.zeros_like(r)
        for i in range(3):
            nrm[:, i] = np.where(ab == i, sgn, 0.0)
        fp = tb * nb * pix[b_sel] / np.sqrt(np.maximum(np.abs(comp) / nb, 0.05))
        alb, lo = _box_albedo(scene, P, ab, hit[b_sel], fp, table, sky_h, sky_z)
        lam = np.maximum(nrm @ L, 0.0)
        vertical = ab != 1
        ao = np.where(vertical & (lo[:, 1] == 0), 1.0 - 0.28 * np.exp(-P[:, 1] / 0.6), 1.0).astype(np.float32)
        fill = np.where(vertical, 0.86 + 0.08 * nrm[:, 0] - 0.04 * nrm[:, 2], 1.0).astype(np.float32)
        light = amb * (fill * ao)[:, None] + sun * (lam * ao)[:, None]
        _set_rows(img, b_sel, alb * light)

    # distance haze towards the horizon sky colour
    h_sel = ~s_sel
    if h_sel.any():
        dist = t[h_sel] * norm[h_sel]
        f = (1.0 - np.exp(-dist / np.float32(sky.fog_m))).astype(np.float32)
        _set_rows(img, h_sel, tx.mix(_rows(img, h_sel), sky_h * 0.97, f))
    return img


def _edge_pixels(key: np.ndarray) -> np.ndarray:
    """Pixels whose surface (hit id, face axis) differs from any of their 8 neighbours."""
    e = np.zeros(key.shape, bool)
    for a, b in (((slice(None), slice(1, None)), (slice(None), slice(None, -1))),
                 ((slice(1, None), slice(None)), (slice(None, -1), slice(None))),
                 ((slice(1, None), slice(1, None)), (slice(None, -1), slice(None, -1))),
                 ((slice(1, None), slice(None, -1)), (slice(None, -1), slice(1, None)))):
        d = key[a] != key[b]
        e[a] |= d
        e[b] |= d
    return e


# sub-pixel offsets of the 2x2 supersamples: the centres of a 2x render's pixels
_SUB = np.array([(0.25, 0.25), (0.25, 0.75), (0.75, 0.25), (0.75, 0.75)])


def render_scene(scene: Scene) -> Background:
    """Colour and exact depth of a scene.

    Colour is 2x2 supersampled (the area average of a 2x render, as INTER_AREA would give) on pixels
    where the visible surface changes; elsewhere one pixel-centre sample with textures box-filtered
    over the pixel gives the same result at a quarter of the cost.
    """
    cam = scene.camera
    n = cam.size
    rects = screen_rects(scene, 1)
    rays, t, hit, axis = cast(scene, 1, np.float64, rects)
    depth = np.ascontiguousarray(np.minimum(t, FAR_M).astype(np.float32))

    edge = _edge_pixels(hit * 4 + axis).reshape(-1)
    inner = ~edge
    er, ec = np.divmod(np.flatnonzero(edge), n)
    sy = (er[:, None] + _SUB[None, :, 0]).reshape(-1)
    sx = (ec[:, None] + _SUB[None, :, 1]).reshape(-1)
    srays, st, shit, saxis = cast_points(scene, sx, sy, np.float64, rects)

    shadow2 = _shadow_mask(scene, SUPERSAMPLE)
    shadow1 = cv2.resize(shadow2, (n, n), interpolation=cv2.INTER_AREA).reshape(-1)
    s_shadow = shadow2[(sy * SUPERSAMPLE).astype(np.int64), (sx * SUPERSAMPLE).astype(np.int64)]

    n_in = int(inner.sum())
    colours = shade(
        scene,
        np.concatenate([_rows(rays.reshape(-1, 3).astype(np.float32), inner), srays.astype(np.float32)]),
        np.concatenate([t.reshape(-1)[inner], st]),
        np.concatenate([hit.reshape(-1)[inner], shit]),
        np.concatenate([axis.reshape(-1)[inner], saxis]),
        np.concatenate([np.full(n_in, 1.0, np.float32), np.full(len(st), 1.0 / SUPERSAMPLE, np.float32)]),
        np.concatenate([shadow1[inner], s_shadow]),
    )
    img = np.empty((n * n, 3), np.float32)
    _set_rows(img, inner, colours[:n_in])
    _set_rows(img, edge, colours[n_in:].reshape(-1, 4, 3).mean(axis=1))
    image = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8).reshape(n, n, 3)
    return Background(image=np.ascontiguousarray(image), depth_m=depth, horizon_row=horizon_row(cam))


def render_background(index: int, *, seed: int, size: int = 224) -> Background:
    """Background ``index`` of the set drawn from ``seed``; independent of how many are rendered."""
    return render_scene(build_scene(index, seed=seed, size=size))


def render_backgrounds(count: int, *, seed: int, size: int = 224) -> list[Background]:
    return [render_background(i, seed=seed, size=size) for i in range(count)]

"""Stage 1 of a procedural background: the random 3D layout of a street, yard or lot scene.

A scene is a ground plane (y = 0) plus a handful of axis-aligned boxes (buildings, walls, fences,
hedges, containers, crates), a sky (sun, ambient light, haze) and a pinhole camera. Everything is
drawn from an rng seeded with (seed, KIND_BG, index), so a scene is a pure function of (index, seed).

Layout: x right, y up, z along the street (streets run along +z). Boxes never contain the camera.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .camera import HFOV_RANGE_DEG, Camera
from .raycast import SKY, cast

KIND_BG = 0x6267  # rng stream tag of backgrounds ('bg')
_LAYOUT_TRIES = 12  # layouts drawn per background until one passes _layout_ok

# material codes of box faces
BRICK, PLASTER, CONCRETE, GLASS, WOOD_V, WOOD_H, METAL, HEDGE = range(8)

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
                  yaw_deg=float(yaw), hfov_deg=float(rng.uniform(*HFOV_RANGE_DEG)), size=size, x_m=float(x), z_m=float(z))


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


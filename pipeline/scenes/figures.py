"""Object kinds beyond the vehicles: people, poles with signs, animals, boxes, furniture, traffic cones,
bushes and free-form blobs. Side or front views in canvas units (x in [0, 1] spans the drawn width,
y up from the ground), each a function (rng, width_px) -> BGRA, the height in units following from
the kind's real proportions.
"""
from __future__ import annotations

import math

import numpy as np

from . import textures as tx
from .canvas import Canvas, bgr, rounded_polygon

CLOTHES = [(30, 34, 44), (200, 40, 40), (40, 70, 140), (230, 230, 226), (90, 90, 96), (40, 110, 60),
           (220, 180, 60), (120, 70, 40), (20, 20, 22), (160, 120, 170), (240, 130, 40), (70, 130, 180)]
SKIN = [(241, 194, 160), (224, 172, 130), (198, 134, 96), (141, 85, 54), (94, 60, 40), (255, 219, 186)]
HAIR = [(20, 16, 14), (70, 44, 26), (150, 110, 60), (200, 180, 130), (120, 120, 120), (40, 28, 20)]
FURS = [(120, 80, 40), (30, 26, 24), (200, 180, 150), (160, 110, 60), (90, 90, 90), (230, 226, 220)]
WOODS = [(142, 102, 62), (112, 82, 52), (162, 132, 92), (96, 66, 44), (180, 150, 110)]
CARDBOARD = [(190, 150, 100), (170, 130, 84), (210, 180, 130)]
PLASTICS = [(200, 40, 30), (30, 90, 170), (40, 140, 70), (230, 200, 40), (230, 230, 230), (40, 40, 44),
            (240, 120, 30), (140, 60, 140)]
SIGN_COLOURS = [((200, 30, 30), (250, 250, 250)), ((30, 80, 170), (250, 250, 250)),
                ((250, 200, 30), (20, 20, 20)), ((40, 130, 70), (250, 250, 250)), ((250, 250, 250), (200, 30, 30))]
METAL_GREY = (150, 152, 156)


def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


def _jitter(rng, rgb, amount: float = 0.1) -> np.ndarray:
    return np.clip(bgr(rgb) * np.float32(rng.uniform(1 - amount, 1 + amount)), 0, 255)


def _textured(cv: Canvas, rng, colour: np.ndarray, scale: float, strength: float) -> np.ndarray:
    """A full-canvas (h, w, 3) colour with value-noise texture (fabric, fur, wood grain, dirt)."""
    table = tx.noise_table(np.random.default_rng(int(rng.integers(2**31))))
    h, w = cv.h, cv.w
    u = (np.arange(w, dtype=np.float32) / cv.unit)[None, :] * np.ones((h, 1), np.float32)
    v = cv.rows.astype(np.float32)[:, None] * np.ones((1, w), np.float32)
    stretch = rng.uniform(0.3, 3.0)  # grain along one axis
    n = tx.value_noise(table, u / scale * stretch, v / scale / stretch)
    n = n + 0.5 * tx.value_noise(table, u / scale * 2.3 + 17.0, v / scale * 2.3)
    return np.clip(colour[None, None, :] * (1.0 + strength * n[:, :, None]), 0, 255).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# people


def person(rng, width: int) -> np.ndarray:
    """A standing or walking person seen from the front or side: ~0.5 m wide, 1.5-1.95 m tall."""
    height = rng.uniform(3.0, 3.6)  # in units of the width
    cv = Canvas(width, height)
    skin, hair = bgr(_pick(rng, SKIN)), bgr(_pick(rng, HAIR))
    top, bottom = _jitter(rng, _pick(rng, CLOTHES)), _jitter(rng, _pick(rng, CLOTHES))
    shoes = bgr(_pick(rng, [(20, 20, 20), (240, 240, 240), (90, 60, 40), (60, 60, 70)]))
    head_r = 0.14 * height / 3.3
    neck = height - 2 * head_r
    hip = height * rng.uniform(0.47, 0.53)
    shoulder = neck - 0.08
    stride = rng.uniform(0.0, 0.22)  # walking: legs apart
    lean = rng.uniform(-0.04, 0.04)
    cx = 0.5 + lean
    # legs (trousers or a skirt), shoes
    for side in (-1, 1):
        foot_x = 0.5 + side * (0.1 + stride)
        cv.paint(cv.line_mask((cx + side * 0.09, hip), (foot_x, 0.07), 0.17), bottom)
        cv.paint(cv.poly_mask(rounded_polygon([(foot_x - 0.1, 0.0), (foot_x + 0.13, 0.0), (foot_x + 0.1, 0.08),
                                               (foot_x - 0.08, 0.08)], 0.03)), shoes)
    if rng.random() < 0.25:  # skirt or long coat
        hem = rng.uniform(hip * 0.35, hip * 0.8)
        cv.paint(cv.poly_mask([(cx - 0.2, hip + 0.1), (cx + 0.2, hip + 0.1), (cx + 0.3, hem), (cx - 0.3, hem)]), bottom)
    # torso
    torso = rounded_polygon([(cx - 0.2, hip - 0.05), (cx + 0.2, hip - 0.05), (cx + 0.25, shoulder),
                             (cx - 0.25, shoulder)], [0.03, 0.03, 0.08, 0.08])
    cv.paint(cv.poly_mask(torso), _textured(cv, rng, top, 0.3, rng.uniform(0.0, 0.25)))
    # arms, hands
    swing = rng.uniform(-0.15, 0.15)
    for side in (-1, 1):
        sh = (cx + side * 0.22, shoulder - 0.04)
        hand = (cx + side * (0.3 + abs(swing) * 0.5), hip - 0.2 + side * swing * 0.3)
        cv.paint(cv.line_mask(sh, hand, 0.11), top * 0.92)
        cv.paint(cv.circle_mask(hand, 0.06), skin)
    if rng.random() < 0.3:  # a bag
        side = rng.choice([-1, 1])
        bx = cx + side * 0.36
        cv.paint(cv.poly_mask(rounded_polygon([(bx - 0.12, hip - 0.35), (bx + 0.12, hip - 0.35),
                                               (bx + 0.12, hip - 0.05), (bx - 0.12, hip - 0.05)], 0.03)),
                 _jitter(rng, _pick(rng, CLOTHES)))
    # neck, head, hair
    cv.paint(cv.line_mask((cx, shoulder - 0.02), (cx, neck + 0.02), 0.1), skin * 0.9)
    cv.paint(cv.circle_mask((cx, neck + head_r), head_r), skin)
    hair_mask = cv.circle_mask((cx, neck + head_r * 1.15), head_r * 1.02) & ~cv.poly_mask(
        [(cx - head_r, neck), (cx + head_r, neck), (cx + head_r, neck + head_r * 1.1), (cx - head_r, neck + head_r * 1.1)])
    cv.paint(hair_mask, hair)
    if rng.random() < 0.15:  # a hat
        cv.paint(cv.poly_mask([(cx - head_r * 1.3, neck + head_r * 1.8), (cx + head_r * 1.3, neck + head_r * 1.8),
                               (cx + head_r * 0.9, neck + head_r * 2.4), (cx - head_r * 0.9, neck + head_r * 2.4)]),
                 _jitter(rng, _pick(rng, CLOTHES)))
    return cv.finish()


# ------------------------------------------------------------------------------------------------
# poles and signs


def pole_sign(rng, width: int) -> np.ndarray:
    """A street sign (round, square, triangular or a rectangle panel) on a pole, ~0.6 m wide, 2.3-3 m tall."""
    height = rng.uniform(3.6, 4.8)
    cv = Canvas(width, height)
    pole = bgr(METAL_GREY) * np.float32(rng.uniform(0.6, 1.1))
    cv.paint(cv.line_mask((0.5, 0.0), (0.5, height - 0.5), 0.1),
             cv.gradient(pole, [(0.0, 0.8), (height, 1.05)]))
    face, ink = (bgr(c) for c in _pick(rng, SIGN_COLOURS))
    cy = height - 0.5
    shape = int(rng.integers(4))
    if shape == 0:
        outer, inner = cv.circle_mask((0.5, cy), 0.5), cv.circle_mask((0.5, cy), 0.38)
    elif shape == 1:
        outer = cv.poly_mask(rounded_polygon([(0, cy - 0.5), (1, cy - 0.5), (1, cy + 0.5), (0, cy + 0.5)], 0.06))
        inner = cv.poly_mask([(0.15, cy - 0.35), (0.85, cy - 0.35), (0.85, cy + 0.35), (0.15, cy + 0.35)])
    elif shape == 2:
        outer = cv.poly_mask(rounded_polygon([(0, cy - 0.42), (1, cy - 0.42), (0.5, cy + 0.5)], 0.06))
        inner = cv.poly_mask([(0.2, cy - 0.3), (0.8, cy - 0.3), (0.5, cy + 0.25)])
    else:  # a name plate
        outer = cv.poly_mask(rounded_polygon([(0, cy - 0.22), (1, cy - 0.22), (1, cy + 0.22), (0, cy + 0.22)], 0.04))
        inner = cv.poly_mask([(0.1, cy - 0.06), (0.9, cy - 0.06), (0.9, cy + 0.06), (0.1, cy + 0.06)])
    cv.paint(outer, face)
    cv.paint(inner & outer, ink if shape == 3 else face * 0.97)
    if shape != 3:
        cv.paint(cv.poly_mask([(0.4, cy - 0.15), (0.6, cy - 0.15), (0.6, cy + 0.15), (0.4, cy + 0.15)]) & inner, ink)
    return cv.finish()


def bollard(rng, width: int) -> np.ndarray:
    """A post or bollard (or a lamp post stub), ~0.25 m wide, 0.8-1.3 m tall."""
    height = rng.uniform(3.2, 5.0)
    cv = Canvas(width, height)
    colour = _jitter(rng, _pick(rng, [(60, 62, 66), (200, 200, 196), (200, 160, 30), (30, 60, 40), (150, 40, 30)]))
    cv.paint(cv.poly_mask(rounded_polygon([(0.1, 0.0), (0.9, 0.0), (0.85, height - 0.3), (0.5, height),
                                           (0.15, height - 0.3)], 0.05)),
             cv.gradient(colour, [(0.0, 0.8), (height, 1.1)]))
    for y in (height * 0.7, height * 0.78):
        cv.paint(cv.poly_mask([(0.1, y), (0.9, y), (0.9, y + 0.15), (0.1, y + 0.15)]), bgr((235, 235, 230)))
    return cv.finish()


# ------------------------------------------------------------------------------------------------
# animals


def animal(rng, width: int) -> np.ndarray:
    """A four-legged animal in side view (dog- to goat-like), ~0.7-1.3 m long."""
    leg = rng.uniform(0.22, 0.4)
    body_h = rng.uniform(0.22, 0.32)
    height = leg + body_h + rng.uniform(0.12, 0.22)
    cv = Canvas(width, height + 0.05)
    fur = _textured(cv, rng, _jitter(rng, _pick(rng, FURS)), 0.06, rng.uniform(0.1, 0.35))
    body_top = leg + body_h
    body = rounded_polygon([(0.18, leg - 0.03), (0.78, leg - 0.02), (0.82, body_top - 0.02), (0.2, body_top)],
                           [0.08, 0.08, 0.1, 0.1])
    cv.paint(cv.poly_mask(body), fur)
    for x, k in ((0.22, -1), (0.3, 1), (0.7, -1), (0.77, 1)):  # legs
        foot = x + k * rng.uniform(0.0, 0.06)
        cv.paint(cv.line_mask((x, leg + 0.02), (foot, 0.02), 0.055), fur * (0.85 if k < 0 else 1.0))
    # head and neck (up or down), ears, tail
    hx, hy = rng.uniform(0.86, 0.9), body_top + rng.uniform(-0.05, 0.12)
    cv.paint(cv.line_mask((0.76, body_top - 0.06), (hx, hy), 0.1), fur)
    cv.paint(cv.poly_mask(rounded_polygon([(hx - 0.07, hy - 0.06), (hx + 0.1, hy - 0.05), (hx + 0.11, hy + 0.01),
                                           (hx - 0.04, hy + 0.07)], 0.03)), fur)
    cv.paint(cv.poly_mask([(hx - 0.05, hy + 0.04), (hx - 0.01, hy + 0.05), (hx - 0.04, hy + 0.12)]), fur * 0.8)
    cv.paint(cv.circle_mask((hx + 0.02, hy + 0.02), 0.012), bgr((10, 10, 10)))
    tail_end = (rng.uniform(0.02, 0.1), body_top + rng.uniform(-0.15, 0.1))
    cv.paint(cv.line_mask((0.2, body_top - 0.04), tail_end, 0.035), fur)
    return cv.finish()


# ------------------------------------------------------------------------------------------------
# boxes, furniture, cones, bushes, blobs


def box(rng, width: int) -> np.ndarray:
    """A cardboard box, crate, suitcase or stack of two, seen from the front with its top face."""
    height = rng.uniform(0.5, 1.3)
    cv = Canvas(width, height + 0.12)
    kind = rng.random()
    colour = _jitter(rng, _pick(rng, CARDBOARD if kind < 0.5 else WOODS if kind < 0.8 else PLASTICS))
    front = _textured(cv, rng, colour, 0.08, 0.12 if kind < 0.8 else 0.04)
    depth = rng.uniform(0.06, 0.12)
    cv.paint(cv.poly_mask([(0.0, 0.0), (1.0 - depth, 0.0), (1.0 - depth, height), (0.0, height)]), front)
    cv.paint(cv.poly_mask([(1.0 - depth, 0.0), (1.0, depth), (1.0, height + depth), (1.0 - depth, height)]),
             front * 0.72)
    cv.paint(cv.poly_mask([(0.0, height), (1.0 - depth, height), (1.0, height + depth), (depth, height + depth)]),
             front * 1.15)
    if kind < 0.5:  # tape
        cv.paint(cv.poly_mask([(0.44, 0.0), (0.52, 0.0), (0.52, height), (0.44, height)]), colour * 1.12)
    elif kind < 0.8:  # planks
        for y in np.arange(0.15, height, 0.2):
            cv.paint(cv.line_mask((0.0, y), (1.0 - depth, y), 0.012), colour * 0.6)
    if rng.random() < 0.3:  # a smaller box on top
        s = rng.uniform(0.4, 0.7)
        x0 = rng.uniform(0.0, 1.0 - depth - s)
        y0, y1 = height + depth * 0.5, min(height + depth * 0.5 + s * 0.4, height + 0.12)
        cv.paint(cv.poly_mask([(x0, y0), (x0 + s, y0), (x0 + s, y1), (x0, y1)]), _jitter(rng, _pick(rng, CARDBOARD)))
    return cv.finish()


def furniture(rng, width: int, kind: str) -> np.ndarray:
    """A park bench (~1.6 m wide), a table (~1 m) or a chair (~0.5 m), in front view."""
    colour = _jitter(rng, _pick(rng, WOODS + [(60, 62, 66), (30, 90, 60)]))
    if kind == "bench":
        seat, back = rng.uniform(0.26, 0.3), rng.uniform(0.5, 0.56)
        cv = Canvas(width, back + 0.02)
        wood = _textured(cv, rng, colour, 0.05, 0.2)
        for y in (seat, seat + 0.03):
            cv.paint(cv.poly_mask([(0.0, y), (1.0, y), (1.0, y + 0.022), (0.0, y + 0.022)]), wood)
        for y in (back - 0.1, back - 0.05, back - 0.0):
            cv.paint(cv.poly_mask([(0.04, y - 0.02), (0.96, y - 0.02), (0.96, y), (0.04, y)]), wood)
        frame = bgr((40, 40, 42))
        for x in (0.08, 0.92):
            cv.paint(cv.line_mask((x, 0.0), (x, back), 0.025), frame)
            cv.paint(cv.line_mask((x - 0.03, 0.0), (x + 0.02, seat), 0.02), frame)
    elif kind == "table":
        top = rng.uniform(0.7, 0.78)
        cv = Canvas(width, top + 0.02)
        wood = _textured(cv, rng, colour, 0.05, 0.2)
        cv.paint(cv.poly_mask([(0.0, top - 0.05), (1.0, top - 0.05), (1.0, top), (0.0, top)]), wood)
        for x in (0.06, 0.94):
            cv.paint(cv.line_mask((x, 0.0), (x, top - 0.04), 0.05), wood * 0.8)
    else:  # chair
        seat = rng.uniform(0.85, 0.95)
        cv = Canvas(width, seat * 2.0)
        wood = _textured(cv, rng, colour, 0.05, 0.2)
        cv.paint(cv.poly_mask([(0.0, seat), (1.0, seat), (1.0, seat + 0.08), (0.0, seat + 0.08)]), wood)
        cv.paint(cv.poly_mask(rounded_polygon([(0.1, seat * 1.4), (0.9, seat * 1.4), (0.9, seat * 1.95),
                                               (0.1, seat * 1.95)], 0.05)), wood)
        for x in (0.06, 0.94):
            cv.paint(cv.line_mask((x, 0.0), (x, seat * 1.95), 0.08), wood * 0.8)
    return cv.finish()


def cone(rng, width: int) -> np.ndarray:
    """A traffic cone (~0.35 m wide, 0.5-0.75 m tall), orange with white bands."""
    height = rng.uniform(1.4, 2.1)
    cv = Canvas(width, height)
    orange = _jitter(rng, (240, 100, 20), 0.08)
    cv.paint(cv.poly_mask([(0.0, 0.0), (1.0, 0.0), (1.0, 0.08), (0.0, 0.08)]), orange * 0.7)
    cv.paint(cv.poly_mask(rounded_polygon([(0.1, 0.08), (0.9, 0.08), (0.56, height), (0.44, height)],
                                          [0, 0, 0.03, 0.03])), cv.gradient(orange, [(0, 0.85), (height, 1.1)]))
    for f in (0.4, 0.65):
        y = height * f
        band = cv.poly_mask([(0.0, y), (1.0, y), (1.0, y + height * 0.1), (0.0, y + height * 0.1)])
        body = cv.poly_mask([(0.1, 0.08), (0.9, 0.08), (0.56, height), (0.44, height)])
        cv.paint(band & body, bgr((236, 236, 232)))
    return cv.finish()


def _blob_outline(rng, cx: float, cy: float, rx: float, ry: float, lobes: int, roughness: float) -> np.ndarray:
    a = np.linspace(0, 2 * math.pi, 96, endpoint=False)
    r = np.ones_like(a)
    for k in range(1, lobes + 1):
        r += roughness / k * rng.uniform(-1, 1) * np.cos(k * a + rng.uniform(0, 2 * math.pi))
    r = np.clip(r, 0.35, 1.6)
    return np.stack([cx + rx * r * np.cos(a), cy + ry * r * np.sin(a)], axis=1)


def bush(rng, width: int) -> np.ndarray:
    """A bush or potted plant: a lumpy green crown, sometimes in a pot."""
    height = rng.uniform(0.6, 1.1)
    cv = Canvas(width, height)
    green = _jitter(rng, _pick(rng, [(52, 92, 42), (74, 110, 48), (40, 70, 36), (96, 120, 60), (120, 90, 50)]))
    leaves = _textured(cv, rng, green, 0.03, rng.uniform(0.3, 0.5))
    pot = rng.random() < 0.4
    base = 0.25 if pot else 0.05
    crown = _blob_outline(rng, 0.5, base + (height - base) / 2, 0.48, (height - base) / 2, 7, 0.35)
    crown[:, 1] = np.maximum(crown[:, 1], base - 0.02 if pot else 0.0)
    cv.paint(cv.poly_mask(crown), leaves)
    if pot:
        cv.paint(cv.poly_mask(rounded_polygon([(0.28, 0.0), (0.72, 0.0), (0.78, 0.27), (0.22, 0.27)], 0.02)),
                 _jitter(rng, _pick(rng, [(170, 90, 60), (60, 60, 64), (220, 220, 214)])))
    return cv.finish()


def blob(rng, width: int) -> np.ndarray:
    """A free-form object (rock, sack, sculpture, tarp-covered heap): a random lobed outline resting on
    the ground, with a random texture."""
    height = rng.uniform(0.35, 1.4)
    cv = Canvas(width, height)
    outline = _blob_outline(rng, 0.5, height / 2, 0.48, height / 2, int(rng.integers(2, 8)), rng.uniform(0.1, 0.4))
    outline[:, 1] = np.maximum(outline[:, 1], 0.0)  # flat where it rests on the ground
    colour = _jitter(rng, tuple(int(v) for v in rng.integers(20, 236, 3)), 0.0)
    cv.paint(cv.poly_mask(outline), _textured(cv, rng, colour, rng.uniform(0.03, 0.3), rng.uniform(0.05, 0.5)))
    if rng.random() < 0.4:  # a hole or a darker patch
        patch = _blob_outline(rng, rng.uniform(0.3, 0.7), height * rng.uniform(0.3, 0.7), 0.12, height * 0.15, 3, 0.2)
        cv.paint(cv.poly_mask(patch), colour * np.float32(rng.uniform(0.3, 0.7)))
    return cv.finish()

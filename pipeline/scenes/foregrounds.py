"""Procedural foreground cut-outs: side views of cars (mostly), bicycles and wheelie bins.

Shapes are described in units of the object's length (x in [0, 1], y up from the ground at 0),
drawn at 4x with hard-edged polygons and circles, then area-downsampled: alpha edges come out
anti-aliased and the interior stays exactly 255. Colour is downsampled premultiplied, then
un-premultiplied, so edge pixels keep the object's colour instead of fading to black.

Dark materials (black paint, tyres, tinted glass) are deliberately near RGB 0 at full alpha:
masks must come from alpha, never from colour.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

KIND_FG = 0x6667  # rng stream tag of foregrounds ('fg')
DRAW_SCALE = 4
MIN_WIDTH, MAX_WIDTH = 90, 160
_SHIFT = 4  # fixed-point bits for sub-pixel polygon vertices
_PIXEL = np.dtype((np.void, 12))  # one float32 BGR pixel

# realistic car paints (RGB) with rough popularity weights: white, silver, grey, black dominate
CAR_PAINTS = [
    ((236, 236, 234), 0.17), ((192, 194, 198), 0.13), ((112, 114, 118), 0.12), ((14, 14, 16), 0.15),
    ((150, 22, 26), 0.08), ((24, 52, 120), 0.08), ((40, 60, 90), 0.04), ((196, 160, 110), 0.03),
    ((30, 70, 48), 0.04), ((210, 110, 30), 0.02), ((230, 196, 40), 0.02), ((90, 20, 30), 0.04),
    ((70, 110, 160), 0.04), ((60, 44, 36), 0.04),
]
BIN_COLOURS = [(40, 96, 52), (70, 72, 76), (30, 70, 140), (20, 20, 22), (110, 72, 40), (170, 40, 30)]
BIKE_COLOURS = [(200, 30, 30), (20, 20, 22), (30, 80, 170), (230, 230, 230), (40, 140, 70), (240, 180, 30)]

CAR_TYPES = ("sedan", "hatchback", "suv", "van", "pickup", "coupe", "wagon")
CAR_TYPE_WEIGHTS = (0.26, 0.2, 0.2, 0.1, 0.1, 0.06, 0.08)


def _bgr(rgb) -> np.ndarray:
    return np.array(rgb[::-1], dtype=np.float32)


def rounded_polygon(points, radii, steps: int = 6) -> np.ndarray:
    """Replace each corner by a quadratic Bezier of the given radius (clamped to the edges)."""
    p = np.asarray(points, dtype=np.float64)
    n = len(p)
    radii = np.broadcast_to(np.asarray(radii, dtype=np.float64), (n,))
    out = []
    for i in range(n):
        a, b, c = p[i - 1], p[i], p[(i + 1) % n]
        r = radii[i]
        if r <= 0:
            out.append(b)
            continue
        la, lc = np.linalg.norm(a - b), np.linalg.norm(c - b)
        r = min(r, 0.45 * la, 0.45 * lc)
        s, e = b + (a - b) / la * r, b + (c - b) / lc * r
        for k in range(steps + 1):
            u = k / steps
            out.append((1 - u) ** 2 * s + 2 * (1 - u) * u * b + u * u * e)
    return np.array(out)


class Canvas:
    """A 4x drawing surface in object units: x in [0, 1] spans the object's target width."""

    def __init__(self, width_px: int, height_units: float):
        self.unit = width_px * DRAW_SCALE  # pixels (at 4x) per unit of length
        self.margin = 2 * DRAW_SCALE
        self.w = int(math.ceil(self.unit)) + 2 * self.margin
        self.h = int(math.ceil(height_units * self.unit)) + 2 * self.margin
        self.colour = np.zeros((self.h, self.w, 3), np.float32)
        self.alpha = np.zeros((self.h, self.w), np.uint8)
        self.rows = (self.h - self.margin - (np.arange(self.h) + 0.5)) / self.unit  # y of each row

    def px(self, pts) -> np.ndarray:
        p = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        x = self.margin + p[:, 0] * self.unit
        y = self.h - self.margin - p[:, 1] * self.unit
        return np.round(np.stack([x, y], axis=1) * (1 << _SHIFT)).astype(np.int32)

    def poly_mask(self, pts) -> np.ndarray:
        m = np.zeros((self.h, self.w), np.uint8)
        cv2.fillPoly(m, [self.px(pts)], 255, cv2.LINE_8, _SHIFT)
        return m

    def circle_mask(self, centre, radius) -> np.ndarray:
        m = np.zeros((self.h, self.w), np.uint8)
        c = self.px([centre])[0]
        cv2.circle(m, (int(c[0]), int(c[1])), int(round(radius * self.unit * (1 << _SHIFT))), 255, -1,
                   cv2.LINE_8, _SHIFT)
        return m

    def line_mask(self, a, b, width) -> np.ndarray:
        m = np.zeros((self.h, self.w), np.uint8)
        p = self.px([a, b])
        cv2.line(m, tuple(int(v) for v in p[0]), tuple(int(v) for v in p[1]), 255,
                 max(1, int(round(width * self.unit))), cv2.LINE_8, _SHIFT)
        return m

    def paint(self, mask: np.ndarray, colour, opaque: bool = True) -> None:
        """Fill mask with colour ((3,) or an (h, w, 3) image); opaque paint also sets alpha."""
        x, y, w, h = cv2.boundingRect(mask)
        if w == 0 or h == 0:
            return
        box = (slice(y, y + h), slice(x, x + w))
        sel = mask[box] > 0
        col = np.asarray(colour, np.float32)
        if col.ndim == 3:  # per-row (h, 1, 3) or full (h, w, 3) colour
            col = col[box[0]] if col.shape[1] == 1 else col[box]
            np.copyto(self.colour[box], col, where=sel[..., None])
        else:  # one colour: assign whole 12-byte pixels, much faster than a 3-channel masked copy
            pixels = self.colour[box].view(_PIXEL)[..., 0]
            pixels[sel] = np.ascontiguousarray(col).view(_PIXEL)[0]
        if opaque:
            self.alpha[box][sel] = 255

    def gradient(self, colour, stops) -> np.ndarray:
        """(h, 1, 3) per-row colour scaled by a piecewise-linear factor over y: stops [(y, f), ...]."""
        ys, fs = zip(*stops)
        f = np.interp(self.rows, ys, fs).astype(np.float32)
        return np.asarray(colour, np.float32)[None, None, :] * f[:, None, None]

    def finish(self) -> np.ndarray:
        """Downsample to (h, w, 4) uint8 BGRA, cropped to the alpha > 0 bounding box."""
        a = self.alpha.astype(np.float32) / 255.0
        size = (self.w // DRAW_SCALE, self.h // DRAW_SCALE)
        crop_w, crop_h = size[0] * DRAW_SCALE, size[1] * DRAW_SCALE
        pre = cv2.resize(self.colour[:crop_h, :crop_w] * a[:crop_h, :crop_w, None], size,
                         interpolation=cv2.INTER_AREA)
        alpha = cv2.resize(a[:crop_h, :crop_w], size, interpolation=cv2.INTER_AREA)
        colour = pre / np.maximum(alpha, 1e-6)[..., None]
        a8 = np.clip(np.round(alpha * 255.0), 0, 255).astype(np.uint8)
        c8 = np.clip(np.round(colour), 0, 255).astype(np.uint8)
        c8[a8 == 0] = 0
        out = np.dstack([c8, a8])
        rows = np.flatnonzero(a8.any(axis=1))
        cols = np.flatnonzero(a8.any(axis=0))
        return np.ascontiguousarray(out[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])


# ------------------------------------------------------------------------------------------------
# cars


def _car_profile(rng, kind: str):
    """Outline (unit coords, rear at x=0, front at x=1), window polygon(s) and key heights."""
    u = rng.uniform
    clear = u(0.035, 0.05) if kind not in ("suv", "pickup") else u(0.05, 0.07)
    # heights are ~15% taller than real cars: a slightly toy-like, readable silhouette (h/w >= 0.35)
    wheel_r = {"suv": u(0.092, 0.102), "pickup": u(0.088, 0.098), "van": u(0.078, 0.086)}.get(kind, u(0.076, 0.088))
    belt = {"sedan": u(0.23, 0.26), "hatchback": u(0.24, 0.27), "suv": u(0.28, 0.31), "van": u(0.25, 0.28),
            "pickup": u(0.27, 0.3), "coupe": u(0.22, 0.24), "wagon": u(0.23, 0.26)}[kind]
    roof = {"sedan": u(0.355, 0.385), "hatchback": u(0.38, 0.42), "suv": u(0.43, 0.48), "van": u(0.48, 0.55),
            "pickup": u(0.42, 0.46), "coupe": u(0.35, 0.365), "wagon": u(0.36, 0.39)}[kind]
    nose = belt - u(0.03, 0.05)  # top of the front bumper / grille
    tail = belt - u(0.0, 0.03)
    if kind == "sedan" or kind == "coupe":
        trunk_end = u(0.14, 0.2)
        roof_r, roof_f = trunk_end + u(0.12, 0.16), u(0.56, 0.62)
        ws = u(0.7, 0.76)
        body = [(0.0, tail), (trunk_end, belt + 0.012), (roof_r, roof), (roof_f, roof), (ws, belt + 0.01),
                (0.96, nose + 0.01), (1.0, nose - 0.01)]
        win = [(trunk_end + 0.05, belt + 0.016), (roof_r + 0.01, roof - 0.018), (roof_f - 0.005, roof - 0.018),
               (ws - 0.035, belt + 0.016)]
        radii = [0.02, 0.03, 0.05, 0.04, 0.02, 0.04, 0.02]
    elif kind in ("hatchback", "suv", "wagon"):
        slope = u(0.04, 0.08) if kind == "hatchback" else u(0.02, 0.04)
        roof_f = {"hatchback": u(0.52, 0.58), "suv": u(0.6, 0.66), "wagon": u(0.56, 0.62)}[kind]
        ws = roof_f + u(0.12, 0.16)
        body = [(0.0, tail), (0.005, belt + 0.01), (slope, roof), (roof_f, roof), (ws, belt + 0.015),
                (0.96, nose + 0.01), (1.0, nose - 0.01)]
        win = [(slope * 0.5 + 0.04, belt + 0.02), (slope + 0.03, roof - 0.02), (roof_f - 0.005, roof - 0.02),
               (ws - 0.04, belt + 0.02)]
        radii = [0.02, 0.02, 0.04, 0.04, 0.02, 0.04, 0.02]
    elif kind == "van":
        roof_f = u(0.72, 0.78)
        ws = u(0.86, 0.9)
        body = [(0.0, tail), (0.0, roof - 0.02), (0.01, roof), (roof_f, roof), (ws, belt + 0.06),
                (0.985, nose + 0.02), (1.0, nose - 0.01)]
        win = [(roof_f - 0.2, belt + 0.03), (roof_f - 0.2, roof - 0.035), (roof_f - 0.01, roof - 0.035),
               (ws - 0.035, belt + 0.06)]
        radii = [0.02, 0.03, 0.03, 0.05, 0.03, 0.04, 0.02]
    else:  # pickup
        cab_r = u(0.42, 0.46)
        roof_f = cab_r + u(0.2, 0.24)
        ws = roof_f + u(0.09, 0.12)
        bed = belt + u(0.0, 0.02)
        body = [(0.0, tail), (0.0, bed), (cab_r - 0.02, bed), (cab_r, roof - 0.005), (cab_r + 0.02, roof),
                (roof_f, roof), (ws, belt + 0.015), (0.97, nose + 0.01), (1.0, nose - 0.01)]
        win = [(cab_r + 0.03, belt + 0.02), (cab_r + 0.035, roof - 0.022), (roof_f - 0.005, roof - 0.022),
               (ws - 0.035, belt + 0.02)]
        radii = [0.01, 0.01, 0.01, 0.02, 0.02, 0.04, 0.02, 0.04, 0.02]
    outline = [(0.01, clear), *body, (1.0, clear + 0.025), (0.985, clear)]
    radii = [0.01, *radii, 0.02, 0.01]
    return dict(outline=outline, radii=radii, window=win, clear=clear, wheel_r=wheel_r, belt=belt,
                roof=roof, nose=nose, tail=tail, height=roof)


def _car(rng, width: int, kind: str) -> np.ndarray:
    prof = _car_profile(rng, kind)
    cv = Canvas(width, prof["height"])
    paints, weights = zip(*CAR_PAINTS)
    w = np.asarray(weights) / np.sum(weights)
    paint = _bgr(paints[int(rng.choice(len(paints), p=w))]) * np.float32(rng.uniform(0.92, 1.05))
    paint = np.clip(paint, 0, 255)
    belt, roof, clear, wr = prof["belt"], prof["roof"], prof["clear"], prof["wheel_r"]

    # body with vertical shading: darker sills, bright shoulder line just under the belt, darker roof
    body = cv.poly_mask(rounded_polygon(prof["outline"], prof["radii"]))
    lift = 18.0 if paint.max() < 60 else 0.0  # keeps black paint readable but still near 0 low down
    shading = cv.gradient(paint, [(0.0, 0.55), (clear + 0.03, 0.72), (belt - 0.05, 0.95), (belt - 0.012, 1.12),
                                  (belt - 0.004, 0.9), (belt + 0.01, 0.98), (roof, 0.88)])
    cv.paint(body, shading + np.float32(lift) * (cv.rows[:, None, None] > belt - 0.02))

    # wheel wells: the dark opening of the body around each wheel
    wx = (rng.uniform(0.16, 0.21), rng.uniform(0.79, 0.84))
    for x in wx:
        well = cv.circle_mask((x, wr), wr * 1.16) & body
        cv.paint(well, _bgr((10, 10, 11)))

    # windows: tinted glass with a lighter sky reflection towards the top, split by a pillar
    tint = float(rng.uniform(0.0, 1.0))
    glass_lo = _bgr((8, 9, 11)) if tint < 0.4 else _bgr((34, 40, 48))
    glass_hi = _bgr((70, 84, 100)) if tint < 0.4 else _bgr((120, 138, 156))
    win = cv.poly_mask(rounded_polygon(prof["window"], 0.015))
    glass = cv.gradient(np.ones(3, np.float32), [(belt, 0.0), (roof, 1.0)])[..., :1]
    cv.paint(win, glass_lo + (glass_hi - glass_lo) * glass ** 2)
    xs = [p[0] for p in prof["window"]]
    pillars = [rng.uniform(0.45, 0.55)]
    if kind in ("suv", "wagon") and rng.random() < 0.7:
        pillars.append(rng.uniform(0.2, 0.3))
    if kind == "van":  # a cab window only, sometimes with passenger windows further back
        pillars = []
        if rng.random() < 0.5:
            top, bot = prof["window"][1][1], prof["window"][0][1]
            x1 = prof["window"][0][0] - 0.06
            x0 = rng.uniform(0.06, 0.12)
            cv.paint(cv.poly_mask(rounded_polygon([(x0, bot), (x1, bot), (x1, top), (x0, top)], 0.015)),
                     glass_lo + (glass_hi - glass_lo) * glass ** 2)
            if x1 - x0 > 0.3:
                pillars_back = (x0 + x1) / 2
                cv.paint(cv.poly_mask([(pillars_back - 0.012, bot), (pillars_back + 0.012, bot),
                                       (pillars_back + 0.012, top), (pillars_back - 0.012, top)]), paint * 0.9)
    trim = _bgr((20, 20, 22)) if rng.random() < 0.6 else paint * 0.85
    for f in pillars:
        x = min(xs) + f * (max(xs) - min(xs))
        cv.paint(cv.poly_mask([(x - 0.012, belt), (x + 0.012, belt), (x + 0.008, roof), (x - 0.016, roof)]) & win,
                 trim)

    # door seams and handles
    seam_col = paint * 0.55
    for f in pillars:
        x = min(xs) + f * (max(xs) - min(xs)) + 0.005
        cv.paint(cv.line_mask((x, belt), (x - 0.01, clear + 0.03), 0.004) & body, seam_col)
        cv.paint(cv.poly_mask([(x + 0.02, belt - 0.03), (x + 0.06, belt - 0.03), (x + 0.06, belt - 0.038),
                               (x + 0.02, belt - 0.038)]), paint * 0.6)

    # bumpers: dark plastic or body colour, with a lighter lower sill
    bumper = _bgr((28, 28, 30)) if rng.random() < 0.5 else paint * 0.8
    for x0, x1 in ((0.0, wx[0] - wr * 1.2), (wx[1] + wr * 1.2, 1.0)):
        strip = cv.poly_mask([(x0, clear - 0.01), (x1, clear - 0.01), (x1, clear + 0.045), (x0, clear + 0.045)])
        cv.paint(strip & body, bumper)

    # lights
    cv.paint(cv.poly_mask(rounded_polygon([(0.955, prof["nose"] - 0.035), (1.0, prof["nose"] - 0.035),
                                           (1.0, prof["nose"] - 0.005), (0.945, prof["nose"] + 0.005)], 0.008)) & body,
             _bgr((240, 236, 214)))
    cv.paint(cv.poly_mask(rounded_polygon([(0.0, prof["tail"] - 0.045), (0.035, prof["tail"] - 0.045),
                                           (0.035, prof["tail"] - 0.01), (0.0, prof["tail"] - 0.005)], 0.008)) & body,
             _bgr((200, 24, 20)))
    if rng.random() < 0.6:  # side mirror
        mx = prof["window"][3][0] - 0.005
        cv.paint(cv.poly_mask(rounded_polygon([(mx - 0.03, belt + 0.005), (mx + 0.005, belt + 0.005),
                                               (mx + 0.005, belt + 0.035), (mx - 0.025, belt + 0.035)], 0.008)),
                 paint * 0.8)

    # wheels: near-black tyre, rim, darker hub and a few spokes
    rim = _bgr(((170, 172, 176), (60, 60, 64), (120, 122, 126), (210, 210, 212))[int(rng.integers(4))])
    rim_f = rng.uniform(0.55, 0.68)
    spokes = int(rng.choice([0, 5, 6]))
    for x in wx:
        c = (x, wr)
        cv.paint(cv.circle_mask(c, wr), _bgr((6, 6, 7)))
        cv.paint(cv.circle_mask(c, wr * rim_f), rim)
        cv.paint(cv.circle_mask(c, wr * rim_f * 0.82), rim * 0.55)
        for k in range(spokes):
            a = 2 * math.pi * k / spokes + rng.uniform(0, 1)
            e = (x + math.cos(a) * wr * rim_f * 0.8, wr + math.sin(a) * wr * rim_f * 0.8)
            cv.paint(cv.line_mask(c, e, wr * 0.14), rim)
        cv.paint(cv.circle_mask(c, wr * 0.2), rim * 0.8)
    return cv.finish()


# ------------------------------------------------------------------------------------------------
# other objects


def _bicycle(rng, width: int) -> np.ndarray:
    r = rng.uniform(0.19, 0.21)  # wheel radius (length units; the bike is ~1.7 m long)
    cv = Canvas(width, 0.62)
    frame = _bgr(BIKE_COLOURS[int(rng.integers(len(BIKE_COLOURS)))])
    rear, front = (r, r), (1.0 - r, r)
    bb = (0.43, r * 0.85)  # bottom bracket
    seat_top = (0.36, r + 0.3)
    head_top = (0.75, r + 0.28)
    head_bot = (0.77, r + 0.19)
    t = 0.022
    for a, b in ((rear, bb), (rear, seat_top), (bb, seat_top), (bb, head_bot), (seat_top, head_top),
                 (head_bot, head_top), (head_bot, front)):
        cv.paint(cv.line_mask(a, b, t), frame)
    cv.paint(cv.line_mask(seat_top, (0.35, r + 0.35), 0.018), _bgr((150, 150, 152)))
    cv.paint(cv.poly_mask(rounded_polygon([(0.29, r + 0.35), (0.42, r + 0.36), (0.41, r + 0.385),
                                           (0.3, r + 0.38)], 0.01)), _bgr((12, 12, 12)))
    cv.paint(cv.line_mask(head_top, (0.76, r + 0.34), 0.018), _bgr((150, 150, 152)))
    cv.paint(cv.line_mask((0.72, r + 0.35), (0.81, r + 0.34), 0.02), _bgr((12, 12, 12)))
    for c in (rear, front):
        tyre = cv.circle_mask(c, r) & ~cv.circle_mask(c, r * 0.86)
        cv.paint(tyre, _bgr((8, 8, 8)))
        rim = cv.circle_mask(c, r * 0.86) & ~cv.circle_mask(c, r * 0.8)
        cv.paint(rim, _bgr((170, 172, 176)))
        for k in range(12):
            a = math.pi * k / 6
            cv.paint(cv.line_mask(c, (c[0] + math.cos(a) * r * 0.82, c[1] + math.sin(a) * r * 0.82), 0.004),
                     _bgr((160, 160, 164)))
        cv.paint(cv.circle_mask(c, 0.02), _bgr((120, 120, 124)))
    cv.paint(cv.circle_mask(bb, 0.045) & ~cv.circle_mask(bb, 0.03), _bgr((60, 60, 62)))
    return cv.finish()


def _bin(rng, width: int) -> np.ndarray:
    colour = _bgr(BIN_COLOURS[int(rng.integers(len(BIN_COLOURS)))])
    h = rng.uniform(1.25, 1.4)
    cv = Canvas(width, h)
    body = rounded_polygon([(0.1, 0.02), (0.86, 0.02), (0.94, h - 0.12), (0.04, h - 0.12)], 0.03)
    cv.paint(cv.poly_mask(body), cv.gradient(colour, [(0.0, 0.75), (h * 0.7, 1.0), (h, 1.05)]))
    for y in (0.35, 0.7):  # moulded ribs
        cv.paint(cv.poly_mask([(0.12, y), (0.9, y), (0.9, y + 0.03), (0.12, y + 0.03)]), colour * 0.8)
    lid = rounded_polygon([(0.0, h - 0.13), (1.0, h - 0.13), (1.0, h - 0.05), (0.0, h - 0.02)], 0.02)
    cv.paint(cv.poly_mask(lid), colour * 1.08)
    cv.paint(cv.poly_mask(rounded_polygon([(0.0, h - 0.1), (0.06, h - 0.1), (0.06, h), (0.0, h)], 0.015)),
             colour * 0.7)
    wr = 0.11
    cv.paint(cv.circle_mask((0.16, wr), wr), _bgr((6, 6, 6)))
    cv.paint(cv.circle_mask((0.16, wr), wr * 0.45), _bgr((90, 90, 92)))
    cv.paint(cv.poly_mask([(0.78, 0.0), (0.88, 0.0), (0.88, 0.06), (0.78, 0.06)]), colour * 0.6)
    return cv.finish()


# nominal real-world length (metres spanned by the cut-out's full width) of each kind of object
NOMINAL_WIDTH_M = {"sedan": 4.7, "hatchback": 4.1, "suv": 4.7, "van": 5.0, "pickup": 5.4, "coupe": 4.4,
                   "wagon": 4.8, "bicycle": 1.75, "bin": 0.58}


def _draw_kind(rng) -> tuple[str, int]:
    """The first draws of a foreground: its kind and drawn width in pixels."""
    k = rng.random()
    if k < 0.86:
        width = int(rng.integers(MIN_WIDTH + 2, MAX_WIDTH - 1))
        return str(rng.choice(CAR_TYPES, p=CAR_TYPE_WEIGHTS)), width
    if k < 0.93:
        return "bicycle", int(rng.integers(MIN_WIDTH + 2, 140))
    return "bin", int(rng.integers(MIN_WIDTH + 2, 108))


def foreground_kind(index: int, *, seed: int) -> str:
    """What foreground ``index`` of the set drawn from ``seed`` is (a key of NOMINAL_WIDTH_M)."""
    return _draw_kind(np.random.default_rng([seed, KIND_FG, index]))[0]


def foreground_width_m(index: int, *, seed: int) -> float:
    """The real-world width in metres that foreground ``index`` spans (depth-scaled placement)."""
    return NOMINAL_WIDTH_M[foreground_kind(index, seed=seed)]


def render_foreground(index: int, *, seed: int) -> np.ndarray:
    """Foreground ``index`` of the set drawn from ``seed``: (h, w, 4) uint8 BGRA, tightly cropped."""
    rng = np.random.default_rng([seed, KIND_FG, index])
    kind, width = _draw_kind(rng)
    if kind == "bicycle":
        return _bicycle(rng, width)
    if kind == "bin":
        return _bin(rng, width)
    return _car(rng, width, kind)


def render_foregrounds(count: int, *, seed: int) -> list[np.ndarray]:
    return [render_foreground(i, seed=seed) for i in range(count)]

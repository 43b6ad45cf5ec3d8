"""The vehicles of the procedural kit, side views: cars of seven types, bicycles and wheelie bins.

Dark materials (black paint, tyres, tinted glass) are deliberately near RGB 0 at full alpha:
masks must come from alpha, never from colour.
"""
from __future__ import annotations

import math

import numpy as np

from .canvas import Canvas, rounded_polygon
from .canvas import bgr as _bgr

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


def car(rng, width: int, kind: str) -> np.ndarray:
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


def bicycle(rng, width: int) -> np.ndarray:
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


def bin_(rng, width: int) -> np.ndarray:
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



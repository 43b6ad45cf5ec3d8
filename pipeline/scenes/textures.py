"""Procedural surface textures, evaluated in world units (metres) on arrays of hit points.

Every pattern takes the pixel footprint ``fp`` (metres of surface one pixel covers) and filters
itself analytically: lines are box-filtered over the footprint and periodic detail fades to its
mean once it gets finer than a pixel. Far surfaces therefore come out smooth instead of aliased
speckle, which keeps the images plausible and their JPEGs small.

Colours are float32 BGR in [0, 1].
"""
from __future__ import annotations

import numpy as np

NOISE_CELLS = 64  # noise tables are NOISE_CELLS x NOISE_CELLS and tile with that period


def noise_table(rng: np.random.Generator) -> np.ndarray:
    """A tileable table of lattice values in [-1, 1] for value noise and per-cell random values.

    Shape (NOISE_CELLS + 1)^2: the last row and column repeat the first, so the 4 corners of any
    cell are plain neighbours in the flattened table (no wrap-around arithmetic per lookup).
    """
    t = rng.uniform(-1.0, 1.0, size=(NOISE_CELLS, NOISE_CELLS)).astype(np.float32)
    return np.pad(t, ((0, 1), (0, 1)), mode="wrap")


def cell_value(table: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """A stable random value in [-1, 1] for integer cell (i, j) (bricks, windows, tiles)."""
    m = NOISE_CELLS - 1
    i = np.asarray(i).astype(np.int32)
    j = np.asarray(j).astype(np.int32)
    return table[(i * 7 + j * 3) & m, (j * 5 + i) & m]


def value_noise(table: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Smooth (C1) bilinear value noise in [-1, 1]; one lattice cell per unit of u and v."""
    m = NOISE_CELLS - 1
    row = NOISE_CELLS + 1
    u = np.asarray(u, np.float32)
    v = np.asarray(v, np.float32)
    fu0 = np.floor(u)
    fv0 = np.floor(v)
    fu = u - fu0
    fv = v - fv0
    base = (fv0.astype(np.int32) & m) * row + (fu0.astype(np.int32) & m)
    flat = table.reshape(-1)
    wu = fu * fu * (3.0 - 2.0 * fu)
    wv = fv * fv * (3.0 - 2.0 * fv)
    c00 = flat.take(base)
    c01 = flat.take(base + 1)
    c10 = flat.take(base + row)
    c11 = flat.take(base + (row + 1))
    a = c00 + (c01 - c00) * wu
    b = c10 + (c11 - c10) * wu
    return a + (b - a) * wv


def fbm(table: np.ndarray, u, v, scale: float, fp=None, octaves: int = 2) -> np.ndarray:
    """Two-ish octaves of value noise with feature size ``scale`` metres.

    Octaves finer than ~2 footprints are faded out (filtered), so distant noise is smooth.
    """
    out = np.zeros(np.shape(u), dtype=np.float32)
    amp, s = 1.0, scale
    for k in range(octaves):
        n = value_noise(table, u / s + 17.0 * k, v / s + 31.0 * k)
        if fp is not None:
            n = n * np.clip(s / (2.0 * fp) - 1.0, 0.0, 1.0).astype(np.float32, copy=False)
        out += np.float32(amp) * n
        amp *= 0.5
        s *= 0.5
    return out


def interval_cov(x, a, b, fp) -> np.ndarray:
    """Fraction of the pixel footprint [x - fp/2, x + fp/2] that lies inside [a, b]."""
    lo = np.maximum(x - fp * 0.5, a)
    hi = np.minimum(x + fp * 0.5, b)
    return np.clip((hi - lo) / fp, 0.0, 1.0).astype(np.float32, copy=False)


def periodic_lines(s, period, half_width, fp, offset=0.0) -> np.ndarray:
    """Coverage of lines of ``half_width`` centred at offset + k * period, box-filtered over fp.

    Fades to the mean coverage when the footprint nears the period, avoiding moire.
    """
    d = np.mod(s - offset + period * 0.5, period) - period * 0.5
    c = interval_cov(d, -half_width, half_width, fp)
    mean = np.float32(2.0) * half_width / period
    w = np.clip(fp / period * 2.0 - 0.5, 0.0, 1.0).astype(np.float32, copy=False)
    return (c * (1.0 - w) + mean * w).astype(np.float32, copy=False)


def detail_fade(feature_m, fp) -> np.ndarray:
    """1 while a feature of size feature_m spans >= 3 footprints, 0 once it is under one footprint."""
    return np.clip((feature_m / fp - 1.0) * 0.5, 0.0, 1.0).astype(np.float32, copy=False)


def mix(base: np.ndarray, colour, amount) -> np.ndarray:
    """Per-pixel lerp of (N, 3) colours towards colour ((3,) or (N, 3)) by amount (N,)."""
    a = np.asarray(amount, dtype=np.float32)[..., None]
    return base + (np.asarray(colour, dtype=np.float32) - base) * a


def shade(base: np.ndarray, factor) -> np.ndarray:
    return base * np.asarray(factor, dtype=np.float32)[..., None]


# ---------------------------------------------------------------------------------------------
# Wall materials. Arguments: s (horizontal metres along the face), y (metres above ground),
# fp (footprint), colour (N, 3) base colour, table (noise), plus material-specific extras.


def brick(s, y, fp, colour, table):
    course, length = 0.075, 0.24
    row = np.floor(y / course)
    offset = (row % 2) * (length * 0.5)
    col = np.floor((s + offset) / length)
    fade = detail_fade(length, fp)
    out = shade(colour, 1.0 + 0.07 * cell_value(table, row, col) * fade)
    out = shade(out, 1.0 + 0.05 * fbm(table, s, y, 1.6, fp))
    mortar = np.maximum(periodic_lines(y, course, 0.006, fp),
                        periodic_lines(s + offset, length, 0.006, fp) * fade)
    return mix(out, np.float32(0.62), mortar * 0.6)


def plaster(s, y, fp, colour, table):
    out = shade(colour, 1.0 + 0.05 * fbm(table, s, y, 2.5, fp))
    # faint weathering streaks running down the facade
    streak = value_noise(table, s / 0.9 + 5.0, y / 12.0) * detail_fade(0.9, fp)
    return shade(out, 1.0 - 0.035 * np.clip(streak, 0.0, 1.0))


def concrete(s, y, fp, colour, table, panel_w, panel_h):
    out = shade(colour, 1.0 + 0.06 * fbm(table, s, y, 1.8, fp))
    joints = np.maximum(periodic_lines(s, panel_w, 0.012, fp), periodic_lines(y, panel_h, 0.012, fp))
    return shade(out, 1.0 - 0.35 * joints)


def wood(s, y, fp, colour, table, plank, vertical):
    across = np.where(vertical, s, y)
    along = np.where(vertical, y, s)
    idx = np.floor(across / plank)
    out = shade(colour, 1.0 + 0.08 * cell_value(table, idx, 3) * detail_fade(plank, fp))
    grain = value_noise(table, across / 0.05 + idx * 9.0, along / 0.8) * detail_fade(0.05, fp)
    out = shade(out, 1.0 + 0.04 * grain)
    return shade(out, 1.0 - 0.45 * periodic_lines(across, plank, 0.008, fp))


def metal(s, y, fp, colour, table):
    period = 0.3
    corr = np.cos(np.float32(2.0 * np.pi) * (s / period).astype(np.float32)) * detail_fade(period, fp)
    out = shade(colour, 1.0 + 0.09 * corr)
    rust = np.clip(fbm(table, s, y, 1.2, fp) - 0.5, 0.0, 1.0)
    return mix(out, np.array([0.16, 0.25, 0.38], np.float32) * colour.max(axis=1, keepdims=True), rust * 0.4)


def hedge(s, y, fp, colour, table):
    n = fbm(table, s, y, 0.6, fp, octaves=3)
    return shade(colour, 1.0 + 0.18 * n)


def glass_facade(s, y, fp, colour, table, frame, sky_h, sky_z, floor_h):
    """Curtain wall: glass panes reflecting a sky gradient, with a lighter mullion grid."""
    t = np.clip(y / 25.0, 0.0, 1.0)[..., None]
    refl = sky_h * (1.0 - t) + sky_z * t
    col = np.floor(s / 1.5)
    glass = colour * 0.65 + refl * 0.35
    glass = shade(glass, 1.0 + 0.08 * cell_value(table, col, np.floor(y / floor_h)) * detail_fade(1.5, fp))
    grid = np.maximum(periodic_lines(s, 1.5, 0.04, fp), periodic_lines(y, floor_h, 0.09, fp))
    return mix(glass, frame, grid)


def windows(s, y, fp, wall, face_len, face_h, p, table, frame, glass):
    """Overlay a window grid on a facade.

    p: (N, 5) per-pixel window params (floor height, bay width, window width, window height, sill).
    Bays and floors that do not fit whole inside the face are left blank.
    """
    floor_h, bay, ww, wh, sill = (p[:, k] for k in range(5))
    n_bays = np.floor(np.maximum(face_len - 1.0, 0.0) / bay)
    margin = (face_len - n_bays * bay) * 0.5
    bi = np.floor((s - margin) / bay)
    sl = s - margin - bi * bay  # position within the bay
    fi = np.floor(y / floor_h)
    yl = y - fi * floor_h
    inside = (bi >= 0) & (bi < n_bays) & (fi >= 0) & ((fi + 1) * floor_h <= face_h + 0.25)
    x0, x1 = (bay - ww) * 0.5, (bay + ww) * 0.5
    # ground floor: taller windows (shop fronts / doors)
    gf = fi == 0
    y0 = np.where(gf, 0.35, sill)
    y1 = np.minimum(sill + wh, floor_h - 0.3)
    f = 0.08  # frame width
    outer = interval_cov(sl, x0 - f, x1 + f, fp) * interval_cov(yl, y0 - f, y1 + f, fp)
    inner = interval_cov(sl, x0, x1, fp) * interval_cov(yl, y0, y1, fp)
    outer = outer * inside
    inner = inner * inside
    r = cell_value(table, bi, fi)
    g = shade(glass, 1.0 + 0.25 * r + 0.25 * np.clip((yl - y0) / np.maximum(y1 - y0, 0.1), 0, 1))
    out = mix(wall, frame, outer)
    return mix(out, g, inner)


# ---------------------------------------------------------------------------------------------
# Ground


def asphalt(x, z, fp, colour, table):
    out = shade(colour, 1.0 + 0.06 * fbm(table, x, z, 3.0, fp) + 0.03 * fbm(table, x + 9, z, 0.35, fp))
    return out


def tiles(x, z, fp, colour, table, size):
    ix, iz = np.floor(x / size), np.floor(z / size)
    out = shade(colour, 1.0 + 0.05 * cell_value(table, ix, iz) * detail_fade(size, fp))
    out = shade(out, 1.0 + 0.04 * fbm(table, x, z, 2.0, fp))
    joints = np.maximum(periodic_lines(x, size, 0.008, fp), periodic_lines(z, size, 0.008, fp))
    return shade(out, 1.0 - 0.3 * joints)


def grass(x, z, fp, colour, table):
    n = fbm(table, x, z, 4.0, fp)
    dry = np.clip(fbm(table, x + 40.0, z, 7.0, fp) * 1.5, 0.0, 1.0)
    out = mix(colour, np.array([0.28, 0.50, 0.52], np.float32) * colour.max(), dry * 0.5)
    out = shade(out, 1.0 + 0.10 * n)
    return shade(out, 1.0 + 0.06 * fbm(table, x + 3.0, z + 7.0, 0.5, fp))


def gravel(x, z, fp, colour, table):
    out = shade(colour, 1.0 + 0.06 * fbm(table, x, z, 2.5, fp))
    return shade(out, 1.0 + 0.05 * fbm(table, x + 11.0, z, 0.25, fp))


# ---------------------------------------------------------------------------------------------
# Sky


def sky(dirs_unit: np.ndarray, zenith, horizon, sun_dir, sun_glow, cloud, table) -> np.ndarray:
    """Sky colour for unit ray directions (N, 3): horizon-to-zenith gradient, sun glow, soft clouds."""
    e = np.clip(dirs_unit[:, 1], 0.0, 1.0).astype(np.float32)
    t = (1.0 - (1.0 - e) ** 3)[:, None]
    out = horizon * (1.0 - t) + zenith * t
    cosang = np.clip(dirs_unit @ np.asarray(sun_dir, np.float32), -1.0, 1.0).astype(np.float32)
    glow = np.clip(cosang, 0.0, 1.0) ** 24 * 0.5 + np.clip(cosang, 0.0, 1.0) ** 4 * 0.12
    out = out + glow[:, None] * sun_glow
    if cloud > 0:
        # clouds on a plane 1 km up, faded towards the horizon
        dy = np.maximum(dirs_unit[:, 1], 0.02)
        u = dirs_unit[:, 0] / dy * 1000.0
        v = dirs_unit[:, 2] / dy * 1000.0
        n = fbm(table, u, v, 900.0, octaves=3)
        c = np.clip((n - 0.6 + cloud) * 1.6, 0.0, 1.0) * np.clip(e * 6.0, 0.0, 1.0)
        cloud_col = np.clip(horizon * 0.35 + 0.68, 0.0, 1.0)
        out = mix(out, cloud_col, c * 0.75)
    return out

"""Stage 3 of a procedural background: shading the surfaces the ray caster found (sky, ground and
box textures, sun and ambient light, ground shadows, distance haze).
"""
from __future__ import annotations

import cv2
import numpy as np

from . import textures as tx
from .camera import project_polygon
from .layout import BRICK, CONCRETE, GLASS, METAL, PLASTER, WOOD_H, WOOD_V, Scene
from .raycast import GROUND, SKY, corners

def shadow_mask(scene: Scene, scale: int) -> np.ndarray:
    """Where box shadows fall on the ground, as float32 in [0, 1] (softened at the edges)."""
    cam, L = scene.camera, np.asarray(scene.sky.sun_dir)
    n = cam.size * scale
    mask = np.zeros((n, n), np.uint8)
    shift = 4
    for box in scene.boxes:
        c = corners(box)
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


def rows(a: np.ndarray, m: np.ndarray) -> np.ndarray:
    """a[m] for a C-contiguous (N, 3) float32 array and a boolean mask m (N,).

    Done through a 12-byte void view: numpy's boolean indexing of 2-D arrays is ~20x slower.
    """
    return a.view(np.dtype((np.void, 12))).reshape(-1)[m].view(np.float32).reshape(-1, 3)


def set_rows(a: np.ndarray, m: np.ndarray, values: np.ndarray) -> None:
    """a[m] = values for (N, 3) float32 arrays (see rows)."""
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
            set_rows(out, road, tx.mix(a, g.line, line * wear))
        if walk.any():
            xs, zs, f = x[walk], z[walk], fp[walk]
            p = tx.tiles(xs, zs, f, _const(g.paving, len(xs)), table, 1.2)
            kerb = tx.interval_cov(np.abs(xs), g.road_half, g.road_half + 0.18, f)
            set_rows(out, walk, tx.mix(p, np.float32(0.78), kerb))
        if verge.any():
            set_rows(out, verge, base_tex(verge))
    elif g.kind == "yard":
        out[:] = base_tex(everything)
        if g.path is not None:
            cov = tx.interval_cov(x, g.path[0], g.path[1], fp)
            sel = cov > 0
            if sel.any():
                p = tx.tiles(x[sel], z[sel], fp[sel], _const(g.paving, int(sel.sum())), table, 0.6)
                set_rows(out, sel, tx.mix(rows(out, sel), p, cov[sel]))
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
        a = (s[sel], y[sel], fp[sel], rows(colour, sel), table)
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
        set_rows(out, sel, res)
    w = per_box([b.windows is not None and b.material != GLASS for b in boxes], bool) & ~top
    if w.any():
        bw = bid[w]
        win = per_box([b.windows if b.windows is not None else (3, 3, 1, 1, 1) for b in boxes], idx=bw)
        face_len = np.where(along_z, hi[:, 2] - lo[:, 2], hi[:, 0] - lo[:, 0])[w]
        trim = per_box([b.trim for b in boxes], idx=bw)
        glass = per_box([b.glass for b in boxes], idx=bw)
        face_h = (hi[:, 1] - lo[:, 1])[w]
        set_rows(out, w, tx.windows(s[w], y[w], fp[w], rows(out, w), face_len, face_h, win, table, trim, glass))
    r = per_box([b.roof is not None for b in boxes], bool) & top
    if r.any():
        roof = per_box([b.roof if b.roof is not None else (0, 0, 0) for b in boxes], idx=bid[r])
        set_rows(out, r, tx.gravel(s[r], y[r], fp[r], roof, table))
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
        unit = rows(rays, s_sel) / norm[s_sel, None]
        set_rows(img, s_sel, tx.sky(unit, sky_z, sky_h, L, sun * 0.8, sky.cloud, table))

    g_sel = hit == GROUND
    if g_sel.any():
        tg, ng = t[g_sel], norm[g_sel]
        r = rows(rays, g_sel)
        P = o + tg[:, None] * r
        cosi = np.maximum(-r[:, 1] / ng, 0.03)
        fp = tg * ng * pix[g_sel] / np.sqrt(cosi)
        alb = _ground_albedo(scene, P[:, 0], P[:, 2], fp, table)
        light = amb + sun * (max(float(L[1]), 0.0) * (1.0 - shadow[g_sel]))[:, None]
        set_rows(img, g_sel, alb * light)

    b_sel = hit >= 0
    if b_sel.any():
        tb, nb, ab = t[b_sel], norm[b_sel], axis[b_sel]
        r = rows(rays, b_sel)
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
        set_rows(img, b_sel, alb * light)

    # distance haze towards the horizon sky colour
    h_sel = ~s_sel
    if h_sel.any():
        dist = t[h_sel] * norm[h_sel]
        f = (1.0 - np.exp(-dist / np.float32(sky.fog_m))).astype(np.float32)
        set_rows(img, h_sel, tx.mix(rows(img, h_sel), sky_h * 0.97, f))
    return img

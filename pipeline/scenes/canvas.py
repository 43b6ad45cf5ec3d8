"""The 4x drawing surface of the procedural cut-outs.

Shapes are described in units of the object's width (x in [0, 1], y up from the ground at 0),
drawn at 4x with hard-edged polygons and circles, then area-downsampled: alpha edges come out
anti-aliased and the interior stays exactly 255. Colour is downsampled premultiplied, then
un-premultiplied, so edge pixels keep the object's colour instead of fading to black.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

DRAW_SCALE = 4
_SHIFT = 4  # fixed-point bits for sub-pixel polygon vertices
_PIXEL = np.dtype((np.void, 12))  # one float32 BGR pixel


def bgr(rgb) -> np.ndarray:
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


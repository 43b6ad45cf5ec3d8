"""What happens to a drawn cut-out before it is pasted: light, dirt, a contact shadow, defocus.

All on the 1x BGRA image, so the mask stays what alpha >= 128 says:
- light: a brightness gradient along a random direction, an overall exposure and a warm/cool tint;
- grain: fine value noise on the colour (dirt, paint texture, sensor-like grain baked into the object);
- contact shadow: a soft dark ellipse under the object with alpha below the mask threshold, so it
  darkens the ground in fg_bg without being object (a network must learn that shadows are not
  object, as in real photos) and never changes the mask;
- defocus: a Gaussian blur of colour and alpha together (pre-multiplied), softening the outline.
"""
from __future__ import annotations

import cv2
import numpy as np

from . import textures as tx

SHADOW_ALPHA_MAX = 115  # below the mask threshold (128): a shadow is never object
_MASK_THRESHOLD = 128


def _premultiplied(bgra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = bgra[:, :, 3].astype(np.float32) / 255.0
    return bgra[:, :, :3].astype(np.float32) * a[:, :, None], a


def _finish(pre: np.ndarray, a: np.ndarray) -> np.ndarray:
    colour = pre / np.maximum(a, 1e-6)[:, :, None]
    a8 = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    c8 = np.clip(np.rint(colour), 0, 255).astype(np.uint8)
    c8[a8 == 0] = 0
    out = np.dstack([c8, a8])
    rows, cols = np.flatnonzero(a8.any(axis=1)), np.flatnonzero(a8.any(axis=0))
    return np.ascontiguousarray(out[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])


def light(rng, bgra: np.ndarray) -> np.ndarray:
    """Directional shading, exposure, tint and grain (colour only; alpha unchanged)."""
    h, w = bgra.shape[:2]
    theta = rng.uniform(0, 2 * np.pi)
    strength = rng.uniform(0.0, 0.5)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    side = (np.cos(theta) * (xx / max(w - 1, 1) - 0.5) + np.sin(theta) * (0.5 - yy / max(h - 1, 1)))
    gain = (1.0 + strength * side) * rng.uniform(0.72, 1.18)
    warmth = rng.uniform(-0.08, 0.08)
    tint = np.array([1.0 - warmth, 1.0, 1.0 + warmth], np.float32)  # BGR: warm light lifts red
    table = tx.noise_table(np.random.default_rng(int(rng.integers(2**31))))
    grain_scale = rng.uniform(1.5, 6.0)
    grain = rng.uniform(0.0, 0.08) * tx.value_noise(table, xx / grain_scale, yy / grain_scale)
    colour = bgra[:, :, :3].astype(np.float32) * (gain + grain)[:, :, None] * tint[None, None, :]
    out = bgra.copy()
    out[:, :, :3] = np.clip(np.rint(colour), 0, 255).astype(np.uint8)
    out[:, :, :3][bgra[:, :, 3] == 0] = 0
    return out


def contact_shadow(rng, bgra: np.ndarray) -> np.ndarray:
    """A soft shadow ellipse on the ground under the object (alpha < 128 outside the object's mask)."""
    h, w = bgra.shape[:2]
    mask = bgra[:, :, 3] >= _MASK_THRESHOLD
    bottom = int(np.flatnonzero(mask.any(axis=1))[-1])
    half_h = max(1.2, w * rng.uniform(0.012, 0.028))
    pad = int(np.ceil(half_h)) + 2
    canvas = np.zeros((h + pad, w, 4), np.uint8)
    canvas[:h] = bgra
    ellipse = np.zeros((h + pad, w), np.uint8)
    cols = np.flatnonzero(mask[bottom])
    centre = (cols[0] + cols[-1]) / 2 + rng.uniform(-0.1, 0.1) * w
    half_w = w * rng.uniform(0.4, 0.5)
    shift = 4
    cv2.ellipse(ellipse, (int(round(centre * 16)), int(round((bottom + 0.5) * 16))),
                (int(round(half_w * 16)), int(round(half_h * 16))), 0, 0, 360, 255, -1, cv2.LINE_AA, shift)
    ellipse = cv2.GaussianBlur(ellipse, (0, 0), max(0.7, half_h * 0.4))
    ellipse[ellipse < 24] = 0  # no faint tail rows below the object
    shadow = ellipse.astype(np.float32) / 255.0 * rng.uniform(60, SHADOW_ALPHA_MAX) / 255.0
    pre, a = _premultiplied(canvas)
    combined = a + shadow * (1.0 - a)  # the object over its shadow; the shadow's colour is near black
    object_mask = canvas[:, :, 3] >= _MASK_THRESHOLD
    combined = np.where(object_mask, combined, np.minimum(combined, (_MASK_THRESHOLD - 1) / 255.0))
    pre = pre + (shadow * (1.0 - a))[:, :, None] * np.array([14.0, 10.0, 8.0], np.float32)[None, None, :]
    return _finish(pre, combined.astype(np.float32))


def defocus(rng, bgra: np.ndarray) -> np.ndarray:
    """Gaussian blur of the pre-multiplied colour and alpha (sigma 0.5-1.4 px), outline softened."""
    sigma = rng.uniform(0.5, 1.4)
    pad = int(np.ceil(3 * sigma))
    padded = cv2.copyMakeBorder(bgra, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0, 0))
    pre, a = _premultiplied(padded)
    pre = cv2.GaussianBlur(pre, (0, 0), sigma)
    a = cv2.GaussianBlur(a, (0, 0), sigma)
    if a.max() < _MASK_THRESHOLD / 255.0:  # a thin object blurred away: keep it sharp
        return bgra
    return _finish(pre, a)

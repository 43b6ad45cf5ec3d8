"""Joint (paired) transforms of one sample's bg, fg_bg, mask and depth, as pure functions of numpy arrays
(as torchvision's references keep paired transforms in transforms.py): area resizing that keeps the mask
binary, one random geometric map drawn per sample and applied to all four arrays, and one photometric change
applied to both images. Their settings are `training.augment.AugmentConfig` (torch- and OpenCV-free, for the
CLI)."""
from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

from .augment import AugmentConfig


def resize_sample(bg: np.ndarray, fg_bg: np.ndarray, mask: np.ndarray, depth: np.ndarray,
                  size: int) -> tuple[np.ndarray, ...]:
    """Area-resize to size x size; the mask is re-binarised (>= half covered) so it stays binary."""
    def area(a: np.ndarray) -> np.ndarray:
        return a if a.shape[0] == size and a.shape[1] == size else cv2.resize(a, (size, size),
                                                                               interpolation=cv2.INTER_AREA)
    mask = area(mask)
    if mask.dtype == np.uint8 and mask.max(initial=0) > 1:
        mask = (mask >= 128).astype(np.uint8)
    return area(bg), area(fg_bg), mask, area(depth)


def augment_matrix(rng: np.random.Generator, size: int, config: AugmentConfig) -> np.ndarray:
    """A 2x3 affine map from output pixels to input pixels: random crop-scale, rotation, mirror."""
    scale = rng.uniform(config.min_scale, 1.0)
    angle = math.radians(rng.uniform(-config.max_rotation_deg, config.max_rotation_deg))
    flip = rng.random() < config.hflip
    crop = scale * size
    cx = rng.uniform(crop / 2, size - crop / 2)
    cy = rng.uniform(crop / 2, size - crop / 2)
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    fx = -1.0 if flip else 1.0
    # output pixel u (centred) -> input = centre + R * S * diag(fx, 1) * u
    m = np.array([[c * fx, -s, 0.0], [s * fx, c, 0.0]])
    half = (size - 1) / 2
    m[:, 2] = [cx - 0.5 - (m[0, 0] * half + m[0, 1] * half), cy - 0.5 - (m[1, 0] * half + m[1, 1] * half)]
    return m


def pixel_exact_mirror(m: np.ndarray, size: int) -> bool | None:
    """True if the 2x3 map `m` is exactly the left-right mirror of a size x size image, False if exactly the
    identity, None for any other map."""
    if m[0, 1] != 0 or m[1, 0] != 0 or m[1, 1] != 1 or m[1, 2] != 0:
        return None
    if m[0, 0] == 1 and m[0, 2] == 0:
        return False
    if m[0, 0] == -1 and m[0, 2] == size - 1:
        return True
    return None


def warp_sample(m: np.ndarray, bg, fg_bg, mask, depth, size: int,
                out: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, ...]:
    """Apply one geometric transform to all four arrays: linear for images, nearest for mask and
    depth (no invented in-between depths at object edges, and the mask stays binary). `out`: four
    arrays to write into (size x size, the inputs' types).

    The map of the default augmentation (no crop, no rotation) is the identity or a mirror: then the
    arrays are copied or flipped, the same values as the warp's at ~1/25 of its cost."""
    arrays = (bg, fg_bg, mask, depth)
    dst = out if out is not None else (None,) * 4
    mirror = pixel_exact_mirror(m, size)
    if mirror is not None and all(a.shape[:2] == (size, size) for a in arrays):
        if mirror:
            return tuple(cv2.flip(a, 1, dst=d) for a, d in zip(arrays, dst))
        if out is None:
            return tuple(a.copy() for a in arrays)
        for a, d in zip(arrays, out):
            np.copyto(d, a)
        return tuple(out)
    flags_img = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    flags_nn = cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
    border = cv2.BORDER_REFLECT_101
    return (cv2.warpAffine(bg, m, (size, size), dst=dst[0], flags=flags_img, borderMode=border),
            cv2.warpAffine(fg_bg, m, (size, size), dst=dst[1], flags=flags_img, borderMode=border),
            cv2.warpAffine(mask, m, (size, size), dst=dst[2], flags=flags_nn, borderMode=border),
            cv2.warpAffine(depth, m, (size, size), dst=dst[3], flags=flags_nn, borderMode=border))


def photometric_draws(rng: np.random.Generator, config: AugmentConfig) -> tuple[np.ndarray, float]:
    """What `photometric` draws from `rng`: (the brightness/contrast lookup table (256,) uint8, the saturation
    factor); training.device_batches applies them on the device."""
    b = rng.uniform(-config.brightness, config.brightness) * 255
    k = rng.uniform(1 - config.contrast, 1 + config.contrast)
    sat = rng.uniform(1 - config.saturation, 1 + config.saturation)
    return np.clip((np.arange(256) - 128.0) * k + 128.0 + b, 0, 255).astype(np.uint8), sat


def photometric(rng: np.random.Generator, config: AugmentConfig, *images: np.ndarray, rgb: bool = False,
                in_place: bool = False) -> list[np.ndarray]:
    """Same brightness/contrast (one lookup table) and saturation change on every image given (BGR,
    or RGB with `rgb`: the same result in the other channel order). `in_place` overwrites the images."""
    lut, sat = photometric_draws(rng, config)
    to_gray, from_gray = (cv2.COLOR_RGB2GRAY, cv2.COLOR_GRAY2RGB) if rgb else (cv2.COLOR_BGR2GRAY, cv2.COLOR_GRAY2BGR)
    out = []
    for img in images:
        dst = img if in_place else None
        img = cv2.LUT(img, lut, dst=dst)
        gray = cv2.cvtColor(cv2.cvtColor(img, to_gray), from_gray)
        out.append(cv2.addWeighted(img, sat, gray, 1 - sat, 0, dst=dst))
    return out

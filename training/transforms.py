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
    arrays are copied or flipped, the same values as the warp's at ~1/25 of its cost; for such a map an
    array of `out` may be its input itself (flipped in place, or left as it is)."""
    arrays = (bg, fg_bg, mask, depth)
    dst = out if out is not None else (None,) * 4
    mirror = pixel_exact_mirror(m, size)
    if mirror is not None and all(a.shape[:2] == (size, size) for a in arrays):
        if mirror:
            return tuple(cv2.flip(a, 1, dst=d) for a, d in zip(arrays, dst))
        if out is None:
            return tuple(a.copy() for a in arrays)
        for a, d in zip(arrays, out):
            if d is not a:
                np.copyto(d, a)
        return tuple(out)
    flags_img = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    flags_nn = cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
    border = cv2.BORDER_REFLECT_101
    return (cv2.warpAffine(bg, m, (size, size), dst=dst[0], flags=flags_img, borderMode=border),
            cv2.warpAffine(fg_bg, m, (size, size), dst=dst[1], flags=flags_img, borderMode=border),
            cv2.warpAffine(mask, m, (size, size), dst=dst[2], flags=flags_nn, borderMode=border),
            cv2.warpAffine(depth, m, (size, size), dst=dst[3], flags=flags_nn, borderMode=border))


# ITU-R BT.601 luma weights (OpenCV's RGB -> grey), in R, G, B order
GREY_WEIGHTS_RGB = (0.299, 0.587, 0.114)


def photometric_draws(rng: np.random.Generator, config: AugmentConfig, rgb: bool = True) -> np.ndarray:
    """What `photometric` draws from `rng`, as the (3, 4) float32 colour matrix it applies to each pixel (v, 1):
    contrast k about grey level 128 and brightness b (k * v + 128 * (1 - k) + b), then saturation s (a blend
    s * v + (1 - s) * grey(v)); for RGB pixels, or BGR with rgb=False. training.device_batches applies it on
    the device."""
    b = rng.uniform(-config.brightness, config.brightness) * 255
    k = rng.uniform(1 - config.contrast, 1 + config.contrast)
    sat = rng.uniform(1 - config.saturation, 1 + config.saturation)
    w = GREY_WEIGHTS_RGB if rgb else GREY_WEIGHTS_RGB[::-1]
    offset = 128.0 * (1 - k) + b  # the saturation blend keeps a grey offset: its rows sum to 1
    return np.array([[k * ((1 - sat) * w[j] + (sat if i == j else 0.0)) for j in range(3)] + [offset]
                     for i in range(3)], np.float32)


def photometric(rng: np.random.Generator, config: AugmentConfig, *images: np.ndarray, rgb: bool = False,
                in_place: bool = False) -> list[np.ndarray]:
    """The same brightness, contrast and saturation change on every image given (BGR, or RGB with `rgb`: the
    same result in the other channel order), in one pass each: cv2.transform with photometric_draws's matrix,
    rounded and saturated once at the end (~36 us a 224 px image here, a third of a lookup table, a grey
    conversion and a blend in turn). `in_place` overwrites the images."""
    matrix = photometric_draws(rng, config, rgb)
    return [cv2.transform(img, matrix, dst=img if in_place else None) for img in images]

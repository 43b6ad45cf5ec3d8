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

from pipeline.plan import mix64, uniform01

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


AUGMENT_EPOCH_STREAM = 0xA06E  # an epoch's augmentation seed: SplitMix64(seed, epoch, AUGMENT_EPOCH_STREAM)
AUGMENT_STREAM = 0xA060  # draw k of sample i: SplitMix64(the epoch's seed, i * AUGMENT_DRAWS + k, AUGMENT_STREAM)
# a sample's uniforms, in order: crop scale, angle, mirror, crop centre x, y (augment_matrix); brightness,
# contrast, saturation (colour_matrices)
AUGMENT_DRAWS = 8
GEOMETRY, COLOUR = slice(0, 5), slice(5, 8)


def augment_uniforms(seed: int, epochs: Sequence[int], samples: Sequence[int]) -> np.ndarray:
    """(N, AUGMENT_DRAWS) uniforms in [0, 1) that the augmentation of each (epoch, sample index) is made of.
    Counter-based (SplitMix64, pipeline.plan.uniform01), so a sample's augmentation depends on nothing but
    (seed, epoch, index), and a whole batch is drawn at once: ~1 us a sample, where a numpy Generator
    seeded per sample cost ~60 us in Python."""
    epochs, samples = np.asarray(epochs, np.int64), np.asarray(samples, np.int64)
    out = np.empty((len(samples), AUGMENT_DRAWS))
    draws = np.arange(AUGMENT_DRAWS, dtype=np.int64)
    for epoch in np.unique(epochs):
        rows = epochs == epoch
        epoch_seed = int(mix64(seed, np.array([epoch], np.int64), AUGMENT_EPOCH_STREAM)[0])
        out[rows] = uniform01(epoch_seed, samples[rows, None] * AUGMENT_DRAWS + draws, AUGMENT_STREAM)
    return out


def augment_matrix(u: np.ndarray, size: int, config: AugmentConfig) -> np.ndarray:
    """A 2x3 affine map from output pixels to input pixels: random crop-scale, rotation, mirror, from a sample's
    uniforms (a row of augment_uniforms; the first five are used). With the default geometry (no crop, no
    rotation) it is exactly the identity or the mirror (pixel_exact_mirror)."""
    u_scale, u_angle, u_flip, u_x, u_y = u[GEOMETRY].tolist()
    scale = config.min_scale + (1.0 - config.min_scale) * u_scale
    angle = math.radians(config.max_rotation_deg * (2.0 * u_angle - 1.0))
    crop = scale * size
    cx = crop / 2 + (size - crop) * u_x
    cy = crop / 2 + (size - crop) * u_y
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    fx = -1.0 if u_flip < config.hflip else 1.0
    # output pixel u (centred) -> input = centre + R * S * diag(fx, 1) * u
    a, b, d, e = c * fx, -s, s * fx, c
    half = (size - 1) / 2
    return np.array([[a, b, cx - 0.5 - (a * half + b * half)], [d, e, cy - 0.5 - (d * half + e * half)]])


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


def colour_matrices(u: np.ndarray, config: AugmentConfig, rgb: bool = True) -> np.ndarray:
    """(N, 3, 4) float32: each sample's colour matrix, applied to every pixel (v, 1) of both its images, from
    its uniforms (N, AUGMENT_DRAWS) (augment_uniforms; the last three are used): contrast k about grey level
    128 and brightness b (k * v + 128 * (1 - k) + b), then saturation s (a blend s * v + (1 - s) * grey(v)); for
    RGB pixels, or BGR with rgb=False. training.device_batches applies them on the device."""
    u = np.asarray(u, np.float64)[:, COLOUR]
    b = config.brightness * (2.0 * u[:, 0] - 1.0) * 255
    k = 1.0 + config.contrast * (2.0 * u[:, 1] - 1.0)
    sat = 1.0 + config.saturation * (2.0 * u[:, 2] - 1.0)
    w = np.array(GREY_WEIGHTS_RGB if rgb else GREY_WEIGHTS_RGB[::-1])
    out = np.empty((len(u), 3, 4))
    out[:, :, :3] = (k * (1 - sat))[:, None, None] * w + (k * sat)[:, None, None] * np.eye(3)
    out[:, :, 3] = (128.0 * (1 - k) + b)[:, None]  # the saturation blend keeps a grey offset: its rows sum to 1
    return out.astype(np.float32)


def photometric(colour: np.ndarray, *images: np.ndarray, in_place: bool = False) -> list[np.ndarray]:
    """The same brightness, contrast and saturation change on every image given: one pass each, cv2.transform
    with a sample's (3, 4) colour matrix (colour_matrices, for the images' channel order), rounded and saturated
    once at the end (~36 us a 224 px image here, a third of a lookup table, a grey conversion and a blend in
    turn). `in_place` overwrites the images."""
    return [cv2.transform(img, colour, dst=img if in_place else None) for img in images]

"""Pure image math that brings user images to the dataset's form: orientation, pixel type, the
square fit of backgrounds, the tight crop and bounded size of foregrounds, and depth normalisation.

No files here (pipeline.sources reads them); every function takes and returns arrays, so each rule
is tested alone and documented once (docs/inputs.md).
"""
from __future__ import annotations

import cv2
import numpy as np

from .compose import ALPHA_MASK_THRESHOLD, depth_to_uint16

EXIF_ORIENTATION_TAG = 0x0112


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """The image as a viewer shows it, given its EXIF orientation (1-8; anything else: as stored)."""
    transforms = {
        2: lambda a: a[:, ::-1],  # mirrored left-right
        3: lambda a: a[::-1, ::-1],  # rotated 180
        4: lambda a: a[::-1],  # mirrored top-bottom
        5: lambda a: a.swapaxes(0, 1),  # transposed
        6: lambda a: a.swapaxes(0, 1)[:, ::-1],  # stored rotated 90 counter-clockwise: turn it clockwise
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),  # transversed
        8: lambda a: a.swapaxes(0, 1)[::-1],  # stored rotated 90 clockwise: turn it counter-clockwise
    }
    transform = transforms.get(int(orientation))
    return image if transform is None else np.ascontiguousarray(transform(image))


def to_uint8(values: np.ndarray) -> np.ndarray:
    """8-bit copy of an 8-bit, 16-bit (rounded v * 255 / 65535) or float ([0, 1], clipped) image."""
    if values.dtype == np.uint8:
        return values
    if values.dtype == np.uint16:
        return ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if values.dtype in (np.float32, np.float64):
        if not np.isfinite(values).all():
            raise ValueError("image holds NaN or infinite values")
        return np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ValueError(f"unsupported pixel type {values.dtype} (expected 8-bit, 16-bit or float)")


def split_colour_alpha(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(BGR uint8, alpha uint8 or None) of a decoded image: grayscale is repeated over three
    channels, 16-bit and float images are brought to 8 bits, a fourth channel is the alpha."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"unsupported image shape {image.shape}")
    image = to_uint8(image)
    channels = image.shape[2]
    alpha = image[:, :, channels - 1].copy() if channels in (2, 4) else None
    colour = image[:, :, :1] if channels <= 2 else image[:, :, :3]
    if colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)
    return np.ascontiguousarray(colour), alpha


def fit_square_geometry(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """(scaled height, scaled width, top, left) of the fit rule: scale so the shorter side is `size`,
    then keep the centre `size` x `size` (the longer side loses equal margins, the extra pixel of an
    odd margin at the bottom/right)."""
    scale = size / min(height, width)
    scaled_h = size if height <= width else max(size, round(height * scale))
    scaled_w = size if width <= height else max(size, round(width * scale))
    return scaled_h, scaled_w, (scaled_h - size) // 2, (scaled_w - size) // 2


def resize(image: np.ndarray, height: int, width: int, enlarge: int = cv2.INTER_LINEAR) -> np.ndarray:
    """`image` at height x width: area-averaging when shrinking, `enlarge` otherwise; unchanged if already so."""
    if image.shape[:2] == (height, width):
        return image
    shrinking = height * width < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else enlarge)


def fit_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize (area-averaging when shrinking, bicubic when enlarging) and centre-crop to size x size."""
    height, width = image.shape[:2]
    scaled_h, scaled_w, top, left = fit_square_geometry(height, width, size)
    image = resize(image, scaled_h, scaled_w, enlarge=cv2.INTER_CUBIC)
    return np.ascontiguousarray(image[top : top + size, left : left + size])


def fit_depth_square(depth: np.ndarray, image_shape: tuple[int, int], size: int) -> np.ndarray:
    """A background's float depth map brought to size x size by the same rule as its image.

    The map may be at the image's resolution or at any other resolution of the same aspect ratio
    (within 1%), as depth networks often produce; it is first resampled to the image's size."""
    height, width = image_shape
    depth = resize(depth.astype(np.float32, copy=False), height, width)
    scaled_h, scaled_w, top, left = fit_square_geometry(height, width, size)
    depth = resize(depth, scaled_h, scaled_w)
    return np.ascontiguousarray(depth[top : top + size, left : left + size])


def same_aspect(shape_a: tuple[int, int], shape_b: tuple[int, int], tolerance: float = 0.01) -> bool:
    ratio_a = shape_a[1] / shape_a[0]
    ratio_b = shape_b[1] / shape_b[0]
    return abs(ratio_a / ratio_b - 1.0) <= tolerance


def crop_to_alpha(bgra: np.ndarray) -> np.ndarray:
    """The tight box around every pixel with alpha > 0; an alpha with no pixel >= 128 (no mask) is an error."""
    alpha = bgra[:, :, 3]
    if not (alpha >= ALPHA_MASK_THRESHOLD).any():
        raise ValueError(f"alpha is empty: no pixel has alpha >= {ALPHA_MASK_THRESHOLD}, so the mask would be empty")
    rows = np.flatnonzero(alpha.any(axis=1))
    cols = np.flatnonzero(alpha.any(axis=0))
    return np.ascontiguousarray(bgra[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])


def shrink_to_fit(bgra: np.ndarray, max_side: int) -> np.ndarray:
    """Scale a cut-out down (never up) so its longer side is at most `max_side`, keeping its aspect.

    Resampled with pre-multiplied alpha, so transparent pixels' colours do not bleed into the edge
    (the dark fringe a plain resize of BGRA leaves)."""
    height, width = bgra.shape[:2]
    if max(height, width) <= max_side:
        return bgra
    scale = max_side / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    alpha = bgra[:, :, 3:4].astype(np.float32) / 255.0
    premultiplied = np.concatenate([bgra[:, :, :3].astype(np.float32) * alpha, alpha * 255.0], axis=2)
    small = cv2.resize(premultiplied, (new_w, new_h), interpolation=cv2.INTER_AREA)
    small_alpha = small[:, :, 3:4] / 255.0
    colour = np.divide(small[:, :, :3], small_alpha, out=np.zeros_like(small[:, :, :3]), where=small_alpha > 1e-6)
    out = np.concatenate([colour, small[:, :, 3:4]], axis=2)
    return np.rint(np.clip(out, 0.0, 255.0)).astype(np.uint8)


def prepare_cutout(bgra: np.ndarray, max_side: int) -> np.ndarray:
    """A user foreground as the build composes it: tightly cropped to its alpha, then bounded in size."""
    small = shrink_to_fit(crop_to_alpha(bgra), max_side)
    if not (small[:, :, 3] >= ALPHA_MASK_THRESHOLD).any():
        raise ValueError(f"alpha is empty after scaling down to {max_side} px: the object is too thin")
    return crop_to_alpha(small)


DEPTH_KINDS = ("depth", "inverse")


def normalise_depth(values: np.ndarray, kind: str, far: float | None = None) -> np.ndarray:
    """A depth or inverse-depth map -> normalised depth on [0, 1] (float64; 1 = farthest).

    kind "depth": values grow with distance (any unit). kind "inverse": values shrink with distance
    (disparity, MiDaS-like output); depth = 1 / value, and values <= 0 are infinitely far (1.0).
    Scale: depth / far, clipped to [0, 1]; without `far`, the map's own farthest finite depth is 1.0
    (relative depth, per image)."""
    if kind not in DEPTH_KINDS:
        raise ValueError(f"depth kind must be one of {', '.join(DEPTH_KINDS)}, got {kind!r}")
    values = np.asarray(values, np.float64)
    if not np.isfinite(values).all():
        raise ValueError("depth map holds NaN or infinite values")
    if kind == "depth":
        if (values < 0).any():
            raise ValueError("depth map holds negative depths")
        depth = values
        infinite = np.zeros(values.shape, bool)
    else:
        infinite = values <= 0
        depth = np.divide(1.0, values, out=np.zeros_like(values), where=~infinite)
    scale = far if far is not None else (depth[~infinite].max() if (~infinite).any() else 0.0)
    if not scale > 0:
        raise ValueError("depth map is flat at zero distance (every value 0): nothing to normalise"
                         if kind == "depth" else "inverse depth map has no positive value: everything is at infinity")
    normalised = np.clip(depth / scale, 0.0, 1.0)
    normalised[infinite] = 1.0
    return normalised


def depth_map_to_uint16(values: np.ndarray, kind: str, far: float | None = None) -> np.ndarray:
    """Normalised depth as the dataset stores it (uint16, value / 65535, at least 1)."""
    return depth_to_uint16(normalise_depth(values, kind, far), 1.0)

"""Camera effects as loader augmentation: what a real photo pair has and a clean composite lacks.

- JPEG round trip of fg_bg (`jpeg_quality`: one quality or a (low, high) range drawn per sample), so a
  network trained on recipe datasets (whose composites are never JPEG-encoded) sees the artefacts it
  sees on materialised or real JPEG data;
- sensor noise: Gaussian, a standard deviation (0-255 scale) drawn up to `noise_std` per sample, drawn
  independently on bg and fg_bg (two exposures);
- mild blur: a Gaussian of sigma drawn up to `blur_sigma`, the same on both images (one lens).

Pure functions of (rng, config, images); torch-free (the CLI builds the config for --help at once).
Off by default. Applied to the training split of either dataset kind, after the augmentation.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .config_errors import ConfigValueError


@dataclass(frozen=True)
class CameraEffects:
    jpeg_quality: tuple[int, int] | None = None  # (low, high), inclusive; None: no JPEG round trip
    noise_std: float = 0.0  # largest sensor-noise standard deviation, 0-255 scale (0: none)
    blur_sigma: float = 0.0  # largest Gaussian blur sigma in pixels (0: none)

    def __post_init__(self) -> None:
        q = self.jpeg_quality
        if q is not None:
            q = (int(q), int(q)) if isinstance(q, (int, np.integer)) else tuple(int(v) for v in q)
            object.__setattr__(self, "jpeg_quality", q)
            if len(q) != 2 or not 1 <= q[0] <= q[1] <= 100:
                raise ConfigValueError("jpeg_quality", "expected a quality or LOW-HIGH within 1..100, got "
                                       f"{self.jpeg_quality!r}")
        if not 0 <= self.noise_std <= 50:
            raise ConfigValueError("noise_std", f"expected a standard deviation in [0, 50], got {self.noise_std!r}")
        if not 0 <= self.blur_sigma <= 5:
            raise ConfigValueError("blur_sigma", f"expected a sigma in [0, 5] pixels, got {self.blur_sigma!r}")

    @property
    def active(self) -> bool:
        return self.jpeg_quality is not None or self.noise_std > 0 or self.blur_sigma > 0


def parse_jpeg_quality(text: str | None) -> tuple[int, int] | None:
    """'90' -> (90, 90), '60-95' -> (60, 95); None or '' -> None. A bad value is a ConfigValueError about
    `jpeg_quality` (a ValueError); a wrong quality is CameraEffects' to refuse."""
    if not text:
        return None
    try:
        parts = [int(v) for v in str(text).split("-")]
    except ValueError:
        raise ConfigValueError("jpeg_quality", f"expected a quality such as 90 or a range such as 60-95, "
                               f"got {text!r}") from None
    return (parts[0], parts[-1]) if len(parts) in (1, 2) else (0, 0)


def jpeg_roundtrip(image: np.ndarray, quality: int, *, rgb: bool = True) -> np.ndarray:
    """The image JPEG-encoded (4:2:0, as the dataset's codec) and decoded again, same channel order."""
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if rgb else image
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    out = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return cv2.cvtColor(out, cv2.COLOR_BGR2RGB) if rgb else out


def add_noise(rng: np.random.Generator, image: np.ndarray, std: float) -> np.ndarray:
    noisy = image.astype(np.float32) + rng.normal(0.0, std, image.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def apply_camera_effects(rng: np.random.Generator, effects: CameraEffects, bg: np.ndarray,
                         fg_bg: np.ndarray) -> None:
    """The effects on one sample's bg and fg_bg (uint8 HWC, RGB), in place; parameters drawn from `rng`."""
    if effects.blur_sigma > 0:
        sigma = rng.uniform(0.0, effects.blur_sigma)
        if sigma > 0.05:
            for img in (bg, fg_bg):
                cv2.GaussianBlur(img, (0, 0), sigma, dst=img)
    if effects.noise_std > 0:
        std = rng.uniform(0.0, effects.noise_std)
        for img in (bg, fg_bg):
            np.copyto(img, add_noise(rng, img, std))
    if effects.jpeg_quality is not None:
        low, high = effects.jpeg_quality
        np.copyto(fg_bg, jpeg_roundtrip(fg_bg, int(rng.integers(low, high + 1))))

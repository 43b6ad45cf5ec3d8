"""One codec per stored field, each a pair of encode/decode functions over standard formats
(JPEG, PNG) that any OpenCV, Pillow or browser can read. Choices measured in docs/benchmarks.md."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

DEFAULT_JPEG_QUALITY = 90


class DecodeError(ValueError):
    pass


@dataclass(frozen=True)
class JpegCodec:
    """Colour images (fg_bg, bg): baseline JPEG, 4:2:0, BGR arrays in and out."""

    quality: int = DEFAULT_JPEG_QUALITY

    def encode(self, image: np.ndarray) -> bytes:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise ValueError("JPEG encoding failed")
        return buf.tobytes()

    def decode(self, data: bytes, reduce: int = 1) -> np.ndarray:
        flag = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                8: cv2.IMREAD_REDUCED_COLOR_8}[reduce]
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
        if image is None or image.ndim != 3:
            raise DecodeError("not a decodable colour JPEG")
        return image

    def describe(self) -> dict[str, Any]:
        return {"codec": "jpeg", "quality": self.quality, "channels": 3, "dtype": "uint8",
                "channel_order_decoded_by_opencv": "BGR"}


@dataclass(frozen=True)
class BilevelPngCodec:
    """Binary masks: 1-bit PNG, lossless; decodes to 0 / 255 uint8."""

    def encode(self, mask: np.ndarray) -> bytes:
        ok, buf = cv2.imencode(".png", mask, [cv2.IMWRITE_PNG_BILEVEL, 1])
        if not ok:
            raise ValueError("PNG encoding failed")
        return buf.tobytes()

    def decode(self, data: bytes) -> np.ndarray:
        mask = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if mask is None or mask.ndim != 2 or mask.dtype != np.uint8:
            raise DecodeError("not a decodable 1-channel PNG mask")
        return mask

    def describe(self) -> dict[str, Any]:
        return {"codec": "png", "bit_depth": 1, "channels": 1, "dtype": "uint8", "values": [0, 255]}


@dataclass(frozen=True)
class Png16Codec:
    """Depth: 16-bit grayscale PNG, lossless. Read back with IMREAD_UNCHANGED (IMREAD_GRAYSCALE
    would silently drop to 8 bits)."""

    compression: int = 1
    png_filter: int = cv2.IMWRITE_PNG_FILTER_UP

    def encode(self, depth: np.ndarray) -> bytes:
        if depth.dtype != np.uint16:
            raise ValueError(f"depth must be uint16, got {depth.dtype}")
        params = [cv2.IMWRITE_PNG_COMPRESSION, self.compression, cv2.IMWRITE_PNG_FILTER, self.png_filter]
        ok, buf = cv2.imencode(".png", depth, params)
        if not ok:
            raise ValueError("PNG encoding failed")
        return buf.tobytes()

    def decode(self, data: bytes) -> np.ndarray:
        depth = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if depth is None or depth.ndim != 2 or depth.dtype != np.uint16:
            raise DecodeError("not a decodable 16-bit 1-channel PNG")
        return depth

    def describe(self) -> dict[str, Any]:
        return {"codec": "png", "bit_depth": 16, "channels": 1, "dtype": "uint16"}


@dataclass(frozen=True)
class FieldCodecs:
    fg_bg: JpegCodec
    mask: BilevelPngCodec
    depth: Png16Codec

    def describe(self) -> dict[str, Any]:
        return {"fg_bg": self.fg_bg.describe(), "bg": self.fg_bg.describe(),
                "mask": self.mask.describe(), "depth": self.depth.describe()}


def default_codecs(jpeg_quality: int = DEFAULT_JPEG_QUALITY) -> FieldCodecs:
    return FieldCodecs(fg_bg=JpegCodec(jpeg_quality), mask=BilevelPngCodec(), depth=Png16Codec())


def codecs_from_manifest(description: dict[str, Any]) -> FieldCodecs:
    """Readers decode with what the manifest says was written."""
    return FieldCodecs(
        fg_bg=JpegCodec(int(description["fg_bg"].get("quality", DEFAULT_JPEG_QUALITY))),
        mask=BilevelPngCodec(),
        depth=Png16Codec(),
    )

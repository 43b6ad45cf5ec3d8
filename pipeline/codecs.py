"""One codec per stored field, each a pair of encode/decode functions over standard formats
(JPEG, PNG) that any OpenCV, Pillow or browser can read. Choices measured in docs/benchmarks.md."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

DEFAULT_JPEG_QUALITY = 90
DEPTH_MAX = 65535  # a stored depth value / DEPTH_MAX = normalised depth on [0, 1]

# OpenCV >= 4.10 decodes a JPEG straight to RGB (IMREAD_COLOR_RGB, which replaces IMREAD_COLOR's colour
# bit and combines with the reduced-scale bits); older versions decode BGR and convert.
_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)
_IMREAD_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                   8: cv2.IMREAD_REDUCED_COLOR_8}


class DecodeError(ValueError):
    """A stored field that its codec cannot decode; the messages are made here, by the functions below."""

    @classmethod
    def not_jpeg(cls) -> "DecodeError":
        return cls("not a decodable colour JPEG")

    @classmethod
    def not_mask_png(cls) -> "DecodeError":
        return cls("not a decodable 1-channel PNG mask")

    @classmethod
    def not_depth_png(cls) -> "DecodeError":
        return cls("not a decodable 16-bit 1-channel PNG")

    @classmethod
    def box_outside(cls, w: int, h: int, x: int, y: int) -> "DecodeError":
        return cls(f"depth box {w}x{h} at ({x}, {y}) falls outside the image")

    @classmethod
    def wrong_shape(cls, shape: tuple[int, ...], expected: tuple[int, ...]) -> "DecodeError":
        return cls(f"depth is {shape}, expected {expected}")


@dataclass(frozen=True)
class JpegCodec:
    """Colour images (fg_bg, bg): baseline JPEG, 4:2:0, BGR arrays in and out."""

    quality: int = DEFAULT_JPEG_QUALITY

    def encode(self, image: np.ndarray) -> bytes:
        # optimized Huffman tables: ~5% smaller, the same decoded pixels
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality, cv2.IMWRITE_JPEG_OPTIMIZE, 1])
        if not ok:
            raise ValueError("JPEG encoding failed")
        return buf.tobytes()

    def decode(self, data: bytes, reduce: int = 1, *, rgb: bool = False) -> np.ndarray:
        """The image at 1/`reduce` scale (1, 2, 4, 8: the DCT's own reduction), BGR, or RGB with `rgb`: the
        same pixels, channels reversed (straight from the decoder where OpenCV can)."""
        buf = np.frombuffer(data, np.uint8)
        if not rgb:
            image = cv2.imdecode(buf, _IMREAD_REDUCED[reduce])
        elif _IMREAD_RGB is not None:
            image = cv2.imdecode(buf, (_IMREAD_REDUCED[reduce] & ~cv2.IMREAD_COLOR) | _IMREAD_RGB)
        else:
            image = cv2.imdecode(buf, _IMREAD_REDUCED[reduce])
            if image is not None and image.ndim == 3:
                image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        if image is None or image.ndim != 3:
            raise DecodeError.not_jpeg()
        return image

    def describe(self) -> dict[str, Any]:
        return {"codec": "jpeg", "quality": self.quality, "optimized_huffman": True, "channels": 3, "dtype": "uint8",
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
            raise DecodeError.not_mask_png()
        return mask

    def describe(self) -> dict[str, Any]:
        return {"codec": "png", "bit_depth": 1, "channels": 1, "dtype": "uint8", "values": [0, 255]}


@dataclass(frozen=True)
class Png16Codec:
    """Depth: 16-bit grayscale PNG, lossless. Read back with IMREAD_UNCHANGED (IMREAD_GRAYSCALE
    would silently drop to 8 bits).

    With `background_relative`, a sample's PNG covers only the object's box (top-left at the
    record's x, y) and holds the depth where it differs from the background's depth (stored once in
    backgrounds.lmdb), 0 where it does not: ~0.2 KB instead of ~7 KB for a perspective scene whose
    background depth repeats in thousands of samples. Stored depths are never 0
    (`compose.depth_to_uint16` clips to >= 1), so 0 unambiguously means "the background's".
    """

    background_relative: bool = True
    compression: int = 1
    png_filter: int = cv2.IMWRITE_PNG_FILTER_UP

    def _png(self, image: np.ndarray) -> bytes:
        params = [cv2.IMWRITE_PNG_COMPRESSION, self.compression, cv2.IMWRITE_PNG_FILTER, self.png_filter]
        ok, buf = cv2.imencode(".png", image, params)
        if not ok:
            raise ValueError("PNG encoding failed")
        return buf.tobytes()

    def encode(self, depth: np.ndarray, background: np.ndarray | None = None,
               box: tuple[int, int, int, int] | None = None) -> bytes:
        """`box` = (x, y, width, height) of the object, needed when background_relative."""
        if depth.dtype != np.uint16:
            raise ValueError(f"depth must be uint16, got {depth.dtype}")
        if not self.background_relative:
            return self._png(depth)
        x, y, w, h = box
        patch, base = depth[y : y + h, x : x + w], background[y : y + h, x : x + w]
        if not patch.all():
            raise ValueError("a depth of 0 cannot be stored background-relative (0 means 'unchanged')")
        outside = depth != background
        outside[y : y + h, x : x + w] = False
        if outside.any():
            raise ValueError("depth differs from the background outside the object's box; store it in full")
        return self._png(np.where(patch != base, patch, np.uint16(0)))

    def decode(self, data: bytes, background: np.ndarray | None = None,
               origin: tuple[int, int] | None = None, *, out: np.ndarray | None = None) -> np.ndarray:
        """`origin` = the record's (x, y), needed when background_relative: the box is pasted into a copy of
        `background`. `out`: a uint16 array of the full depth's shape to decode into (no new array)."""
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if image is None or image.ndim != 2 or image.dtype != np.uint16:
            raise DecodeError.not_depth_png()
        if not self.background_relative:
            if out is None:
                return image
            if image.shape != out.shape:
                raise DecodeError.wrong_shape(image.shape, out.shape)
            np.copyto(out, image)
            return out
        if background is None or origin is None:
            raise DecodeError("a background-relative depth needs its background's depth and the record's x, y")
        x, y = origin
        h, w = image.shape
        if x < 0 or y < 0 or y + h > background.shape[0] or x + w > background.shape[1]:
            raise DecodeError.box_outside(w, h, x, y)
        if out is None:
            out = background.copy()
        else:
            np.copyto(out, background)
        np.copyto(out[y : y + h, x : x + w], image, where=image != 0)
        return out

    def describe(self) -> dict[str, Any]:
        out = {"codec": "png", "bit_depth": 16, "channels": 1, "dtype": "uint16"}
        if self.background_relative:
            out["transform"] = BACKGROUND_RELATIVE_BOX
            out["reconstruct"] = ("depth = copy of backgrounds[record.bg].depth; the PNG covers the box at "
                                  "(record.x, record.y); where its value is not 0 it replaces the depth")
        return out


# How a sample's depth is stored has three names, one per layer. This is the one place that says how
# they map (the CLI's choice list and the options' check are built from DEPTH_STORAGE):
#   --depth-storage (CLI, BuildOptions,   Png16Codec               manifest fields.depth
#   build.content.depth_storage)          .background_relative     .transform
#   delta                                 True                     "background_relative_box"
#   full                                  False                    (absent)
BACKGROUND_RELATIVE_BOX = "background_relative_box"
DEPTH_STORAGE: dict[str, str | None] = {"delta": BACKGROUND_RELATIVE_BOX, "full": None}  # CLI word -> transform


@dataclass(frozen=True)
class FieldCodecs:
    fg_bg: JpegCodec
    mask: BilevelPngCodec
    depth: Png16Codec  # per-sample depth (delta-coded or full)
    background_depth: Png16Codec = Png16Codec(background_relative=False)

    def describe(self) -> dict[str, Any]:
        return {"fg_bg": self.fg_bg.describe(), "bg": self.fg_bg.describe(),
                "mask": self.mask.describe(), "depth": self.depth.describe(),
                "bg_depth": self.background_depth.describe()}


def default_codecs(jpeg_quality: int = DEFAULT_JPEG_QUALITY, depth_storage: str = "delta") -> FieldCodecs:
    return FieldCodecs(fg_bg=JpegCodec(jpeg_quality), mask=BilevelPngCodec(),
                       depth=Png16Codec(background_relative=DEPTH_STORAGE.get(depth_storage) is not None))


def codecs_from_manifest(description: dict[str, Any]) -> FieldCodecs:
    """Readers decode with what the manifest says was written."""
    return FieldCodecs(
        fg_bg=JpegCodec(int(description["fg_bg"].get("quality", DEFAULT_JPEG_QUALITY))),
        mask=BilevelPngCodec(),
        depth=Png16Codec(background_relative=description["depth"].get("transform") == BACKGROUND_RELATIVE_BOX),
    )

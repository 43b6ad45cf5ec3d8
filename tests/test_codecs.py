"""pipeline.codecs: lossless mask and depth PNGs, JPEG colour images."""
from __future__ import annotations

import json
import struct

import cv2
import numpy as np
import pytest

from pipeline.codecs import (
    BilevelPngCodec,
    DecodeError,
    JpegCodec,
    Png16Codec,
    codecs_from_manifest,
    default_codecs,
)


def _png_header(data: bytes) -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) from a PNG's IHDR chunk."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height, bit_depth, colour = struct.unpack(">IIBB", data[16:26])
    return width, height, bit_depth, colour


def test_mask_round_trip_exact_and_binary():
    rng = np.random.default_rng(0)
    mask = np.where(rng.random((37, 53)) < 0.3, 255, 0).astype(np.uint8)
    codec = BilevelPngCodec()
    data = codec.encode(mask)
    assert _png_header(data) == (53, 37, 1, 0)  # 1-bit greyscale
    back = codec.decode(data)
    assert back.dtype == np.uint8 and back.shape == mask.shape
    assert np.array_equal(back, mask)
    assert set(np.unique(back).tolist()) <= {0, 255}
    # an empty and a full mask survive too
    for const in (0, 255):
        m = np.full((8, 9), const, np.uint8)
        assert np.array_equal(codec.decode(codec.encode(m)), m)
    # a standard reader sees the same thing
    assert np.array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE), mask)


def test_depth_round_trip_exact_16_bit():
    rng = np.random.default_rng(1)
    depth = rng.integers(0, 65536, (41, 29), dtype=np.uint16)
    depth[0, 0], depth[0, 1], depth[0, 2] = 0, 65535, 256
    codec = Png16Codec(background_relative=False)  # how backgrounds (and --depth-storage full) are stored
    data = codec.encode(depth)
    assert _png_header(data) == (29, 41, 16, 0)  # 16-bit greyscale
    back = codec.decode(data)
    assert back.dtype == np.uint16
    assert np.array_equal(back, depth)
    assert (back > 255).any()
    # IMREAD_UNCHANGED matters: the greyscale flag would have dropped to 8 bits
    lossy = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert lossy.dtype == np.uint8
    # smooth depth (the real case) as well
    smooth = np.tile(np.linspace(1000, 60000, 64).astype(np.uint16), (48, 1))
    assert np.array_equal(codec.decode(codec.encode(smooth)), smooth)


def test_depth_encode_rejects_other_dtypes():
    for codec in (Png16Codec(), Png16Codec(background_relative=False)):
        with pytest.raises(ValueError, match="uint16"):
            codec.encode(np.zeros((4, 4), np.uint8))
        with pytest.raises(ValueError):
            codec.encode(np.zeros((4, 4), np.float32))


def _scene_with_object(rng):
    background = rng.integers(1, 65536, (60, 80), dtype=np.uint16)
    depth = background.copy()
    x, y, w, h = 23, 31, 17, 11
    box = depth[y:y + h, x:x + w]
    on = rng.random((h, w)) < 0.6
    box[on] = 300  # the object's (nearer) depth, > 255
    return background, depth, (x, y, w, h), on


def test_background_relative_depth_round_trip():
    rng = np.random.default_rng(2)
    background, depth, (x, y, w, h), on = _scene_with_object(rng)
    codec = Png16Codec()
    assert codec.background_relative  # the default for sample depths
    data = codec.encode(depth, background, (x, y, w, h))
    assert _png_header(data) == (w, h, 16, 0)  # only the object's box is stored
    patch = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    # 0 where the background's depth stays, the depth where it changed
    assert np.array_equal(patch, np.where(on, 300, 0).astype(np.uint16))
    back = codec.decode(data, background, (x, y))
    assert back.dtype == np.uint16 and back.shape == depth.shape
    assert np.array_equal(back, depth)
    assert not np.shares_memory(back, background)
    # much smaller than the full image
    assert len(data) < len(Png16Codec(background_relative=False).encode(depth)) / 4


def test_background_relative_depth_refuses_what_it_cannot_store():
    rng = np.random.default_rng(3)
    background, depth, box, _ = _scene_with_object(rng)
    codec = Png16Codec()
    zero = depth.copy()
    zero[box[1], box[0]] = 0  # 0 is reserved for "the background's"
    with pytest.raises(ValueError, match="0"):
        codec.encode(zero, background, box)
    outside = depth.copy()
    outside[0, 0] = background[0, 0] ^ 1  # a change outside the object's box
    with pytest.raises(ValueError, match="outside"):
        codec.encode(outside, background, box)
    data = codec.encode(depth, background, box)
    with pytest.raises(DecodeError, match="background"):
        codec.decode(data)  # needs the background's depth and the origin
    with pytest.raises(DecodeError, match="outside"):
        codec.decode(data, background, (70, 55))  # the box would fall off the image
    with pytest.raises(DecodeError):
        codec.decode(b"\x89PNG garbage", background, (0, 0))


def test_jpeg_decode_shape_and_quality():
    yy, xx = np.mgrid[0:96, 0:128]
    image = np.stack([xx * 2, yy * 2, (xx + yy)], axis=2).astype(np.uint8)
    codec = JpegCodec(90)
    data = codec.encode(image)
    assert data[:2] == b"\xff\xd8"
    back = codec.decode(data)
    assert back.shape == (96, 128, 3) and back.dtype == np.uint8
    assert np.abs(back.astype(int) - image.astype(int)).mean() < 2.0
    assert codec.decode(data, reduce=2).shape == (48, 64, 3)
    assert codec.decode(data, reduce=4).shape == (24, 32, 3)
    # lower quality -> fewer bytes
    assert len(JpegCodec(30).encode(image)) < len(data)


def test_decoders_reject_wrong_payloads():
    jpeg = JpegCodec().encode(np.zeros((8, 8, 3), np.uint8))
    mask_png = BilevelPngCodec().encode(np.zeros((8, 8), np.uint8))
    with pytest.raises(DecodeError):
        JpegCodec().decode(b"not an image")
    with pytest.raises(DecodeError):
        BilevelPngCodec().decode(jpeg)  # a colour image is not a mask
    with pytest.raises(DecodeError):
        Png16Codec().decode(mask_png)  # 8-bit is not depth
    with pytest.raises(DecodeError):
        Png16Codec().decode(jpeg[: len(jpeg) // 2] + b"\0")
    assert issubclass(DecodeError, ValueError)


def test_describe_and_from_manifest():
    codecs = default_codecs(77)
    description = codecs.describe()
    assert description["fg_bg"]["codec"] == "jpeg" and description["fg_bg"]["quality"] == 77
    assert description["fg_bg"]["channels"] == 3 and description["fg_bg"]["dtype"] == "uint8"
    assert description["fg_bg"]["channel_order_decoded_by_opencv"] == "BGR"
    assert description["bg"] == description["fg_bg"]
    assert description["mask"]["bit_depth"] == 1 and description["mask"]["values"] == [0, 255]
    assert description["depth"]["bit_depth"] == 16 and description["depth"]["dtype"] == "uint16"
    assert description["depth"]["transform"] == "background_relative_box"
    assert "transform" not in description["bg_depth"] and description["bg_depth"]["bit_depth"] == 16
    again = codecs_from_manifest(json.loads(json.dumps(description)))
    assert again.fg_bg.quality == 77 and again.depth.background_relative
    assert again.describe() == description
    full = default_codecs(90, "full").describe()
    assert "transform" not in full["depth"]
    assert not codecs_from_manifest(full).depth.background_relative


def test_optimized_jpeg_decodes_like_baseline():
    rng = np.random.default_rng(4)
    image = cv2.GaussianBlur(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), (5, 5), 2)
    ok, plain = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    ours = JpegCodec(90).encode(image)
    assert np.array_equal(JpegCodec(90).decode(ours), JpegCodec(90).decode(plain.tobytes()))

"""The pure rules that bring user images to the dataset's form (pipeline.images), each alone."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from pipeline import images


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillow(orientation):
    """Every EXIF orientation gives the picture Pillow's exif_transpose shows."""
    pixels = np.random.default_rng(orientation).integers(0, 255, (5, 8, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[images.EXIF_ORIENTATION_TAG] = orientation
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buffer.getvalue()))))
    assert np.array_equal(images.apply_orientation(pixels, orientation), expected)


def test_unknown_orientation_leaves_the_image():
    pixels = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert images.apply_orientation(pixels, 0) is pixels
    assert images.apply_orientation(pixels, 9) is pixels


def test_to_uint8_rounds_16_bit_and_clips_float():
    assert images.to_uint8(np.array([0, 257, 32768, 65535], np.uint16)).tolist() == [0, 1, 128, 255]
    assert images.to_uint8(np.array([-0.5, 0.5, 2.0], np.float32)).tolist() == [0, 128, 255]
    with pytest.raises(ValueError, match="NaN"):
        images.to_uint8(np.array([np.nan], np.float32))
    with pytest.raises(ValueError, match="int32"):
        images.to_uint8(np.zeros(2, np.int32))


def test_split_colour_alpha_kinds():
    grey = np.full((2, 2), 7, np.uint8)
    colour, alpha = images.split_colour_alpha(grey)
    assert colour.shape == (2, 2, 3) and (colour == 7).all() and alpha is None
    grey_alpha = np.dstack([grey, np.full((2, 2), 200, np.uint8)])
    colour, alpha = images.split_colour_alpha(grey_alpha)
    assert (colour == 7).all() and (alpha == 200).all()
    bgra = np.dstack([np.zeros((2, 2, 3), np.uint16), np.full((2, 2), 65535, np.uint16)])
    colour, alpha = images.split_colour_alpha(bgra)
    assert colour.dtype == np.uint8 and (alpha == 255).all()


@pytest.mark.parametrize("shape, expected", [
    ((480, 640), (224, 299, 0, 37)),  # landscape: the width loses 75 px, 37 left and 38 right
    ((640, 480), (299, 224, 37, 0)),  # portrait
    ((224, 224), (224, 224, 0, 0)),
    ((100, 150), (224, 336, 0, 56)),  # small photos are enlarged
])
def test_fit_square_geometry(shape, expected):
    assert images.fit_square_geometry(*shape, 224) == expected


def test_fit_square_keeps_the_centre():
    image = np.zeros((300, 600, 3), np.uint8)
    image[:, 295:305] = 255  # a stripe in the middle stays in the middle
    fitted = images.fit_square(image, 100)
    assert fitted.shape == (100, 100, 3)
    cols = np.flatnonzero(fitted[50, :, 0] > 128)
    assert abs((cols[0] + cols[-1]) / 2 - 49.5) <= 1


def test_fit_depth_square_resamples_a_low_resolution_map():
    depth = np.tile(np.linspace(0, 1, 30, dtype=np.float32)[:, None], (1, 40))  # 3:4, half the image's size
    fitted = images.fit_depth_square(depth, (60, 80), 30)
    assert fitted.shape == (30, 30)
    assert fitted[0, 0] < 0.05 and fitted[-1, 0] > 0.95  # top to bottom kept
    assert images.same_aspect((30, 40), (60, 80)) and not images.same_aspect((30, 40), (40, 40))


def test_crop_to_alpha_is_tight_and_refuses_empty_alpha():
    bgra = np.zeros((10, 12, 4), np.uint8)
    bgra[2:5, 3:9, 3] = 255
    bgra[6, 3, 3] = 10  # a faint pixel still belongs to the cut-out's box
    assert images.crop_to_alpha(bgra).shape == (5, 6, 4)
    bgra[:, :, 3] = np.minimum(bgra[:, :, 3], 127)
    with pytest.raises(ValueError, match="alpha is empty"):
        images.crop_to_alpha(bgra)


def test_shrink_to_fit_keeps_aspect_and_edge_colour():
    """Pre-multiplied resampling: the edge of a red object on transparent black stays red, not dark."""
    bgra = np.zeros((200, 400, 4), np.uint8)
    bgra[50:150, 100:300] = (0, 0, 255, 255)
    small = images.shrink_to_fit(bgra, 100)
    assert small.shape == (50, 100, 4)
    edge = small[(small[:, :, 3] > 0) & (small[:, :, 3] < 255)]
    assert len(edge) > 0 and (edge[:, 2] >= 250).all() and (edge[:, :2] <= 2).all()
    assert images.shrink_to_fit(bgra, 400) is bgra  # never enlarged


def test_prepare_cutout_bounds_the_longer_side():
    bgra = np.zeros((300, 500, 4), np.uint8)
    bgra[20:280, 10:490] = 255
    out = images.prepare_cutout(bgra, 160)
    assert max(out.shape[:2]) <= 160 and out.shape[1] == 160


def test_normalise_depth_per_map_and_with_far():
    depth = np.array([[0.0, 5.0], [10.0, 20.0]])
    assert images.normalise_depth(depth, "depth").tolist() == [[0.0, 0.25], [0.5, 1.0]]
    assert images.normalise_depth(depth, "depth", far=10.0).tolist() == [[0.0, 0.5], [1.0, 1.0]]


def test_normalise_inverse_depth():
    disparity = np.array([[4.0, 2.0], [1.0, 0.0]])  # 0: infinitely far
    assert images.normalise_depth(disparity, "inverse").tolist() == [[0.25, 0.5], [1.0, 1.0]]


@pytest.mark.parametrize("values, kind, message", [
    ([[np.nan, 1.0]], "depth", "NaN"),
    ([[np.inf, 1.0]], "inverse", "NaN or infinite"),
    ([[-1.0, 1.0]], "depth", "negative"),
    ([[0.0, 0.0]], "depth", "every value 0"),
    ([[0.0, -2.0]], "inverse", "no positive value"),
    ([[1.0]], "disparity", "depth kind"),
])
def test_normalise_depth_refuses(values, kind, message):
    with pytest.raises(ValueError, match=message):
        images.normalise_depth(np.array(values), kind)


def test_depth_map_to_uint16_reserves_zero():
    out = images.depth_map_to_uint16(np.array([[0.0, 1.0, 2.0]]), "depth")
    assert out.dtype == np.uint16 and out.tolist() == [[1, 32768, 65535]]

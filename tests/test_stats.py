"""pipeline.stats: exact integer moments, merged by addition, giving the global mean and std."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pipeline.stats import ChannelSums, StatsAccumulator, image_sums, summarise


def _numpy_sums(image: np.ndarray) -> tuple[list[int], list[int]]:
    flat = image.reshape(image.shape[0] * image.shape[1], -1).astype(np.int64)
    return flat.sum(axis=0).tolist(), (flat * flat).sum(axis=0).tolist()


@pytest.mark.parametrize("dtype, shape", [(np.uint8, (50, 70, 3)), (np.uint8, (33, 17)),
                                          (np.uint16, (50, 70)), (np.uint16, (19, 23, 3)),
                                          (np.uint8, (224, 224, 3)), (np.uint16, (224, 224))])
def test_image_sums_exact(dtype, shape):
    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
    sums, squares = image_sums(image)
    want_sums, want_squares = _numpy_sums(image)
    assert sums == want_sums and squares == want_squares
    assert all(type(v) is int for v in sums + squares)


def test_image_sums_extremes():
    # the largest values: every product and partial sum must still be exact
    full16 = np.full((1024, 1024), 65535, np.uint16)
    sums, squares = image_sums(full16)
    assert sums == [1024 * 1024 * 65535] and squares == [1024 * 1024 * 65535 ** 2]
    full8 = np.full((512, 512, 3), 255, np.uint8)
    sums, squares = image_sums(full8)
    assert sums == [512 * 512 * 255] * 3 and squares == [512 * 512 * 255 ** 2] * 3
    with pytest.raises(ValueError, match="uint8 or uint16"):
        image_sums(np.zeros((4, 4), np.float32))


def _accumulate(images: list[np.ndarray], field: str, split: str = "train") -> StatsAccumulator:
    acc = StatsAccumulator()
    for img in images:
        acc.add_image(split, field, img)
    return acc


def test_merged_mean_std_equal_numpy_over_concatenation():
    rng = np.random.default_rng(7)
    images = [rng.integers(0, 256, (int(rng.integers(5, 40)), int(rng.integers(5, 40)), 3), dtype=np.uint8)
              for _ in range(12)]
    # accumulate in three separate pieces (as shards do) and merge
    pieces = [_accumulate(images[i::3], "fg_bg") for i in range(3)]
    merged = StatsAccumulator()
    for piece in pieces:
        merged.merge(StatsAccumulator.from_json(json.loads(json.dumps(piece.to_json()))))
    mean, std = merged.total()["fg_bg"].mean_std(255)
    pixels = np.concatenate([img.reshape(-1, 3) for img in images]).astype(np.float64) / 255.0
    assert merged.total()["fg_bg"].pixels == pixels.shape[0]
    np.testing.assert_allclose(mean, pixels.mean(axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(std, pixels.std(axis=0), rtol=0, atol=1e-12)


def test_uint16_depth_mean_std():
    rng = np.random.default_rng(8)
    images = [rng.integers(0, 65536, (30, 20), dtype=np.uint16) for _ in range(5)]
    mean, std = _accumulate(images, "depth").total()["depth"].mean_std(65535)
    values = np.concatenate([i.ravel() for i in images]).astype(np.float64) / 65535.0
    assert mean[0] == pytest.approx(values.mean(), abs=1e-12)
    assert std[0] == pytest.approx(values.std(), abs=1e-12)


def test_global_std_not_mean_of_per_image_stds():
    """The original code averaged per-image stds; the dataset's std is the std of all pixels."""
    black = np.zeros((10, 10, 3), np.uint8)
    white = np.full((10, 10, 3), 255, np.uint8)
    acc = _accumulate([black, white], "fg_bg")
    mean, std = acc.total()["fg_bg"].mean_std(255)
    assert mean == [0.5, 0.5, 0.5]
    assert std == [0.5, 0.5, 0.5]
    per_image_mean_std = np.mean([black.std() / 255, white.std() / 255])
    assert per_image_mean_std == 0.0  # what the original bug would have reported
    # and with non-constant images the two still differ, ours being numpy's global one
    rng = np.random.default_rng(9)
    a = rng.integers(0, 100, (16, 16, 3), dtype=np.uint8)
    b = rng.integers(150, 256, (16, 16, 3), dtype=np.uint8)
    _, std = _accumulate([a, b], "fg_bg").total()["fg_bg"].mean_std(255)
    both = np.concatenate([a.reshape(-1, 3), b.reshape(-1, 3)]).astype(np.float64) / 255
    np.testing.assert_allclose(std, both.std(axis=0), atol=1e-12)
    wrong = (a.reshape(-1, 3).std(axis=0) + b.reshape(-1, 3).std(axis=0)) / 2 / 255
    assert np.all(np.abs(np.array(std) - wrong) > 0.1)


def test_times_and_add_sums():
    img = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    once = StatsAccumulator()
    for _ in range(3):
        once.add_image("val", "bg", img)
    thrice = StatsAccumulator()
    thrice.add_image("val", "bg", img, times=3)
    assert once.to_json() == thrice.to_json()
    cs = ChannelSums(3)
    s, q = image_sums(img)
    cs.add(s, q, 4)
    by_sums = StatsAccumulator()
    by_sums.add_sums("val", "bg", cs, times=3)
    assert by_sums.to_json() == once.to_json()


def test_splits_and_totals():
    a = np.full((2, 2), 255, np.uint8)
    b = np.zeros((2, 2), np.uint8)
    acc = StatsAccumulator()
    acc.add_image("train", "mask", a)
    acc.add_image("val", "mask", b)
    acc.add_image("mixed", "mask", b)
    assert acc.total(("train",))["mask"].mean_std(255)[0] == [1.0]
    assert acc.total(("val",))["mask"].mean_std(255)[0] == [0.0]
    assert acc.total()["mask"].mean_std(255)[0] == [pytest.approx(1 / 3)]
    assert acc.total(("nothing",)) == {}


def test_json_keeps_huge_integers_exact():
    big = ChannelSums(1, pixels=2**70 + 1, sums=[2**80 + 3], squares=[2**100 + 5])
    data = json.loads(json.dumps(big.to_json()))
    assert data["sum"] == [str(2**80 + 3)]  # decimal strings, not lossy JSON numbers
    back = ChannelSums.from_json(data)
    assert (back.pixels, back.sums, back.squares) == (2**70 + 1, [2**80 + 3], [2**100 + 5])


def test_empty_sums_are_nan():
    mean, std = ChannelSums(3).mean_std(255)
    assert all(math.isnan(v) for v in mean + std)


def test_summarise_reports_rgb_order():
    img = np.zeros((4, 4, 3), np.uint8)
    img[:, :, 0] = 255  # blue channel in OpenCV's BGR order
    acc = _accumulate([img], "fg_bg")
    acc.add_image("train", "depth", np.full((4, 4), 65535, np.uint16))
    out = summarise(acc.total())
    assert out["fg_bg"]["channel_order"] == "RGB"
    assert out["fg_bg"]["mean"] == [0.0, 0.0, 1.0]
    assert out["fg_bg"]["exact_sums_stored_order"]["sum"][0] == str(16 * 255)  # stored order stays BGR
    assert out["depth"]["channel_order"] == "L" and out["depth"]["mean"] == [1.0] and out["depth"]["std"] == [0.0]

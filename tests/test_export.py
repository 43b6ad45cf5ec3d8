"""export_samples: grid geometry (rows x columns of tiles, title band, legend band), tile content,
prediction columns with a checkpoint, and the refusals."""
from __future__ import annotations


import cv2
import numpy as np
import pytest

from pipeline import DatasetReader, DepthmaskError
from training.export import GAP, LEGEND_H, TITLE_H, choose_samples, export_samples

pytestmark = pytest.mark.usefixtures("one_thread")


def grid_shape(rows: int, cols: int, tile: int) -> tuple[int, int, int]:
    return TITLE_H + rows * (tile + GAP) + LEGEND_H, cols * tile + (cols - 1) * GAP, 3


def tile_at(image: np.ndarray, row: int, col: int, tile: int) -> np.ndarray:
    y, x = TITLE_H + row * (tile + GAP), col * (tile + GAP)
    return image[y : y + tile, x : x + tile]


def test_grid_without_checkpoint(tiny_dataset, tmp_path):
    out = export_samples(tiny_dataset, tmp_path / "grid.png", split="train", count=3, seed=4, size=48)
    assert out == tmp_path / "grid.png"
    image = cv2.imread(str(out), cv2.IMREAD_COLOR)
    assert image.shape == grid_shape(3, 4, 48)
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]  # no temporary file left

    reader = DatasetReader(tiny_dataset)
    indices = choose_samples(reader, "train", 3, 4)
    assert len(set(indices.tolist())) == 3 and set(indices.tolist()) <= set(reader.split_indices("train").tolist())
    for row, index in enumerate(indices):
        sample = reader.decode(int(index))
        want_bg = cv2.resize(sample["bg"], (48, 48), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(tile_at(image, row, 0, 48), want_bg)  # PNG is lossless
        mask_tile = tile_at(image, row, 2, 48)
        assert set(np.unique(mask_tile)) <= {0, 255}
        want_mask = cv2.resize(sample["mask"], (48, 48), interpolation=cv2.INTER_NEAREST)
        np.testing.assert_array_equal(mask_tile[:, :, 0], want_mask)
    # below the grid: the legend's colour bar
    legend = image[-LEGEND_H:]
    assert (legend != 255).any()


def test_default_tile_is_the_stored_size_and_choice_follows_the_seed(tiny_dataset, tmp_path):
    out = export_samples(tiny_dataset, tmp_path / "a.png", split="val", count=2)
    assert cv2.imread(str(out)).shape == grid_shape(2, 4, 192)
    reader = DatasetReader(tiny_dataset)
    assert choose_samples(reader, "all", 5, 1).tolist() == choose_samples(reader, "all", 5, 1).tolist()
    assert choose_samples(reader, "all", 5, 1).tolist() != choose_samples(reader, "all", 5, 2).tolist()


def test_grid_with_checkpoint_has_prediction_columns(trained_run, tiny_dataset, tmp_path):
    out = export_samples(tiny_dataset, tmp_path / "pred.png", checkpoint=trained_run / "last.pt", split="val",
                         count=4, size=32, device="cpu")
    image = cv2.imread(str(out))
    assert image.shape == grid_shape(4, 6, 32)
    for row in range(4):
        pred_mask = tile_at(image, row, 4, 32)
        assert np.array_equal(pred_mask[:, :, 0], pred_mask[:, :, 1])  # grey
        assert (tile_at(image, row, 5, 32) != 255).any()


def test_overwrite_rules(tiny_dataset, tmp_path):
    path = tmp_path / "g.png"
    export_samples(tiny_dataset, path, split="train", count=1, size=32, seed=0)
    first = path.read_bytes()
    with pytest.raises(DepthmaskError, match="--overwrite"):
        export_samples(tiny_dataset, path, split="train", count=1, size=32, seed=1)
    assert path.read_bytes() == first
    export_samples(tiny_dataset, path, split="train", count=2, size=32, seed=1, overwrite=True)
    assert cv2.imread(str(path)).shape == grid_shape(2, 4, 32)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"count": 5, "split": "val"}, "only 4 samples"),
    ({"count": 0}, "--count"),
    ({"split": "nonsense"}, "unknown split"),
    ({"size": 8, "count": 1}, "--size"),
    ({"size": 2048, "count": 1}, "--size"),
])
def test_bad_arguments(tiny_dataset, tmp_path, kwargs, fragment):
    with pytest.raises(DepthmaskError, match=fragment) as info:
        export_samples(tiny_dataset, tmp_path / "x.png", **kwargs)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "x.png").exists()


def test_bad_output_paths(tiny_dataset, tmp_path):
    with pytest.raises(DepthmaskError, match=r"must end in \.png"):
        export_samples(tiny_dataset, tmp_path / "x.jpg", count=1)
    with pytest.raises(DepthmaskError, match="does not exist"):
        export_samples(tiny_dataset, tmp_path / "missing" / "x.png", count=1)
    with pytest.raises(DepthmaskError, match="does not exist"):
        export_samples(tmp_path / "no-data", tmp_path / "x.png", count=1)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_checkpoint_writes_nothing(tiny_dataset, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(DepthmaskError, match="not a readable checkpoint"):
        export_samples(tiny_dataset, tmp_path / "x.png", checkpoint=bad, count=1)
    assert not (tmp_path / "x.png").exists()
    with pytest.raises(DepthmaskError, match="does not exist"):
        export_samples(tiny_dataset, tmp_path / "x.png", checkpoint=tmp_path / "none.pt", count=1)


@pytest.mark.parametrize("far_m", [60.0, 0.0])
def test_legend_labels_stay_inside_the_grid(far_m):
    """Every tick label of the depth legend is drawn whole: nothing touches the left or right edge."""
    from training.export import compose_grid

    tile = 64
    rows = [[np.full((tile, tile, 3), 255, np.uint8)] * 2]
    grid = compose_grid(rows, ["bg", "fg_bg"], tile, far_m)
    legend = grid[-LEGEND_H:]
    labels = legend[24:]  # below the colour bar and its ticks
    dark = labels.min(axis=2) < 128
    assert dark.any()
    assert not dark[:, :2].any() and not dark[:, -2:].any()

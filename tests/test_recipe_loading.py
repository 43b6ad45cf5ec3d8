"""DepthMaskDataset over a recipe dataset: the same API and, field by field, the materialised sample
(mask, depth, bg exactly; fg_bg as the composite before JPEG); per-epoch placements through a real
DataLoader with workers; the refusal on a materialised dataset."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline import DatasetReader, DepthmaskError
from pipeline.recipe_build import build_recipes
from pipeline.recipes import RecipeStore
from training.data import DepthMaskDataset, make_loader

from conftest import tiny_options


@pytest.fixture(scope="module")
def tiny_recipes(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe_loading") / "data"
    assert build_recipes(tiny_options(root), progress=False, log=lambda m: None).complete
    return root


def test_every_field_equals_the_materialised_sample(tiny_recipes, tiny_dataset):
    ours, theirs = DepthMaskDataset(tiny_recipes, "all"), DepthMaskDataset(tiny_dataset, "all")
    store = RecipeStore.open(tiny_recipes)
    assert len(ours) == len(theirs)
    assert np.array_equal(ours.indices, theirs.indices)
    a, b = ours.__getitems__(list(range(len(ours)))), theirs.__getitems__(list(range(len(theirs))))
    for field in ("bg", "mask", "depth", "index"):
        assert torch.equal(a[field], b[field]), field
    for j in range(len(ours)):  # fg_bg: the composite before JPEG, in RGB
        assert np.array_equal(a["fg_bg"][j].permute(1, 2, 0).numpy(), store.render(j)["fg_bg"][:, :, ::-1]), j
    jpeg_error = (a["fg_bg"].int() - b["fg_bg"].int()).abs().float().mean()
    assert 0 < jpeg_error < 3  # the materialised fg_bg is the same composite, JPEG-encoded


@pytest.mark.parametrize("size", [192, 96])
def test_augmented_recipe_batches_equal_render_then_augment(tiny_recipes, size):
    """The augmented batch path (rendered straight into the batch, mirrored in place, one-pass photometry)
    equals the plain way: RecipeStore.render, to RGB, area-resized, warp_sample, photometric."""
    import cv2

    from training.augment import AugmentConfig
    from training.transforms import (augment_matrix, augment_uniforms, colour_matrices, photometric, resize_sample,
                                    warp_sample)

    ds = DepthMaskDataset(tiny_recipes, "train", size=size, augment=AugmentConfig(), seed=7)
    store = RecipeStore.open(tiny_recipes)
    batch = ds.__getitems__([(3, p) for p in range(len(ds))])
    mirrored = 0
    for j, index in enumerate(batch["index"].tolist()):
        ref = store.render(index)
        bg_input = cv2.cvtColor(store.backgrounds[int(store.placements([index])["bg"][0])][1], cv2.COLOR_BGR2RGB)
        if bg_input.shape[0] != size:
            bg_input = cv2.resize(bg_input, (size, size), interpolation=cv2.INTER_AREA)
        _, fg_bg, mask, depth = resize_sample(bg_input, np.ascontiguousarray(ref["fg_bg"][:, :, ::-1]),
                                              (ref["mask"] >= 128).astype(np.uint8), ref["depth"], size)
        u = augment_uniforms(7, [3], [index])
        m = augment_matrix(u[0], size, ds.augment)
        mirrored += int(m[0, 0] < 0)
        bg, fg_bg, mask, depth = warp_sample(m, bg_input, fg_bg, mask, depth, size)
        bg, fg_bg = photometric(colour_matrices(u, ds.augment)[0], bg, fg_bg)
        for name, value in (("bg", bg), ("fg_bg", fg_bg), ("mask", mask), ("depth", depth)):
            got = batch[name][j].permute(1, 2, 0).numpy()
            assert np.array_equal(got.reshape(value.shape), value), (index, name)
    assert 0 < mirrored < len(ds)  # both branches ran


def test_per_epoch_placements_through_workers(tiny_recipes):
    dataset = DepthMaskDataset(tiny_recipes, "train", placements="per-epoch")
    loader = make_loader(dataset, batch_size=16, shuffle=False, workers=2)
    epochs = []
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)
        epochs.append(torch.cat([batch["mask"] for batch in loader]))
    assert not torch.equal(epochs[0], epochs[1])  # fresh placements each epoch
    again = dataset.__getitems__([(1, p) for p in range(len(dataset))])["mask"]
    assert torch.equal(again, epochs[1])  # deterministic, whoever renders them
    store = RecipeStore.open(tiny_recipes)
    rendered = np.stack([store.render(int(i), 1)["mask"] // 255 for i in dataset.indices])
    assert np.array_equal(epochs[1][:, 0].numpy(), rendered)
    val = DepthMaskDataset(tiny_recipes, "val", placements="per-epoch")
    assert torch.equal(val.__getitems__([(0, 0), (0, 1)])["depth"], val.__getitems__([(5, 0), (5, 1)])["depth"])


def test_per_epoch_is_refused_on_a_materialised_dataset(tiny_dataset):
    with pytest.raises(DepthmaskError, match="needs a recipe dataset"):
        DepthMaskDataset(tiny_dataset, "train", placements="per-epoch")


def test_dm_train_per_epoch_on_recipes_and_export_samples(tiny_recipes, tmp_path, one_thread):
    from conftest import fast_runtime, read_metrics, tiny_train_config
    from training.export import export_samples
    from training.train import train

    run = tmp_path / "run"
    train(tiny_train_config(tiny_recipes, run, schedule=((32, 2),), epoch_samples=16, placements="per-epoch"),
          fast_runtime(), log=lambda m: None)
    epochs = [m for m in read_metrics(run) if "epoch" in m]
    assert len(epochs) == 2 and all(np.isfinite(m["val_loss"]) for m in epochs if "val_loss" in m)
    grid = export_samples(tiny_recipes, tmp_path / "grid.png", checkpoint=run / "best.pt", count=2, device="cpu")
    assert grid.stat().st_size > 0


def test_dm_train_refuses_per_epoch_on_a_materialised_dataset_in_one_line(tiny_dataset, tmp_path):
    from click.testing import CliRunner

    from training.cli import train_command

    result = CliRunner().invoke(train_command, [str(tiny_dataset), "-o", str(tmp_path / "run"), "--placements",
                                                "per-epoch", "--schedule", "32:1", "--workers", "0"])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("error:") and "--placements per-epoch needs a recipe dataset" in lines[-1], lines
    assert "Traceback" not in result.output


def test_jpeg_roundtrip_at_the_dataset_quality_gives_the_materialised_fg_bg(tiny_recipes, tiny_dataset):
    from training.camera_effects import CameraEffects

    quality = RecipeStore.open(tiny_recipes).manifest["build"]["content"]["jpeg_quality"]
    ours = DepthMaskDataset(tiny_recipes, "all", camera=CameraEffects(jpeg_quality=quality))
    theirs = DepthMaskDataset(tiny_dataset, "all")
    items = list(range(0, len(ours), 7))
    a, b = ours.__getitems__(items), theirs.__getitems__(items)
    assert torch.equal(a["fg_bg"], b["fg_bg"])
    assert torch.equal(a["bg"], b["bg"]) and torch.equal(a["mask"], b["mask"])


def test_camera_effects_are_deterministic_and_checked():
    from training.camera_effects import CameraEffects, apply_camera_effects, parse_jpeg_quality

    effects = CameraEffects(jpeg_quality=parse_jpeg_quality("60-95"), noise_std=4.0, blur_sigma=1.0)
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    outs = []
    for _ in range(2):
        bg, fg = image.copy(), image.copy()
        apply_camera_effects(np.random.default_rng(7), effects, bg, fg)
        outs.append((bg, fg))
    assert np.array_equal(outs[0][0], outs[1][0]) and np.array_equal(outs[0][1], outs[1][1])
    assert not np.array_equal(outs[0][1], image) and not np.array_equal(outs[0][0], outs[0][1])
    for bad in ({"jpeg_quality": (0, 90)}, {"noise_std": -1.0}, {"blur_sigma": 9.0}):
        with pytest.raises(ValueError):
            CameraEffects(**bad)


@pytest.mark.parametrize("placements", ["fixed", "per-epoch"])
@pytest.mark.parametrize("smaller", [False, True])
def test_samples_rendered_into_the_batch_equal_the_store_render(tiny_recipes, placements, smaller):
    """The loader's in-place rendering (RGB background copy + the object's box) equals RecipeStore.render
    converted to RGB, field by field; at a smaller size, that render area-resized (the mask as 0 / 1)."""
    import cv2

    store = RecipeStore.open(tiny_recipes)
    stored = store.size[0]
    size = stored // 2 + 8 if smaller else stored  # not a whole factor: the general area resize
    dataset = DepthMaskDataset(tiny_recipes, "all", size=size, placements=placements)
    epoch = 3 if placements == "per-epoch" else None
    items = [(3, p) for p in range(len(dataset))]
    batch = dataset.__getitems__(items)

    def fit(a):
        return a if a.shape[0] == size else cv2.resize(a, (size, size), interpolation=cv2.INTER_AREA)

    for j in range(len(dataset)):
        want = store.render(int(dataset.indices[j]), epoch)
        assert np.array_equal(batch["fg_bg"][j].permute(1, 2, 0).numpy(), fit(want["fg_bg"][:, :, ::-1].copy())), j
        assert np.array_equal(batch["bg"][j].permute(1, 2, 0).numpy(), fit(want["bg"])[:, :, ::-1]), j
        assert np.array_equal(batch["mask"][j, 0].numpy(), fit((want["mask"] >= 128).astype(np.uint8))), j
        assert np.array_equal(batch["depth"][j, 0].numpy(), fit(want["depth"])), j

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

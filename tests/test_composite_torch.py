"""training.composite_torch: batched torch compositing equals pipeline.recipes' numpy reference
(compose.py) bit for bit on every field, for the stored plan and for per-epoch placements."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.build import BuildOptions
from pipeline.recipe_build import build_recipes
from pipeline.recipes import RecipeStore
from training.composite_torch import CompositeAssets, all_variants, composite_placements, divide_by_255_rounded, \
    possible_variants, used_variants
from pipeline.compose import divide_by_255_rounded as numpy_divide

from conftest import tiny_options


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> RecipeStore:
    root = tmp_path_factory.mktemp("recipes_torch") / "data"
    assert build_recipes(tiny_options(root), progress=False, log=lambda m: None).complete
    return RecipeStore.open(root)


def test_divide_by_255_matches_numpy_over_its_whole_range():
    values = np.arange(0, 65026, dtype=np.uint16)
    ours = divide_by_255_rounded(torch.from_numpy(values.astype(np.int32))).numpy()
    assert np.array_equal(ours, numpy_divide(values))


@pytest.mark.parametrize("epoch", [None, 3])
def test_every_field_equals_the_numpy_reference(store, epoch):
    assets = CompositeAssets.build(store.backgrounds, all_variants(store.foregrounds, store.plan.flip))
    index = np.arange(len(store))
    placements = store.placements(index, epoch)
    batch = composite_placements(assets, placements)
    assert np.array_equal(batch["object_depth"].numpy(), placements["object_depth"])
    for k, i in enumerate(index):
        ref = store.render(int(i), epoch)
        assert np.array_equal(batch["fg_bg"][k].numpy(), ref["fg_bg"]), i
        assert np.array_equal(batch["mask"][k].numpy(), ref["mask"]), i
        assert np.array_equal(batch["depth"][k].numpy().astype(np.uint16), ref["depth"]), i
        assert np.array_equal(batch["bg"][k].numpy(), ref["bg"]), i
        assert batch["depth"][k].min() >= 1


def test_a_missing_variant_is_named(store):
    assets = CompositeAssets.build(store.backgrounds, {(0, False, 0): store.foregrounds[0]})
    with pytest.raises(KeyError, match=r"\(1, False, 0\)"):
        assets.variant_rows(np.array([1]), np.array([False]))


@pytest.mark.parametrize("placement", ["fixed", "depth-scaled"])
def test_possible_variants_cover_every_placement(tmp_path, placement):
    """What --composite-on device builds on the device: every variant the stored and per-epoch placements use."""
    root = tmp_path / "data"
    assert build_recipes(tiny_options(root, placement=placement), progress=False, log=lambda m: None).complete
    store = RecipeStore.open(root)
    index = np.arange(len(store))
    used = used_variants([store.placements(index, e) for e in (None, 0, 1, 2, 7)], store.foreground_at)
    possible = possible_variants(store)
    assert set(used) <= set(possible)
    assert all(np.array_equal(possible[k], used[k]) for k in used)
    if placement == "depth-scaled":
        assert len({k[2] for k in possible}) > 1

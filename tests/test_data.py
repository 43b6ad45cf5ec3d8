"""DepthMaskDataset, EpochSampler, BatchNormalizer and the DataLoader: values equal the reader's, resizing
keeps the mask binary, augmentation moves all four arrays together and is a pure function of
(seed, epoch, index), and worker loaders under fork, forkserver and spawn deliver every sample once."""
from __future__ import annotations

import gc
import os
import pickle
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pipeline import DatasetReader, DepthmaskError
from pipeline import shards as shard_module
from pipeline import codecs as codecs_module
from reference_decode import load_sample
from training.augment import AugmentConfig
from training.data import DepthMaskDataset, decode_reduction, make_loader
from training.inputs import BatchNormalizer
from training.sampler import EpochSampler
from training.transforms import (augment_matrix, augment_uniforms, colour_matrices, photometric, resize_sample,
                                warp_sample)

pytestmark = pytest.mark.usefixtures("one_thread")

NO_PHOTOMETRY = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0}
NO_GEOMETRY = {"hflip": 0.0, "min_scale": 1.0, "max_rotation_deg": 0.0}


def hwc(t: torch.Tensor) -> np.ndarray:
    """(C, H, W) tensor -> (H, W, C) numpy (C = 1 squeezed)."""
    a = t.numpy().transpose(1, 2, 0)
    return a[:, :, 0] if a.shape[2] == 1 else a


def area(a: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(a.astype(np.float64), (size, size), interpolation=cv2.INTER_AREA)


# ---- items ---------------------------------------------------------------------------------------
def test_items_at_stored_size_equal_the_reader(tiny_dataset):
    reader = DatasetReader(tiny_dataset)
    ds = DepthMaskDataset(tiny_dataset, "val")
    assert ds.size == reader.size[0] == 192
    assert len(ds) == len(reader.split_indices("val")) > 0
    for position in range(len(ds)):
        item = ds[position]
        index = int(ds.indices[position])
        ref = reader.decode(index)
        assert item["bg"].shape == item["fg_bg"].shape == (3, 192, 192)
        assert item["mask"].shape == item["depth"].shape == (1, 192, 192)
        assert item["bg"].dtype == item["fg_bg"].dtype == item["mask"].dtype == torch.uint8
        assert item["depth"].dtype == torch.uint16
        assert int(item["index"]) == index
        np.testing.assert_array_equal(hwc(item["bg"]), ref["bg"][:, :, ::-1])  # BGR -> RGB
        np.testing.assert_array_equal(hwc(item["fg_bg"]), ref["fg_bg"][:, :, ::-1])
        np.testing.assert_array_equal(hwc(item["mask"]), (ref["mask"] >= 128).astype(np.uint8))
        assert set(np.unique(ref["mask"])) <= {0, 255}
        np.testing.assert_array_equal(hwc(item["depth"]).astype(np.int64), ref["depth"].astype(np.int64))


def test_epoch_position_pairs_and_batches(tiny_dataset):
    ds = DepthMaskDataset(tiny_dataset, "train", size=32)
    batch = ds.__getitems__([3, (0, 5), (7, 1)])
    assert batch["bg"].shape == (3, 3, 32, 32) and batch["mask"].shape == (3, 1, 32, 32)
    assert batch["index"].tolist() == [int(ds.indices[p]) for p in (3, 5, 1)]
    # without augmentation the epoch does not matter
    for j, position in enumerate((3, 5, 1)):
        single = ds[position]
        for key in ("bg", "fg_bg", "mask", "depth"):
            assert torch.equal(batch[key][j], single[key])


@pytest.mark.parametrize("size", [32, 64])
def test_resized_items_stay_binary_and_close_to_area_resizing(tiny_dataset, size):
    reader = DatasetReader(tiny_dataset)
    ds = DepthMaskDataset(tiny_dataset, "train", size=size)
    assert ds._reduce == decode_reduction(192, size) == (4 if size == 32 else 2)
    for position in (0, 7, 20, len(ds) - 1):
        item = ds[position]
        ref = reader.decode(int(ds.indices[position]))
        assert item["bg"].shape == (3, size, size) and item["depth"].shape == (1, size, size)
        mask = hwc(item["mask"])
        assert set(np.unique(mask)) <= {0, 1}
        covered = area(ref["mask"] / 255.0, size)  # fraction of each output pixel the object covers
        clear = np.abs(covered - 0.5) > 0.02
        np.testing.assert_array_equal(mask[clear], (covered[clear] > 0.5).astype(np.uint8))
        assert mask.sum() > 0, "the object vanished"
        # depth: area average of the stored depth (uint16 rounding)
        assert np.abs(hwc(item["depth"]).astype(np.float64) - area(ref["depth"], size)).max() <= 1.0
        np.testing.assert_allclose(hwc(item["bg"]).astype(np.float64), area(ref["bg"][:, :, ::-1], size), atol=1.0)
        # fg_bg is decoded at a reduced JPEG scale: close to, not equal to, the full decode resized
        diff = np.abs(hwc(item["fg_bg"]).astype(np.float64) - area(ref["fg_bg"][:, :, ::-1], size))
        assert diff.mean() < 3.0


def reference_sample(reader: DatasetReader, ds: DepthMaskDataset, epoch: int, position: int) -> dict[str, torch.Tensor]:
    """The straightforward way, independent of the batch path: the reader's decode (BGR), binarise,
    area-resize, then (when augmenting) warp + photometry in BGR, then channels reversed to RGB."""
    size = ds.size
    index = int(ds.indices[position])
    ref = reader.decode(index, reduce=decode_reduction(reader.size[0], size))
    bg = ref["bg"] if ref["bg"].shape[0] == size else cv2.resize(ref["bg"], (size, size), interpolation=cv2.INTER_AREA)
    bg, fg_bg, mask, depth = resize_sample(bg, ref["fg_bg"], (ref["mask"] >= 128).astype(np.uint8), ref["depth"], size)
    if ds.augment is not None:
        u = augment_uniforms(ds.seed, [epoch], [index])
        m = augment_matrix(u[0], size, ds.augment)
        bg, fg_bg, mask, depth = warp_sample(m, bg, fg_bg, mask, depth, size)
        bg, fg_bg = photometric(colour_matrices(u, ds.augment, rgb=False)[0], bg, fg_bg)
    chw = lambda a: torch.from_numpy(np.ascontiguousarray(a[:, :, ::-1].transpose(2, 0, 1)))  # noqa: E731
    return {"bg": chw(bg), "fg_bg": chw(fg_bg), "mask": torch.from_numpy(mask)[None],
            "depth": torch.from_numpy(depth)[None], "index": torch.tensor(index)}


@pytest.mark.parametrize("rgb_decode", [True, False], ids=["imread-rgb", "bgr-fallback"])
@pytest.mark.parametrize("size", [192, 100, 64])
@pytest.mark.parametrize("augment", [None, AugmentConfig(), AugmentConfig(min_scale=0.8, max_rotation_deg=5.0)],
                         ids=["plain", "augmented", "crop-rotate"])
def test_batch_path_equals_the_reference_decode(tiny_dataset, monkeypatch, rgb_decode, size, augment):
    """__getitems__ (RGB JPEG decode, cached RGB backgrounds, depth pasted into the batch) gives exactly the
    values of the reader's decode done the plain way, as uint8/uint16 and after normalisation; also with
    an OpenCV that cannot decode to RGB (the BGR decode + conversion fallback)."""
    if not rgb_decode:
        monkeypatch.setattr(codecs_module, "_IMREAD_RGB", None)
    reader = DatasetReader(tiny_dataset)
    ds = DepthMaskDataset(tiny_dataset, "train", size=size, augment=augment, seed=9)
    items = [(0, 0), (1, 5), (3, 17), (2, 5), (0, len(ds) - 1), (4, 30)]
    batch = ds.__getitems__(items)
    refs = [reference_sample(reader, ds, epoch, position) for epoch, position in items]
    want = {k: torch.stack([r[k] for r in refs]) for k in refs[0]}
    for key in ("bg", "fg_bg", "mask", "depth", "index"):
        assert batch[key].dtype == want[key].dtype and batch[key].shape == want[key].shape, key
        assert torch.equal(batch[key], want[key]), key
    assert set(batch["mask"].unique().tolist()) <= {0, 1}
    normalize = BatchNormalizer(ds.stats(), "cpu")
    got, expected = normalize(batch), normalize(want)
    for key in ("bg", "fg_bg", "mask", "depth"):
        assert torch.equal(got[key], expected[key]), key


def test_bad_sizes_and_empty_split_are_refused(tiny_dataset, tmp_path):
    ds = DepthMaskDataset(tiny_dataset, "train", size=32)
    for bad in (4, 193, 1000):
        with pytest.raises(DepthmaskError, match="size"):
            ds.set_size(bad)
    with pytest.raises(DepthmaskError, match="split"):
        DepthMaskDataset(tiny_dataset, "nonsense")
    from conftest import build_tiny

    no_val = build_tiny(tmp_path / "noval", backgrounds=2, foregrounds=2, positions=1, val_fraction=0.0)
    with pytest.raises(DepthmaskError, match="no samples"):
        DepthMaskDataset(no_val, "val")


# ---- augmentation ----------------------------------------------------------------------------------
def test_augment_config_defaults_and_checks():
    default = AugmentConfig()
    assert (default.hflip, default.min_scale, default.max_rotation_deg) == (0.5, 1.0, 0.0)  # mirror only
    for field, value in (("hflip", 1.5), ("min_scale", 0.0), ("min_scale", 1.2), ("max_rotation_deg", -1.0),
                         ("max_rotation_deg", 90.0), ("brightness", 1.0), ("saturation", -0.1)):
        with pytest.raises(ValueError, match=field):
            AugmentConfig(**{field: value})


def test_augment_uniforms_depend_only_on_seed_epoch_and_index():
    """A sample's draws do not depend on the batch it comes in (nor on its position there or the other
    epochs in it); other epochs, indices and seeds draw other values; they are uniform in [0, 1)."""
    batch = augment_uniforms(5, [2, 7, 2, 2], [10, 10, 11, 10])
    assert batch.shape == (4, 8) and batch.dtype == np.float64
    assert np.array_equal(batch[0], augment_uniforms(5, [2], [10])[0]) and np.array_equal(batch[0], batch[3])
    assert np.array_equal(batch[1], augment_uniforms(5, [7], [10])[0])
    assert len({tuple(row) for row in batch[:3]} | {tuple(augment_uniforms(6, [2], [10])[0])}) == 4
    many = augment_uniforms(0, np.zeros(20000, int), np.arange(20000))
    assert 0 <= many.min() and many.max() < 1
    assert np.allclose(many.mean(axis=0), 0.5, atol=0.01) and np.abs(np.corrcoef(many.T) - np.eye(8)).max() < 0.03


def test_colour_matrices_are_contrast_brightness_and_saturation():
    """Each (3, 4) matrix maps a grey pixel g to k * (g - 128) + 128 + b in every channel (saturation leaves
    grey alone), and is the same change in RGB and BGR channel order."""
    config = AugmentConfig(brightness=0.3, contrast=0.25, saturation=0.5)
    u = augment_uniforms(1, np.zeros(50, int), np.arange(50))
    rgb, bgr = colour_matrices(u, config), colour_matrices(u, config, rgb=False)
    assert rgb.shape == (50, 3, 4) and rgb.dtype == np.float32
    k = 1 + config.contrast * (2 * u[:, 6] - 1)
    b = config.brightness * (2 * u[:, 5] - 1) * 255
    for g in (0.0, 90.0, 200.0):
        want = np.broadcast_to((k * (g - 128) + 128 + b)[:, None], (50, 3))
        np.testing.assert_allclose(rgb[:, :, :3].sum(axis=2) * g + rgb[:, :, 3], want, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(bgr, rgb[:, ::-1, ::-1][:, :, [1, 2, 3, 0]])  # channels reversed, offset last
    assert {round(float(v), 2) for v in k} != {1.0}  # the draws vary


def test_default_geometry_is_an_exact_mirror(tiny_dataset):
    """Without crop or rotation the warp only mirrors: depth and mask keep their exact values."""
    plain = DepthMaskDataset(tiny_dataset, "train", size=64)
    aug = DepthMaskDataset(tiny_dataset, "train", size=64, augment=AugmentConfig(), seed=2)
    mirrored = 0
    for position in range(0, len(plain), 4):
        a, b = plain[position], aug[(1, position)]
        flipped = torch.equal(b["depth"], torch.flip(a["depth"], dims=[2]))
        assert flipped or torch.equal(b["depth"], a["depth"]), position
        assert torch.equal(b["mask"], torch.flip(a["mask"], dims=[2]) if flipped else a["mask"]), position
        mirrored += flipped
    assert 0 < mirrored < len(range(0, len(plain), 4))


@pytest.mark.parametrize("size", [64, 100, 224])
@pytest.mark.parametrize("hflip", [0.0, 1.0], ids=["identity", "mirror"])
def test_mirror_shortcut_equals_the_warp(size, hflip):
    """The identity and mirror maps of the default geometry are copied/flipped instead of warped: the values
    are the warp's, with and without `out` buffers (views into a batch, as the batch path passes)."""
    rng = np.random.default_rng(size)
    image = (size, size, 3)
    arrays = (rng.integers(0, 256, image, dtype=np.uint8), rng.integers(0, 256, image, dtype=np.uint8),
              rng.integers(0, 2, image[:2], dtype=np.uint8), rng.integers(0, 65536, image[:2], dtype=np.uint16))
    m = augment_matrix(augment_uniforms(0, [0], [0])[0], size, AugmentConfig(hflip=hflip))
    flags = [cv2.INTER_LINEAR, cv2.INTER_LINEAR, cv2.INTER_NEAREST, cv2.INTER_NEAREST]
    warped = [cv2.warpAffine(a, m, (size, size), flags=f | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT_101)
              for a, f in zip(arrays, flags)]
    assert np.array_equal(warped[3], arrays[3][:, ::-1] if hflip else arrays[3])
    batches = [np.zeros((2, *a.shape), a.dtype) for a in arrays]
    in_place = warp_sample(m, *arrays, size, out=[b[1] for b in batches])
    for got, view, batch, want in zip(warp_sample(m, *arrays, size), in_place, batches, warped):
        assert np.array_equal(got, want) and np.array_equal(batch[1], want) and not batch[0].any()
        assert np.shares_memory(view, batch)
    # any other map still warps
    shifted = m.copy()
    shifted[0, 2] += 1
    assert np.array_equal(warp_sample(shifted, *arrays, size)[3], cv2.warpAffine(
        arrays[3], shifted, (size, size), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REFLECT_101))


def test_mirror_moves_all_four_arrays_together(tiny_dataset):
    plain = DepthMaskDataset(tiny_dataset, "train", size=64)
    mirror = DepthMaskDataset(tiny_dataset, "train", size=64,
                              augment=AugmentConfig(hflip=1.0, min_scale=1.0, max_rotation_deg=0.0, **NO_PHOTOMETRY))
    for position in (0, 11, 30):
        a, b = plain[position], mirror[(3, position)]
        for key in ("bg", "fg_bg", "mask", "depth"):
            assert torch.equal(b[key], torch.flip(a[key], dims=[2])), key


def test_photometry_changes_only_the_images(tiny_dataset):
    plain = DepthMaskDataset(tiny_dataset, "train", size=32)
    photo = DepthMaskDataset(tiny_dataset, "train", size=32, augment=AugmentConfig(**NO_GEOMETRY), seed=1)
    changed = 0
    for position in range(0, len(plain), 5):
        a, b = plain[position], photo[(0, position)]
        assert torch.equal(a["mask"], b["mask"]) and torch.equal(a["depth"], b["depth"])
        changed += int(not torch.equal(a["bg"], b["bg"]))
        # the same change on both images: where the composite shows the background, it still does
        outside = b["mask"][0] == 0
        before = (a["fg_bg"].int() - a["bg"].int()).abs().sum(0)[outside].float().mean()
        after = (b["fg_bg"].int() - b["bg"].int()).abs().sum(0)[outside].float().mean()
        assert after < before + 6
    assert changed >= 5


def test_augmentation_equals_the_manual_transform(tiny_dataset):
    """load_sample() with augmentation == augment_matrix + warp_sample + photometric, in that order, from the
    uniforms of (seed, epoch, sample index), applied to the unaugmented arrays."""
    config = AugmentConfig(min_scale=0.8, max_rotation_deg=5.0)
    plain = DepthMaskDataset(tiny_dataset, "train", size=64)
    aug = DepthMaskDataset(tiny_dataset, "train", size=64, augment=config, seed=7)
    for epoch, position in ((0, 0), (2, 9), (5, 33)):
        index = int(aug.indices[position])
        bg, fg_bg, mask, depth = load_sample(plain, position)
        u = augment_uniforms(7, [epoch], [index])
        m = augment_matrix(u[0], 64, config)
        bg, fg_bg, mask, depth = warp_sample(m, bg, fg_bg, mask, depth, 64)
        bg, fg_bg = photometric(colour_matrices(u, config, rgb=False)[0], bg, fg_bg)
        got = load_sample(aug, position, epoch)
        for name, want, have in zip(("bg", "fg_bg", "mask", "depth"), (bg, fg_bg, mask, depth), got):
            np.testing.assert_array_equal(have, want, err_msg=name)


def test_augmented_mask_still_marks_where_the_object_is(tiny_dataset):
    """Independent of the implementation: after a random crop/rotation/flip/colour change, the mask is 1
    where fg_bg differs from bg and 0 where they agree, i.e. all four moved together."""
    ds = DepthMaskDataset(tiny_dataset, "train", size=64, augment=AugmentConfig(min_scale=0.8, max_rotation_deg=5.0),
                          seed=5)
    plain = DepthMaskDataset(tiny_dataset, "train", size=64)
    moved = 0
    for position in range(0, len(ds), 3):
        s = ds[(2, position)]
        diff = (s["fg_bg"].int() - s["bg"].int()).abs().sum(0).float()
        m = s["mask"][0].bool()
        assert set(s["mask"].unique().tolist()) <= {0, 1}
        assert m.sum() > 0
        assert diff[m].mean() > 10 * max(diff[~m].mean(), 1.0), position
        assert (diff[~m] > 60).float().mean() < 0.05, position
        moved += int(not torch.equal(s["mask"], plain[position]["mask"]))
    assert moved >= 6  # the geometry really changed


def test_augmentation_is_a_function_of_seed_epoch_and_index(tiny_dataset):
    a = DepthMaskDataset(tiny_dataset, "train", size=32, augment=AugmentConfig(), seed=3)
    b = DepthMaskDataset(tiny_dataset, "train", size=32, augment=AugmentConfig(), seed=3)
    c = DepthMaskDataset(tiny_dataset, "train", size=32, augment=AugmentConfig(), seed=4)
    same = lambda x, y: all(torch.equal(x[k], y[k]) for k in ("bg", "fg_bg", "mask", "depth"))  # noqa: E731
    assert same(a[(1, 4)], b[(1, 4)])
    batch = a.__getitems__([(0, 2), (1, 4)])
    assert same({k: v[1] for k, v in batch.items()}, b[(1, 4)])
    assert not same(a[(1, 4)], a[(2, 4)])  # another epoch, another draw
    assert not same(a[(1, 4)], c[(1, 4)])  # another seed


# ---- pickling and LMDB handles ----------------------------------------------------------------------
def test_dataset_pickles_small_without_handles_or_caches(tiny_dataset):
    ds = DepthMaskDataset(tiny_dataset, "train", size=64, augment=AugmentConfig())
    ds.__getitems__([0, 1, 2])  # fills the background caches and opens shards in this process
    assert ds._bg_cache and ds.reader._backgrounds is not None
    blob = pickle.dumps(ds)
    assert len(blob) < 32 * 1024, len(blob)
    clone = pickle.loads(blob)
    assert clone._bg_cache == {} and clone.reader._backgrounds is None
    for key in ("bg", "fg_bg", "mask", "depth"):
        assert torch.equal(clone[(1, 5)][key], ds[(1, 5)][key])


def test_two_datasets_on_one_folder_in_one_process(tiny_dataset, tmp_path):
    """py-lmdb refuses to open one path twice per process: the per-process cache shares the handle,
    also when the folder is spelled differently (a symlink)."""
    link = tmp_path / "link"
    os.symlink(tiny_dataset, link)
    train_a = DepthMaskDataset(tiny_dataset, "train", size=32)
    train_b = DepthMaskDataset(link, "train", size=32)
    val = DepthMaskDataset(str(tiny_dataset) + "/", "val", size=32)
    for position in range(0, len(train_a), 4):
        x, y = train_a[position], train_b[position]
        assert all(torch.equal(x[k], y[k]) for k in ("bg", "fg_bg", "mask", "depth"))
        val[position % len(val)]


@pytest.fixture
def private_copy(tiny_dataset, tmp_path) -> Path:
    """A copy no other test opens, so this process's LMDB cache can be checked for it."""
    return Path(shutil.copytree(tiny_dataset, tmp_path / "data"))


def _opened_in_this_process(root: Path) -> list[str]:
    real = os.path.realpath(root)
    return [k for k in list(shard_module._OPEN) if k.startswith(str(root)) or k.startswith(real)]


def _run_epochs(loader, epochs: list[int]) -> list[dict[str, torch.Tensor]]:
    out = []
    for epoch in epochs:
        loader.sampler.set_epoch(epoch)
        out.append({k: torch.cat([b[k] for b in loader_batches]) for k in ("index", "bg", "fg_bg", "mask", "depth")}
                   if (loader_batches := list(loader)) else {})
    return out


@pytest.mark.parametrize("context", ["fork", pytest.param("forkserver", marks=pytest.mark.slow),
                                     pytest.param("spawn", marks=pytest.mark.slow)])
def test_worker_loader_gives_every_sample_once_per_epoch(private_copy, context):
    # loaders that earlier tests left to the garbage collector are finalised here, not in a forked worker
    # (where closing their queues closes descriptors the new loader's queues now use: "Bad file descriptor")
    gc.collect()
    ds = DepthMaskDataset(private_copy, "train", size=32, augment=AugmentConfig(), seed=11)
    assert not _opened_in_this_process(private_copy)
    loader = make_loader(ds, batch_size=8, shuffle=True, workers=2, seed=2, multiprocessing_context=context)
    try:
        runs = _run_epochs(loader, [0, 1])
    finally:
        del loader
        gc.collect()
    # the parent never opened the shards: workers did
    assert not _opened_in_this_process(private_copy)
    expected = sorted(int(i) for i in ds.indices)
    for run in runs:
        assert sorted(run["index"].tolist()) == expected  # each exactly once
    assert runs[0]["index"].tolist() != runs[1]["index"].tolist()  # a new order each epoch
    # what the workers made equals what this process makes for (epoch, position): augmentation does not
    # depend on the number of workers or on which worker got the sample
    position_of = {int(i): p for p, i in enumerate(ds.indices)}
    for epoch, run in enumerate(runs):
        items = ds.__getitems__([(epoch, position_of[int(i)]) for i in run["index"]])
        for key in ("bg", "fg_bg", "mask", "depth"):
            assert torch.equal(run[key], items[key]), (context, epoch, key)


def test_in_process_loader_matches_and_keeps_last_partial_batch(tiny_dataset):
    ds = DepthMaskDataset(tiny_dataset, "train", size=32)
    loader = make_loader(ds, batch_size=8, shuffle=False, workers=0)
    batches = list(loader)
    assert [len(b["index"]) for b in batches] == [8, 8, 8, 8, 4]
    assert torch.cat([b["index"] for b in batches]).tolist() == [int(i) for i in ds.indices]


# ---- sampler -------------------------------------------------------------------------------------
def _take(sampler: EpochSampler) -> list[int]:
    items = list(sampler)
    assert len(items) == len(sampler)
    assert all(e == sampler.epoch for e, _ in items)
    return [p for _, p in items]


@pytest.mark.parametrize("length", [37, 40])
def test_sampler_ranks_are_disjoint_and_cover_the_epoch(length):
    for epoch in (0, 1):
        shares = []
        for rank in (0, 1):
            s = EpochSampler(length, seed=5, rank=rank, world_size=2)
            s.set_epoch(epoch)
            shares.append(_take(s))
        assert not set(shares[0]) & set(shares[1])
        assert sorted(shares[0] + shares[1]) == list(range(length))
        assert abs(len(shares[0]) - len(shares[1])) <= 1
    one = EpochSampler(length, seed=5)
    orders = []
    for epoch in (0, 1, 2):
        one.set_epoch(epoch)
        orders.append(_take(one))
        assert sorted(orders[-1]) == list(range(length))
    assert orders[0] != orders[1] != orders[2]
    # the same seed gives the same order; another seed another
    again = EpochSampler(length, seed=5)
    again.set_epoch(1)
    assert _take(again) == orders[1]
    other = EpochSampler(length, seed=6)
    other.set_epoch(1)
    assert _take(other) != orders[1]


def test_sampler_start_skips_consumed_samples_and_limit_subsets():
    full = EpochSampler(30, seed=1, rank=1, world_size=2)
    full.set_epoch(3)
    order = _take(full)
    resumed = EpochSampler(30, seed=1, rank=1, world_size=2)
    resumed.set_epoch(3, start=4)
    assert _take(resumed) == order[4:]
    resumed.set_epoch(3, start=100)
    assert _take(resumed) == [] and len(resumed) == 0

    limited = [EpochSampler(30, seed=1, rank=r, world_size=2, limit=10) for r in (0, 1)]
    subsets = []
    for epoch in (0, 1):
        parts = []
        for s in limited:
            s.set_epoch(epoch)
            parts.append(_take(s))
        assert len(parts[0]) == len(parts[1]) == 5
        union = parts[0] + parts[1]
        assert len(set(union)) == 10 and set(union) <= set(range(30))
        subsets.append(set(union))
    assert subsets[0] != subsets[1]  # a fresh subset each epoch

    plain = EpochSampler(5, shuffle=False, limit=99)
    assert _take(plain) == [0, 1, 2, 3, 4]


# ---- normalisation -------------------------------------------------------------------------------
def test_batch_normalizer_standardises(tiny_dataset):
    ds = DepthMaskDataset(tiny_dataset, "train", size=32)
    raw = ds.__getitems__(list(range(len(ds))))
    norm = BatchNormalizer(ds.stats(), "cpu")
    b = norm(raw)
    for key in ("bg", "fg_bg"):
        assert b[key].dtype == torch.float32 and b[key].shape == raw[key].shape
        mean, std = b[key].mean(dim=(0, 2, 3)), b[key].std(dim=(0, 2, 3))
        assert mean.abs().max() < 0.05, (key, mean)
        assert ((std > 0.85) & (std < 1.15)).all(), (key, std)
        back = norm.denormalize(b[key], key) * 255
        assert (back - raw[key].float()).abs().max() < 1e-2
    assert b["mask"].dtype == torch.float32 and set(b["mask"].unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(b["mask"], raw["mask"].float())
    assert 0.0 <= float(b["depth"].min()) and float(b["depth"].max()) <= 1.0
    torch.testing.assert_close(b["depth"], raw["depth"].float() / 65535.0)
    assert torch.equal(b["index"], raw["index"])
    cl = BatchNormalizer(ds.stats(), "cpu", channels_last=True)(raw)
    assert cl["bg"].is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(cl["bg"], b["bg"])


def test_split_indices_match_the_manifest_counts(tiny_dataset, tiny_manifest):
    """Every split the manifest counts can be read by name, 'mixed' (format version 1's name for the samples in
    neither train nor val) included; they partition the dataset."""
    from pipeline import DatasetReader

    reader = DatasetReader(tiny_dataset)
    counts = tiny_manifest["split"]["counts"]
    parts = {name: reader.split_indices(name) for name in counts}
    assert {name: len(p) for name, p in parts.items()} == counts
    assert np.array_equal(np.sort(np.concatenate([parts["mixed"], parts["train"], parts["val"]])), np.arange(64))
    assert np.array_equal(parts["mixed"], np.union1d(parts["unseen_bg"], parts["unseen_fg"]))
    with pytest.raises(DepthmaskError, match="unknown split 'nonsense'"):
        reader.split_indices("nonsense")

"""dm-train --composite-on device, on the CPU: DataLoader workers send placements, training.device_batches
composites, resizes and augments the batch where it is used. Its batches against the workers' path (equal at
the stored size, within a grey level where the photometry's float blend or the resize differ), through a
real DataLoader with workers, a tiny training run, and the refusals."""
from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

from pipeline import DepthmaskError
from pipeline.recipe_build import build_recipes
from training.augment import AugmentConfig
from training.data import DepthMaskDataset, make_loader
from training.device_batches import DeviceCompositor, area_weights

from conftest import fast_runtime, read_metrics, tiny_options, tiny_train_config

FIELDS = ("bg", "fg_bg", "mask", "depth")


@pytest.fixture(scope="module")
def tiny_recipes(tmp_path_factory):
    root = tmp_path_factory.mktemp("device_composite") / "data"
    assert build_recipes(tiny_options(root), progress=False, log=lambda m: None).complete
    return root


def both_paths(root, items, **options):
    workers = DepthMaskDataset(root, "all", seed=5, **options)
    device = DepthMaskDataset(root, "all", seed=5, composite_on="device", **options)
    placements = device.__getitems__(items)
    assert "fg_bg" not in placements  # the workers' batch is only placements and draws
    return workers.__getitems__(items), DeviceCompositor(device, "cpu").finish(placements)


def differences(a, b, field):
    d = (a[field].int() - b[field].int()).abs()
    return int(d.max()), float((d > 0).float().mean())


@pytest.mark.parametrize("placements", ["fixed", "per-epoch"])
def test_stored_size_equals_the_workers_path(tiny_recipes, placements, one_thread):
    items = [(2, p) for p in range(0, 64, 3)]
    plain, ours = both_paths(tiny_recipes, items, placements=placements)
    for field in FIELDS:  # compose's integer math, in torch: every field exactly
        assert torch.equal(plain[field].int(), ours[field].int()), field
        assert plain[field].shape == ours[field].shape
    assert torch.equal(plain["index"], ours["index"])
    augmented, ours = both_paths(tiny_recipes, items, placements=placements, augment=AugmentConfig())
    assert torch.equal(augmented["mask"].int(), ours["mask"].int())  # the same mirrors
    assert torch.equal(augmented["depth"].int(), ours["depth"].int())
    for field in ("bg", "fg_bg"):  # the same lookup table and grey; the float blend within a level
        assert differences(augmented, ours, field)[0] <= 1, field
    assert not torch.equal(augmented["fg_bg"], plain["fg_bg"])  # the augmentation did something


def test_depth_scaled_recipes_equal_the_workers_path(tmp_path, one_thread):
    """Scale levels: the device holds every (cut-out, mirror, level) a per-epoch placement may draw."""
    root = tmp_path / "data"
    assert build_recipes(tiny_options(root, placement="depth-scaled"), progress=False, log=lambda m: None).complete
    items = [(4, p) for p in range(0, 64, 2)]
    augmented, ours = both_paths(root, items, placements="per-epoch", augment=AugmentConfig())
    assert torch.equal(augmented["mask"].int(), ours["mask"].int())
    assert torch.equal(augmented["depth"].int(), ours["depth"].int())
    assert all(differences(augmented, ours, field)[0] <= 1 for field in ("bg", "fg_bg"))


def test_a_smaller_size_is_close_to_the_workers_resize(tiny_recipes, one_thread):
    size = 104  # 192 / 104: not a whole factor, the general area resampling
    plain, ours = both_paths(tiny_recipes, list(range(0, 64, 4)), size=size)
    for field in ("bg", "fg_bg", "depth"):
        worst, share = differences(plain, ours, field)
        assert worst <= 1 and share < 0.05, (field, worst, share)
    worst, share = differences(plain, ours, "mask")
    assert share < 0.005, share  # a 0 / 1 pixel covered almost exactly half may flip
    assert ours["fg_bg"].shape == (16, 3, size, size)


def test_area_weights_average_the_source():
    w = area_weights(192, 104)
    assert torch.allclose(w.sum(dim=1), torch.ones(104))
    assert torch.equal(area_weights(8, 4), torch.tensor([[0.5, 0.5, 0, 0, 0, 0, 0, 0], [0, 0, 0.5, 0.5, 0, 0, 0, 0],
                                                         [0, 0, 0, 0, 0.5, 0.5, 0, 0], [0, 0, 0, 0, 0, 0, 0.5, 0.5]]))


def test_placement_batches_through_workers_are_deterministic(tiny_recipes, one_thread):
    dataset = DepthMaskDataset(tiny_recipes, "train", placements="per-epoch", augment=AugmentConfig(),
                               composite_on="device", size=96)
    compositor = DeviceCompositor(dataset, "cpu")
    loader = make_loader(dataset, batch_size=16, shuffle=True, workers=2, seed=3)
    loader.sampler.set_epoch(1)
    batches = list(loader)
    del loader  # its persistent workers stop now, not whenever the garbage collector gets to them
    gc.collect()
    assert all("fg_bg" not in b and b["colour"].shape == (len(b["index"]), 3, 4) for b in batches)
    finished = [compositor.finish(b) for b in batches]
    assert finished[0]["fg_bg"].shape[1:] == (3, 96, 96) and finished[0]["depth"].shape[1:] == (1, 96, 96)
    cpu = DepthMaskDataset(tiny_recipes, "train", placements="per-epoch", augment=AugmentConfig(), size=96)
    positions = [int(np.flatnonzero(cpu.indices == i)[0]) for i in finished[0]["index"]]
    again = cpu.__getitems__([(1, p) for p in positions])
    assert torch.equal(again["index"], finished[0]["index"])
    assert differences(again, finished[0], "mask")[1] < 0.005  # the same placements and mirrors, resized


def test_dm_train_composites_on_the_device(tiny_recipes, tmp_path, one_thread):
    from training.train import train

    run = tmp_path / "run"
    config = tiny_train_config(tiny_recipes, run, schedule=((32, 3),), augment=AugmentConfig(), val_samples=16,
                               placements="per-epoch", lr_schedule="constant")
    final = train(config, fast_runtime(composite_on="device", amp=False, channels_last=False),  # float32 on any CPU
                  log=lambda m: None)
    rows = [r for r in read_metrics(run) if "epoch" in r]
    losses = [r["train_loss"] for r in rows]
    assert len(rows) == 3 and all(np.isfinite(losses)), losses
    assert losses[-1] < losses[0], losses
    assert {"depth_rmse", "mask_iou", "val_loss"} <= set(final) and np.isfinite(final["val_loss"])


def test_refusals(tiny_recipes, tiny_dataset, tmp_path):
    from click.testing import CliRunner

    from training.camera_effects import CameraEffects
    from training.cli import train_command
    from training.train import RuntimeOptions

    with pytest.raises(DepthmaskError, match="--composite-on device needs a recipe dataset"):
        DepthMaskDataset(tiny_dataset, "train", composite_on="device")
    with pytest.raises(DepthmaskError, match="--augment-scale < 1"):
        DepthMaskDataset(tiny_recipes, "train", composite_on="device", augment=AugmentConfig(min_scale=0.8))
    with pytest.raises(DepthmaskError, match="--jpeg-roundtrip"):
        DepthMaskDataset(tiny_recipes, "train", composite_on="device", camera=CameraEffects(jpeg_quality=90))
    with pytest.raises(DepthmaskError, match="--composite-on"):
        RuntimeOptions(composite_on="gpu")
    for data, fragment in ((tiny_dataset, "--composite-on device needs a recipe dataset"),
                           (tiny_recipes, "--composite-on device: --augment-scale")):
        result = CliRunner().invoke(train_command, [str(data), "-o", str(tmp_path / "run"), "--composite-on", "device",
                                                    "--augment-scale", "0.8", "--schedule", "32:1", "--workers", "0",
                                                    "--device", "cpu", "--no-progress"])
        assert result.exit_code != 0
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert lines[-1].startswith("error:") and fragment in lines[-1], lines
        assert "Traceback" not in result.output
        assert not (tmp_path / "run" / "last.pt").exists()

"""training.train.train on CPU with the tiny model: run-folder contents, learning, progressive resizing,
exact resume (mid-epoch), time limit, non-finite loss, --resume/--overwrite rules."""
from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
import torch

from conftest import fast_runtime, read_metrics, tiny_train_config
from pipeline import DepthmaskError
from training import train as train_module
from training.checkpoint import load_checkpoint
from training.config import TrainConfig
from training.metrics import METRIC_KEYS
from training.train import train

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = {"log": lambda m: None}
EPOCH_KEYS = {"epoch", "complete", "step", "train_loss", "lr", "elapsed_s", "val_loss", "size", "n_images",
              *METRIC_KEYS}


def test_run_folder_contents(trained_run, tiny_dataset):
    assert {p.name for p in trained_run.iterdir()} >= {"last.pt", "best.pt", "metrics.jsonl", "config.json"}
    assert not list(trained_run.glob(".*tmp*")), "temporary checkpoint files left behind"
    config = TrainConfig.from_dict(json.loads((trained_run / "config.json").read_text()))
    assert config.schedule == ((32, 1), (64, 1)) and config.epoch_samples == 16 and config.data == str(tiny_dataset)

    rows = read_metrics(trained_run)
    assert "baseline" in rows[0] and "epoch" not in rows[0]
    assert rows[0]["size"] == 32 and rows[0]["n_images"] == 4.0
    assert rows[0]["mask_constant"] in (0.0, 1.0) and 0 < rows[0]["depth_constant"] < 1
    floors = rows[0]["floors"]  # dm-eval's floors, logged once per run beside the curves
    assert 0 <= floors["diff_threshold"]["mask_iou"] <= 1 and 0 <= floors["diff_threshold"]["threshold"] <= 255
    assert 0 <= floors["background_depth"]["depth_rmse"] < rows[0]["depth_rmse"]
    epochs = rows[1:]
    assert [r["epoch"] for r in epochs] == [1, 2]
    for r in epochs:
        assert EPOCH_KEYS <= set(r), EPOCH_KEYS - set(r)
        assert r["complete"] is True and r["n_images"] == 4.0  # the whole val split, each once
        for key in ("train_loss", "val_loss", "depth_rmse", "mask_iou", "lr"):
            assert math.isfinite(r[key]), key
        assert 0 <= r["mask_iou"] <= 1 and 0 <= r["depth_rmse"] <= 1
    # progressive resizing: the second stage trains and validates at 64 px
    assert [r["size"] for r in epochs] == [32, 64]
    # 16 samples per epoch at batch 8: 2 steps per epoch
    assert [r["step"] for r in epochs] == [2, 4]

    last = load_checkpoint(trained_run / "last.pt")
    assert last["train_state"]["epoch"] == 2 and last["train_state"]["step"] == 4
    assert last["config"] == config.to_dict()
    best = load_checkpoint(trained_run / "best.pt")
    best_val = min(r["val_loss"] for r in epochs)
    assert best["train_state"]["best"] == pytest.approx(best_val)


def test_progressive_stage_sizes_reach_the_model(tiny_dataset, tmp_path, monkeypatch):
    seen = []
    original = train_module._Trainer.train_step

    def spy(self, batch):
        seen.append(tuple(batch["bg"].shape[-2:]))
        return original(self, batch)

    monkeypatch.setattr(train_module._Trainer, "train_step", spy)
    config = tiny_train_config(tiny_dataset, tmp_path / "run", schedule=((32, 1), (64, 1)), epoch_samples=8)
    train(config, fast_runtime(), **QUIET)
    assert seen == [(32, 32), (64, 64)]


FAST_PATHS = pytest.mark.parametrize("fast", [False, True], ids=["float32", "bf16-channels-last"])


def _loss_and_metrics_on(model, data: Path, split: str, size: int) -> tuple[float, dict]:
    """Mean loss and metrics of `model` over a whole split, unaugmented, in float32."""
    from training.data import DepthMaskDataset, make_loader
    from training.inputs import BatchNormalizer
    from training.losses import LossConfig, total_loss
    from training.metrics import SegDepthMetrics

    dataset = DepthMaskDataset(data, split, size=size)
    normalizer = BatchNormalizer(dataset.stats())
    metrics, loss_sum, count = SegDepthMetrics(), 0.0, 0
    model.eval()
    with torch.no_grad():
        for batch in make_loader(dataset, batch_size=16, shuffle=False, workers=0):
            b = normalizer(batch)
            depth, logits = model(b["bg"], b["fg_bg"])
            _, parts = total_loss(depth, logits, b["depth"], b["mask"], LossConfig())
            loss_sum += parts["loss"] * len(b["bg"])
            count += len(b["bg"])
            metrics.update(depth, b["depth"], logits, b["mask"])
    return loss_sum / count, metrics.compute()


@FAST_PATHS
def test_training_fits_the_set_it_trains_on(tiny_dataset, tmp_path, fast):
    """What training guarantees on any CPU, float32 or bf16: the loss over the training set it was fitted to
    falls well below the untrained network's, and the fitted network beats the constant-prediction floor
    on that set. (Held-out loss after a few epochs of 48 samples is not guaranteed to fall, and does not on
    every CPU.)"""
    from training.checkpoint import model_from_checkpoint
    from training.metrics import constant_baseline
    from training.models import build_model

    config = tiny_train_config(tiny_dataset, tmp_path / "run", schedule=((32, 6),), lr_schedule="constant")
    torch.manual_seed(config.seed)  # the trainer's own initialisation (it seeds torch, then builds)
    untrained = build_model(config.model)
    final = train(config, fast_runtime(amp=fast, channels_last=fast), **QUIET)
    rows = read_metrics(tmp_path / "run")[1:]
    assert final["val_loss"] == pytest.approx(rows[-1]["val_loss"])
    losses = [r["train_loss"] for r in rows]
    assert losses[-1] < 0.9 * losses[0], losses

    trained, _, _ = model_from_checkpoint(tmp_path / "run" / "last.pt")
    before, _ = _loss_and_metrics_on(untrained, tiny_dataset, "train", 32)
    after, metrics = _loss_and_metrics_on(trained, tiny_dataset, "train", 32)
    assert after < 0.85 * before, (before, after)
    from training.data import DepthMaskDataset, make_loader

    train_split = make_loader(DepthMaskDataset(tiny_dataset, "train", size=32), batch_size=16, shuffle=False,
                              workers=0)
    pairs = [(b["depth"].float() / 65535.0, b["mask"].float()) for b in train_split]
    floor = constant_baseline(pairs)["best_constant"]
    assert metrics["mask_iou"] > floor["mask_iou"] + 0.1, (metrics, floor)
    assert metrics["depth_rmse"] < floor["depth_rmse"], (metrics, floor)


def _state(run: Path) -> dict:
    return load_checkpoint(run / "last.pt")


def _assert_same_tensors(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same_tensors(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


class Crash(Exception):
    pass


@FAST_PATHS
def test_resume_mid_epoch_is_exact(tiny_dataset, tmp_path, monkeypatch, fast):
    """A: 2 epochs straight. B: checkpointing after every step, crashes in its 3rd step (as if killed), then
    resumed. Same weights, same optimizer state, same step count, same final validation; in float32 and in
    bf16 autocast with channels_last."""
    base = tiny_train_config(tiny_dataset, tmp_path / "A", schedule=((32, 2),), augment=True, seed=3)
    runtime = partial(fast_runtime, amp=fast, channels_last=fast)
    train(base, runtime(), **QUIET)

    original = train_module._Trainer.train_step

    def crash_at_step_3(self, batch):
        if self.state.step == 2:
            raise Crash()
        return original(self, batch)

    b = replace(base, output=str(tmp_path / "B"))
    with monkeypatch.context() as patch:
        patch.setattr(train_module._Trainer, "train_step", crash_at_step_3)
        with pytest.raises(Crash):
            train(b, runtime(checkpoint_every_min=0), **QUIET)
    crashed = _state(tmp_path / "B")["train_state"]
    assert crashed["epoch"] == 0 and crashed["epoch_step"] == 2 and crashed["step"] == 2

    train(b, runtime(resume=True), **QUIET)
    a_state, b_state = _state(tmp_path / "A"), _state(tmp_path / "B")
    assert a_state["train_state"]["step"] == b_state["train_state"]["step"] == 10
    assert a_state["train_state"]["epoch"] == b_state["train_state"]["epoch"] == 2
    _assert_same_tensors(a_state["model"], b_state["model"], "model")
    _assert_same_tensors(a_state["optimizer"], b_state["optimizer"], "optimizer")
    assert a_state["scheduler"]["last_epoch"] == b_state["scheduler"]["last_epoch"]
    rows_a, rows_b = read_metrics(tmp_path / "A"), read_metrics(tmp_path / "B")
    assert sum("baseline" in r for r in rows_b) == 1
    assert [(r["epoch"], r["complete"]) for r in rows_b[1:]] == [(1, True), (2, True)]
    for ra, rb in zip(rows_a[1:], rows_b[1:]):  # the same training loss sums and validations
        for key in ("train_loss", "val_loss", "depth_rmse", "mask_iou", "lr", "step"):
            assert ra[key] == rb[key], key


def test_resume_across_a_stage_boundary_is_exact(trained_run, tiny_dataset, tmp_path, monkeypatch):
    """Crash in the first step of the 64 px stage (augmented, 16-sample subsets), resume: the weights equal
    those of the uninterrupted trained_run."""
    config = TrainConfig.from_dict(json.loads((trained_run / "config.json").read_text()))
    config = replace(config, output=str(tmp_path / "run"))
    original = train_module._Trainer.train_step

    def crash_in_stage_2(self, batch):
        if self.state.epoch == 1:
            raise Crash()
        return original(self, batch)

    with monkeypatch.context() as patch:
        patch.setattr(train_module._Trainer, "train_step", crash_in_stage_2)
        with pytest.raises(Crash):
            train(config, fast_runtime(), **QUIET)
    assert _state(tmp_path / "run")["train_state"]["epoch"] == 1
    train(config, fast_runtime(resume=True, checkpoint_every_min=0), **QUIET)
    _assert_same_tensors(_state(trained_run)["model"], _state(tmp_path / "run")["model"], "model")
    assert [r["size"] for r in read_metrics(tmp_path / "run")[1:]] == [32, 64]


def test_time_limit_stops_with_a_partial_epoch_and_resume_finishes(tiny_dataset, tmp_path):
    config = tiny_train_config(tiny_dataset, tmp_path / "run", schedule=((32, 2),))
    train(replace(config, time_limit_min=1e-5), fast_runtime(), **QUIET)
    stopped = _state(tmp_path / "run")["train_state"]
    assert stopped["epoch"] == 0 and stopped["epoch_step"] == 1 and stopped["step"] == 1
    rows = read_metrics(tmp_path / "run")
    assert rows[-1]["epoch"] == 1 and rows[-1]["complete"] is False and rows[-1]["n_images"] == 4.0

    train(config, fast_runtime(resume=True), **QUIET)
    rows = read_metrics(tmp_path / "run")
    assert sum("baseline" in r for r in rows) == 1
    assert [(r["epoch"], r["complete"]) for r in rows[1:]] == [(1, False), (1, True), (2, True)]
    assert [r["step"] for r in rows[1:]] == [1, 5, 10]
    final = _state(tmp_path / "run")["train_state"]
    assert final["epoch"] == 2 and final["step"] == 10 and final["epoch_step"] == 0


def test_resume_of_a_finished_run_trains_nothing(trained_run, tmp_path):
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    before = (run / "metrics.jsonl").read_text()
    config = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    metrics = train(replace(config, output=str(run)), fast_runtime(resume=True), **QUIET)
    assert metrics == {}
    assert (run / "metrics.jsonl").read_text() == before


def test_existing_run_is_refused_without_resume_and_restarted_with_overwrite(trained_run, tmp_path):
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    config = tiny_train_config(Path(json.loads((run / "config.json").read_text())["data"]), run)
    with pytest.raises(DepthmaskError, match="--resume") as info:
        train(config, fast_runtime(), **QUIET)
    assert "--overwrite" in str(info.value) and "\n" not in str(info.value)
    assert len(read_metrics(run)) == 3  # untouched

    train(config, fast_runtime(overwrite=True), **QUIET)
    rows = read_metrics(run)
    assert sum("baseline" in r for r in rows) == 1 and [r["epoch"] for r in rows[1:]] == [1]
    assert json.loads((run / "config.json").read_text())["schedule"] == [[32, 1]]
    assert _state(run)["train_state"]["epoch"] == 1


def test_resume_without_a_checkpoint_is_refused(tiny_dataset, tmp_path):
    with pytest.raises(DepthmaskError, match="nothing to resume"):
        train(tiny_train_config(tiny_dataset, tmp_path / "run"), fast_runtime(resume=True), **QUIET)


def test_output_that_is_a_file_is_refused_and_missing_parents_are_created(tiny_dataset, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DepthmaskError, match="file"):
        train(tiny_train_config(tiny_dataset, tmp_path / "file"), fast_runtime(), **QUIET)
    assert (tmp_path / "file").read_text() == "x"
    run = tmp_path / "runs" / "deeper" / "r1"  # as `dm-train DATA` does with its default runs/default
    train(tiny_train_config(tiny_dataset, run, epoch_samples=8), fast_runtime(), **QUIET)
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file()


def test_non_finite_loss_stops_with_one_line(tiny_dataset, tmp_path, monkeypatch):
    original = train_module.total_loss

    def nan_loss(*args, **kwargs):
        loss, parts = original(*args, **kwargs)
        return loss * math.nan, {**parts, "loss": math.nan}

    monkeypatch.setattr(train_module, "total_loss", nan_loss)
    with pytest.raises(DepthmaskError) as info:
        train(tiny_train_config(tiny_dataset, tmp_path / "run"), fast_runtime(), **QUIET)
    message = str(info.value)
    assert "\n" not in message
    assert "loss became nan" in message and "epoch 1, step 1" in message and "--lr" in message


def test_batch_larger_than_the_split_is_refused(tiny_dataset, tmp_path):
    with pytest.raises(DepthmaskError, match="--batch-size 37"):
        train(tiny_train_config(tiny_dataset, tmp_path / "run", batch_size=37), fast_runtime(), **QUIET)


@pytest.mark.parametrize("field, value, option", [
    ("batch_size", 0, "--batch-size"), ("lr", 0.0, "--lr"), ("lr", float("nan"), "--lr"),
    ("optimizer", "adam", "--optimizer"), ("lr_schedule", "step", "--lr-schedule"),
    ("best_metric", "accuracy", "--best-metric"), ("epoch_samples", 0, "--epoch-samples"),
    ("time_limit_min", 0, "--time-limit-min"), ("schedule", (), "--schedule"),
])
def test_bad_config_values_are_refused(field, value, option, tmp_path):
    with pytest.raises(DepthmaskError, match=option):
        tiny_train_config(tmp_path, tmp_path / "run", **{field: value})


def test_time_limit_and_sgd_and_best_metric(tiny_dataset, tmp_path):
    config = tiny_train_config(tiny_dataset, tmp_path / "run", schedule=((32, 3),), optimizer="sgd",
                               lr_schedule="cosine", best_metric="mask_iou", time_limit_min=1e-5)
    metrics = train(config, fast_runtime(), **QUIET)
    rows = read_metrics(tmp_path / "run")
    assert len(rows) == 2 and rows[1]["complete"] is False and rows[1]["step"] == 1
    assert metrics["n_images"] == 4.0
    assert _state(tmp_path / "run")["train_state"]["best"] == pytest.approx(rows[1]["mask_iou"])

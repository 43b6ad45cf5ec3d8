"""Distributed training: rank shares of an epoch and the summed validation equal one process; a real
2-process torchrun (gloo, CPU) finishes, rank 0 writes the run folder, every val sample counts once."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import REPO, TINY_MODEL_ARGS, read_metrics, train_env
from pipeline import DepthmaskError
from training import distributed as dist_utils
from training.checkpoint import load_checkpoint, model_from_checkpoint
from training.data import DepthMaskDataset, make_loader
from training.inputs import BatchNormalizer
from training.losses import total_loss
from training.metrics import SegDepthMetrics, constant_baseline
from training.precision import fast_path_default

pytestmark = pytest.mark.usefixtures("one_thread")


def _validate(model, dataset, normalizer, *, rank: int = 0, world_size: int = 1, batch_size: int = 8,
              limit: int | None = None, amp: bool = False):
    """What _Trainer.validate does on one rank: (metric sums, [loss * n, n])."""
    loader = make_loader(dataset, batch_size=batch_size, shuffle=False, workers=0, rank=rank, world_size=world_size)
    loader.sampler.limit = limit
    loader.sampler.set_epoch(0)
    metrics, loss = SegDepthMetrics(), torch.zeros(2, dtype=torch.float64)
    seen = []
    with torch.no_grad():
        for batch in loader:
            b = normalizer(batch)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                depth, logits = model(b["bg"], b["fg_bg"])
            _, parts = total_loss(depth, logits, b["depth"], b["mask"])
            n = b["bg"].shape[0]
            loss += torch.tensor([parts["loss"] * n, n], dtype=torch.float64)
            metrics.update(depth, b["depth"], logits, b["mask"])
            seen += batch["index"].tolist()
    return metrics.state_tensor(), loss, seen


def test_rank_shares_summed_equal_one_process(trained_run, tiny_dataset):
    model, _, _ = model_from_checkpoint(trained_run / "last.pt")
    model.eval()
    dataset = DepthMaskDataset(tiny_dataset, "train", size=32)  # 36 samples: more than one batch per rank
    normalizer = BatchNormalizer(dataset.stats())
    for limit in (None, 29):
        whole, whole_loss, whole_seen = _validate(model, dataset, normalizer, limit=limit)
        shares = [_validate(model, dataset, normalizer, rank=r, world_size=2, limit=limit, batch_size=5)
                  for r in (0, 1)]
        assert not set(shares[0][2]) & set(shares[1][2])
        assert sorted(shares[0][2] + shares[1][2]) == sorted(whole_seen)
        summed = SegDepthMetrics()
        summed.load_state_tensor(shares[0][0] + shares[1][0])  # what all_reduce_sum gives every rank
        one = SegDepthMetrics()
        one.load_state_tensor(whole)
        a, b = summed.compute(), one.compute()
        assert a["n_images"] == b["n_images"] == (limit or len(dataset))
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12), key
        loss = shares[0][1] + shares[1][1]
        assert float(loss[0] / loss[1]) == pytest.approx(float(whole_loss[0] / whole_loss[1]), rel=1e-5)


def test_single_process_helpers():
    info = dist_utils.DistInfo()
    assert not info.enabled and info.is_main
    t = torch.arange(3.0)
    assert dist_utils.all_reduce_sum(t, info) is t
    assert dist_utils.broadcast_flag(True, info) is True and dist_utils.broadcast_flag(False, info) is False
    assert dist_utils.pick_device("cpu") == torch.device("cpu")
    with pytest.raises(DepthmaskError, match="--device"):
        dist_utils.pick_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(DepthmaskError, match="no CUDA GPU"):
            dist_utils.pick_device("cuda:1")


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    torchrun = shutil.which("torchrun")
    head = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    cmd = [*head, "--standalone", "--nproc-per-node", "2", "-m", "training.cli", str(tiny_dataset), "-o", str(run),
           "--device", "cpu", *TINY_MODEL_ARGS, "--schedule", "32:1", "--batch-size", "8", "--workers", "0",
           "--no-progress", "--seed", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO, env=train_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "on cpu x2" in proc.stderr
    assert proc.stderr.count("epoch 1:") == 1, proc.stderr  # only rank 0 logs
    assert proc.stdout.count("done:") == 1, proc.stdout  # ... and reports
    names = sorted(p.name for p in run.iterdir())
    assert [n for n in names if n != "tb"] == ["best.pt", "config.json", "curves.png", "last.pt", "metrics.jsonl"]
    if "tb" in names:  # TensorBoard installed (the test extra): rank 0 alone writes its events
        assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 1

    rows = read_metrics(run)
    assert len(rows) == 2 and "baseline" in rows[0]
    val_size = len(DepthMaskDataset(tiny_dataset, "val"))
    assert rows[0]["n_images"] == val_size  # the baseline covers the whole val split ...
    assert rows[1]["n_images"] == val_size  # ... and so does every validation: each sample once over the ranks
    assert rows[1]["complete"] and rows[1]["size"] == 32
    assert rows[1]["step"] == 3  # 36 samples / 2 ranks / batch 8: 3 steps per rank
    assert json.loads((run / "config.json").read_text())["seed"] == 2

    # rank 0's checkpoint is the model that was validated: one process recomputes the same metrics
    state = load_checkpoint(run / "last.pt")
    assert state["train_state"]["epoch"] == 1 and state["train_state"]["step"] == 3
    assert not any(k.startswith("module.") for k in state["model"])
    model, _, _ = model_from_checkpoint(run / "last.pt")
    model.eval()
    fast = fast_path_default(torch.device("cpu"))  # the run's default precision on this CPU
    if fast:
        model = model.to(memory_format=torch.channels_last)
    val = DepthMaskDataset(tiny_dataset, "val", size=32)
    normalizer = BatchNormalizer(val.stats(), channels_last=fast)
    sums, loss, seen = _validate(model, val, normalizer, amp=fast)
    metrics = SegDepthMetrics()
    metrics.load_state_tensor(sums)
    want = metrics.compute()
    for key in ("depth_rmse", "depth_delta1", "mask_iou", "mask_dice", "n_images"):
        assert rows[1][key] == pytest.approx(want[key], rel=1e-6, abs=1e-9), key
    assert rows[1]["val_loss"] == pytest.approx(float(loss[0] / loss[1]), rel=1e-5)

    # and the baseline equals the one-process constant baseline over the whole val split
    loader = make_loader(val, batch_size=8, shuffle=False, workers=0)
    pairs = [(b["depth"].float() / 65535.0, b["mask"].float()) for b in loader]
    floor = constant_baseline(pairs, float(val.stats()["depth"]["mean"][0]))["best_constant"]
    for key in ("depth_rmse", "mask_iou", "mask_constant", "n_images"):
        assert rows[0][key] == pytest.approx(floor[key], rel=1e-9), key

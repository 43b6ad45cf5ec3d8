"""dm-eval on the tiny dataset equals a recomputation by hand (numpy and OpenCV on samples decoded the
straightforward way), the new metrics on synthetic masks and depths, and the CLI's JSON, table and errors."""
from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch

from conftest import assert_one_line_error
from pipeline.plan import SPLIT_NAMES
from reference_decode import load_sample
from training.checkpoint import input_size_of, load_checkpoint, model_from_checkpoint, normalization_of
from training.data import DepthMaskDataset
from training.evaluate import EvalOptions, evaluate, floor_metrics, format_report
from training.metrics import (DEPTH_EPS, BoundaryFScore, RegionDepthMetrics, best_diff_threshold, diff_histograms)
from use_cli import invoke_use

TOL = 3


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread_module):
    yield


@pytest.fixture(scope="module")
def result(tiny_dataset, checkpoint):
    return evaluate(tiny_dataset, checkpoint, EvalOptions(device="cpu", amp=False))


# ---- by hand ---------------------------------------------------------------------------------------
def samples_by_hand(data, split, size):
    """RGB bg, fg_bg, 0/1 mask, float depth and each sample's own background depth, decoded through load_sample()."""
    dataset = DepthMaskDataset(data, split, size=size)
    out = {"bg": [], "fg_bg": [], "mask": [], "depth": [], "bg_depth": []}
    for position in range(len(dataset)):
        bg, fg, mask, depth = load_sample(dataset, position)
        out["bg"].append(bg[:, :, ::-1])
        out["fg_bg"].append(fg[:, :, ::-1])
        out["mask"].append(mask.astype(bool))
        out["depth"].append(depth / 65535.0)
        record = dataset.reader.record(int(dataset.indices[position]))
        background = dataset.reader.background(int(record["bg"]))[1]
        out["bg_depth"].append(cv2.resize(background, (size, size), interpolation=cv2.INTER_AREA) / 65535.0)
    return {k: np.stack(v) for k, v in out.items()}


def boundary(mask: np.ndarray) -> np.ndarray:
    return mask & ~cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def boundary_f(pred: np.ndarray, true: np.ndarray, tol: int = TOL) -> float:
    kernel = np.ones((2 * tol + 1, 2 * tol + 1), np.uint8)
    mp = tp = mt = tt = 0
    for p, t in zip(pred, true):
        bp, bt = boundary(p), boundary(t)
        near_t = cv2.dilate(bt.astype(np.uint8), kernel).astype(bool)
        near_p = cv2.dilate(bp.astype(np.uint8), kernel).astype(bool)
        mp, tp, mt, tt = mp + (bp & near_t).sum(), tp + bp.sum(), mt + (bt & near_p).sum(), tt + bt.sum()
    precision, recall = mp / tp, mt / tt
    return 2 * precision * recall / (precision + recall)


def depth_errors(pred: np.ndarray, true: np.ndarray, eps: float = DEPTH_EPS) -> dict[str, float]:
    pc, tc = np.maximum(pred, eps), np.maximum(true, eps)
    ratio = np.maximum(pc / tc, tc / pc)
    return {"rmse": math.sqrt(np.mean((pred - true) ** 2)), "absrel": float(np.mean(np.abs(pc - tc) / tc)),
            "delta1": float(np.mean(ratio < 1.25))}


def iou(pred: np.ndarray, true: np.ndarray) -> float:
    return (pred & true).sum() / (pred | true).sum()


def test_eval_equals_a_recomputation_by_hand(tiny_dataset, checkpoint, result):
    state = load_checkpoint(checkpoint)
    norm = normalization_of(state, checkpoint)
    model, config, _ = model_from_checkpoint(checkpoint)
    size = input_size_of(config)
    s = samples_by_hand(tiny_dataset, "val", size)
    assert result["samples"] == len(s["mask"]) and result["size"] == size

    def normalise(images, key):
        x = (images / 255.0 - np.array(norm[key]["mean"])) / np.array(norm[key]["std"])
        return torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32))

    with torch.no_grad():
        depth, logits = model.eval()(normalise(s["bg"], "bg"), normalise(s["fg_bg"], "fg_bg"))
    pred_depth, pred_mask = depth[:, 0].double().numpy(), logits[:, 0].numpy() > 0
    true_depth, true_mask = s["depth"], s["mask"]
    m = result["model"]
    whole = depth_errors(pred_depth, true_depth)
    assert m["depth_rmse"] == pytest.approx(whole["rmse"], rel=1e-5)
    assert m["depth_absrel"] == pytest.approx(whole["absrel"], rel=1e-5)
    assert m["depth_delta1"] == pytest.approx(whole["delta1"], abs=2e-4)
    assert m["mask_iou"] == pytest.approx(iou(pred_mask, true_mask), abs=2e-4)
    assert m["mask_boundary_f"] == pytest.approx(boundary_f(pred_mask, true_mask), abs=2e-3)
    for region, select in (("object", true_mask), ("background", ~true_mask)):
        e = depth_errors(pred_depth[select], true_depth[select])
        assert m[f"depth_rmse_{region}"] == pytest.approx(e["rmse"], rel=1e-5)
        assert m[f"depth_absrel_{region}"] == pytest.approx(e["absrel"], rel=1e-5)
    far = state["dataset"]["depth"]["far_m"]
    finite = true_depth < 1.0
    metric = depth_errors(pred_depth[finite] * far, true_depth[finite] * far, DEPTH_EPS * far)
    assert m["depth_rmse_m"] == pytest.approx(metric["rmse"], rel=1e-5)
    assert m["depth_delta1_m"] == pytest.approx(metric["delta1"], abs=2e-4)
    assert math.isfinite(m["loss"]) and m["loss"] > 0


def test_floors_equal_a_recomputation_by_hand(tiny_dataset, result):
    size = result["size"]
    train, val = samples_by_hand(tiny_dataset, "train", size), samples_by_hand(tiny_dataset, "val", size)

    def diff(s):
        return np.abs(s["fg_bg"].astype(int) - s["bg"].astype(int)).max(axis=3)

    ious = [iou(diff(train) > t, train["mask"]) for t in range(256)]
    t = int(np.argmax(ious))
    floors = result["floors"]
    assert floors["diff_threshold"]["threshold"] == t and floors["diff_threshold"]["threshold_split"] == "train"
    assert floors["diff_threshold"]["mask_iou"] == pytest.approx(iou(diff(val) > t, val["mask"]), rel=1e-9)
    assert floors["diff_threshold"]["mask_boundary_f"] == pytest.approx(boundary_f(diff(val) > t, val["mask"]), rel=1e-9)
    bg_depth = depth_errors(val["bg_depth"], val["depth"])
    assert floors["background_depth"]["depth_rmse"] == pytest.approx(bg_depth["rmse"], rel=1e-6)
    obj = val["mask"]
    assert floors["background_depth"]["depth_rmse_object"] == pytest.approx(
        depth_errors(val["bg_depth"][obj], val["depth"][obj])["rmse"], rel=1e-6)
    # away from the object's edge (a pixel that area resizing mixes with it) the background is exact
    assert floors["background_depth"]["depth_rmse_background"] < floors["background_depth"]["depth_rmse_object"]
    mean = floors["constant"]["depth_constant"]
    assert floors["constant"]["depth_rmse"] == pytest.approx(math.sqrt(np.mean((val["depth"] - mean) ** 2)), rel=1e-6)
    best_constant = max(iou(np.zeros_like(obj), obj), iou(np.ones_like(obj), obj))
    assert floors["constant"]["mask_iou"] == pytest.approx(best_constant)
    # the hook for dm-train: the same floors
    again = floor_metrics(tiny_dataset, "val", size)
    assert again["diff_threshold"]["mask_iou"] == floors["diff_threshold"]["mask_iou"]
    assert again["background_depth"]["depth_rmse"] == floors["background_depth"]["depth_rmse"]


# ---- the metrics on synthetic inputs ------------------------------------------------------------------
def square(size: int, top: int, left: int, side: int) -> torch.Tensor:
    m = torch.zeros(1, 1, size, size, dtype=torch.bool)
    m[..., top : top + side, left : left + side] = True
    return m


def test_boundary_f_within_the_band_and_beyond():
    true = square(40, 10, 10, 16)
    near = BoundaryFScore(2)
    near.update(square(40, 11, 12, 16), true)  # every boundary pixel within 2 px of the other's
    assert near.compute()["mask_boundary_f"] == 1.0
    far = BoundaryFScore(2)
    far.update(square(40, 10, 15, 16), true)  # 5 px to the right: the vertical edges miss, horizontal ones partly
    f = far.compute()
    assert 0 < f["mask_boundary_f"] < 1 and f["mask_boundary_precision"] == pytest.approx(f["mask_boundary_recall"])
    empty = BoundaryFScore(2)
    empty.update(torch.zeros(1, 1, 8, 8, dtype=torch.bool), torch.zeros(1, 1, 8, 8, dtype=torch.bool))
    assert empty.compute()["mask_boundary_f"] == 1.0


def test_best_diff_threshold_is_exact():
    diff = torch.tensor([[5, 5, 20, 40], [3, 30, 50, 9]]).view(1, 1, 2, 4)
    mask = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 0]]).view(1, 1, 2, 4)
    t, best = best_diff_threshold(diff_histograms(diff, mask))
    assert (t, best) == (9, 1.0)  # 9 < object values (>= 20), >= every background value


def test_region_depth_and_metres():
    true = torch.tensor([[0.2, 0.4], [1.0, 0.5]]).view(1, 1, 2, 2)
    pred = torch.tensor([[0.3, 0.4], [0.9, 0.5]]).view(1, 1, 2, 2)
    mask = torch.tensor([[1, 0], [0, 0]]).view(1, 1, 2, 2)
    metrics = RegionDepthMetrics(far_m=50.0)
    metrics.update(pred, true, mask)
    out = metrics.compute()
    assert out["depth_rmse_object"] == pytest.approx(0.1)
    assert out["depth_rmse_background"] == pytest.approx(math.sqrt(0.01 / 3))
    assert out["pixels_m"] == 3  # the far plane (sky) has no metric depth
    assert out["depth_rmse_m"] == pytest.approx(math.sqrt((5.0**2) / 3))
    assert "depth_rmse_m" not in RegionDepthMetrics().compute()


# ---- CLI -------------------------------------------------------------------------------------------
def test_cli_json_and_table(tiny_dataset, checkpoint, result):
    cli = invoke_use("eval_command", tiny_dataset, "--checkpoint", checkpoint, "--json", "--device", "cpu", "--no-amp")
    assert cli.rc == 0, str(cli)
    assert json.loads(cli.stdout)["model"]["depth_rmse"] == pytest.approx(result["model"]["depth_rmse"], rel=1e-9)
    table = format_report(result)
    for label in ("mask boundary F", "depth RMSE (m)", "depth RMSE, object px", "constant"):
        assert label in table
    few = invoke_use("eval_command", tiny_dataset, "--checkpoint", checkpoint, "--samples", "2", "--split", "all",
                     "--device", "cpu", "--no-progress")
    assert few.rc == 0 and "(all, 2 samples" in few.stdout, str(few)


def test_cli_errors_are_one_line(tiny_dataset, checkpoint, tmp_path):
    cases = [
        (["--checkpoint", checkpoint, "--split", "bogus"], ("--split", SPLIT_NAMES[0])),
        (["--checkpoint", checkpoint, "--samples", "0"], ("--samples",)),
        (["--checkpoint", checkpoint, "--batch-size", "0"], ("--batch-size",)),
        (["--checkpoint", checkpoint, "--boundary-tolerance", "-1"], ("--boundary-tolerance",)),
        (["--checkpoint", tmp_path / "missing.pt"], ("does not exist",)),
        ([], ("--checkpoint",)),
    ]
    for args, fragments in cases:
        assert_one_line_error(invoke_use("eval_command", tiny_dataset, *args, "--no-progress"), *fragments)
    assert_one_line_error(invoke_use("eval_command", tmp_path, "--checkpoint", checkpoint, "--no-progress"),
                          str(tmp_path))

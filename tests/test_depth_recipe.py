"""docs/depth-models.md: the recipe's export calls, run on small stand-ins with the input and output conventions
of MiDaS (TorchScript, inverse depth (N, H, W)) and Depth Anything V2 (ONNX, disparity (N, H, W), input a
multiple of 14; the metric variant in metres), and the files they make given to dm-build-lmdb --depth-model."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from conftest import run_cli
from pipeline import DatasetReader
from user_data_kit import write_user_folders

SIZE = "192"


class RowDisparity(nn.Module):
    """Disparity growing down the image (the ground comes nearer), at the input's resolution, (N, H, W):
    the output convention of MiDaS and relative Depth Anything."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(x.shape[2], dtype=x.dtype).view(1, -1, 1)
        return (1.0 + rows).expand(x.shape[0], x.shape[2], x.shape[3]) + 0.0 * x.mean(dim=1)


class ConstantMetres(nn.Module):
    """A metric model (Depth Anything V2 metric: max_depth * sigmoid): here 20 m everywhere, (N, H, W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 80.0 * torch.sigmoid(torch.full_like(x[:, 0], float(np.log(20.0 / 60.0)))) + 0.0 * x[:, 0]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return write_user_folders(tmp_path_factory.mktemp("photos"), n_backgrounds=3, n_foregrounds=2)


def _midas_like(path, size: int):  # the recipe's MiDaS call: torch.jit.trace at the input size, then save
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(RowDisparity().eval(), torch.zeros(1, 3, size, size)).save(str(path))
    return path


def _depth_anything_like(module: nn.Module, path, size: int):  # the recipe's torch.onnx.export call
    pytest.importorskip("onnxruntime")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.zeros(1, 3, size, size),), str(path), input_names=["image"],
                          output_names=["disparity"], dynamic_axes={"image": {0: "batch"}, "disparity": {0: "batch"}},
                          opset_version=17, dynamo=False)
    return path


def _build(tmp_path, folders, model, *options: str):
    out = tmp_path / "data"
    result = run_cli("dm-build-lmdb", out, "--bg", folders["bg"], "--fg", folders["fg"], "--depth-model", model,
                     *options, "--depth-device", "cpu", "--positions", "1", "--size", SIZE, "--shard-size", "16",
                     "--no-progress")
    assert result.rc == 0, str(result)
    return out


def _background_depths(root) -> list[np.ndarray]:
    reader = DatasetReader(root)
    return [reader.background(i)[1] for i in range(reader.manifest["backgrounds"]["records"])]


@pytest.mark.parametrize("kind", ["midas-torchscript", "depth-anything-onnx"])
def test_relative_inverse_depth_models(tmp_path, folders, kind):
    if kind == "midas-torchscript":
        model = _midas_like(tmp_path / "midas_small.pt", 32)
        options = ["--depth-model-input-size", "32"]
    else:
        model = _depth_anything_like(RowDisparity(), tmp_path / "da2_vits.onnx", 28)  # 518 in the recipe: 14 x 37
        options = ["--depth-model-input-size", "28"]
    out = _build(tmp_path, folders, model, *options)
    depth = json.loads((out / "manifest.json").read_text())["depth"]
    assert depth["kind"] == "relative" and depth["input"] == "inverse" and depth["model"]["file"] == model.name
    for d in _background_depths(out):
        column = d[:, d.shape[1] // 2].astype(np.int64)
        assert column[0] == 65535  # per map, the farthest pixel (the top row: smallest disparity) is 1.0
        assert np.all(np.diff(column) <= 0) and column[-1] < column[0] // 4  # nearer down the image


def test_metric_depth_model_with_depth_far(tmp_path, folders):
    model = _depth_anything_like(ConstantMetres(), tmp_path / "da2_metric.onnx", 28)
    out = _build(tmp_path, folders, model, "--depth-model-input-size", "28", "--depth-model-output", "depth",
                 "--depth-far", "80")
    depth = json.loads((out / "manifest.json").read_text())["depth"]
    assert depth["kind"] == "scaled" and depth["far"] == 80
    for d in _background_depths(out):  # 20 m of 80 -> 0.25 of the range, everywhere
        assert np.abs(d.astype(np.int64) - round(65535 * 0.25)).max() <= 2

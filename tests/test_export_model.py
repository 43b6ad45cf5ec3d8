"""dm-export-model: ONNX and TorchScript graphs of a tiny trained checkpoint give its outputs within the stated
tolerance at any batch size, carry their metadata, load in dm-predict, and label a folder of photos as depth
teachers in dm-build-lmdb; a failed parity check leaves no file."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, run_cli
from pipeline import DatasetReader, DepthmaskError
from pipeline import images as image_rules
from pipeline.compose import depth_to_uint16
from pipeline.depth_model import DepthModelSpec, load_depth_model
from test_predict import scene
from training import export_model as export_module
from training.checkpoint import dataset_info_of, load_checkpoint, normalization_of
from training.export_model import TOLERANCE, export_model
from training.predict import load_predictor, predict_pairs, read_export_metadata
from use_cli import invoke_use, run_use
from user_data_kit import write_user_folders

FORMATS = {"onnx": "net.onnx", "torchscript": "net.torchscript"}
DATA_SIZE = 192  # the smallest dataset the photo folders' cut-outs allow


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread_module):
    yield


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("exported")
    return {fmt: export_model(checkpoint, root / name, fmt) for fmt, name in FORMATS.items()}


@pytest.fixture(scope="module")
def reference(checkpoint):
    return load_predictor(checkpoint, device="cpu", amp=False)


def rgb_pair(height: int, width: int, seed: int):
    return tuple(np.ascontiguousarray(a[:, :, ::-1]) for a in scene(height, width, seed))


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_exported_graph_gives_the_checkpoints_outputs(fmt, exported, reference):
    result = exported[fmt]
    assert result.path.is_file()
    assert all(result.max_abs_diff[k] <= TOLERANCE[k] for k in TOLERANCE)
    graph = load_predictor(result.path, device="cpu")
    assert (graph.kind, graph.input_size) == (fmt, reference.input_size)
    pairs = [rgb_pair(61, 97, 0), rgb_pair(123, 45, 1), rgb_pair(64, 64, 2)]
    for (d_ref, p_ref), (d_exp, p_exp) in zip(predict_pairs(reference, pairs), predict_pairs(graph, pairs)):
        assert np.abs(d_ref - d_exp).max() <= TOLERANCE["depth"]
        assert np.abs(p_ref - p_exp).max() <= TOLERANCE["mask"] / 4  # sigmoid' <= 1/4 on the logits' tolerance


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("batch", [1, 5])
def test_batch_size_is_dynamic(fmt, batch, exported, reference):
    s = reference.input_size
    rng = np.random.default_rng(batch)
    bg = rng.integers(0, 256, (batch, s, s, 3), dtype=np.uint8)
    fg = bg.copy()
    fg[:, 10:30, 5:25] = 200
    graph = load_predictor(exported[fmt].path, device="cpu")
    (d_ref, m_ref), (d_exp, m_exp) = reference(bg, fg), graph(bg, fg)
    assert d_exp.shape == (batch, s, s)
    assert np.abs(d_ref - d_exp).max() <= TOLERANCE["depth"] and np.abs(m_ref - m_exp).max() <= TOLERANCE["mask"]


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_metadata_says_how_to_run_the_file(fmt, exported, checkpoint, reference):
    state = load_checkpoint(checkpoint)
    metadata = read_export_metadata(exported[fmt].path)
    s = reference.input_size
    assert metadata["input_size"] == s and metadata["normalization_in_graph"] is True
    assert metadata["inputs"]["bg"] == {"shape": ["N", 3, s, s], "dtype": "float32", "channel_order": "RGB",
                                        "layout": "NCHW", "scale": "pixel / 255 (0..1)"}
    assert "logits" in metadata["outputs"]["mask"]["meaning"]
    assert metadata["normalization"] == {k: {"mean": v["mean"], "std": v["std"]}
                                         for k, v in normalization_of(state, checkpoint).items()}
    info = dataset_info_of(state)
    assert metadata["depth"] == info["depth"] and metadata["depth"]["far_m"] > 0
    assert metadata["dataset"]["shards_sha256"] == info["shards_sha256"]
    assert metadata["dataset"]["backgrounds_sha256"] == info["backgrounds_sha256"]
    assert metadata["depthmask_version"] and len(metadata["checkpoint_sha256"]) == 64


def test_onnx_graph_names_and_flat_metadata(exported, reference):
    import onnx
    import onnxruntime

    path = exported["onnx"].path
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props["input_size"] == str(reference.input_size) and props["mask_output"] == "logits"
    assert json.loads(props["depthmask"])["format"] == "depthmask-exported-model"
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["bg", "fg_bg"]
    assert [o.name for o in session.get_outputs()] == ["depth", "mask"]
    shape = session.get_inputs()[0].shape
    assert isinstance(shape[0], str) and shape[1:] == [3, reference.input_size, reference.input_size]


def test_failed_parity_deletes_the_file(tmp_path, checkpoint, monkeypatch):
    monkeypatch.setattr(export_module, "TOLERANCE", {"depth": -1.0, "mask": -1.0})
    with pytest.raises(DepthmaskError, match="differs from the PyTorch model.*nothing was written"):
        export_model(checkpoint, tmp_path / "net.onnx", "onnx")
    assert list(tmp_path.iterdir()) == []


def test_cli_exports_and_reports_parity(tmp_path, checkpoint):
    out = tmp_path / "net.onnx"
    result = run_use("export_model_command", checkpoint, "--format", "onnx", "-o", out)
    assert result.rc == 0, str(result)
    assert "parity with the PyTorch model" in result.stderr and "max |diff|" in result.stdout
    assert read_export_metadata(out)["input_size"] == 64
    assert_one_line_error(invoke_use("export_model_command", checkpoint, "--format", "onnx", "-o", out),
                          "exists", "--overwrite")
    assert invoke_use("export_model_command", checkpoint, "--format", "onnx", "-o", out, "--overwrite").rc == 0


def test_cli_errors_are_one_line(tmp_path, checkpoint):
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    cases = [
        ([checkpoint, "--format", "tflite", "-o", tmp_path / "x.tflite"], ("--format",)),
        ([checkpoint, "--format", "onnx", "-o", tmp_path / "x.txt"], ("must end in .onnx",)),
        ([checkpoint, "--format", "torchscript", "-o", tmp_path / "x.onnx"], ("must not end in .onnx",)),
        ([checkpoint, "--format", "onnx", "-o", tmp_path / "nowhere" / "x.onnx"], ("does not exist",)),
        ([tmp_path / "missing.pt", "--format", "onnx", "-o", tmp_path / "x.onnx"], ("does not exist",)),
        ([tmp_path / "notes.txt", "--format", "onnx", "-o", tmp_path / "x.onnx"], ("unknown model format",)),
        ([checkpoint, "--format", "onnx"], ("--output",)),
    ]
    for args, fragments in cases:
        assert_one_line_error(invoke_use("export_model_command", *args), *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_exported_files_load_in_dm_predict(tmp_path, exported):
    from test_predict import write_pair_folders

    bg_dir, fg_dir = write_pair_folders(tmp_path / "in", [("land", (61, 97), ".png")])
    outputs = {}
    for fmt, result in exported.items():
        out = tmp_path / fmt
        cli = invoke_use("predict_command", result.path, "--bg", bg_dir, "--fg-bg", fg_dir, "-o", out, "--npy",
                         "--no-progress", "--device", "cpu")
        assert cli.rc == 0, str(cli)
        assert fmt in cli.stdout
        outputs[fmt] = np.load(out / "land_depth.npy")
    assert np.abs(outputs["onnx"] - outputs["torchscript"]).max() <= 2 * TOLERANCE["depth"]


def test_a_network_trained_here_labels_photos_as_a_depth_teacher(tmp_path, exported, reference):
    """dm-build-lmdb --depth-model with the exported ONNX file: each background's depth is the network's depth on
    that background fed as both of its inputs (a scene with no object)."""
    folders = write_user_folders(tmp_path / "photos", n_backgrounds=2, n_foregrounds=2)
    size = reference.input_size
    out = tmp_path / "labelled"
    result = run_cli("dm-build-lmdb", out, "--bg", folders["bg"], "--fg", folders["fg"], "--depth-model",
                     exported["onnx"].path, "--depth-model-input-size", size, "--depth-model-output", "depth",
                     "--depth-far", "1", "--depth-device", "cpu", "--positions", "1", "--size", DATA_SIZE,
                     "--shard-size", "16", "--no-progress")
    assert result.rc == 0, str(result)
    reader = DatasetReader(out)
    assert reader.manifest["depth"]["model"]["format"] == "onnx"
    from pipeline.sources import list_folder, load_backgrounds, IMAGE_EXTENSIONS

    backgrounds = load_backgrounds(list_folder("--bg", folders["bg"], IMAGE_EXTENSIONS), DATA_SIZE, None)
    assert len(backgrounds) == 2
    teacher = load_depth_model(DepthModelSpec(path=exported["torchscript"].path, input_size=size, output="depth",
                                              far=1.0, device="cpu"))
    for i, bg in enumerate(backgrounds):
        small = image_rules.resize(bg.image, size, size)  # the teacher's input size, then back to the dataset's
        rgb = np.ascontiguousarray(small[None, :, :, ::-1])
        depth, _ = reference(rgb, rgb)
        expected = depth_to_uint16(image_rules.resize(depth[0], DATA_SIZE, DATA_SIZE), 1.0).astype(np.int64)
        stored = reader.background(i)[1].astype(np.int64)
        assert np.abs(stored - expected).max() <= 2
        assert np.abs(teacher.predict([bg.image])[0].astype(np.int64) - expected).max() <= 2  # TorchScript too

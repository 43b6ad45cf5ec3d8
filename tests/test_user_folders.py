"""Building from the user's own folders: backgrounds of any size and kind, depth maps, cut-outs with
alpha or masks, depth models in each format, composite and per-sample depth, order, hashes, resume."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import assert_one_line_error, read_manifest_json, run_cli, shard_hashes
from pipeline import DatasetReader
from pipeline.assets import UserInputs
from pipeline.build import BuildOptions, assets_for_build, build_dataset
from pipeline.compose import ALPHA_MASK_THRESHOLD
from pipeline.depth_model import DepthModelSpec, load_depth_model
from pipeline.errors import DepthmaskError
from pipeline.images import fit_depth_square, fit_square, normalise_depth
from pipeline.sources import DepthMapOptions
from user_data_kit import (HalfResolution, TinyDepth, background_depth, save_onnx, save_torch_export,
                           save_torchscript, write_user_folders)

SIZE = 192
SMALL = {"positions": 2, "shard_size": 16, "size": SIZE, "val_fraction": 0.25}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    return write_user_folders(tmp_path_factory.mktemp("user"))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"torchscript": save_torchscript(TinyDepth(), root / "tiny.pt"),
            "torch.export": save_torch_export(TinyDepth(), root / "tiny.pt2"),
            "onnx": save_onnx(TinyDepth(), root / "tiny.onnx"),
            "half": save_torchscript(HalfResolution(), root / "half.pt")}


def options(output: Path, folders: dict[str, Path], **overrides) -> BuildOptions:
    inputs = overrides.pop("inputs", None) or UserInputs(bg_dir=folders["bg"], fg_dir=folders["fg"],
                                                         bg_depth_dir=folders["bg_depth"])
    return BuildOptions(output=output, inputs=inputs, **{**SMALL, "workers": 1, **overrides})


def build(output: Path, folders: dict[str, Path], **overrides) -> Path:
    build_dataset(options(output, folders, **overrides), progress=False, log=lambda m: None)
    return output


@pytest.fixture(scope="module")
def user_dataset(tmp_path_factory, folders) -> Path:
    return build(tmp_path_factory.mktemp("ds") / "data", folders)


def test_assets_follow_the_documented_rules(folders):
    assets = assets_for_build(options(Path("unused"), folders))
    # sorted by relative path, sub-folders included, names are relative paths
    assert assets.background_names == ["b0.jpg", "b1.png", "b2.png", "more/b3.png"]
    assert assets.foreground_names == ["f0.png", "f1.png", "f2.png", "f3.png"]
    assert all(b.shape == (SIZE, SIZE, 3) and b.dtype == np.uint8 for b in assets.backgrounds)
    grey = assets.backgrounds[2]
    assert (grey[:, :, 0] == grey[:, :, 1]).all()  # a grey photo becomes three equal channels
    sixteen = cv2.imread(str(folders["bg"] / "more" / "b3.png"), cv2.IMREAD_UNCHANGED)
    assert sixteen.dtype == np.uint16
    assert np.array_equal(assets.backgrounds[3], fit_square((sixteen // 257).astype(np.uint8), SIZE))
    # foregrounds: cropped to their alpha, the big one scaled down to 5/7 of the size
    limit = SIZE * 5 // 7
    assert max(assets.foregrounds[0].shape[:2]) == limit
    f1 = cv2.imread(str(folders["fg"] / "f1.png"), cv2.IMREAD_UNCHANGED)
    rows, cols = np.flatnonzero(f1[:, :, 3].any(axis=1)), np.flatnonzero(f1[:, :, 3].any(axis=0))
    assert rows[0] >= 10 and cols[0] >= 15  # the file has transparent margins; the cut-out does not
    assert np.array_equal(assets.foregrounds[1], f1[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])


def test_depth_maps_are_fitted_and_normalised(folders):
    assets = assets_for_build(options(Path("unused"), folders))
    for i, (h, w) in enumerate([(240, 320), (300, 200), (200, 200)]):
        expected = fit_depth_square(normalise_depth(background_depth(h, w), "depth").astype(np.float32), (h, w), SIZE)
        stored = assets.background_depths[i].astype(np.float64) / 65535
        assert np.abs(stored - expected).max() < 0.01, i  # b0: 16-bit mm PNG, b1: half-size .npy, b2: 8-bit PNG
        # per-map scale over the whole map: its farthest pixel is 1.0 (the portrait's is cropped away)
        assert stored.max() > 0.99 if i != 1 else stored.max() < 0.9
    assert assets.depth["kind"] == "relative" and assets.depth["exact"] is False


def test_inverse_depth_maps_give_the_same_depth(folders):
    """1 / metres maps read with --bg-depth-kind inverse give the depth the metre maps give."""
    direct = assets_for_build(options(Path("unused"), folders))
    inverse = assets_for_build(options(Path("unused"), folders, inputs=UserInputs(
        bg_dir=folders["bg"], fg_dir=folders["fg"], bg_depth_dir=folders["bg_inverse"],
        bg_depth=DepthMapOptions(kind="inverse"))))
    for i in (0, 3):  # the same full-size maps (b1's direct map is half-size and b2's 8-bit: not comparable)
        assert np.abs(direct.background_depths[i].astype(int) - inverse.background_depths[i]).max() <= 2
    assert inverse.depth["input"] == "inverse" and "1 / value" in inverse.depth["normalisation"]


def test_samples_compose_the_user_assets(user_dataset, folders):
    reader = DatasetReader(user_dataset)
    manifest = reader.manifest
    assert manifest["sample_count"] == 4 * 4 * 2 * 2
    assert [b["name"] for b in manifest["assets"]["backgrounds"]] == ["b0.jpg", "b1.png", "b2.png", "more/b3.png"]
    assert all(len(a["sha256"]) == 64 for a in manifest["assets"]["foregrounds"])
    assets = assets_for_build(options(Path("unused"), folders))
    for index in (0, 5, 17, 40, 63):
        s = reader.decode(index)
        record = reader.record(index)
        fg = assets.foregrounds[record["fg"]]
        if record["flip"]:
            fg = fg[:, ::-1]
        x, y = record["x"], record["y"]
        h, w = fg.shape[:2]
        expected_mask = np.zeros((SIZE, SIZE), np.uint8)
        expected_mask[y : y + h, x : x + w][fg[:, :, 3] >= ALPHA_MASK_THRESHOLD] = 255
        assert np.array_equal(s["mask"], expected_mask)
        bg_depth = assets.background_depths[record["bg"]]
        outside = s["mask"] == 0
        assert np.array_equal(s["depth"][outside], bg_depth[outside])
        inside = s["depth"][~outside]
        assert len(set(inside.tolist())) == 1 and inside[0] <= bg_depth[~outside].min()  # never behind what it covers


def test_exif_orientation_is_honoured(tmp_path):
    """A JPEG stored sideways with EXIF orientation 6 is used upright, like every viewer shows it."""
    paths = write_user_folders(tmp_path / "u", n_backgrounds=1, n_foregrounds=2)
    upright = cv2.imread(str(paths["bg"] / "b0.jpg"))  # 240 x 320 landscape
    sideways = np.ascontiguousarray(np.rot90(upright, 1))  # stored rotated: orientation 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(sideways[:, :, ::-1]).save(buffer, format="JPEG", quality=98, exif=exif.tobytes())
    (paths["bg"] / "b0.jpg").write_bytes(buffer.getvalue())
    shown = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buffer.getvalue()))))[:, :, ::-1]
    assert shown.shape[:2] == (240, 320)
    assets = assets_for_build(options(Path("unused"), paths))
    assert np.abs(assets.backgrounds[0].astype(int) - fit_square(np.ascontiguousarray(shown), SIZE)).max() <= 2


def test_rgb_with_masks_equals_rgba(tmp_path, folders):
    """The same objects as RGB + mask files give the very same shards as RGBA files."""
    rgba = build(tmp_path / "rgba", folders)
    masked = build(tmp_path / "masked", folders, inputs=UserInputs(
        bg_dir=folders["bg"], fg_dir=folders["fg_rgb"], fg_masks_dir=folders["fg_masks"],
        bg_depth_dir=folders["bg_depth"]))
    assert shard_hashes(read_manifest_json(rgba)) == shard_hashes(read_manifest_json(masked))


def test_worker_count_does_not_change_a_byte(tmp_path, folders, user_dataset):
    two = build(tmp_path / "two", folders, workers=2)
    assert shard_hashes(read_manifest_json(two)) == shard_hashes(read_manifest_json(user_dataset))


def test_ground_top_keeps_objects_low(tmp_path, folders):
    data = build(tmp_path / "low", folders, inputs=UserInputs(
        bg_dir=folders["bg"], fg_dir=folders["fg"], bg_depth_dir=folders["bg_depth"], ground_top=0.6))
    reader = DatasetReader(data)
    for index in range(reader.manifest["sample_count"]):
        rows = np.flatnonzero(reader.decode(index)["mask"].any(axis=1))
        assert rows[-1] >= round(0.6 * SIZE) - 1


def test_user_foregrounds_on_procedural_backgrounds(tmp_path, folders):
    data = build(tmp_path / "mix", folders, inputs=UserInputs(fg_dir=folders["fg"]), backgrounds=3)
    manifest = read_manifest_json(data)
    assert manifest["assets"]["source"]["backgrounds"]["kind"] == "procedural"
    assert manifest["depth"]["exact"] is True and manifest["sample_count"] == 3 * 4 * 2 * 2


def test_limits_take_the_first_files(folders):
    assets = assets_for_build(options(Path("unused"), folders, backgrounds=2, foregrounds=3))
    assert assets.background_names == ["b0.jpg", "b1.png"] and len(assets.foregrounds) == 3


def test_changed_file_is_detected(tmp_path, folders):
    work = tmp_path / "work"
    shutil.copytree(folders["bg"].parent, work)
    paths = {k: work / v.name for k, v in folders.items()}
    data = build(tmp_path / "data", paths)
    again = build_dataset(options(data, paths), progress=False, log=lambda m: None)
    assert again.built_samples == 0 and "already complete" in again.notes[0]  # unchanged files: nothing to do
    image = cv2.imread(str(paths["bg"] / "b1.png"))
    image[0, 0] = 255 - image[0, 0]
    cv2.imwrite(str(paths["bg"] / "b1.png"), image)
    with pytest.raises(DepthmaskError, match="b1.png"):
        build(data, paths)  # complete dataset, but its files changed: refused, not silently kept
    # an interrupted build (a part of it) notices a changed file on resume too
    part = tmp_path / "part"
    build_dataset(options(part, paths, part=(1, 2)), progress=False, log=lambda m: None)
    cv2.imwrite(str(paths["bg"] / "b2.png"), np.zeros((10, 10), np.uint8))
    with pytest.raises(DepthmaskError, match="assets changed"):
        build_dataset(options(part, paths, part=(2, 2)), progress=False, log=lambda m: None)


def test_cli_end_to_end_with_skipped_files(tmp_path, folders):
    work = tmp_path / "work"
    shutil.copytree(folders["bg"].parent, work)
    (work / "bg" / "notes.txt").write_text("not an image")
    (work / "bg" / ".DS_Store").write_bytes(b"\0\1")
    out = tmp_path / "data"
    result = run_cli("dm-build-lmdb", out, "--bg", work / "bg", "--bg-depth", work / "bg_depth", "--fg", work / "fg",
                     "--fg-max-size", "100", "--positions", "1", "--size", SIZE, "--shard-size", "16", "--no-progress")
    assert result.rc == 0, str(result)
    assert "warning: --bg" in result.stderr and "notes.txt" in result.stderr and ".DS_Store" not in result.stderr
    manifest = read_manifest_json(out)
    assert manifest["sample_count"] == 4 * 4 * 2
    assert max(f["width"] for f in manifest["assets"]["foregrounds"]) <= 100
    stats = run_cli("dm-stats", out, "--verify")
    assert stats.rc == 0 and "verify       OK" in stats.stdout and "precomputed maps" in stats.stdout


# ---- depth models --------------------------------------------------------------------------------
def spec(path: Path, **kw) -> DepthModelSpec:
    return DepthModelSpec(path=path, input_size=32, device="cpu", **kw)


def test_every_model_format_gives_the_same_depth(models, folders):
    assets = assets_for_build(options(Path("unused"), folders))
    outputs = {}
    for name in ("torchscript", "torch.export", "onnx"):
        model = load_depth_model(spec(models[name]))
        outputs[name] = np.stack(model.predict(assets.backgrounds[:3])).astype(np.int64)
        assert outputs[name].shape == (3, SIZE, SIZE)
    assert np.abs(outputs["torchscript"] - outputs["torch.export"]).max() <= 2
    assert np.abs(outputs["torchscript"] - outputs["onnx"]).max() <= 2


def test_model_output_of_another_size_is_resized(models):
    model = load_depth_model(spec(models["half"], output="depth"))
    out = model.predict([np.full((SIZE, SIZE, 3), 100, np.uint8)])
    assert out[0].shape == (SIZE, SIZE) and out[0].dtype == np.uint16


def test_composite_mode_uses_the_model_on_each_background(tmp_path, folders, models):
    inputs = UserInputs(bg_dir=folders["bg"], fg_dir=folders["fg"], depth_model=spec(models["torchscript"]))
    data = build(tmp_path / "model", folders, inputs=inputs)
    reader = DatasetReader(data)
    model = load_depth_model(spec(models["torchscript"]))
    assets = assets_for_build(options(Path("unused"), folders))
    expected = model.predict(assets.backgrounds)
    for i in range(4):
        assert np.array_equal(reader.background(i)[1], expected[i])
    manifest = reader.manifest
    assert manifest["depth"]["model"]["format"] == "torchscript" and len(manifest["depth"]["model"]["sha256"]) == 64
    assert manifest["fields"]["depth"]["transform"] == "background_relative_box"


def test_per_sample_mode_runs_the_model_on_every_composite(tmp_path, folders, models):
    inputs = UserInputs(bg_dir=folders["bg"], fg_dir=folders["fg"], depth_model=spec(models["torchscript"], batch_size=5),
                        depth_mode="per-sample")
    one = build(tmp_path / "one", folders, inputs=inputs, positions=1)
    two = build(tmp_path / "two", folders, inputs=inputs, positions=1, workers=2)
    assert shard_hashes(read_manifest_json(one)) == shard_hashes(read_manifest_json(two))
    reader = DatasetReader(one)
    assert reader.manifest["fields"]["depth"].get("transform") != "background_relative_box"
    model = load_depth_model(spec(models["torchscript"]))
    for index in (0, 7, 13):
        s = reader.decode(index)
        # the model on the very composite: fg_bg as built (before JPEG), re-rendered from the record
        from pipeline.shard_worker import ShardContext  # noqa: F401 - the build's own renderer is the reference
        expected = model.predict([_render_composite(folders, reader.record(index))])[0]
        assert np.abs(s["depth"].astype(int) - expected.astype(int)).max() <= 1


def _render_composite(folders, record) -> np.ndarray:
    from pipeline.compose import composite, prepare_foreground

    assets = assets_for_build(options(Path("unused"), folders))
    fg = prepare_foreground(assets.foregrounds[record["fg"]], flip=bool(record["flip"]))
    return composite(assets.backgrounds[record["bg"]], fg, record["x"], record["y"])


def test_per_sample_build_resumes_after_a_part(tmp_path, folders, models):
    """Per-sample depth is built shard by shard like the rest: parts built apart then merged equal one build."""
    inputs = UserInputs(bg_dir=folders["bg"], fg_dir=folders["fg"], depth_model=spec(models["onnx"]),
                        depth_mode="per-sample")
    whole = build(tmp_path / "whole", folders, inputs=inputs, positions=1)
    split = tmp_path / "split"
    for k in (1, 2):
        build_dataset(options(split, folders, inputs=inputs, positions=1, part=(k, 2)), progress=False,
                      log=lambda m: None)
    build_dataset(options(split, folders, inputs=inputs, positions=1, merge_only=True), progress=False,
                  log=lambda m: None)
    assert shard_hashes(read_manifest_json(whole)) == shard_hashes(read_manifest_json(split))


def test_cli_depth_model_and_per_sample(tmp_path, folders, models):
    out = tmp_path / "cli"
    result = run_cli("dm-build-lmdb", out, "--bg", folders["bg"], "--fg", folders["fg"], "--depth-model",
                     models["torch.export"], "--depth-model-input-size", "32", "--depth-mode", "per-sample",
                     "--depth-device", "cpu", "--positions", "1", "--size", SIZE, "--shard-size", "16", "--no-progress")
    assert result.rc == 0, str(result)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["build"]["content"]["depth_storage"] == "full"
    assert manifest["build"]["content"]["inputs"]["depth_mode"] == "per-sample"
    assert "per-sample" in manifest["depth"]["source"]


def test_depth_options_need_real_backgrounds(tmp_path, folders, models):
    result = run_cli("dm-build-lmdb", tmp_path / "x", "--fg", folders["fg"], "--depth-model", models["torchscript"],
                     "--no-progress")
    assert_one_line_error(result, "--depth-model", "--bg")
    assert not (tmp_path / "x").exists()
    assert DepthMapOptions().kind == "depth"

"""Bad user data: each is one line on stderr naming the file or option, a non-zero exit, no traceback,
and no output folder left behind (inputs are read and checked before anything is written)."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import CliResult, assert_one_line_error, run_cli
from pipeline.cli import build_lmdb_command
from user_data_kit import NotANumber, TinyDepth, TwoChannels, save_onnx, save_torchscript, write_user_folders

BASE = ["--positions", "1", "--size", "192", "--shard-size", "16", "--no-progress"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return write_user_folders(tmp_path_factory.mktemp("pristine"))["bg"].parent


@pytest.fixture
def data(tmp_path, pristine) -> Path:
    """A fresh copy of good folders for each test to break."""
    shutil.copytree(pristine, tmp_path / "in")
    return tmp_path / "in"


def build(tmp_path: Path, *args) -> tuple[CliResult, Path]:
    out = tmp_path / "out"
    outcome = CliRunner().invoke(build_lmdb_command, [str(out), *BASE, *(str(a) for a in args)])
    assert outcome.exception is None or isinstance(outcome.exception, SystemExit), repr(outcome.exception)
    return CliResult(outcome.exit_code, outcome.stdout, outcome.stderr), out


def refused(tmp_path: Path, args: list, *fragments: str) -> str:
    result, out = build(tmp_path, *args)
    line = assert_one_line_error(CliResult(result.rc, result.stdout, _without_warnings(result.stderr)), *fragments)
    assert not out.exists(), "bad input must be found before anything is written"
    return line


def _without_warnings(stderr: str) -> str:
    return "\n".join(line for line in stderr.splitlines() if not line.startswith("warning:"))


def composite_args(data: Path) -> list:
    return ["--bg", data / "bg", "--bg-depth", data / "bg_depth", "--fg", data / "fg"]


def test_good_folders_build(tmp_path, data):
    """The baseline every other case breaks: these folders do build."""
    result, out = build(tmp_path, *composite_args(data))
    assert result.rc == 0, result
    assert (out / "manifest.json").exists()


@pytest.mark.parametrize("option", ["--bg", "--fg"])
def test_empty_folder(tmp_path, data, option):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = composite_args(data)
    args[args.index(option) + 1] = empty
    refused(tmp_path, args, option, "no png/jpg", str(empty))


def test_folder_with_only_other_files(tmp_path, data):
    other = tmp_path / "docs"
    other.mkdir()
    (other / "readme.txt").write_text("hello")
    args = composite_args(data)
    args[args.index("--fg") + 1] = other
    refused(tmp_path, args, "--fg", "1 other file(s) skipped")


def test_missing_folder(tmp_path, data):
    args = composite_args(data)
    args[args.index("--bg") + 1] = tmp_path / "nowhere"
    refused(tmp_path, args, "--bg", "does not exist")


def test_truncated_jpeg(tmp_path, data):
    path = data / "bg" / "b0.jpg"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    refused(tmp_path, composite_args(data), "b0.jpg", "truncated")


def test_corrupt_png(tmp_path, data):
    """Damaged in the middle, complete at the end: the decoder refuses it."""
    path = data / "fg" / "f2.png"
    raw = bytearray(path.read_bytes())
    raw[60:90] = bytes(30)
    path.write_bytes(bytes(raw))
    refused(tmp_path, composite_args(data), "f2.png", "not a readable image")


def test_truncated_files_in_a_real_process_say_one_line(tmp_path, data, pristine):
    """A PNG cut in the middle: libpng's own complaint must not reach the user's terminal."""
    path = data / "fg" / "f1.png"
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    result = run_cli("dm-build-lmdb", tmp_path / "out", *BASE, *composite_args(data))
    assert_one_line_error(result, "f1.png", "truncated")
    shutil.copy(pristine / "fg" / "f1.png", path)
    depth = data / "bg_depth" / "b0.png"
    depth.write_bytes(depth.read_bytes()[:-30])
    refused(tmp_path, composite_args(data), "b0.png", "truncated")


def test_jpeg_with_data_after_the_image_is_accepted(tmp_path, data):
    """Phones append a video after the JPEG (motion photos): not a truncated file."""
    path = data / "bg" / "b0.jpg"
    path.write_bytes(path.read_bytes() + bytes(range(256)) * 40)
    result, out = build(tmp_path, *composite_args(data))
    assert result.rc == 0, result


def test_file_that_is_not_an_image(tmp_path, data):
    (data / "bg" / "b9.png").write_text("this is text, named like an image")
    refused(tmp_path, composite_args(data), "b9.png", "not a readable image")


def test_foreground_without_alpha_or_mask(tmp_path, data):
    cv2.imwrite(str(data / "fg" / "f1.png"), np.full((40, 60, 3), 90, np.uint8))
    refused(tmp_path, composite_args(data), "f1.png", "no alpha channel and no mask", "--fg-masks")


def test_foreground_without_a_mask_file(tmp_path, data):
    (data / "fg_masks" / "f3.png").unlink()
    args = ["--bg", data / "bg", "--bg-depth", data / "bg_depth", "--fg", data / "fg_rgb", "--fg-masks",
            data / "fg_masks"]
    refused(tmp_path, args, "f3.png", "no mask named f3")


def test_mask_of_another_size(tmp_path, data):
    cv2.imwrite(str(data / "fg_masks" / "f2.png"), np.full((10, 10), 255, np.uint8))
    args = ["--bg", data / "bg", "--bg-depth", data / "bg_depth", "--fg", data / "fg_rgb", "--fg-masks",
            data / "fg_masks"]
    refused(tmp_path, args, "f2.png", "10x10", "same size")


def test_empty_alpha(tmp_path, data):
    bgra = np.zeros((30, 30, 4), np.uint8)
    bgra[:, :, 3] = 100  # semi-transparent everywhere: nothing reaches the mask threshold
    cv2.imwrite(str(data / "fg" / "f0.png"), bgra)
    refused(tmp_path, composite_args(data), "f0.png", "alpha is empty")


def test_depth_map_missing(tmp_path, data):
    (data / "bg_depth" / "more" / "b3.png").unlink()
    refused(tmp_path, composite_args(data), "--bg-depth", "more/b3.png")


def test_depth_map_of_the_wrong_size(tmp_path, data):
    cv2.imwrite(str(data / "bg_depth" / "b0.png"), np.full((100, 100), 1000, np.uint16))  # b0 is 320 x 240
    refused(tmp_path, composite_args(data), "b0.png", "100x100", "320x240")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_depth_map_with_nan_or_inf(tmp_path, data, bad):
    depth = np.ones((150, 100), np.float32)
    depth[3, 4] = bad
    np.save(data / "bg_depth" / "b1.npy", depth)
    refused(tmp_path, composite_args(data), "b1.npy", "NaN or infinite")


def test_colour_depth_map(tmp_path, data):
    colourful = cv2.applyColorMap(np.tile(np.arange(256, dtype=np.uint8), (240, 2))[:, :320], cv2.COLORMAP_JET)
    cv2.imwrite(str(data / "bg_depth" / "b0.png"), colourful)
    refused(tmp_path, composite_args(data), "b0.png", "one channel")


def test_no_depth_source(tmp_path, data):
    line = refused(tmp_path, ["--bg", data / "bg", "--fg", data / "fg"], "--bg", "--bg-depth", "--depth-model")
    assert "never invented" in line


def test_two_depth_sources(tmp_path, data):
    model = save_torchscript(TinyDepth(), tmp_path / "m.pt")
    refused(tmp_path, [*composite_args(data), "--depth-model", model], "--bg-depth and --depth-model")


def test_more_backgrounds_than_files(tmp_path, data):
    refused(tmp_path, [*composite_args(data), "--backgrounds", "9"], "--backgrounds", "holds only 4")


def test_two_files_with_one_name(tmp_path, data):
    shutil.copy(data / "bg" / "b1.png", data / "bg" / "b1.jpg")
    refused(tmp_path, composite_args(data), "b1.png", "b1.jpg", "same name")


def test_model_file_that_does_not_load(tmp_path, data):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"PK\x03\x04 not really a model")
    refused(tmp_path, ["--bg", data / "bg", "--fg", data / "fg", "--depth-model", bad], "model.pt",
            "not a loadable torchscript model")


def test_onnx_file_that_does_not_load(tmp_path, data):
    pytest.importorskip("onnxruntime")
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    refused(tmp_path, ["--bg", data / "bg", "--fg", data / "fg", "--depth-model", bad], "model.onnx",
            "not a loadable onnx model")


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_model_with_the_wrong_output_shape(tmp_path, data, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    model = (save_onnx if fmt == "onnx" else save_torchscript)(TwoChannels(), tmp_path / f"two.{'onnx' if fmt == 'onnx' else 'pt'}")
    refused(tmp_path, ["--bg", data / "bg", "--fg", data / "fg", "--depth-model", model, "--depth-model-input-size", 32],
            model.name, "returned shape (1, 2, 32, 32)", "expected (N, 1, H, W)")


def test_model_returning_nan(tmp_path, data):
    model = save_torchscript(NotANumber(), tmp_path / "nan.pt")
    refused(tmp_path, ["--bg", data / "bg", "--fg", data / "fg", "--depth-model", model, "--depth-model-input-size", 32],
            "nan.pt", "NaN or infinite")


def test_model_that_fails_on_its_input(tmp_path, data):
    """An ONNX model exported for 32 x 32 inputs, fed 64 x 64: its runtime's complaint, as one line."""
    pytest.importorskip("onnxruntime")
    model = save_onnx(TinyDepth(), tmp_path / "fixed.onnx", size=32)
    refused(tmp_path, ["--bg", data / "bg", "--fg", data / "fg", "--depth-model", model, "--depth-model-input-size", 64],
            "fixed.onnx", "the model failed on a batch of shape (1, 3, 64, 64)")


def test_bad_model_normalisation(tmp_path, data):
    model = save_torchscript(TinyDepth(), tmp_path / "m.pt")
    refused(tmp_path, ["--bg", data / "bg", "--fg", data / "fg", "--depth-model", model, "--depth-model-mean", "0.5,0.5"],
            "--depth-model-mean", "three numbers")
    refused(tmp_path, ["--bg", data / "bg", "--fg", data / "fg", "--depth-model", model, "--depth-model-std", "1,0,1"],
            "--depth-model-std", "positive")


@pytest.mark.parametrize("args, fragments", [
    (["--fg-masks", "{data}/fg_masks"], ["--fg-masks", "needs --fg"]),
    (["--fg", "{data}/fg", "--bg-depth", "{data}/bg_depth"], ["--bg-depth", "needs --bg"]),
    (["--depth-mode", "per-sample"], ["per-sample", "needs --depth-model"]),
    (["--bg", "{data}/bg", "--bg-depth", "{data}/bg_depth", "--ground-top", "1.5"], ["--ground-top"]),
    (["--fg", "{data}/fg", "--fg-max-size", "4"], ["--fg-max-size"]),
    (["--bg", "{data}/bg", "--bg-depth", "{data}/bg_depth", "--depth-far", "-1"], ["--depth-far"]),
    (["--bg", "{data}/bg", "--depth-model", "{data}/nothing.pt"], ["--depth-model", "is not a file"]),
])
def test_option_combinations(tmp_path, data, args, fragments):
    refused(tmp_path, [a.format(data=data) for a in args], *fragments)


def test_per_sample_refuses_delta_storage(tmp_path, data):
    model = save_torchscript(TinyDepth(), tmp_path / "m.pt")
    refused(tmp_path, ["--bg", data / "bg", "--fg", data / "fg", "--depth-model", model, "--depth-mode", "per-sample",
                       "--depth-storage", "delta"], "--depth-storage delta", "full")


def test_non_image_files_are_skipped_with_a_warning(tmp_path, data):
    (data / "fg" / "credits.txt").write_text("photos by me")
    (data / "fg" / ".hidden.png").write_bytes(b"ignored: hidden files are not read")
    result, out = build(tmp_path, *composite_args(data))
    assert result.rc == 0, result
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "--fg" in warnings[0] and "credits.txt" in warnings[0]


def test_real_process_exit_code(tmp_path, data):
    """One case through a real process: exit status 1 and nothing on stdout."""
    cv2.imwrite(str(data / "fg" / "f1.png"), np.full((40, 60, 3), 90, np.uint8))
    result = run_cli("dm-build-lmdb", tmp_path / "out", *BASE, *composite_args(data))
    assert_one_line_error(result, "f1.png")
    assert result.rc == 1 and not (tmp_path / "out").exists()

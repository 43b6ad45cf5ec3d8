"""dm-predict: a tiny trained checkpoint on pairs the test writes (PNG, JPEG, odd sizes, portrait, sub-folders),
outputs at the input's size with the documented value ranges, and a one-line error for every bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import REPO, assert_one_line_error, train_env
from pipeline import DepthmaskError
from pipeline import images as image_rules
from training.predict import PairLayout, list_pairs, load_predictor, predict_pairs, read_pair, window_offsets
from use_cli import invoke_use, run_use


def scene(height: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(bg, fg_bg) BGR: a smooth picture, and the same with a coloured box in it."""
    rng = np.random.default_rng(seed)
    bg = cv2.resize(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8), (width, height), interpolation=cv2.INTER_CUBIC)
    fg = bg.copy()
    fg[height // 3 : height // 3 + max(2, height // 4), width // 4 : width // 4 + max(2, width // 3)] = (20, 200, 240)
    return bg, fg


# (relative name, (height, width), extension): landscape, portrait, square, odd, larger than the network
PAIRS = [("land", (61, 97), ".png"), ("more/portrait", (123, 45), ".jpg"), ("square", (64, 64), ".png"),
         ("big", (157, 301), ".jpeg")]


def write_pair_folders(root: Path, pairs=PAIRS) -> tuple[Path, Path]:
    bg_dir, fg_dir = root / "bg", root / "fg_bg"
    for i, (name, (h, w), ext) in enumerate(pairs):
        bg, fg = scene(h, w, i)
        for folder, image in ((bg_dir, bg), (fg_dir, fg)):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"{name}{ext}"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return bg_dir, fg_dir


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread_module):
    yield


@pytest.fixture(scope="module")
def predictor(checkpoint):
    return load_predictor(checkpoint, device="cpu", amp=False)


# ---- the fit: windows of the pipeline's rule --------------------------------------------------------
@pytest.mark.parametrize("length,size", [(64, 64), (97, 64), (200, 64), (301, 32), (65, 64), (1000, 224)])
def test_windows_cover_the_long_side_around_the_fit_rules_centre(length, size):
    offsets = window_offsets(length, size)
    centre = image_rules.fit_square_geometry(size, length, size)[3]
    assert centre in offsets
    assert offsets[0] == 0 and offsets[-1] + size == max(length, size)
    assert all(0 < b - a <= size // 2 for a, b in zip(offsets, offsets[1:]))


@pytest.mark.parametrize("shape", [(61, 97), (123, 45), (64, 64), (157, 301)])
def test_centre_window_is_the_pipelines_fit_square(shape):
    bg, _ = scene(*shape, seed=3)
    layout = PairLayout.of(*shape, 32)
    windows = layout.windows(bg, 32)
    centre = layout.offsets.index(image_rules.fit_square_geometry(*shape, 32)[2 if layout.vertical else 3])
    np.testing.assert_array_equal(windows[centre], image_rules.fit_square(bg, 32))


def test_blend_gives_back_a_map_its_windows_were_cut_from():
    layout = PairLayout.of(50, 140, 32)
    values = np.random.default_rng(0).random((layout.scaled_h, layout.scaled_w)).astype(np.float32)
    tiles = np.stack(layout.windows(values, 32))
    np.testing.assert_allclose(layout.blend(tiles, 32), values, atol=1e-6)


# ---- the CLI on folders --------------------------------------------------------------------------
def test_predict_folders_writes_every_output_at_the_inputs_size(tmp_path, checkpoint, predictor):
    bg_dir, fg_dir = write_pair_folders(tmp_path)
    (fg_dir / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    result = run_use("predict_command", checkpoint, "--bg", bg_dir, "--fg-bg", fg_dir, "-o", out, "--npy",
                     "--no-progress", "--device", "cpu", "--no-amp", "--batch-size", "3")
    assert result.rc == 0, str(result)
    assert "skipped 1 file(s)" in result.stderr
    summary = json.loads((out / "predictions.json").read_text())
    assert [p["name"] for p in summary["pairs"]] == sorted(name for name, _, _ in PAIRS)
    assert summary["model"]["input_size"] == predictor.input_size
    for name, (h, w), ext in PAIRS:
        mask = cv2.imread(str(out / f"{name}_mask.png"), cv2.IMREAD_UNCHANGED)
        depth = cv2.imread(str(out / f"{name}_depth.png"), cv2.IMREAD_UNCHANGED)
        npy = np.load(out / f"{name}_depth.npy")
        assert mask.shape == depth.shape == npy.shape == (h, w)
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        assert depth.dtype == np.uint16 and depth.min() >= 1
        assert npy.dtype == np.float32 and 0.0 <= npy.min() and npy.max() <= 1.0
        np.testing.assert_allclose(depth / 65535.0, npy, atol=0.5 / 65535 + 1e-7)
        preview = cv2.imread(str(out / f"{name}_preview.png"))
        assert preview is not None and preview.shape[1] > 4 * 200
        # the CLI writes what the library predicts for the same files
        expected_depth, expected_prob = predict_pairs(predictor, [read_pair_named(bg_dir, fg_dir, name, ext)])[0]
        np.testing.assert_allclose(npy, expected_depth, atol=1e-5)
        assert np.mean((mask == 255) != (expected_prob > 0.5)) < 1e-3
        entry = next(p for p in summary["pairs"] if p["name"] == name)
        assert (entry["width"], entry["height"]) == (w, h)
        assert entry["mask_fraction"] == pytest.approx(float((mask == 255).mean()))
        assert "depth_max_m" in entry  # the tiny dataset's depth is metric


def read_pair_named(bg_dir: Path, fg_dir: Path, name: str, ext: str):
    from training.predict import Pair

    return read_pair(Pair(name, bg_dir / f"{name}{ext}", fg_dir / f"{name}{ext}"))


def test_predict_one_pair_and_a_list(tmp_path, checkpoint, predictor):
    bg_dir, fg_dir = write_pair_folders(tmp_path, PAIRS[:2])
    out = tmp_path / "one"
    result = invoke_use("predict_command", checkpoint, "--bg", bg_dir / "land.png", "--fg-bg", fg_dir / "land.png",
                     "-o", out, "--no-progress", "--device", "cpu")
    assert result.rc == 0, str(result)
    assert cv2.imread(str(out / "land_mask.png"), cv2.IMREAD_UNCHANGED).shape == (61, 97)
    listing = tmp_path / "pairs.csv"
    listing.write_text("bg,fg_bg\n# a comment\nbg/land.png,fg_bg/land.png\n\nbg/more/portrait.jpg,fg_bg/more/portrait.jpg\n")
    pairs = list_pairs(None, None, listing)
    assert [p.name for p in pairs] == ["fg_bg/land", "fg_bg/more/portrait"]
    result = invoke_use("predict_command", checkpoint, "--pairs", listing, "-o", tmp_path / "list", "--no-progress",
                     "--device", "cpu")
    assert result.rc == 0, str(result)
    assert cv2.imread(str(tmp_path / "list/fg_bg/more/portrait_depth.png"), cv2.IMREAD_UNCHANGED).shape == (123, 45)


def test_existing_outputs_are_kept_without_overwrite(tmp_path, checkpoint):
    bg_dir, fg_dir = write_pair_folders(tmp_path, PAIRS[:1])
    out = tmp_path / "out"
    args = [checkpoint, "--bg", bg_dir, "--fg-bg", fg_dir, "-o", out, "--no-progress", "--device", "cpu"]
    assert invoke_use("predict_command", *args).rc == 0
    (out / "land_mask.png").write_bytes(b"mine")
    assert_one_line_error(invoke_use("predict_command", *args), "exists", "--overwrite")
    assert (out / "land_mask.png").read_bytes() == b"mine"
    assert invoke_use("predict_command", *args, "--overwrite").rc == 0
    assert cv2.imread(str(out / "land_mask.png"), cv2.IMREAD_UNCHANGED).shape == (61, 97)


def test_bf16_gives_nearly_the_float32_outputs(checkpoint, predictor):
    bf16 = load_predictor(checkpoint, device="cpu", amp=True)
    assert bf16.precision == "bf16" and predictor.precision == "float32"
    pair = tuple(a[:, :, ::-1].copy() for a in scene(70, 90, 5))
    (d32, p32), = predict_pairs(predictor, [pair])
    (d16, p16), = predict_pairs(bf16, [pair])
    assert np.abs(d32 - d16).max() < 0.05 and np.mean(np.abs(p32 - p16)) < 0.05


def test_a_checkpoint_without_normalisation_needs_stats(tmp_path, checkpoint, tiny_dataset, predictor):
    from training.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(checkpoint)
    del state["normalization"]
    old = tmp_path / "old.pt"
    save_checkpoint(old, {k: v for k, v in state.items() if k not in ("format", "format_version")})
    bg_dir, fg_dir = write_pair_folders(tmp_path, PAIRS[:1])
    args = ["--bg", bg_dir, "--fg-bg", fg_dir, "--no-progress", "--device", "cpu"]
    assert_one_line_error(invoke_use("predict_command", old, *args, "-o", tmp_path / "a"), "normalisation", "--stats")
    assert not (tmp_path / "a").exists()
    with_stats = load_predictor(old, device="cpu", amp=False, stats=tiny_dataset)
    pair = read_pair_named(bg_dir, fg_dir, "land", ".png")
    np.testing.assert_array_equal(predict_pairs(with_stats, [pair])[0][0], predict_pairs(predictor, [pair])[0][0])


# ---- every bad input is one line, and nothing is written ----------------------------------------------
def _bad_inputs(root: Path) -> dict[str, tuple[list, tuple[str, ...]]]:
    bg_dir, fg_dir = write_pair_folders(root / "ok", PAIRS[:2])
    mismatch = root / "mismatch"
    for name, shape in (("bg", (40, 50)), ("fg", (41, 50))):
        (mismatch / name).mkdir(parents=True)
        cv2.imwrite(str(mismatch / name / "p.png"), scene(*shape, 0)[0])
    missing = root / "missing"
    write_pair_folders(missing, PAIRS[:2])
    (missing / "fg_bg/more/portrait.jpg").unlink()
    broken = root / "broken"
    write_pair_folders(broken, PAIRS[:1])
    (broken / "fg_bg/land.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    truncated = root / "truncated"
    write_pair_folders(truncated, PAIRS[1:2])
    data = (truncated / "bg/more/portrait.jpg").read_bytes()
    (truncated / "bg/more/portrait.jpg").write_bytes(data[: len(data) // 2])
    (root / "model.txt").write_text("not a model")
    (root / "bad.csv").write_text("bg/land.png\n")
    ok = ["--bg", bg_dir, "--fg-bg", fg_dir]
    return {
        "size mismatch": (["--bg", mismatch / "bg", "--fg-bg", mismatch / "fg"], ("pair p", "41", "same size")),
        "missing partner": (["--bg", missing / "bg", "--fg-bg", missing / "fg_bg"], ("more/portrait.jpg", "no image")),
        "unreadable image": (["--bg", broken / "bg", "--fg-bg", broken / "fg_bg"], ("land.png",)),
        "truncated image": (["--bg", truncated / "bg", "--fg-bg", truncated / "fg_bg"], ("portrait.jpg", "truncated")),
        "file and folder": (["--bg", bg_dir / "land.png", "--fg-bg", fg_dir], ("two image files or two folders",)),
        "no fg_bg": (["--bg", bg_dir], ("--fg-bg",)),
        "bad list": (["--pairs", root / "bad.csv"], ("line 1", "two paths")),
        "list and folders": (["--pairs", root / "bad.csv", *ok], ("not both",)),
        "batch size": ([*ok, "--batch-size", "0"], ("--batch-size",)),
        "unknown model format": ({"model": root / "model.txt"}, ("unknown model format",)),
        "missing model": ({"model": root / "nothing.pt"}, ("does not exist",)),
        "no cuda": ([*ok, "--device", "cuda:0"] if not torch.cuda.is_available() else [*ok, "--device", "tpu"],
                    ("--device",)),
    }


def test_every_bad_input_is_one_line_and_writes_nothing(tmp_path, checkpoint):
    cases = _bad_inputs(tmp_path)
    for label, (args, fragments) in cases.items():
        out = tmp_path / "out" / label.replace(" ", "_")
        if isinstance(args, dict):
            model, args = args["model"], ["--bg", tmp_path / "ok/bg", "--fg-bg", tmp_path / "ok/fg_bg"]
        else:
            model = checkpoint
        run = run_use if label == "size mismatch" else invoke_use  # one in a real process, the rest in-process
        result = run("predict_command", model, *args, "-o", out, "--no-progress")
        try:
            assert_one_line_error(result, *fragments)
        except AssertionError as exc:
            raise AssertionError(f"{label}: {exc}") from None
        assert not out.exists() or not any(out.rglob("*")), label


def test_library_errors_name_the_pair(tmp_path):
    bg, fg = tmp_path / "a.png", tmp_path / "b.png"
    cv2.imwrite(str(bg), scene(30, 40, 0)[0])
    cv2.imwrite(str(fg), scene(40, 30, 0)[0])
    with pytest.raises(DepthmaskError, match="pair b: bg .* is 40x30 but fg_bg .* is 30x40"):
        read_pair(list_pairs(bg, fg, None)[0])


def test_help_is_fast_without_torch():
    code = ("import sys; from training.cli_use import predict_command, export_model_command, eval_command; "
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=train_env())
    assert proc.stdout.strip() == "False", proc.stderr

"""Small builds (issue 10 §2): a --limit build renders and stores only the backgrounds its plan uses,
rendered in worker processes, with the same shards; its val split holds out among the assets it uses;
a kind with one used asset is not held out; an empty val split is said at build time."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import pipeline.build as build_module
from conftest import build_tiny, read_manifest_json, shard_hashes, tiny_options
from pipeline import DatasetReader
from pipeline.build import BackgroundPass, BuildOptions, build_dataset
from pipeline.codecs import default_codecs
from pipeline.plan import SPLIT_NAMES
from pipeline.report import verify_dataset
from pipeline.shards import close_readonly
from pipeline.assets import UserInputs, array_hash
from pipeline.errors import DepthmaskError
from user_data_kit import write_user_folders


def test_limit_stores_only_the_backgrounds_it_uses(tmp_path, tiny_dataset, tiny_manifest):
    # 16 samples per background in the tiny plan: the first 32 samples use backgrounds 0 and 1
    root = build_tiny(tmp_path / "lim", limit=32)
    m = read_manifest_json(root)
    assert m["backgrounds"]["records"] == 2 and m["plan"]["backgrounds"] == 4  # the plan's, of which 2 are used
    assert m["assets"]["backgrounds"] == tiny_manifest["assets"]["backgrounds"][:2]
    assert m["assets"]["foregrounds"] == tiny_manifest["assets"]["foregrounds"]
    assert m["build"]["content"]["backgrounds"] == 4  # the option as given
    report = verify_dataset(root, workers=1)  # what --verify recomputes agrees with what was stored
    assert report.ok, report.problems
    # the same records as the first shards of the whole build
    assert shard_hashes(m) == shard_hashes(tiny_manifest)[:2]
    reader, whole = DatasetReader(root), DatasetReader(tiny_dataset)
    assert len(reader) == 32
    try:
        for i in (0, 17, 31):
            assert reader.raw(i) == whole.raw(i)
            assert np.array_equal(reader.decode(i)["bg"], whole.decode(i)["bg"])
    finally:  # the session's dataset is opened directly by other tests (py-lmdb opens a path once)
        for entry in tiny_manifest["shards"] + [tiny_manifest["backgrounds"]]:
            close_readonly(tiny_dataset / entry["path"])
    # and only those were rendered: a background the plan does not use is never drawn
    rendered: list[int] = []
    real = build_module.procedural_background

    def spy(index, **kwargs):
        rendered.append(index)
        return real(index, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setattr(build_module, "procedural_background", spy)
    try:
        build_tiny(tmp_path / "lim2", limit=20)  # 20 samples: backgrounds 0 and 1 (its first 4 samples)
    finally:
        mp.undo()
    assert sorted(rendered) == [0, 1]


def test_backgrounds_render_in_worker_processes_identically(monkeypatch):
    monkeypatch.setattr(build_module, "MIN_BACKGROUNDS_PER_WORKER", 2)  # a pool for 8 backgrounds
    options = BuildOptions(output=Path("unused"), size=192, workers=2)
    codecs = default_codecs()
    here = BackgroundPass(BuildOptions(output=Path("unused"), size=192, workers=1), codecs)
    expected = here(8)

    def not_in_the_parent(index, **kwargs):
        raise AssertionError("a background was rendered in the build process")

    monkeypatch.setattr(build_module, "procedural_background", not_in_the_parent)
    pool = BackgroundPass(options, codecs)
    got = pool(8)  # rendered by the workers, which do not see this process's monkeypatch
    assert [b.sha256 for b in got] == [b.sha256 for b in expected]
    for a, b in zip(got, expected):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.depth, b.depth) and a.ground_top == b.ground_top
    for a, b in zip(pool.stored, here.stored):
        assert (a.image, a.depth, a.sums) == (b.image, b.depth, b.sums)


def test_pool_rendered_build_equals_one_rendered_here(tmp_path, monkeypatch):
    monkeypatch.setattr(build_module, "MIN_BACKGROUNDS_PER_WORKER", 2)  # a pool for 8 backgrounds
    layout = {"backgrounds": 8, "foregrounds": 2, "positions": 1, "shard_size": 8}
    one = read_manifest_json(build_tiny(tmp_path / "w1", workers=1, **layout))
    two = read_manifest_json(build_tiny(tmp_path / "w2", workers=2, **layout))
    assert two["assets"] == one["assets"]
    assert two["backgrounds"]["sha256"] == one["backgrounds"]["sha256"]
    assert shard_hashes(two) == shard_hashes(one) and two["stats"] == one["stats"]


def test_small_build_has_a_val_split_and_says_nothing(tmp_path):
    # 40 of the 64 samples: backgrounds 0, 1 and half of 2 -> one background held out among them
    logged: list[str] = []
    build_dataset(tiny_options(tmp_path / "small", limit=40, shard_size=8), progress=False, log=logged.append)
    m = read_manifest_json(tmp_path / "small")
    split = m["split"]
    assert len(split["val_backgrounds"]) == 1 and split["val_backgrounds"][0] < 3
    assert split["counts"]["val"] > 0 and split["counts"]["train"] > 0
    assert "val" in m["stats"]
    assert not [line for line in logged if "warning" in line]
    reader = DatasetReader(tmp_path / "small")
    assert len(reader.split_indices("val")) == split["counts"]["val"]


def test_one_foreground_holds_out_backgrounds_only(tmp_path):
    root = build_tiny(tmp_path / "onefg", foregrounds=1, backgrounds=4)
    m = read_manifest_json(root)
    assert m["split"]["val_foregrounds"] == [] and len(m["split"]["val_backgrounds"]) == 1
    held = m["split"]["val_backgrounds"][0]
    assert m["split"]["counts"] == {"train": 12, "val": 4, "unseen_bg": 0, "unseen_fg": 0, "mixed": 0}
    reader = DatasetReader(root)
    val = reader.split_indices("val")
    assert len(val) == 4 and all(reader.record(int(i))["bg"] == held for i in val)
    assert all(reader.record(int(i))["bg"] != held for i in reader.split_indices("train"))
    assert set(m["stats"]) == {"all", "train", "val"}
    report = verify_dataset(root, workers=1)
    assert report.ok, report.problems


def test_folder_build_with_a_single_foreground_has_a_val_split(tmp_path):
    folders = write_user_folders(tmp_path / "user", n_backgrounds=4, n_foregrounds=1)
    inputs = UserInputs(bg_dir=folders["bg"], fg_dir=folders["fg"], bg_depth_dir=folders["bg_depth"])
    logged: list[str] = []
    build_dataset(BuildOptions(output=tmp_path / "data", inputs=inputs, positions=2, shard_size=16, size=192,
                               workers=1), progress=False, log=logged.append)
    m = read_manifest_json(tmp_path / "data")
    assert m["split"]["val_foregrounds"] == [] and m["split"]["counts"]["val"] == 4
    assert not [line for line in logged if "warning" in line and "val" in line]


def test_empty_val_split_is_a_warning_at_build_time(tmp_path):
    logged: list[str] = []
    build_dataset(tiny_options(tmp_path / "one", backgrounds=1, foregrounds=1), progress=False, log=logged.append)
    warnings = [line for line in logged if line.startswith("warning:")]
    assert len(warnings) == 1 and "val split is empty" in warnings[0]
    assert "single background and a single foreground" in warnings[0]
    assert read_manifest_json(tmp_path / "one")["split"]["counts"]["val"] == 0
    logged.clear()
    build_dataset(tiny_options(tmp_path / "nofraction", val_fraction=0.0, limit=8), progress=False,
                  log=logged.append)
    assert any("val split is empty" in line and "--val-fraction is 0" in line for line in logged)


def test_cli_prints_the_warning(tmp_path):
    from conftest import run_cli

    result = run_cli("dm-build-lmdb", tmp_path / "d", "--backgrounds", "1", "--foregrounds", "1", "--positions", "1",
                     "--size", "192", "--no-progress", "--workers", "1")
    assert result.rc == 0, str(result)
    assert "warning: the val split is empty" in result.stderr
    assert set(SPLIT_NAMES) <= set(read_manifest_json(tmp_path / "d")["split"]["counts"])


def test_parts_of_a_limited_build_merge_to_the_same_dataset(tmp_path):
    layout = {"limit": 40, "shard_size": 8}
    whole = read_manifest_json(build_tiny(tmp_path / "whole", **layout))
    parts = tmp_path / "parts"
    for k in (1, 2):
        summary = build_dataset(tiny_options(parts, part=(k, 2), **layout), progress=False, log=lambda m: None)
        assert not summary.complete
    build_dataset(tiny_options(parts, merge_only=True, **layout), progress=False, log=lambda m: None)
    merged = read_manifest_json(parts)
    assert shard_hashes(merged) == shard_hashes(whole)
    for key in ("assets", "split", "stats", "backgrounds", "plan"):
        assert merged[key] == whole[key], key


def test_a_changed_background_is_detected_on_resume(tmp_path, monkeypatch):
    out = tmp_path / "data"
    build_dataset(tiny_options(out, part=(1, 2), limit=40, shard_size=8), progress=False, log=lambda m: None)
    real = build_module.procedural_background

    def changed(index, **kwargs):
        rendered = real(index, **kwargs)
        if index == 1:  # as if the scene generator had changed under the build
            image = rendered.image.copy()
            image[0, 0] ^= 1
            return type(rendered)(image, rendered.depth, rendered.ground_top,
                                  array_hash(image, rendered.depth))
        return rendered

    monkeypatch.setattr(build_module, "procedural_background", changed)
    with pytest.raises(DepthmaskError, match="assets changed since this build started") as info:
        build_dataset(tiny_options(out, part=(2, 2), limit=40, shard_size=8), progress=False, log=lambda m: None)
    assert "procedural-bg-0001" in str(info.value)

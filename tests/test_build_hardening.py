"""Hardening of builds (issue 13): --overwrite removes exactly what a build writes and refuses a folder
holding anything else at any depth; absurd sizes are refused up front from what the plan implies; a
full disk is one line naming the folder, and no temporary is left."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import lmdb
import pytest

import pipeline.build as build_module
import pipeline.folder as folder_module
from conftest import (TINY_ARGS, assert_one_line_error, build_tiny, copy_dataset, read_manifest_json, run_cli,
                      shard_hashes, tiny_options)
from pipeline.build import build_dataset
from pipeline.errors import DepthmaskError
from pipeline.folder import foreign_entries, storage_error
from pipeline.shards import ShardWriter


def _state(root: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.name != ".build.lock"}


def _leftovers(root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in root.rglob("*") if ".tmp" in p.name]


# ---- --overwrite ----------------------------------------------------------------------------------
@pytest.mark.parametrize("extra", ["shards/NOTES.txt", "shards/mydir/", "shards/mydir/deep.txt",
                                   "backgrounds.lmdb.orig-backup", "notes/", "shards/shard-00000.lmdb.bak",
                                   ".manifest.json.tmp-mine", "shards/shard-00000.json.old"])
def test_overwrite_refuses_a_folder_holding_anything_else(tiny_dataset, tmp_path, extra):
    out = copy_dataset(tiny_dataset, tmp_path / "data")
    path = out / extra
    if extra.endswith("/"):
        path.mkdir(parents=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("the user's")
    before = _state(out)
    with pytest.raises(DepthmaskError, match="refusing to overwrite") as info:
        build_dataset(tiny_options(out, seed=1, overwrite=True), progress=False, log=lambda m: None)
    assert extra.rstrip("/").split("/")[0] in str(info.value)
    assert _state(out) == before  # nothing removed, nothing written


def test_overwrite_refusal_on_the_command_line(tiny_dataset, tmp_path):
    out = copy_dataset(tiny_dataset, tmp_path / "data")
    (out / "shards" / "NOTES.txt").write_text("mine")
    line = assert_one_line_error(run_cli("dm-build-lmdb", out, *TINY_ARGS, "--seed", "1", "--overwrite"),
                                 "refusing to overwrite", "shards/NOTES.txt")
    assert str(out) in line
    assert (out / "shards" / "NOTES.txt").read_text() == "mine"


def test_overwrite_removes_exactly_what_builds_write(tiny_dataset, tmp_path):
    out = copy_dataset(tiny_dataset, tmp_path / "data")
    ours = ["shards/shard-00009.lmdb.tmp-12345", "shards/.shard-00001.json.tmp-77", "shards/shard-00002.lmdb-lock",
            "backgrounds.lmdb.tmp-4242", ".manifest.json.tmp-99", ".build.json.tmp-98", ".part-1-of-2.lock",
            ".write-probe-31337"]
    for name in ours:
        (out / name).write_text("x")
    assert foreign_entries(out) == []
    build_dataset(tiny_options(out, seed=1, overwrite=True), progress=False, log=lambda m: None)
    assert sorted(p.name for p in out.iterdir()) == ["backgrounds.lmdb", "manifest.json", "shards"]
    assert sorted(p.name for p in (out / "shards").iterdir()) == sorted(
        f"shard-{i:05d}.{ext}" for i in range(4) for ext in ("lmdb", "json"))
    assert read_manifest_json(out)["build"]["seed"] == 1


def test_a_part_never_overwrites(tiny_dataset, tmp_path):
    out = copy_dataset(tiny_dataset, tmp_path / "data")
    before = _state(out)
    line = assert_one_line_error(run_cli("dm-build-lmdb", out, *TINY_ARGS, "--seed", "1", "--overwrite", "--part",
                                         "1/2"), "--part and --overwrite")
    assert _state(out) == before and "other parts" not in line


def test_a_new_build_refuses_a_folder_with_foreign_files_inside_shards(tmp_path):
    out = tmp_path / "data"
    (out / "shards").mkdir(parents=True)
    (out / "shards" / "mine.txt").write_text("x")
    with pytest.raises(DepthmaskError, match="not a depthmask dataset") as info:
        build_dataset(tiny_options(out), progress=False, log=lambda m: None)
    assert "shards/mine.txt" in str(info.value)
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["mine.txt"]


def test_links_are_never_taken_for_ours(tiny_dataset, tmp_path):
    out = copy_dataset(tiny_dataset, tmp_path / "data")
    target = tmp_path / "precious.txt"
    target.write_text("keep")
    os.symlink(target, out / "shards" / "shard-00099.json")
    assert foreign_entries(out) == ["shards/shard-00099.json"]
    with pytest.raises(DepthmaskError, match="refusing to overwrite"):
        build_dataset(tiny_options(out, seed=1, overwrite=True), progress=False, log=lambda m: None)
    assert target.read_text() == "keep"


# ---- sizes the plan implies --------------------------------------------------------------------------
def test_absurd_positions_refused_up_front(tmp_path):
    out = tmp_path / "huge"
    line = assert_one_line_error(run_cli("dm-build-lmdb", out, "--positions", "1000000000000", "--no-progress"),
                                 "samples", "free")
    assert "212,160,000,000,000,000 samples (1,020 backgrounds x 104 foregrounds" in line
    assert not out.exists()  # refused before the folder was made


def test_disk_space_is_checked_against_the_plan(tmp_path, monkeypatch):
    monkeypatch.setattr(build_module, "free_bytes", lambda path: 100 * 1024)  # 100 KB free
    with pytest.raises(DepthmaskError, match=r"64 samples .*free") as info:
        build_dataset(tiny_options(tmp_path / "d"), progress=False, log=lambda m: None)
    assert str(tmp_path / "d") in str(info.value) and "--limit" in str(info.value)
    assert not (tmp_path / "d").exists()
    # the same plan fits when the space is there
    monkeypatch.setattr(build_module, "free_bytes", lambda path: 1 << 40)
    build_dataset(tiny_options(tmp_path / "d", limit=8), progress=False, log=lambda m: None)


def test_memory_is_checked_against_the_plan(tmp_path, monkeypatch):
    monkeypatch.setattr(build_module, "available_memory", lambda: 1 << 20)  # 1 MiB available
    with pytest.raises(DepthmaskError, match="memory") as info:
        build_dataset(tiny_options(tmp_path / "d"), progress=False, log=lambda m: None)
    assert "--backgrounds" in str(info.value)
    assert not (tmp_path / "d").exists()


def test_memory_refusal_on_the_command_line(tmp_path):
    # a million backgrounds of 2 samples each: ~23 GB on disk, but every process would hold all of them
    line = assert_one_line_error(run_cli("dm-build-lmdb", tmp_path / "d", "--backgrounds", "1000000", "--foregrounds",
                                         "1", "--positions", "1", "--workers", "2", "--no-progress"), "memory")
    assert "1,000,000 backgrounds" in line
    assert not (tmp_path / "d").exists()


def test_huge_counts_with_a_small_limit_build_without_big_structures(tmp_path):
    # 4 x 4 x 10^12 x 2 planned samples, the first 8 built: nothing of the plan's size is made
    root = build_tiny(tmp_path / "d", positions=10**12, limit=8)
    m = read_manifest_json(root)
    assert m["sample_count"] == 8 and m["backgrounds"]["records"] == 1
    assert m["plan"]["positions"] == 10**12


# ---- a full disk ----------------------------------------------------------------------------------
def _failing_put(exc: BaseException, after: int = 5):
    real = ShardWriter.put
    calls = {"n": 0}

    def put(self, index, value):
        if self.final.parent.name == "shards":
            calls["n"] += 1
            if calls["n"] > after:
                # as a worker writing another shard's sidecar at that moment would leave it
                (self.final.parent / f".shard-00003.json.tmp-{os.getpid()}").write_text("{")
                raise exc
        return real(self, index, value)

    return put


def test_full_disk_while_writing_a_shard(tmp_path, monkeypatch, tiny_manifest):
    out = tmp_path / "data"
    monkeypatch.setattr(ShardWriter, "put", _failing_put(OSError(errno.ENOSPC, "No space left on device"), 20))
    with pytest.raises(DepthmaskError) as info:
        build_dataset(tiny_options(out), progress=False, log=lambda m: None)
    message = str(info.value)
    assert "disk is full" in message and str(out) in message and "\n" not in message
    assert _leftovers(out) == []
    assert (out / "build.json").exists() and not (out / "manifest.json").exists()
    # once there is space again, the same build resumes to the same dataset
    monkeypatch.undo()
    build_dataset(tiny_options(out), progress=False, log=lambda m: None)
    assert shard_hashes(read_manifest_json(out)) == shard_hashes(tiny_manifest)


def test_lmdb_io_error_on_a_nearly_full_disk_says_so(tmp_path, monkeypatch):
    out = tmp_path / "data"
    monkeypatch.setattr(ShardWriter, "put", _failing_put(lmdb.Error("mdb_txn_commit: Input/output error")))
    monkeypatch.setattr(folder_module, "free_bytes", lambda path: 3 << 20)
    with pytest.raises(DepthmaskError, match="disk is full") as info:
        build_dataset(tiny_options(out), progress=False, log=lambda m: None)
    assert str(out) in str(info.value) and "3 MiB free" in str(info.value)
    assert _leftovers(out) == []


def test_io_error_with_space_left_names_the_file(tmp_path):
    error = storage_error(lmdb.Error("mdb_txn_commit: Input/output error"), tmp_path, tmp_path / "shards" / "x.lmdb")
    assert "disk is full" not in str(error) and "x.lmdb" in str(error) and "Input/output error" in str(error)
    quota = storage_error(OSError(errno.EDQUOT, "Disk quota exceeded"), tmp_path)
    assert "disk is full" in str(quota)


def test_full_disk_while_writing_the_manifest(tmp_path, monkeypatch):
    out = tmp_path / "data"
    real = build_module.write_json_atomic

    def write(path, obj):
        if path.name == "manifest.json":
            path.with_name(f".{path.name}.tmp-{os.getpid()}").write_text("{")  # half written
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, obj)

    monkeypatch.setattr(build_module, "write_json_atomic", write)
    with pytest.raises(DepthmaskError, match="disk is full"):
        build_dataset(tiny_options(out), progress=False, log=lambda m: None)
    assert _leftovers(out) == [] and not (out / "manifest.json").exists()

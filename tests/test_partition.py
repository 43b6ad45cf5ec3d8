"""Partitioned builds: N processes with --part K/N into one folder, then --merge, equal one build."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.folder import prepare_output_folder
from pipeline.report import verify_dataset

from conftest import TINY_ARGS, assert_one_line_error, read_manifest_json, run_cli, shard_hashes, start_cli


def test_three_concurrent_parts_then_merge_equal_one_build(tmp_path, tiny_manifest):
    out = tmp_path / "data"
    out.mkdir()  # see test_parts_racing_to_create_the_folder
    procs = [start_cli("dm-build-lmdb", out, *TINY_ARGS, "--workers", "1", "--part", f"{k}/3") for k in (1, 2, 3)]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=180)
        results.append((proc.returncode, stdout, stderr))
    for k, (rc, stdout, stderr) in enumerate(results, 1):
        assert rc == 0, f"part {k}/3: {stderr}"
        assert "Traceback" not in stderr
        assert "built part" in stdout and "incomplete" in stdout
        assert "--merge" in stderr  # tells the user what to do next
    assert not (out / "manifest.json").exists()  # parts never write the manifest
    # shards 0..3 round-robin over the parts: 0 and 3 -> part 1, 1 -> part 2, 2 -> part 3
    assert sorted(p.name for p in (out / "shards").glob("shard-*.lmdb")) == [
        f"shard-{i:05d}.lmdb" for i in range(4)]
    merged = run_cli("dm-build-lmdb", out, *TINY_ARGS, "--merge")
    assert merged.rc == 0, str(merged)
    manifest = read_manifest_json(out)
    # (different assets here would mean pipeline.scenes changed while the tests ran)
    assert manifest["assets"] == tiny_manifest["assets"]
    assert shard_hashes(manifest) == shard_hashes(tiny_manifest)
    assert manifest["stats"] == tiny_manifest["stats"]
    assert manifest["split"] == tiny_manifest["split"]
    assert manifest["backgrounds"]["sha256"] == tiny_manifest["backgrounds"]["sha256"]
    assert manifest["sizes"]["fg_bg"] == tiny_manifest["sizes"]["fg_bg"]
    assert not (out / "build.json").exists()
    # the merged dataset is a normal, complete dataset
    report = verify_dataset(out, workers=2)
    assert report.ok and report.records == 64, report.problems
    # merging again is a no-op
    again = run_cli("dm-build-lmdb", out, *TINY_ARGS, "--merge")
    assert again.rc == 0 and "nothing to do" in again.stderr, str(again)


def test_merge_before_all_parts_are_done(tmp_path):
    out = tmp_path / "data"
    part = run_cli("dm-build-lmdb", out, *TINY_ARGS, "--workers", "1", "--part", "1/3")
    assert part.rc == 0, str(part)
    line = assert_one_line_error(run_cli("dm-build-lmdb", out, *TINY_ARGS, "--merge"), "cannot merge", "not built")
    assert "2 shard(s)" in line and "1, 2" in line  # names the missing shards 1 and 2
    assert not (out / "manifest.json").exists()
    # the finished part is kept
    assert (out / "shards" / "shard-00000.json").exists() and (out / "shards" / "shard-00003.json").exists()
    # dm-stats says the build is unfinished
    assert_one_line_error(run_cli("dm-stats", out), "did not finish")
    # the remaining parts finish it, in one process this time (a whole build resumes the parts' shards)
    rest = run_cli("dm-build-lmdb", out, *TINY_ARGS, "--workers", "1")
    assert rest.rc == 0, str(rest)
    assert "2 shard(s) already done, resuming" in rest.stderr
    assert (out / "manifest.json").exists()


def test_merge_in_an_empty_folder(tmp_path):
    out = tmp_path / "empty"
    line = assert_one_line_error(run_cli("dm-build-lmdb", out, *TINY_ARGS, "--merge"), "cannot merge")
    assert "4 shard(s)" in line
    assert not (out / "manifest.json").exists()
    assert not os.path.exists(out / "shards" / "shard-00000.lmdb")


def test_parts_racing_to_create_the_folder(tmp_path, monkeypatch):
    root = tmp_path / "new"
    real_mkdir = Path.mkdir

    def another_part_got_there_first(self, *args, **kwargs):
        if self == root and not root.exists():
            real_mkdir(self)
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", another_part_got_there_first)
    assert prepare_output_folder(root) == root

"""Interrupted builds: SIGKILL and resume to identical shards, incomplete folders refused by dm-stats,
option changes refused without --overwrite, concurrent builds locked out, complete datasets left alone."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (TINY_ARGS, assert_one_line_error, build_tiny, copy_dataset, read_manifest_json, run_cli,
                      shard_hashes, start_cli)
from pipeline.folder import BuildLock
from pipeline.report import verify_dataset

# bigger than the tiny dataset so that a kill lands mid-build: 4 x 4 x 8 x 2 = 256 samples, 32 shards
RESUME = {"backgrounds": 4, "foregrounds": 4, "positions": 8, "shard_size": 8, "size": 192}
RESUME_ARGS = ["--backgrounds", "4", "--foregrounds", "4", "--positions", "8", "--shard-size", "8",
               "--size", "192", "--no-progress"]
RESUME_SHARDS = 32


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, read from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the build and every process it started (forkserver, workers), as a crash would."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
    deadline = time.monotonic() + 20
    while _group_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _group_members(proc.pid), "processes of the killed build are still running"


def _sidecars(root: Path) -> list[Path]:
    return sorted((root / "shards").glob("shard-*.json"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """An uninterrupted build of the RESUME dataset (one worker, in-process)."""
    return read_manifest_json(build_tiny(tmp_path_factory.mktemp("reference") / "data", **RESUME))


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Path:
    """A `--workers 2` CLI build killed with SIGKILL after its first shards were finished. Read-only."""
    out = tmp_path_factory.mktemp("interrupted") / "data"
    proc = start_cli("dm-build-lmdb", out, *RESUME_ARGS, "--workers", "2")
    try:
        deadline = time.monotonic() + 120
        while not _sidecars(out):
            if proc.poll() is not None:
                pytest.fail(f"the build ended before it could be killed: rc {proc.returncode}, "
                            f"{proc.stderr.read()}")
            if time.monotonic() > deadline:
                pytest.fail("no shard was finished within 120 s")
            time.sleep(0.005)
    finally:
        _kill_group(proc)
        proc.stdout.close()
        proc.stderr.close()
    assert not (out / "manifest.json").exists(), "the build finished before the kill; make RESUME bigger"
    assert (out / "build.json").exists()
    assert 1 <= len(_sidecars(out)) < RESUME_SHARDS
    return out


def test_resume_removes_temporaries_of_processes_killed_while_writing_json(interrupted, reference, tmp_path):
    """A worker killed between writing a sidecar's temporary and renaming it, and a parent killed while
    writing build.json or the manifest, leave `.NAME.tmp-PID` files: the resumed build removes them."""
    out = copy_dataset(interrupted, tmp_path / "data")
    last = _sidecars(out)[-1]
    last.unlink()  # its shard is rebuilt, as after a kill before the rename
    planted = [last.with_name(f".{last.name}.tmp-999999"), out / ".build.json.tmp-999998",
               out / ".manifest.json.tmp-999997"]
    for path in planted:
        path.write_text("{")
    result = run_cli("dm-build-lmdb", out, *RESUME_ARGS, "--workers", "2")
    assert result.rc == 0, str(result)
    assert shard_hashes(read_manifest_json(out)) == shard_hashes(reference)
    assert [p.name for p in planted if p.exists()] == []
    assert not [p.name for p in out.rglob("*") if ".tmp" in p.name]


def test_sigkill_then_resume_gives_identical_shards(interrupted, reference, tmp_path):
    out = copy_dataset(interrupted, tmp_path / "data")
    done_before = {p.name: p.read_bytes() for p in _sidecars(out)}
    result = run_cli("dm-build-lmdb", out, *RESUME_ARGS, "--workers", "2")
    assert result.rc == 0, str(result)
    assert "resuming" in result.stderr
    assert "Traceback" not in result.stderr
    manifest = read_manifest_json(out)
    # (different assets here would mean pipeline.scenes changed while the tests ran)
    assert manifest["assets"] == reference["assets"]
    assert shard_hashes(manifest) == shard_hashes(reference)
    assert manifest["backgrounds"]["sha256"] == reference["backgrounds"]["sha256"]
    assert manifest["stats"] == reference["stats"]
    assert manifest["split"] == reference["split"]
    assert manifest["sample_count"] == 256 and len(manifest["shards"]) == RESUME_SHARDS
    # the shards finished before the kill were kept, not rebuilt
    for name, data in done_before.items():
        assert (out / "shards" / name).read_bytes() == data
    # nothing temporary or of the build's state is left
    assert not (out / "build.json").exists()
    assert not [p.name for p in (out / "shards").iterdir() if ".tmp" in p.name or p.name.endswith("-lock")]
    # and the resumed dataset reads back clean
    report = verify_dataset(out, workers=2)
    assert report.ok and report.records == 256, report.problems


def test_stats_on_interrupted_build(interrupted):
    line = assert_one_line_error(run_cli("dm-stats", interrupted), "did not finish")
    assert str(interrupted) in line
    assert_one_line_error(run_cli("dm-stats", interrupted, "--verify"), "did not finish")


def test_interrupted_build_with_other_options_refused(interrupted, tmp_path):
    out = copy_dataset(interrupted, tmp_path / "data")
    before = sorted(p.name for p in _sidecars(out))
    line = assert_one_line_error(run_cli("dm-build-lmdb", out, *RESUME_ARGS, "--seed", "1"),
                                 "interrupted", "--overwrite")
    assert "seed" in line  # it says which option differs
    assert sorted(p.name for p in _sidecars(out)) == before  # nothing was removed
    assert json.loads((out / "build.json").read_text())["content"]["seed"] == 0
    # with --overwrite the old build is replaced by the new one
    result = run_cli("dm-build-lmdb", out, *TINY_ARGS, "--seed", "1", "--overwrite", "--workers", "1")
    assert result.rc == 0, str(result)
    manifest = read_manifest_json(out)
    assert manifest["build"]["seed"] == 1 and manifest["sample_count"] == 64
    assert len(list((out / "shards").glob("shard-*.lmdb"))) == 4  # no shard of the old build is left


def test_build_refused_while_lock_is_held(tmp_path):
    out = tmp_path / "locked"
    out.mkdir()
    with BuildLock(out):
        line = assert_one_line_error(run_cli("dm-build-lmdb", out, *TINY_ARGS), "another build is running")
        assert str(out) in line
        # a part of a partitioned build may not run beside a whole build either
        assert_one_line_error(run_cli("dm-build-lmdb", out, *TINY_ARGS, "--part", "1/2"), "another build")
    # the same part twice is refused; other parts may run side by side
    with BuildLock(out, (1, 2)):
        assert_one_line_error(run_cli("dm-build-lmdb", out, *TINY_ARGS, "--part", "1/2"), "another build")
        assert_one_line_error(run_cli("dm-build-lmdb", out, *TINY_ARGS), "another build")
    assert not (out / "manifest.json").exists()


@pytest.mark.slow
def test_second_concurrent_build_refused(tmp_path):
    out = tmp_path / "data"
    first = start_cli("dm-build-lmdb", out, *RESUME_ARGS, "--workers", "1")
    try:
        deadline = time.monotonic() + 60
        while not (out / "build.json").exists():
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        second = run_cli("dm-build-lmdb", out, *RESUME_ARGS, "--workers", "1")
        assert first.poll() is None, "the first build finished before the second one started; test is void"
        assert_one_line_error(second, "another build is running")
        stdout, stderr = first.communicate(timeout=180)
    finally:
        if first.poll() is None:
            _kill_group(first)
    assert first.returncode == 0, stderr
    assert (out / "manifest.json").exists()


def _file_state(root: Path) -> dict[str, tuple[int, int]]:
    # .build.lock is left out: a no-op run leaves an empty lock file behind (reported, harmless)
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".build.lock"}


def test_rerun_on_complete_dataset(tiny_dataset, tiny_manifest, tmp_path):
    out = copy_dataset(tiny_dataset, tmp_path / "data")
    before = _file_state(out)
    result = run_cli("dm-build-lmdb", out, *TINY_ARGS)
    assert result.rc == 0, str(result)
    assert "nothing to do" in result.stderr
    assert "samples 64" in result.stdout
    assert _file_state(out) == before  # a no-op: nothing written, not even the manifest
    # other options: refused without --overwrite, and the dataset is untouched
    line = assert_one_line_error(run_cli("dm-build-lmdb", out, *TINY_ARGS, "--seed", "1"), "--overwrite")
    assert "complete dataset" in line
    assert _file_state(out) == before
    # accepted with it
    result = run_cli("dm-build-lmdb", out, *TINY_ARGS, "--seed", "1", "--overwrite", "--workers", "1")
    assert result.rc == 0, str(result)
    replaced = read_manifest_json(out)
    assert replaced["build"]["seed"] == 1
    assert shard_hashes(replaced) != shard_hashes(tiny_manifest)
    assert len(replaced["shards"]) == 4


@pytest.mark.slow
def test_workers_do_not_outlive_a_killed_build(tmp_path):
    out = tmp_path / "data"
    args = [*RESUME_ARGS, "--workers", "2"]
    proc = start_cli("dm-build-lmdb", out, *args)
    try:
        deadline = time.monotonic() + 120
        while not _sidecars(out):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)  # the build process only, not its group
        proc.wait(timeout=30)
        deadline = time.monotonic() + 4
        while _group_members(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _group_members(proc.pid), "worker processes outlived the killed build"
    finally:
        for pid in _group_members(proc.pid):  # only the processes this test started
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.stdout.close()
        proc.stderr.close()

"""dm-build-lmdb --store recipes and --from-recipes: a recipe dataset materialised from the command line gives
the shards and manifest of a direct materialised build of the same options (procedural, the user's folders with
depth maps, a depth model in composite mode); resume, lock, --overwrite and foreign folders as for a
materialised build; every refusal one line, leaving nothing behind.

The commands run in this process through click's test runner (the same command object and one-line error
handling, without a Python start per call); a few cases run the real entry points in a subprocess."""
from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from conftest import (TINY_ARGS, TINY_COUNT, CliResult, assert_one_line_error, interrupt_recipe_statistics,
                      read_manifest_json, run_cli, start_cli)
from test_shard_hashes import dataset_hashes

ONE_WORKER = ["--workers", "1"]


def invoke(*args: object, command=None) -> CliResult:
    from click.testing import CliRunner

    from pipeline.cli import build_lmdb_command

    result = CliRunner().invoke(command or build_lmdb_command, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # an uncaught error: the user would have seen a traceback
    return CliResult(result.exit_code, result.stdout, result.stderr)


def build(out: Path, *args: object) -> CliResult:
    result = invoke(out, *args, *ONE_WORKER, "--no-progress")
    assert result.rc == 0, str(result)
    return result


def run_stats(root: Path, *args: object) -> CliResult:
    from pipeline.cli import stats_command

    return invoke(root, *args, command=stats_command)


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*"))


def assert_same_dataset(materialised: Path, direct: Path) -> None:
    """The shard and backgrounds content hashes (as recorded and as the files hash now), the manifest (every
    key: statistics, split, assets, sizes) and the file names are those of the direct build."""
    assert dataset_hashes(materialised) == dataset_hashes(direct)
    assert read_manifest_json(materialised) == read_manifest_json(direct)
    assert listing(materialised) == listing(direct)


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("DEPTHMASK_DEBUG", raising=False)


@pytest.fixture(scope="module")
def recipes(tmp_path_factory) -> Path:
    """The tiny options (conftest.TINY_ARGS) as a recipe dataset, built from the command line. Read-only."""
    out = tmp_path_factory.mktemp("recipes") / "data"
    result = build(out, *TINY_ARGS, "--store", "recipes")
    assert "recipes" in result.stdout and f"samples {TINY_COUNT}" in result.stdout
    assert (out / "background_pixels.lmdb").exists() and not list((out / "shards").glob("*.lmdb"))
    return out


@pytest.fixture(scope="module")
def materialised(recipes, tmp_path_factory) -> Path:
    """`recipes` materialised with --from-recipes. Read-only."""
    out = tmp_path_factory.mktemp("materialised") / "data"
    result = build(out, "--from-recipes", recipes)
    assert f"samples {TINY_COUNT}  shards 4" in result.stdout
    return out


# ---- the same dataset both ways ----------------------------------------------------------------------------
def test_procedural_from_recipes_equals_the_direct_build(materialised, tiny_dataset):
    assert_same_dataset(materialised, tiny_dataset)  # tiny_dataset: the same options, built directly


@pytest.fixture(scope="module")
def user_folders(tmp_path_factory) -> dict[str, Path]:
    from user_data_kit import TinyDepth, save_torchscript, write_user_folders

    root = tmp_path_factory.mktemp("folders")
    folders = write_user_folders(root)
    folders["model"] = save_torchscript(TinyDepth(), root / "tiny_depth.pt")
    return folders


FOLDER_SOURCES = {
    "depth-maps": lambda f: ["--bg", f["bg"], "--fg", f["fg"], "--bg-depth", f["bg_depth"]],
    "depth-model": lambda f: ["--bg", f["bg"], "--fg-masks", f["fg_masks"], "--fg", f["fg_rgb"], "--depth-model",
                              f["model"], "--depth-model-input-size", "32", "--depth-device", "cpu"],
}


@pytest.mark.parametrize("source", FOLDER_SOURCES)
def test_user_folders_from_recipes_equal_the_direct_build(user_folders, tmp_path, source):
    args = [*FOLDER_SOURCES[source](user_folders), "--positions", "2", "--shard-size", "16", "--size", "192",
            "--val-fraction", "0.25"]
    build(tmp_path / "direct", *args)
    build(tmp_path / "recipes", *args, "--store", "recipes")
    build(tmp_path / "materialised", "--from-recipes", tmp_path / "recipes")
    assert_same_dataset(tmp_path / "materialised", tmp_path / "direct")
    depth = read_manifest_json(tmp_path / "materialised")["depth"]
    assert depth["source"] == ("depth model, run once per background" if source == "depth-model"
                               else "precomputed maps (--bg-depth)")


def test_recipe_build_of_changed_files_is_refused(user_folders, tmp_path):
    folders = {k: Path(shutil.copytree(user_folders[k], tmp_path / k)) for k in ("bg", "fg", "bg_depth")}
    args = [*FOLDER_SOURCES["depth-maps"](folders), "--positions", "1", "--no-flip", "--store", "recipes"]
    build(tmp_path / "r", *args)
    shutil.copy(folders["fg"] / "f2.png", folders["fg"] / "f1.png")
    line = assert_one_line_error(invoke(tmp_path / "r", *args, *ONE_WORKER), str(tmp_path / "r"), "--overwrite")
    assert "built from other files" in line
    build(tmp_path / "r", *args, "--overwrite")


def test_depth_scaled_placement_from_recipes_equals_the_direct_build(tmp_path):
    args = [*TINY_ARGS, "--placement", "depth-scaled", "--limit", "24"]
    build(tmp_path / "direct", *args)
    build(tmp_path / "recipes", *args, "--store", "recipes")
    build(tmp_path / "materialised", "--from-recipes", tmp_path / "recipes")
    assert_same_dataset(tmp_path / "materialised", tmp_path / "direct")


# ---- resume, complete, overwrite, foreign folders ----------------------------------------------------------
def test_from_recipes_killed_then_rerun_gives_the_direct_build(tmp_path):
    args = [*TINY_ARGS, "--shard-size", "4"]  # 16 shards: a kill lands mid-build
    build(tmp_path / "direct", *args)
    build(tmp_path / "recipes", *args, "--store", "recipes")
    out = tmp_path / "m"
    proc = start_cli("dm-build-lmdb", out, "--from-recipes", tmp_path / "recipes", "--workers", "1", "--no-progress")
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("shards/*.json")):
            assert proc.poll() is None, f"the build ended before it could be killed: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "no shard was finished within 120 s"
            time.sleep(0.005)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert not (out / "manifest.json").exists() and (out / "build.json").exists()
    assert_one_line_error(run_stats(out), "did not finish")
    result = build(out, "--from-recipes", tmp_path / "recipes")
    assert "already done, resuming" in result.stderr, str(result)
    assert_same_dataset(out, tmp_path / "direct")
    assert build(out, "--from-recipes", tmp_path / "recipes").stderr.strip() == \
        "dataset is already complete with these options; nothing to do (--overwrite rebuilds it)"


def test_from_recipes_in_parts_with_worker_processes_then_merge(recipes, tiny_dataset, tmp_path):
    out = tmp_path / "m"
    for part in ("2/2", "1/2"):  # the recorded options travel to pool workers
        result = invoke(out, "--from-recipes", recipes, "--part", part, "--workers", "2", "--no-progress")
        assert result.rc == 0 and "built part: 32 samples" in result.stdout, str(result)
    assert not (out / "manifest.json").exists()
    build(out, "--from-recipes", recipes, "--merge")
    assert_same_dataset(out, tiny_dataset)


def test_from_recipes_refuses_to_replace_another_dataset(recipes, tmp_path):
    other = tmp_path / "other"
    build(other, *TINY_ARGS, "--limit", "16")
    before = read_manifest_json(other)
    line = assert_one_line_error(invoke(other, "--from-recipes", recipes, *ONE_WORKER, "--no-progress"),
                                 str(other), "--overwrite")
    assert "complete dataset" in line and read_manifest_json(other) == before
    result = build(other, "--from-recipes", recipes, "--overwrite")
    assert read_manifest_json(other)["sample_count"] == TINY_COUNT, str(result)


def test_recipe_build_interrupted_resumes_complete_is_refused(recipes, tmp_path, monkeypatch):
    out = tmp_path / "r"
    restore = interrupt_recipe_statistics(monkeypatch, at_chunk=3)
    result = invoke(out, *TINY_ARGS, *ONE_WORKER, "--store", "recipes")
    assert result.rc == 130 and result.stderr.strip().splitlines()[-1].startswith("error: interrupted"), str(result)
    assert not (out / "manifest.json").exists() and (out / "build.json").exists()
    restore()
    assert_nothing_reads_it(out, tmp_path)
    assert_one_line_error(invoke(out, *TINY_ARGS, *ONE_WORKER, "--store", "recipes", "--seed", "1"),
                          "interrupted build with other options", "seed")
    result = build(out, *TINY_ARGS, "--store", "recipes")  # the rerun continues where it stopped
    assert "statistics of 32 samples in 2 chunk(s)" in result.stderr, str(result)
    assert read_manifest_json(out) == {**read_manifest_json(recipes), "created_by": read_manifest_json(out)["created_by"]}
    assert "nothing to do" in build(out, *TINY_ARGS, "--store", "recipes").stderr
    for args in (["--seed", "1"], []):  # other options, and a materialised build of the same ones
        line = assert_one_line_error(invoke(out, *TINY_ARGS, *ONE_WORKER, *args, *(["--store", "recipes"] if args
                                                                                 else [])), "--overwrite")
        assert "complete" in line
    build(out, *TINY_ARGS, "--store", "recipes", "--seed", "1", "--overwrite")
    assert read_manifest_json(out)["build"]["seed"] == 1


def assert_nothing_reads_it(unfinished: Path, tmp_path: Path) -> None:
    """An interrupted recipe build does not look complete: dm-stats (and --verify), dm-train and the loader refuse it."""
    from training.cli import train_command
    from training.data import DepthMaskDataset

    from pipeline.errors import DepthmaskError

    for args in ([], ["--verify"]):
        assert_one_line_error(run_stats(unfinished, *args), str(unfinished), "did not finish", "dm-build-lmdb")
    run = tmp_path / "run"
    assert_one_line_error(invoke(unfinished, "-o", run, "--schedule", "32:1", "--workers", "0", "--device", "cpu",
                                 "--no-progress", command=train_command), "did not finish")
    assert not run.exists()
    with pytest.raises(DepthmaskError, match="did not finish"):
        DepthMaskDataset(unfinished)


def test_a_materialised_build_does_not_take_a_recipe_folder_and_back(recipes, tiny_dataset, tmp_path):
    line = assert_one_line_error(invoke(tmp_path / "m", "--from-recipes", recipes, "--store", "recipes"), "--store")
    assert "--from-recipes" in line
    copy = Path(shutil.copytree(recipes, tmp_path / "copy"))
    assert "complete" in assert_one_line_error(invoke(copy, *TINY_ARGS, *ONE_WORKER), str(copy), "--overwrite")
    copy = Path(shutil.copytree(tiny_dataset, tmp_path / "copy2"))
    assert "materialised dataset" in assert_one_line_error(
        invoke(copy, *TINY_ARGS, *ONE_WORKER, "--store", "recipes"), str(copy), "--overwrite")


@pytest.mark.parametrize("mode", ["--store recipes", "--from-recipes"])
def test_foreign_folder_is_refused_and_left_as_it_is(recipes, tmp_path, mode):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = ["--store", "recipes", *TINY_ARGS] if mode == "--store recipes" else ["--from-recipes", recipes]
    assert_one_line_error(invoke(out, *args, *ONE_WORKER), str(out), "not a depthmask dataset", "notes.txt")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]  # not even a lock file


def test_recipe_build_refused_while_the_folder_is_locked(tmp_path):
    from pipeline.folder import BuildLock

    out = tmp_path / "r"
    out.mkdir()
    with BuildLock(out):
        assert_one_line_error(invoke(out, *TINY_ARGS, *ONE_WORKER, "--store", "recipes"), "another build is running")
    assert not (out / "manifest.json").exists()


# ---- one-line refusals -------------------------------------------------------------------------------------
def test_bad_user_input_of_a_recipe_build_leaves_no_folder(tmp_path):
    out = tmp_path / "r"
    assert_one_line_error(invoke(out, "--store", "recipes", "--bg", tmp_path / "nowhere", "--bg-depth", tmp_path,
                                 *ONE_WORKER), "--bg", "does not exist")
    assert not out.exists()


@pytest.mark.parametrize("args, fragments", [
    (["--depth-model", "{model}", "--depth-mode", "per-sample"], ["--store recipes", "--depth-mode per-sample"]),
    (["--part", "1/2"], ["--store recipes", "--part"]),
    (["--merge"], ["--store recipes", "--merge"]),
    (["--max-shard-size-mb", "100"], ["--store recipes", "--max-shard-size-mb"]),
    (["--store", "shards"], ["--store", "shards"]),
], ids=["per-sample", "part", "merge", "max-shard-size", "unknown-store"])
def test_options_a_recipe_build_cannot_take(tmp_path, args, fragments):
    (tmp_path / "model.pt").write_bytes(b"not read: refused before")
    out = tmp_path / "r"
    args = [a.format(model=tmp_path / "model.pt") for a in args]
    assert_one_line_error(invoke(out, *TINY_ARGS, *ONE_WORKER, "--store", "recipes", *args), *fragments)
    assert not out.exists()


@pytest.mark.parametrize("args", [["--seed", "3"], ["--no-flip"], ["--size", "224"], ["--limit", "8"],
                                  ["--jpeg-quality", "80"], ["--placement", "fixed"], ["--bg", "x"],
                                  ["--depth-storage", "full"]], ids=lambda a: a[0])
def test_from_recipes_refuses_content_options(recipes, tmp_path, args):
    out = tmp_path / "m"
    line = assert_one_line_error(invoke(out, "--from-recipes", recipes, *args), "--from-recipes", args[0],
                                 "manifest.json", "--workers")
    assert "--seed" not in line or args[0] == "--seed"
    assert not out.exists()


def test_from_recipes_of_what_is_not_a_complete_recipe_dataset(recipes, tiny_dataset, tmp_path):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(recipes / "backgrounds.lmdb", unfinished)
    (unfinished / "build.json").write_text(json.dumps({"format": "depthmask-lmdb", "kind": "recipes"}))
    cases = [(tiny_dataset, ["not a recipe dataset", "samples"]), (unfinished, ["did not finish"]),
             (tmp_path / "missing", ["does not exist"])]
    for source, fragments in cases:
        out = tmp_path / "m"
        assert_one_line_error(invoke(out, "--from-recipes", source), "--from-recipes", str(source), *fragments)
        assert not out.exists()
    line = assert_one_line_error(invoke(recipes, "--from-recipes", recipes), str(recipes), "another folder")
    assert read_manifest_json(recipes)["kind"] == "recipes", line


def test_from_recipes_of_a_damaged_asset_store_names_the_file(recipes, tmp_path):
    copy = Path(shutil.copytree(recipes, tmp_path / "copy"))
    data = bytearray((copy / "foregrounds.lmdb").read_bytes())
    data[data.find(b"IDAT") + 40] ^= 0x40
    (copy / "foregrounds.lmdb").write_bytes(bytes(data))
    assert_one_line_error(invoke(tmp_path / "m", "--from-recipes", copy), "foregrounds.lmdb")
    assert not (tmp_path / "m").exists()


# ---- dm-stats, and the real entry point -------------------------------------------------------------------
def test_stats_of_a_recipe_dataset_and_help(recipes):
    info = json.loads(run_stats(recipes, "--json").stdout)
    assert info["kind"] == "recipes" and info["samples"] == TINY_COUNT
    result = run_cli("dm-build-lmdb", "--help")
    assert result.rc == 0 and "--store [samples|recipes]" in result.stdout and "--from-recipes RECIPES" in result.stdout


@pytest.mark.parametrize("name", ["background_pixels.lmdb", "foregrounds.lmdb"])
def test_stats_verify_names_a_corrupted_asset_store(recipes, tmp_path, name):
    copy = Path(shutil.copytree(recipes, tmp_path / "copy"))
    data = bytearray((copy / name).read_bytes())
    data[data.find(b"IDAT") + 40] ^= 0x40  # inside an image
    (copy / name).write_bytes(bytes(data))
    result = run_cli("dm-stats", copy, "--verify", "--workers", "1")
    assert result.rc == 1 and "Traceback" not in result.stderr, str(result)
    assert "verify       FAILED: 1 problem(s)" in result.stdout, str(result)
    assert f"  {name}: damaged asset store: content hash differs from the manifest" in result.stdout, str(result)

"""User mistakes on the command line: each is one line on stderr starting with 'error:', no traceback,
a non-zero exit, and nothing half-made left behind."""
from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import TINY_ARGS, CliResult, assert_one_line_error, run_cli


def test_console_scripts_are_declared():
    """setup.cfg's console scripts, when installed, answer --help."""
    import subprocess

    for tool in ("dm-build-lmdb", "dm-stats"):
        path = shutil.which(tool)
        if path is None:
            pytest.skip(f"{tool} is not installed (pip install -e . --no-deps)")
        proc = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "Usage:" in proc.stdout


def test_help_lists_options():
    result = run_cli("dm-build-lmdb", "--help")
    assert result.rc == 0
    for option in ("--seed", "--backgrounds", "--foregrounds", "--positions", "--part", "--merge", "--overwrite",
                   "--max-shard-size-mb", "--shard-size", "--workers"):
        assert option in result.stdout


NONSENSE = [
    (["--positions", "0"], ["--positions", "0"]),
    (["--backgrounds", "-1"], ["--backgrounds", "-1"]),
    (["--limit", "0"], ["--limit", "0"]),
    (["--val-fraction", "2"], ["--val-fraction", "2"]),
    (["--part", "4/3"], ["--part", "4/3"]),
    (["--part", "abc"], ["--part", "abc"]),
    (["--jpeg-quality", "0"], ["--jpeg-quality", "0"]),
    (["--size", "10"], ["--size", "10"]),
]
MORE_NONSENSE = [
    (["--foregrounds", "0"], ["--foregrounds"]),
    (["--val-fraction", "-0.1"], ["--val-fraction"]),
    (["--val-fraction", "0.5"], ["--val-fraction"]),
    (["--part", "0/3"], ["--part"]),
    (["--part", "1/0"], ["--part"]),
    (["--part", "1/3", "--merge"], ["--part", "--merge"]),
    (["--jpeg-quality", "101"], ["--jpeg-quality"]),
    (["--size", "2000"], ["--size"]),
    (["--shard-size", "0"], ["--shard-size"]),
    (["--workers", "-2"], ["--workers"]),
    (["--seed", "-5"], ["--seed"]),
    (["--max-shard-size-mb", "0"], ["--max-shard-size-mb"]),
    (["--positions", "abc"], ["--positions", "abc"]),  # click's own type check, reduced to one line
    (["--no-such-option"], ["--no-such-option"]),
    (["--depth-storage", "zip"], ["--depth-storage", "zip"]),
]


def test_nonsense_options(tmp_path):
    """The user's path: each case in its own process, two at a time (each start costs ~0.5 s of imports)."""

    def check(case):
        i, (args, fragments) = case
        out = tmp_path / f"out{i}"
        result = run_cli("dm-build-lmdb", out, *TINY_ARGS, *args)
        try:
            assert_one_line_error(result, *fragments)
            assert not out.exists(), "options must be checked before anything is created"
        except AssertionError as exc:
            return f"{' '.join(args)}: {exc}"
        return None

    with ThreadPoolExecutor(2) as pool:
        failures = [f for f in pool.map(check, enumerate(NONSENSE)) if f]
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("args, fragments", NONSENSE + MORE_NONSENSE,
                         ids=[" ".join(args) for args, _ in NONSENSE + MORE_NONSENSE])
def test_nonsense_options_in_process(tmp_path, monkeypatch, args, fragments):
    """The same through click's test runner, in this process (cheap enough for many cases)."""
    from click.testing import CliRunner

    from pipeline.cli import build_lmdb_command

    monkeypatch.delenv("DEPTHMASK_DEBUG", raising=False)
    out = tmp_path / "out"
    outcome = CliRunner().invoke(build_lmdb_command, [str(out), *TINY_ARGS, *args])
    assert outcome.exception is None or isinstance(outcome.exception, SystemExit), outcome.exception
    assert_one_line_error(CliResult(outcome.exit_code, outcome.stdout, outcome.stderr), *fragments)
    assert not out.exists()


def test_missing_output_argument():
    assert_one_line_error(run_cli("dm-build-lmdb"), "OUTPUT")


def test_output_is_a_file(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    assert_one_line_error(run_cli("dm-build-lmdb", target, *TINY_ARGS), str(target), "file")
    assert target.read_text() == "keep me"


def test_missing_parent_folders_are_created(tmp_path):
    out = tmp_path / "no" / "such" / "out"  # as `dm-build-lmdb out/default` in a fresh clone
    result = run_cli("dm-build-lmdb", out, *TINY_ARGS)
    assert result.rc == 0, str(result)
    assert (out / "manifest.json").is_file()


def test_output_under_a_regular_file(tmp_path):
    (tmp_path / "plain").write_text("x")
    assert_one_line_error(run_cli("dm-build-lmdb", tmp_path / "plain" / "out", *TINY_ARGS), "plain")
    assert (tmp_path / "plain").read_text() == "x"


@pytest.mark.parametrize("target", ["/proc/depthmask-test-output", "/proc/self"])
def test_output_not_writable(target):
    # root ignores permission bits, so use folders that no one can create files in
    line = assert_one_line_error(run_cli("dm-build-lmdb", target, *TINY_ARGS), target)
    assert "writable" in line or "cannot create" in line


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permission bits")
def test_output_folder_read_only(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert_one_line_error(run_cli("dm-build-lmdb", folder, *TINY_ARGS), "not writable")
    finally:
        folder.chmod(0o700)


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns)
            for p in folder.rglob("*")}


def test_foreign_folder_refused_and_untouched(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.tex").write_text("precious")
    before = (folder / "thesis.tex").stat().st_mtime_ns
    line = assert_one_line_error(run_cli("dm-build-lmdb", folder, *TINY_ARGS), "thesis.tex", "not empty")
    assert "not a depthmask dataset" in line
    assert (folder / "thesis.tex").read_text() == "precious"
    assert (folder / "thesis.tex").stat().st_mtime_ns == before
    assert not (folder / "manifest.json").exists() and not (folder / "build.json").exists()
    # --overwrite does not make it ours either
    assert_one_line_error(run_cli("dm-build-lmdb", folder, *TINY_ARGS, "--overwrite"), "thesis.tex")
    assert (folder / "thesis.tex").read_text() == "precious"


def test_foreign_folder_gets_no_new_entries(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("n")
    run_cli("dm-build-lmdb", folder, *TINY_ARGS)
    assert sorted(os.listdir(folder)) == ["notes.txt"]


def test_map_full_leaves_no_complete_looking_shard(tmp_path):
    out = tmp_path / "small-map"
    # one shard of 128 samples with full depth PNGs: over 2 MiB
    args = [*TINY_ARGS, "--positions", "4", "--shard-size", "128", "--depth-storage", "full", "--workers", "1"]
    result = run_cli("dm-build-lmdb", out, *args, "--max-shard-size-mb", "1")
    assert_one_line_error(result, "--max-shard-size-mb", "map size", "shard-00000", after_log=True)
    assert not (out / "manifest.json").exists()
    leftovers = sorted(p.name for p in (out / "shards").iterdir())
    assert not [n for n in leftovers if n.endswith(".lmdb") or n.endswith(".json")], leftovers
    assert not [n for n in leftovers if ".tmp" in n], leftovers  # the temporary shard is removed too
    # the map size is a run option: the same build with a big enough map then completes
    result = run_cli("dm-build-lmdb", out, *args)
    assert result.rc == 0, str(result)
    assert (out / "manifest.json").exists()


def test_stats_on_missing_folder(tmp_path):
    assert_one_line_error(run_cli("dm-stats", tmp_path / "nothing"), "does not exist")


def test_stats_on_non_dataset_folder(tmp_path):
    (tmp_path / "x.txt").write_text("x")
    assert_one_line_error(run_cli("dm-stats", tmp_path), "not a depthmask dataset")
    assert_one_line_error(run_cli("dm-stats", tmp_path / "x.txt"), "is a file")


def test_stats_verify_bad_workers(tiny_dataset):
    assert_one_line_error(run_cli("dm-stats", tiny_dataset, "--verify", "--workers", "-1"), "--workers")


# ---- errors raised where the user does not see them directly ------------------------------------------
def _run_user_errors(raise_it, capsys) -> tuple[int, str]:
    from pipeline.cli_support import user_errors

    with pytest.raises(SystemExit) as exit_info:
        user_errors(raise_it)()
    return exit_info.value.code, capsys.readouterr().err


def _worker_raises(exc: BaseException):
    """What torch's DataLoader does with an exception raised in a worker: wrap it, re-raise it in the main process."""
    from torch._utils import ExceptionWrapper

    def run():
        try:
            raise exc
        except BaseException:
            wrapper = ExceptionWrapper(where="in DataLoader worker process 0")
        wrapper.reraise()

    return run


def test_worker_error_is_its_original_line(capsys, monkeypatch):
    from pipeline import DepthmaskError

    monkeypatch.delenv("DEPTHMASK_DEBUG", raising=False)
    message = "/d/shards/shard-00001.lmdb key 16: malformed record: field 'x' is missing"
    code, err = _run_user_errors(_worker_raises(DepthmaskError(message)), capsys)
    assert code == 1 and err == f"error: {message}\n"
    # an exception torch cannot rebuild (lmdb's take no message argument) arrives as a RuntimeError
    import lmdb

    code, err = _run_user_errors(_worker_raises(lmdb.CorruptedError("mdb_get: MDB_CORRUPTED")), capsys)
    assert code == 1 and err.count("\n") == 1 and "Caught" not in err and "Traceback" not in err
    assert err.startswith("error: unexpected CorruptedError: mdb_get: MDB_CORRUPTED")


def test_worker_killed_by_bus_error_says_what_it_means(capsys, monkeypatch):
    monkeypatch.delenv("DEPTHMASK_DEBUG", raising=False)

    def run():
        raise RuntimeError("DataLoader worker (pid 123) is killed by signal: Bus error. It is possible that "
                           "dataloader's workers are out of shared memory. Please try to raise your shared memory limit.")

    code, err = _run_user_errors(run, capsys)
    assert code == 1 and err.count("\n") == 1
    assert "truncated or replaced" in err and "shared memory" not in err


def test_damaged_depth_model_files_are_one_line_without_torch_noise(tmp_path):
    """A garbage .pt2 made torch.export log a 15-line traceback; a raw pickle as TorchScript gave torch's
    advice cut mid-sentence. Now: the one line, and the first sentence of torch's reason."""
    import pickle

    from user_data_kit import write_user_folders

    folders = write_user_folders(tmp_path / "in", 2, 2)
    (tmp_path / "garbage.pt2").write_bytes(os.urandom(3000))
    (tmp_path / "raw.pt").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    for model, fragment in (("garbage.pt2", "not a loadable torch.export model"),
                            ("raw.pt", "not a loadable torchscript model")):
        result = run_cli("dm-build-lmdb", tmp_path / f"out-{model}", "--bg", folders["bg"], "--fg", folders["fg"],
                         "--depth-model", tmp_path / model, "--no-progress")
        line = assert_one_line_error(result, model, fragment)
        assert "miniz" not in line and not line.endswith(" the file"), line
        assert result.stdout == "", str(result)

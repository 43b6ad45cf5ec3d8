"""Shared fixtures of the pipeline tests: tiny build options, a session-wide tiny dataset, and a helper
that runs the command-line tools in a subprocess the way a user would."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# 4 x 4 x 2 positions x 2 (flip) = 64 samples in 4 shards of 16; 1 held-out bg and fg (val_fraction 0.1)
TINY = {"backgrounds": 4, "foregrounds": 4, "positions": 2, "shard_size": 16, "size": 192}
TINY_ARGS = ["--backgrounds", "4", "--foregrounds", "4", "--positions", "2", "--shard-size", "16",
             "--size", "192", "--no-progress"]
TINY_COUNT = 64
TINY_SHARDS = 4

_ENTRY_POINTS = {"dm-build-lmdb": "build_lmdb_command", "dm-stats": "stats_command"}


@dataclass
class CliResult:
    rc: int
    stdout: str
    stderr: str

    def __str__(self) -> str:  # shown by pytest when an assertion about the result fails
        return f"rc={self.rc}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"


def cli_command(tool: str, *args: object) -> list[str]:
    """The argv that runs a console script of setup.cfg with this interpreter (installed or not)."""
    code = (f"import sys; sys.argv[0] = {tool!r}; "
            f"from pipeline.cli import {_ENTRY_POINTS[tool]} as main; main()")
    return [sys.executable, "-c", code, *(str(a) for a in args)]


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DEPTHMASK_DEBUG", None)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_cli(tool: str, *args: object, timeout: float = 180) -> CliResult:
    proc = subprocess.run(cli_command(tool, *args), capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env=cli_env())
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def start_cli(tool: str, *args: object, **kwargs) -> subprocess.Popen:
    """Start a tool without waiting (own process group, so a test can kill the whole build)."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(cli_command(tool, *args), cwd=REPO, env=cli_env(), text=True,
                            start_new_session=True, **kwargs)


def assert_one_line_error(result: CliResult, *fragments: str, after_log: bool = False) -> str:
    """rc != 0, stderr is exactly one line starting with 'error:' and no traceback; returns the line.

    after_log: errors that happen once a build has started may follow its one-line log ("building N
    samples ..."); the error is then still one line, the last one, and the only one saying 'error:'."""
    assert result.rc != 0, str(result)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, str(result)
    lines = result.stderr.strip("\n").splitlines()
    if after_log:
        assert lines and sum(line.startswith("error:") for line in lines) == 1, str(result)
        assert all(line.startswith("building ") for line in lines[:-1]), str(result)
        lines = lines[-1:]
    assert len(lines) == 1, str(result)
    line = lines[0]
    assert line.startswith("error:"), str(result)
    for fragment in fragments:
        assert fragment.lower() in line.lower(), f"{fragment!r} not in {line!r}"
    return line


def tiny_options(output: Path, **overrides):
    from pipeline.build import BuildOptions

    return BuildOptions(output=Path(output), **{**TINY, "workers": 1, **overrides})


def build_tiny(output: Path, **overrides) -> Path:
    from pipeline.build import build_dataset

    summary = build_dataset(tiny_options(output, **overrides), progress=False, log=lambda m: None)
    assert summary.complete
    return Path(output)


def read_manifest_json(root: Path) -> dict:
    return json.loads((Path(root) / "manifest.json").read_text())


def shard_hashes(manifest: dict) -> list[tuple[str, int, int, int, str]]:
    return [(s["path"], s["start"], s["stop"], s["records"], s["sha256"]) for s in manifest["shards"]]


def copy_dataset(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """The tiny dataset (64 samples, 4 shards), built once in-process with one worker. Read-only:
    tests that damage or rebuild a dataset work on a copy."""
    return build_tiny(tmp_path_factory.mktemp("tiny") / "data")


@pytest.fixture(scope="session")
def tiny_manifest(tiny_dataset) -> dict:
    return read_manifest_json(tiny_dataset)


# ---- training tests (test_data, test_train, test_checkpoint, test_export, test_train_cli, test_distributed) ----
# The tiny model: ~0.25M parameters, a few hundredths of a second per step at 32 px on one CPU thread.
TINY_MODEL_ARGS = ["--depth-arch", "unet-small", "--mask-arch", "unet-small", "--width", "0.25"]


@pytest.fixture
def one_thread():
    """Torch on one thread: on a small shared machine two threads are several times slower than one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train_env() -> dict[str, str]:
    """cli_env for training tools: one compute thread per process (see one_thread)."""
    return {**cli_env(), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def tiny_train_config(data: Path, output: Path, **overrides):
    """A TrainConfig of the tiny model on a tiny dataset: 32 px, batch 8, no augmentation unless asked."""
    from training.config import TrainConfig
    from training.models import ModelConfig

    values = {"model": ModelConfig(depth_arch="unet-small", mask_arch="unet-small", width=0.25),
              "schedule": ((32, 1),), "batch_size": 8, "augment": False, "lr": 3e-3, **overrides}
    return TrainConfig(data=str(data), output=str(output), **values)


def fast_runtime(**overrides):
    """RuntimeOptions for tests: in-process data loading, CPU, no progress bar."""
    from training.train import RuntimeOptions

    return RuntimeOptions(**{"workers": 0, "device": "cpu", "progress": False, **overrides})


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def trained_run(tiny_dataset, tmp_path_factory) -> Path:
    """A finished tiny run (progressive 32 px -> 64 px, augmented, 16 samples per epoch), trained once.
    Read-only: tests that train further work on a copy."""
    import torch

    from training.augment import AugmentConfig
    from training.train import train

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = tmp_path_factory.mktemp("trained") / "run"
        config = tiny_train_config(tiny_dataset, run, schedule=((32, 1), (64, 1)), epoch_samples=16,
                                   augment=AugmentConfig(min_scale=0.8, max_rotation_deg=5.0))
        train(config, fast_runtime(), log=lambda m: None)
    finally:
        torch.set_num_threads(before)
    return run


@pytest.fixture(scope="module")
def one_thread_module():
    """one_thread for a whole module (module-scoped fixtures that train or predict run under it too)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def checkpoint(trained_run) -> Path:
    """The shipped checkpoint (best.pt) of the session's tiny trained run."""
    return trained_run / "best.pt"


def interrupt_recipe_statistics(monkeypatch, at_chunk: int = 3):
    """Make the recipe build's statistics stop with KeyboardInterrupt at its `at_chunk`-th chunk (as a Ctrl-C
    would, in one process); returns the function that puts the real chunk_stats back."""
    import pipeline.recipe_build as recipe_build

    real, calls = recipe_build.chunk_stats, []

    def interrupted(context, start, stop):
        calls.append(start)
        if len(calls) == at_chunk:
            raise KeyboardInterrupt
        return real(context, start, stop)

    monkeypatch.setattr(recipe_build, "chunk_stats", interrupted)
    return lambda: monkeypatch.setattr(recipe_build, "chunk_stats", real)

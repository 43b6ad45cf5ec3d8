"""dm-train and dm-export-samples as a user runs them: every mistake is one line on stderr starting with
'error:', a non-zero exit and no traceback; a run killed with SIGKILL resumes and finishes.

Starting Python with torch costs several seconds on a small machine, so most cases run in one driver
process that imports the tools once and forks a child per case: each case is still its own process,
with its own exit status and its own stderr file descriptor."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import (REPO, TINY_MODEL_ARGS, CliResult, assert_one_line_error, copy_dataset, fast_runtime, read_metrics,
                      tiny_train_config, train_env)
from training.checkpoint import load_checkpoint, save_checkpoint
from training.config import TrainConfig
from training.augment import AugmentConfig
from training.models import ModelConfig, build_model

TRAIN_ARGS = [*TINY_MODEL_ARGS, "--schedule", "32:1", "--batch-size", "8", "--workers", "0", "--device", "cpu",
              "--no-progress", "--no-augment"]

DRIVER = r'''
import json, os, sys, traceback
from training.cli import export_samples_command, train_command
import training.train, training.export  # torch once, before the forks (the commands import it lazily)
TOOLS = {"dm-train": train_command, "dm-export-samples": export_samples_command}
cases, prefix, result_path = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
results = []
for i, (tool, args) in enumerate(cases):
    out_path, err_path = f"{prefix}.{i}.out", f"{prefix}.{i}.err"
    sys.stdout.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child is the tool's process, as if started from a shell
        code = 1
        try:
            for fd, path in ((1, out_path), (2, err_path)):
                handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                os.dup2(handle, fd)
                os.close(handle)
            sys.argv = [tool, *args]
            TOOLS[tool].main(args, prog_name=tool)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush(); sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    results.append({"rc": os.waitstatus_to_exitcode(status), "stdout": open(out_path).read(),
                    "stderr": open(err_path).read()})
json.dump(results, open(result_path, "w"))
'''


def run_cases(tmp: Path, cases: list[tuple[str, list]]) -> list[CliResult]:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "driver.py").write_text(DRIVER)
    (tmp / "cases.json").write_text(json.dumps([(tool, [str(a) for a in args]) for tool, args in cases]))
    proc = subprocess.run([sys.executable, str(tmp / "driver.py"), str(tmp / "cases.json"), str(tmp / "case"),
                           str(tmp / "results.json")], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env=train_env())
    assert proc.returncode == 0, proc.stderr
    return [CliResult(**r) for r in json.loads((tmp / "results.json").read_text())]


@pytest.fixture(scope="module")
def cli_setup(tiny_dataset, tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("cli")
    incomplete = base / "incomplete"
    incomplete.mkdir()
    (incomplete / "build.json").write_text("{}")
    future = copy_dataset(tiny_dataset, base / "future")
    manifest = json.loads((future / "manifest.json").read_text())
    manifest["format_version"] = 999
    (future / "manifest.json").write_text(json.dumps(manifest))
    (base / "corrupt.pt").write_bytes(os.urandom(2000))
    torch.manual_seed(0)
    other = ModelConfig(depth_arch="unet-small", mask_arch="autoencoder", width=0.25)
    save_checkpoint(base / "other.pt", {"config": tiny_train_config(tiny_dataset, base / "x", model=other).to_dict(),
                                        "model": build_model(other).state_dict()})
    existing = base / "existing"
    existing.mkdir()
    shutil.copy(base / "other.pt", existing / "last.pt")
    return {"base": base, "data": tiny_dataset, "incomplete": incomplete, "future": future,
            "corrupt": base / "corrupt.pt", "other": base / "other.pt", "existing": existing}


ERROR_CASES = [
    # (id, tool, args, fragments expected in the error line)
    ("missing-folder", "dm-train", ["{base}/missing", "-o", "{base}/r1", *TRAIN_ARGS], ["does not exist"]),
    ("incomplete-dataset", "dm-train", ["{incomplete}", "-o", "{base}/r2", *TRAIN_ARGS], ["did not finish"]),
    ("future-format", "dm-train", ["{future}", "-o", "{base}/r3", *TRAIN_ARGS], ["format version 999"]),
    ("unknown-depth-arch", "dm-train", ["{data}", "-o", "{base}/r4", "--depth-arch", "vgg99"],
     ["--depth-arch", "vgg99", "unet-small"]),
    ("unknown-mask-arch", "dm-train", ["{data}", "-o", "{base}/r4b", "--mask-arch", "nope"], ["--mask-arch"]),
    ("batch-too-large", "dm-train", ["{data}", "-o", "{base}/r5", *TRAIN_ARGS, "--batch-size", "64"],
     ["--batch-size 64", "36 samples"]),
    ("corrupt-init-from", "dm-train", ["{data}", "-o", "{base}/r6", *TRAIN_ARGS, "--init-from", "{corrupt}"],
     ["corrupt.pt", "not a readable checkpoint"]),
    ("other-arch-init-from", "dm-train", ["{data}", "-o", "{base}/r7", *TRAIN_ARGS, "--init-from", "{other}"],
     ["mask autoencoder", "mask unet-small"]),
    ("schedule-abc", "dm-train", ["{data}", "-o", "{base}/r8", *TRAIN_ARGS, "--schedule", "abc"], ["--schedule"]),
    ("schedule-not-multiple-of-32", "dm-train", ["{data}", "-o", "{base}/r9", "--schedule", "48:1"],
     ["--schedule", "multiple of 32"]),
    ("schedule-zero-epochs", "dm-train", ["{data}", "-o", "{base}/r10", "--schedule", "32:0"], ["--schedule"]),
    ("schedule-above-stored-size", "dm-train",  # a later stage too: refused before the first stage trains
     ["{data}", "-o", "{base}/r10b", *TRAIN_ARGS, "--schedule", "32:1,256:1"], ["--schedule", "256", "192"]),
    ("bad-width", "dm-train", ["{data}", "-o", "{base}/r11", "--width", "0"], ["width"]),
    ("infinite-width", "dm-train", ["{data}", "-o", "{base}/r11d", "--width", "inf"], ["--width", "inf"]),
    ("nan-checkpoint-every", "dm-train", ["{data}", "-o", "{base}/r13b", *TRAIN_ARGS, "--checkpoint-every-min", "nan"],
     ["--checkpoint-every-min", "nan"]),
    ("nan-time-limit", "dm-train", ["{data}", "-o", "{base}/r13c", *TRAIN_ARGS, "--time-limit-min", "nan"],
     ["--time-limit-min"]),
    ("resume-and-overwrite", "dm-train", ["{data}", "-o", "{existing}", *TRAIN_ARGS, "--resume", "--overwrite"],
     ["--resume and --overwrite"]),
    ("bad-mask-width", "dm-train", ["{data}", "-o", "{base}/r11b", "--mask-width", "-1"], ["--mask-width"]),
    ("mask-width-with-shared-encoder", "dm-train", ["{data}", "-o", "{base}/r11c", "--shared-encoder",
                                                    "--mask-width", "0.5"], ["--mask-width", "separate networks"]),
    ("shared-encoder-mismatch", "dm-train",
     ["{data}", "-o", "{base}/r12", "--shared-encoder", "--mask-arch", "autoencoder"], ["--shared-encoder"]),
    ("augment-scale-above-1", "dm-train", ["{data}", "-o", "{base}/r12b", "--augment-scale", "1.5"],
     ["--augment-scale", "(0, 1]"]),
    ("negative-augment-rotation", "dm-train", ["{data}", "-o", "{base}/r12c", "--augment-rotation", "-2"],
     ["--augment-rotation"]),
    ("negative-workers", "dm-train", ["{data}", "-o", "{base}/r13", "--workers", "-1"], ["--workers"]),
    ("bad-lr", "dm-train", ["{data}", "-o", "{base}/r14", "--lr", "0"], ["--lr"]),
    ("bad-optimizer", "dm-train", ["{data}", "-o", "{base}/r15", "--optimizer", "adam"], ["--optimizer"]),
    ("bad-device", "dm-train", ["{data}", "-o", "{base}/r16", "--device", "tpu"], ["--device"]),
    ("missing-encoder-weights", "dm-train", ["{data}", "-o", "{base}/r17", "--encoder-weights", "{base}/no.pth"],
     ["--encoder-weights"]),
    ("nothing-to-resume", "dm-train", ["{data}", "-o", "{base}/r18", *TRAIN_ARGS, "--resume"], ["nothing to resume"]),
    ("existing-run", "dm-train", ["{data}", "-o", "{existing}", *TRAIN_ARGS], ["--resume", "--overwrite"]),
    ("no-arguments", "dm-train", [], ["missing argument"]),
    ("export-corrupt-checkpoint", "dm-export-samples",
     ["{data}", "-o", "{base}/e1.png", "--checkpoint", "{corrupt}", "-n", "1"], ["not a readable checkpoint"]),
    ("export-split-nonsense", "dm-export-samples", ["{data}", "-o", "{base}/e2.png", "--split", "nonsense"],
     ["--split", "nonsense"]),
    ("export-size-zero", "dm-export-samples", ["{data}", "-o", "{base}/e6.png", "--size", "0"], ["--size"]),
    ("export-count-too-large", "dm-export-samples", ["{data}", "-o", "{base}/e3.png", "--count", "100"],
     ["--count 100"]),
    ("export-bad-suffix", "dm-export-samples", ["{data}", "-o", "{base}/e4.jpg", "-n", "1"], [".png"]),
    ("export-missing-data", "dm-export-samples", ["{base}/missing", "-o", "{base}/e5.png"], ["does not exist"]),
]
if not torch.cuda.is_available():
    ERROR_CASES.append(("cuda-without-gpu", "dm-train", ["{data}", "-o", "{base}/r19", *TRAIN_ARGS, "--device", "cuda"],
                        ["no CUDA GPU"]))

OK_CASES = [
    ("train", "dm-train", ["{data}", "-o", "{base}/ok", *TRAIN_ARGS, "--epoch-samples", "8", "--val-samples", "2",
                           "--augment", "--augment-scale", "0.9", "--augment-rotation", "3"]),
    ("export", "dm-export-samples", ["{data}", "-o", "{base}/ok.png", "--checkpoint", "{base}/ok/last.pt", "-n", "2",
                                     "--size", "32", "--device", "cpu"]),
]


@pytest.fixture(scope="module")
def cli_results(cli_setup) -> dict[str, CliResult]:
    cases = [(tool, [a.format(**cli_setup) for a in args]) for _, tool, args, *_ in ERROR_CASES + OK_CASES]
    results = run_cases(cli_setup["base"] / "driver", cases)
    return {case[0]: result for case, result in zip(ERROR_CASES + OK_CASES, results)}


@pytest.mark.parametrize("case", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_error_is_one_line(cli_results, cli_setup, case):
    name, tool, args, fragments = case
    assert_one_line_error(cli_results[name], *fragments)


def test_errors_leave_no_run_folder(cli_results, cli_setup):
    base = cli_setup["base"]
    for name in ("r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r10b", "r11", "r11d", "r13b", "r18"):
        assert not (base / name).exists(), name  # a failed start leaves no folder at all
    assert sorted(p.name for p in cli_setup["existing"].iterdir()) == ["last.pt"]  # the refused run is untouched
    assert not list(base.glob("e*.png")) and not list(base.glob("e*.jpg"))


def test_successful_train_and_export(cli_results, cli_setup):
    train = cli_results["train"]
    assert train.rc == 0, str(train)
    assert "Traceback" not in train.stderr
    assert train.stdout.startswith("done: ") and train.stdout.count("\n") == 1, str(train)
    run = cli_setup["base"] / "ok"
    rows = read_metrics(run)
    assert rows[0]["n_images"] == 2.0 and rows[1]["n_images"] == 2.0 and rows[1]["step"] == 1
    saved = json.loads((run / "config.json").read_text())
    assert saved["val_samples"] == 2
    assert (saved["augment"]["min_scale"], saved["augment"]["max_rotation_deg"], saved["augment"]["hflip"]) == \
        (0.9, 3.0, 0.5)
    assert TrainConfig.from_dict(saved).augment == AugmentConfig(min_scale=0.9, max_rotation_deg=3.0)
    export = cli_results["export"]
    assert export.rc == 0 and export.stdout.strip() == f"wrote {cli_setup['base'] / 'ok.png'}", str(export)
    assert (cli_setup["base"] / "ok.png").stat().st_size > 0


def _dm_train_argv(*args: object) -> list[str]:
    exe = shutil.which("dm-train")
    head = [exe] if exe else [sys.executable, "-m", "training.cli"]
    return [*head, *(str(a) for a in args)]


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_sigkill_then_resume_finishes_every_epoch(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    args = [tiny_dataset, "-o", run, *TINY_MODEL_ARGS, "--schedule", "32:3", "--batch-size", "8", "--workers", "0",
            "--device", "cpu", "--no-progress", "--seed", "4", "--checkpoint-every-min", "0"]
    proc = subprocess.Popen(_dm_train_argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=train_env(), cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (run / "last.pt").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = load_checkpoint(run / "last.pt")["train_state"]
    assert killed_at["step"] < 15

    resumed = subprocess.run(_dm_train_argv(*args, "--resume"), capture_output=True, text=True, timeout=240,
                             env=train_env(), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "Traceback" not in resumed.stderr and "resuming" in resumed.stderr
    rows = read_metrics(run)
    assert sum("baseline" in r for r in rows) == 1 and "baseline" in rows[0]
    assert {r["epoch"] for r in rows[1:] if r["complete"]} == {1, 2, 3}
    assert rows[-1]["epoch"] == 3 and rows[-1]["complete"] and rows[-1]["step"] == 15
    final = load_checkpoint(run / "last.pt")
    assert final["train_state"]["epoch"] == 3 and final["train_state"]["step"] == 15

    # the interrupted run ends exactly where an uninterrupted one does
    from training.train import train

    straight = tiny_train_config(tiny_dataset, tmp_path / "straight", schedule=((32, 3),), augment=True, seed=4,
                                 lr=1e-3)
    train(straight, fast_runtime(), log=lambda m: None)
    reference = load_checkpoint(tmp_path / "straight" / "last.pt")
    assert reference["config"]["model"] == final["config"]["model"]
    for key, value in reference["model"].items():
        assert torch.equal(value, final["model"][key]), key


def test_augmentation_in_the_config_round_trips_and_reads_older_runs():
    config = TrainConfig(data="d", output="o", augment=AugmentConfig(min_scale=0.7, max_rotation_deg=4.0))
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert TrainConfig(data="d", output="o", augment=True).augment == AugmentConfig()
    assert TrainConfig(data="d", output="o", augment=False).augment is None
    assert TrainConfig.from_dict(TrainConfig(data="d", output="o", augment=None).to_dict()).augment is None
    # a run saved when the config held a bool resumes with the geometry it trained with then
    legacy = {**config.to_dict(), "augment": True}
    assert TrainConfig.from_dict(legacy).augment == AugmentConfig(min_scale=0.8, max_rotation_deg=5.0)
    assert TrainConfig.from_dict({**config.to_dict(), "augment": False}).augment is None

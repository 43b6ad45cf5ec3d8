"""tools/gpu_check.sh: the dry run goes through every section on the CPU and reports finite figures; bad
options are one-line errors; the report fails a missing section or a DDP run that disagrees with one process."""
from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CliResult, assert_one_line_error, train_env

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "gpu_check.sh"


def gpu_check_module():
    if str(SCRIPT.parent) not in sys.path:
        sys.path.insert(0, str(SCRIPT.parent))
    return importlib.import_module("gpu_check")


def run_script(*args: object, timeout: float = 60) -> CliResult:
    env = {**train_env(), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=timeout)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.slow
def test_dry_run_goes_through_every_section(tmp_path):
    out = tmp_path / "gc"
    result = run_script("--dry-run", "--out", out, timeout=1500)
    assert result.rc == 0, str(result)
    report = json.loads((out / "gpu_check.json").read_text())
    module = gpu_check_module()
    for name in module.SECTIONS:
        assert report[name]["status"] in (("ok", "skipped") if name == "predict" else ("ok",)), (name, report[name])
    assert report["failed_sections"] == [] and report["nonfinite_sections"] == []
    numbers = module.finite_numbers(report)
    assert numbers and all(math.isfinite(x) for x in numbers)

    cells = report["throughput"]["cells"]
    measured = {(c["pair"], c["precision"]) for c in cells if c["samples_per_s"] > 0 and c["peak_memory_mb"] > 0}
    assert measured == {(p, q) for p in ("default", "original") for q in ("float32", "bf16+channels_last")}
    assert {r["pair"] for r in report["throughput"]["ratios"]} == {"default", "original"}
    loader = report["loader"]
    assert 0 <= loader["waiting_fraction"] <= 1 and loader["steps_timed"] >= 1 and loader["workers"] >= 1
    ddp = report["ddp"]
    assert ddp["group"]["backend"] == "gloo" and ddp["group"]["world_size"] == 2
    assert ddp["single"]["world_size"] == 1 and ddp["single"]["steps"] == ddp["group"]["steps"] == 3
    assert ddp["equal_within_tolerance"] is True
    depth = report["depth_model"]
    assert depth["samples"] == 8 and depth["max_depth_diff_uint16"] == 0  # both builds on the CPU here
    quality = report["quality"]
    assert 0 < quality["depth_rmse"] < 1 and 0 <= quality["mask_iou"] <= 1 and quality["steps"] >= 1
    table = (out / "gpu_check.md").read_text()
    assert "| throughput | default 32 px" in table and "| ddp | equal_within_tolerance | True |" in table


def test_bad_options_are_one_line_errors(tmp_path):
    assert_one_line_error(run_script("--dry-run", "--bogus"), "--bogus")
    assert_one_line_error(run_script("--dry-run", "--data", tmp_path), "--data", "manifest.json")
    (tmp_path / "gpu_check.json").write_text("{}")
    line = assert_one_line_error(run_script("--dry-run", "--out", tmp_path), "--out", "--overwrite")
    assert str(tmp_path) in line
    assert (tmp_path / "gpu_check.json").read_text() == "{}"  # left alone


def test_report_fails_missing_sections_and_unequal_ddp(tmp_path):
    module = gpu_check_module()
    module.write_part(tmp_path, "env", {"status": "ok", "gpus": [], "cpu_cores": 2, "dry_run": True})
    assert module.main(["report", str(tmp_path)]) == 1
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert set(report["failed_sections"]) == set(module.SECTIONS) - {"env"}
    assert (tmp_path / "gpu_check.md").exists()

    single = {"world_size": 1, "depth_rmse": 0.10, "mask_iou": 0.90, "first_loss": 2.0}
    assert module.ddp_summary(single, {**single, "depth_rmse": 0.1015})["status"] == "ok"
    assert module.ddp_summary(single, {**single, "depth_rmse": 0.105})["status"] == "failed"
    assert module.ddp_summary(single, {**single, "world_size": 2, "depth_rmse": 0.105})["status"] == "ok"
    assert module.ddp_summary(single, {**single, "world_size": 2, "mask_iou": 0.85})["status"] == "failed"

"""training.run_folder and the run-folder rules of training.train: nothing dm-train did not write is removed,
one run per folder (lock), a failed start leaves nothing, resume refuses changed options, best.pt is what a
user ships, curves.png, TensorBoard, --no-val, a full disk while saving."""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import build_tiny, fast_runtime, read_metrics, tiny_train_config
from pipeline import DatasetReader, DepthmaskError
from training import checkpoint as checkpoint_module
from training import train as train_module
from training.checkpoint import load_checkpoint, model_from_checkpoint, normalization_of
from training.run_folder import RunLock, foreign_entries, own_entries
from training.train import train

pytestmark = pytest.mark.usefixtures("one_thread")
QUIET = {"log": lambda m: None}


def _user_files(run: Path) -> dict[str, str]:
    """A folder a user made: notes in tb/, an old best.pt, metrics and config of their own; no last.pt."""
    (run / "tb").mkdir(parents=True)
    files = {"tb/notes.txt": "my notes", "best.pt": "an old checkpoint", "metrics.jsonl": "{}\n",
             "config.json": "{}", "README.md": "what this folder is"}
    for name, text in files.items():
        (run / name).write_text(text)
    return files


def test_a_folder_holding_other_files_is_refused_and_left_as_it_is(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    files = _user_files(run)
    with pytest.raises(DepthmaskError, match="not empty and holds no run") as exc:
        train(tiny_train_config(tiny_dataset, run, epoch_samples=8), fast_runtime(), **QUIET)
    assert "--overwrite" in str(exc.value)
    assert {str(p.relative_to(run)): p.read_text() for p in run.rglob("*") if p.is_file()} == files


def test_overwrite_removes_only_what_dm_train_writes(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    _user_files(run)
    train(tiny_train_config(tiny_dataset, run, epoch_samples=8), fast_runtime(overwrite=True), **QUIET)
    assert (run / "tb" / "notes.txt").read_text() == "my notes"
    assert (run / "README.md").read_text() == "what this folder is"
    assert load_checkpoint(run / "best.pt")["kind"] == "weights"  # dm-train's own names were replaced
    assert "baseline" in read_metrics(run)[0]
    assert foreign_entries(run) == ["README.md", "tb/notes.txt"]


def test_a_second_run_into_a_locked_folder_is_refused(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    lock = RunLock(run).acquire()  # as a running dm-train holds it (flock: per open file, so also in-process)
    try:
        with pytest.raises(DepthmaskError, match="another dm-train is running"):
            train(tiny_train_config(tiny_dataset, run, epoch_samples=8), fast_runtime(), **QUIET)
        assert list(run.iterdir()) == []
    finally:
        lock.release()
    train(tiny_train_config(tiny_dataset, run, epoch_samples=8), fast_runtime(), **QUIET)
    assert (run / "last.pt").is_file()


def test_a_failed_start_leaves_no_run_folder(tiny_dataset, tmp_path):
    run = tmp_path / "runs" / "r1"
    with pytest.raises(DepthmaskError, match="batch-size"):
        train(tiny_train_config(tiny_dataset, run, batch_size=4096), fast_runtime(), **QUIET)
    assert not run.exists()
    existing = tmp_path / "mine"
    existing.mkdir()
    with pytest.raises(DepthmaskError, match="batch-size"):
        train(tiny_train_config(tiny_dataset, existing, batch_size=4096), fast_runtime(), **QUIET)
    assert existing.is_dir() and list(existing.iterdir()) == []  # the user's (empty) folder stays


@pytest.fixture(scope="module")
def short_run(tiny_dataset, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("short") / "run"
    torch.set_num_threads(1)
    train(tiny_train_config(tiny_dataset, run, schedule=((32, 2),), epoch_samples=8), fast_runtime(), **QUIET)
    return run


def test_resume_refuses_an_option_that_asks_for_another_value(short_run, tiny_dataset, tmp_path):
    run = Path(shutil.copytree(short_run, tmp_path / "run"))
    config = tiny_train_config(tiny_dataset, run, schedule=((64, 3),), epoch_samples=8)
    with pytest.raises(DepthmaskError, match=r"schedule \(run: \[\[32, 2\]\], given: \[\[64, 3\]\]\)"):
        train(config, fast_runtime(resume=True, resume_checks=("schedule",)), **QUIET)
    with pytest.raises(DepthmaskError, match="schedule"):  # the library checks every field when not told which
        train(config, fast_runtime(resume=True), **QUIET)
    # options left at their defaults (resume_checks without them) do not matter: the run's own are kept
    logs: list[str] = []
    assert train(config, fast_runtime(resume=True, resume_checks=()), log=logs.append) == {}
    assert any("already complete" in line and "nothing to do" in line for line in logs), logs


def test_best_pt_is_what_a_user_ships(short_run, tiny_dataset):
    best, last = load_checkpoint(short_run / "best.pt"), load_checkpoint(short_run / "last.pt")
    assert best["kind"] == "weights" and last["kind"] == "resume"
    assert "optimizer" not in best and "rng" not in best and "scheduler" not in best
    assert {"optimizer", "scheduler", "rng"} <= set(last)
    assert (short_run / "best.pt").stat().st_size < 0.6 * (short_run / "last.pt").stat().st_size
    stats = DatasetReader(tiny_dataset).stats("train")
    norm = normalization_of(best, short_run / "best.pt")
    for key in ("bg", "fg_bg"):
        assert norm[key]["mean"] == pytest.approx(stats[key]["mean"]) and norm[key]["std"] == pytest.approx(stats[key]["std"])
    manifest = DatasetReader(tiny_dataset).manifest
    assert best["dataset"]["depth"] == manifest["depth"] and best["dataset"]["sample_count"] == manifest["sample_count"]
    model, config, _ = model_from_checkpoint(short_run / "best.pt")
    assert config.schedule == ((32, 2),)
    for key, value in model.state_dict().items():
        assert torch.equal(value, best["model"][key]), key


def test_a_checkpoint_without_normalisation_is_one_clear_error(short_run, tmp_path):
    state = load_checkpoint(short_run / "best.pt")
    del state["normalization"]
    with pytest.raises(DepthmaskError, match="no input normalisation.*--stats"):
        normalization_of(state, tmp_path / "old.pt")


def test_curves_png_is_redrawn_every_epoch(short_run):
    image = cv2.imread(str(short_run / "curves.png"))
    assert image is not None and image.shape[0] > 200 and image.shape[1] > 400
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 8  # lines, text and markers, not a blank canvas
    from training.curves import curves_image, read_rows

    floor, rows = read_rows(short_run / "metrics.jsonl")
    assert floor is not None and [r["epoch"] for r in rows] == [1, 2]
    assert np.array_equal(curves_image(floor, rows), image)
    assert not curves_image(floor, rows[:1]).tobytes() == image.tobytes()  # a new epoch changes the picture


def test_tensorboard_scalars_when_the_extra_is_installed(tiny_dataset, tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra (pip install 'depthmask[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    train(tiny_train_config(tiny_dataset, run, schedule=((32, 2),), epoch_samples=8), fast_runtime(), **QUIET)
    events = sorted((run / "tb").glob("events.out.tfevents.*"))
    assert events and all(p in own_entries(run) for p in events)
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    rows = read_metrics(run)[1:]
    logged = [e.value for e in acc.Scalars("depth_rmse")]
    assert logged == pytest.approx([r["depth_rmse"] for r in rows], rel=1e-6)


def test_no_val_trains_a_dataset_without_a_val_split(tmp_path):
    data = build_tiny(tmp_path / "data", val_fraction=0.0)
    assert len(DatasetReader(data).split_indices("val")) == 0
    with pytest.raises(DepthmaskError, match="val split has no samples.*--no-val"):
        train(tiny_train_config(data, tmp_path / "refused", epoch_samples=8), fast_runtime(), **QUIET)
    assert not (tmp_path / "refused").exists()
    run = tmp_path / "run"
    result = train(tiny_train_config(data, run, schedule=((32, 2),), epoch_samples=8, validate=False),
                   fast_runtime(), **QUIET)
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2] and all("depth_rmse" not in r for r in rows)
    assert result == {"train_loss": pytest.approx(rows[-1]["train_loss"])}
    best, last = load_checkpoint(run / "best.pt"), load_checkpoint(run / "last.pt")
    for key in last["model"]:  # without validation best.pt is the last epoch's weights
        assert torch.equal(best["model"][key], last["model"][key]), key


def test_a_full_disk_while_saving_is_one_line_and_last_never_names_a_missing_best(tiny_dataset, tmp_path,
                                                                                 monkeypatch):
    """torch reports a full disk as a RuntimeError from its zip writer. The temporary file goes, the message
    says the disk is full, and last.pt still describes the best.pt that is on disk."""
    run = tmp_path / "run"
    saves = {"best": 0}
    real_save = torch.save

    def save(obj, handle, *args, **kwargs):
        if Path(handle.name).name.startswith(".best.pt.tmp-"):
            saves["best"] += 1
            if saves["best"] == 2:  # the second epoch's best
                handle.write(b"partial")
                raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0")
        return real_save(obj, handle, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", save)
    monkeypatch.setattr(train_module._Trainer, "_update_best", lambda self, metrics: True)
    config = tiny_train_config(tiny_dataset, run, schedule=((32, 3),), epoch_samples=8)
    with pytest.raises(DepthmaskError, match="disk is full") as exc:
        train(config, fast_runtime(), **QUIET)
    assert str(run) in str(exc.value) and "\n" not in str(exc.value)
    assert not list(run.glob(".*tmp*")), "temporary checkpoint left behind"
    best, last = load_checkpoint(run / "best.pt"), load_checkpoint(run / "last.pt")
    assert last["train_state"]["epoch"] == best["train_state"]["epoch"] == 1
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)
    train(replace(config), fast_runtime(resume=True), **QUIET)  # and the run resumes from there
    assert load_checkpoint(run / "last.pt")["train_state"]["epoch"] == 3

"""Checkpoints: atomic writes, weights_only loading (pickled code never runs), one-line errors for
corrupt, truncated or foreign files, architecture checks, and model_from_checkpoint."""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from conftest import fast_runtime, tiny_train_config
from pipeline import DepthmaskError
from training.checkpoint import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, load_checkpoint, load_model_state,
                                 model_from_checkpoint, save_checkpoint)
from training.models import ModelConfig, build_model
from training.train import train

pytestmark = pytest.mark.usefixtures("one_thread")

def _write_marker(path: str) -> int:  # what a malicious checkpoint would run when unpickled
    Path(path).write_text("pwned")
    return 0


class Payload:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (_write_marker, (self.marker,))


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert message and "\n" not in message, message
    return message


def _model_checkpoint(path: Path, model_config: ModelConfig, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(model_config)
    config = tiny_train_config(path.parent, path.parent / "run", model=model_config)
    save_checkpoint(path, {"config": config.to_dict(), "model": model.state_dict()})
    return model


TINY = ModelConfig(depth_arch="unet-small", mask_arch="unet-small", width=0.25)
OTHER = ModelConfig(depth_arch="unet-small", mask_arch="autoencoder", width=0.25)


def test_save_is_atomic_and_round_trips(tmp_path):
    model = _model_checkpoint(tmp_path / "a.pt", TINY)
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]  # no temporary file left
    state = load_checkpoint(tmp_path / "a.pt")
    assert state["format"] == CHECKPOINT_FORMAT and state["format_version"] == CHECKPOINT_VERSION
    for k, v in model.state_dict().items():
        assert torch.equal(state["model"][k], v)
    # overwriting replaces the file whole
    _model_checkpoint(tmp_path / "a.pt", TINY, seed=1)
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]


def test_pickled_objects_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "model": {},
                "extra": Payload(marker)}, path)
    with pytest.raises(DepthmaskError) as info:
        load_checkpoint(path)
    message = _one_line(info)
    assert str(path) in message and "not a readable checkpoint" in message
    assert not marker.exists(), "loading ran code from the checkpoint"


def test_corrupt_truncated_empty_and_missing_files(tmp_path):
    _model_checkpoint(tmp_path / "good.pt", TINY)
    data = (tmp_path / "good.pt").read_bytes()
    cases = {
        "truncated.pt": data[: len(data) // 2],
        "garbage.pt": os.urandom(4096),
        "empty.pt": b"",
        "flipped.pt": data[:100] + bytes(b ^ 0xFF for b in data[100:400]) + data[400:],
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DepthmaskError) as info:
            load_checkpoint(tmp_path / name)
        assert name in _one_line(info)
    with pytest.raises(DepthmaskError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(DepthmaskError, match="does not exist"):
        load_checkpoint(tmp_path)  # a folder


def test_foreign_and_future_checkpoints_are_refused(tmp_path):
    torch.save({"model": {}}, tmp_path / "plain.pt")
    with pytest.raises(DepthmaskError, match="not a depthmask checkpoint") as info:
        load_checkpoint(tmp_path / "plain.pt")
    _one_line(info)
    torch.save(build_model(TINY).state_dict(), tmp_path / "state_dict.pt")
    with pytest.raises(DepthmaskError, match="not a depthmask checkpoint"):
        load_checkpoint(tmp_path / "state_dict.pt")
    torch.save({"format": CHECKPOINT_FORMAT, "format_version": 999}, tmp_path / "future.pt")
    with pytest.raises(DepthmaskError, match="version 999") as info:
        load_checkpoint(tmp_path / "future.pt")
    _one_line(info)


def test_other_architecture_is_refused_naming_both(tmp_path):
    _model_checkpoint(tmp_path / "other.pt", OTHER)
    model = build_model(TINY)
    with pytest.raises(DepthmaskError) as info:
        load_model_state(model, load_checkpoint(tmp_path / "other.pt"), tmp_path / "other.pt")
    message = _one_line(info)
    assert "mask autoencoder" in message and "mask unet-small" in message and "other.pt" in message
    # same names, other width: also another architecture
    _model_checkpoint(tmp_path / "wide.pt", replace(TINY, width=0.5))
    with pytest.raises(DepthmaskError, match="width 0.5"):
        load_model_state(model, load_checkpoint(tmp_path / "wide.pt"), tmp_path / "wide.pt")
    _model_checkpoint(tmp_path / "narrow-mask.pt", replace(TINY, mask_width=0.125))
    with pytest.raises(DepthmaskError, match="mask width 0.125"):
        load_model_state(model, load_checkpoint(tmp_path / "narrow-mask.pt"), tmp_path / "narrow-mask.pt")


def test_weights_that_do_not_fit_are_refused(tmp_path):
    model = build_model(TINY)
    state = model.state_dict()
    state.pop(next(iter(state)))
    config = tiny_train_config(tmp_path, tmp_path / "run")
    save_checkpoint(tmp_path / "partial.pt", {"config": config.to_dict(), "model": state})
    with pytest.raises(DepthmaskError, match="do not fit") as info:
        load_model_state(model, load_checkpoint(tmp_path / "partial.pt"), tmp_path / "partial.pt")
    _one_line(info)
    save_checkpoint(tmp_path / "noconfig.pt", {"model": model.state_dict()})
    with pytest.raises(DepthmaskError, match="no usable run configuration"):
        model_from_checkpoint(tmp_path / "noconfig.pt")


def test_init_from_another_architecture_is_refused(tiny_dataset, tmp_path):
    _model_checkpoint(tmp_path / "other.pt", OTHER)
    config = tiny_train_config(tiny_dataset, tmp_path / "run")
    with pytest.raises(DepthmaskError) as info:
        train(config, fast_runtime(init_from=str(tmp_path / "other.pt")), log=lambda m: None)
    message = _one_line(info)
    assert "autoencoder" in message and "unet-small" in message


def test_init_from_starts_from_those_weights(tiny_dataset, tmp_path, monkeypatch):
    source = _model_checkpoint(tmp_path / "same.pt", TINY, seed=5)
    from training import train as train_module

    seen = {}

    def capture(self):
        seen.update({k: v.clone() for k, v in self.model.state_dict().items()})
        return {}

    monkeypatch.setattr(train_module._Trainer, "run", capture)
    train(tiny_train_config(tiny_dataset, tmp_path / "run"), fast_runtime(init_from=str(tmp_path / "same.pt")),
          log=lambda m: None)
    for k, v in source.state_dict().items():
        assert torch.equal(seen[k], v), k


@pytest.mark.parametrize("model_config", [TINY, ModelConfig(depth_arch="unet-small", mask_arch="unet-small",
                                                              shared_encoder=True, width=0.25)])
def test_model_from_checkpoint_rebuilds_the_same_network(tmp_path, model_config):
    model = _model_checkpoint(tmp_path / "m.pt", model_config, seed=2)
    rebuilt, config, state = model_from_checkpoint(tmp_path / "m.pt")
    assert rebuilt.config == model_config and config.model == model_config
    assert type(rebuilt) is type(model)
    assert [n for n, _ in rebuilt.named_modules()] == [n for n, _ in model.named_modules()]
    model.eval()
    rebuilt.eval()
    torch.manual_seed(0)
    bg, fg_bg = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a, b = model(bg, fg_bg), rebuilt(bg, fg_bg)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_model_from_a_trained_run(trained_run):
    model, config, state = model_from_checkpoint(trained_run / "best.pt")
    assert config.schedule == ((32, 1), (64, 1))
    for k, v in model.state_dict().items():
        assert torch.equal(v, state["model"][k])
    # the trained weights differ from a fresh initialisation
    fresh = build_model(config.model).state_dict()
    assert any(not torch.equal(fresh[k], v) for k, v in model.state_dict().items() if v.is_floating_point())

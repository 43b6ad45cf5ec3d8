"""Checkpoints: written atomically (temporary file, fsync, rename), read with weights_only=True, and
checked against the architecture they are loaded into."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from pipeline import DepthmaskError

from .config import TrainConfig
from .models import DepthMaskNet, ModelConfig, build_model

CHECKPOINT_FORMAT = "depthmask-checkpoint"
CHECKPOINT_VERSION = 1
LAST_NAME = "last.pt"
BEST_NAME = "best.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    payload = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, **state}
    with open(tmp, "wb") as handle:
        torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with weights_only=True (no pickled code runs); one-line errors otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DepthmaskError(f"{path}: checkpoint file does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - damaged bytes make torch's unpickler fail in many ways
        # (UnpicklingError, BadZipFile, RuntimeError, EOFError, IndexError, ...): all mean "unreadable"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DepthmaskError(f"{path}: not a readable checkpoint (corrupt, truncated or not saved by dm-train): "
                             f"{first[:160]}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise DepthmaskError(f"{path}: not a depthmask checkpoint")
    if state.get("format_version") != CHECKPOINT_VERSION:
        raise DepthmaskError(f"{path}: checkpoint format version {state.get('format_version')!r} is not supported "
                             f"(expected {CHECKPOINT_VERSION})")
    return state


def config_of(state: dict[str, Any], path: Path | str) -> TrainConfig:
    try:
        return TrainConfig.from_dict(state["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DepthmaskError(f"{path}: checkpoint holds no usable run configuration ({exc})") from None


def describe_arch(m: ModelConfig) -> str:
    return f"depth {m.depth_arch} / mask {m.mask_arch}" + (" (shared encoder)" if m.shared_encoder else "") + \
        (f" width {m.width:g}" if m.width != 1 else "") + \
        (f" mask width {m.mask_net_width:g}" if m.mask_net_width != m.width else "")


def _arch_key(m: ModelConfig) -> tuple:
    return m.depth_arch, m.mask_arch, m.shared_encoder, m.width, m.mask_net_width


def load_model_state(model: DepthMaskNet, state: dict[str, Any], path: Path | str) -> None:
    """Load weights; a checkpoint of another architecture is refused with both named."""
    model_state = state.get("model")
    ckpt_config = config_of(state, path)
    if _arch_key(ckpt_config.model) != _arch_key(model.config):
        raise DepthmaskError(f"{path}: checkpoint is for {describe_arch(ckpt_config.model)}, but the model is "
                             f"{describe_arch(model.config)}; use matching --depth-arch/--mask-arch or another checkpoint")
    try:
        model.load_state_dict(model_state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise DepthmaskError(f"{path}: weights do not fit the model ({str(exc).splitlines()[0][:160]})") from None


def model_from_checkpoint(path: str | Path) -> tuple[DepthMaskNet, TrainConfig, dict[str, Any]]:
    """The network a checkpoint was trained as, with its weights (architecture from the checkpoint)."""
    state = load_checkpoint(path)
    config = config_of(state, path)
    model_config = config.model
    if model_config.encoder_weights is not None:  # the weights are in the checkpoint already
        from dataclasses import replace

        model_config = replace(model_config, encoder_weights=None)
    model = build_model(model_config)
    load_model_state(model, state, path)
    return model, config, state

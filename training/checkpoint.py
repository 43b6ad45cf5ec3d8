"""Checkpoints: written atomically (temporary file, fsync, rename), read with weights_only=True, and
checked against the architecture they are loaded into.

Two kinds share one format:
- ``last.pt`` (kind ``"resume"``): everything a resumed run needs (optimizer, scheduler, RNG states).
- ``best.pt`` (kind ``"weights"``): what a user ships: the weights, the run configuration, the input
  normalisation of the training set and a description of that dataset; no optimizer state.
Both carry ``normalization`` and ``dataset``, so either can be used for prediction and export.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import torch

from pipeline import DepthmaskError, __version__
from pipeline.quiet import first_sentence, quiet

from .config import TrainConfig
from .models import DepthMaskNet, ModelConfig, build_model

CHECKPOINT_FORMAT = "depthmask-checkpoint"
CHECKPOINT_VERSION = 1
LAST_NAME = "last.pt"
BEST_NAME = "best.pt"
KIND_RESUME = "resume"
KIND_WEIGHTS = "weights"
NORMALIZED_INPUTS = ("bg", "fg_bg")
# keys a shipped (weights-only) checkpoint keeps from a resume checkpoint
_SHIPPED_KEYS = ("config", "model", "train_state", "normalization", "dataset", "created_by")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomic: a temporary file in the same folder, fsync, rename. A failure (a full disk) removes the
    temporary file and is one line naming the folder."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    payload = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, **state}
    try:
        with open(tmp, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        tmp.unlink(missing_ok=True)
        raise DepthmaskError(f"{path.parent}: could not write {path.name}: {_write_failure(exc)}") from None


def _write_failure(exc: BaseException) -> str:
    """torch reports a full disk as a RuntimeError from its zip writer ("[enforce fail at
    inline_container.cc ...] unexpected pos"); say what it means."""
    text = str(exc)
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC or "No space left" in text or \
            "inline_container" in text or "unexpected pos" in text:
        return "the disk is full (free some space, then run again with --resume)"
    if isinstance(exc, OSError):
        return exc.strerror or text
    return text.strip().splitlines()[0][:160] if text.strip() else type(exc).__name__


def shipped_state(state: dict[str, Any]) -> dict[str, Any]:
    """The weights-only form of a resume state (best.pt): about a third of the size."""
    out = {k: state[k] for k in _SHIPPED_KEYS if k in state}
    out["kind"] = KIND_WEIGHTS
    return out


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with weights_only=True (no pickled code runs); one-line errors otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DepthmaskError(f"{path}: checkpoint file does not exist")
    try:
        with quiet():  # torch's warnings and advice about weights_only are not for our users
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - damaged bytes make torch's unpickler fail in many ways
        # (UnpicklingError, BadZipFile, RuntimeError, EOFError, IndexError, ...): all mean "unreadable"
        raise DepthmaskError(f"{path}: not a readable checkpoint (corrupt, truncated, or not saved by dm-train: "
                             f"{_first_line(exc)})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise DepthmaskError(f"{path}: not a depthmask checkpoint")
    if state.get("format_version") != CHECKPOINT_VERSION:
        raise DepthmaskError(f"{path}: checkpoint format version {state.get('format_version')!r} is not supported "
                             f"(expected {CHECKPOINT_VERSION})")
    return state


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    first = text.splitlines()[0]
    if "Weights only load failed" in first or "weights_only" in first:
        return "it holds Python objects other than tensors and plain values, which are never unpickled"
    return first_sentence(exc)


def config_of(state: dict[str, Any], path: Path | str) -> TrainConfig:
    try:
        return TrainConfig.from_dict(state["config"])
    except (KeyError, TypeError, ValueError, DepthmaskError) as exc:
        raise DepthmaskError(f"{path}: checkpoint holds no usable run configuration ({exc})") from None


def normalization_of(state: dict[str, Any], path: Path | str) -> dict[str, dict[str, list[float]]]:
    """The input normalisation the network was trained with: per input (``bg``, ``fg_bg``) the mean and std of
    each RGB channel on the [0, 1] scale, from the training split of its dataset."""
    norm = state.get("normalization")
    try:
        out = {k: {"mean": [float(v) for v in norm[k]["mean"]], "std": [float(v) for v in norm[k]["std"]]}
               for k in NORMALIZED_INPUTS}
    except (KeyError, TypeError, ValueError):
        raise DepthmaskError(f"{path}: checkpoint holds no input normalisation (saved by an older dm-train); give "
                             "it the statistics of the dataset it was trained on with --stats DATA") from None
    for k, v in out.items():
        if len(v["mean"]) != 3 or len(v["std"]) != 3 or not all(s > 0 for s in v["std"]):
            raise DepthmaskError(f"{path}: checkpoint's normalisation of {k} is malformed ({v})")
    return out


def normalization_from_stats(stats: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    """The checkpoint form of a dataset's statistics (``DatasetReader.stats('train')``)."""
    return {k: {"mean": [float(v) for v in stats[k]["mean"]], "std": [float(v) for v in stats[k]["std"]],
                "channel_order": "RGB", "scale": "pixel / 255"} for k in NORMALIZED_INPUTS}


def dataset_info_of(state: dict[str, Any]) -> dict[str, Any] | None:
    """What the checkpoint says about its training dataset (None for checkpoints saved before it was kept)."""
    info = state.get("dataset")
    return info if isinstance(info, dict) else None


def dataset_info(reader: Any) -> dict[str, Any]:
    """A description of the training dataset, kept in checkpoints and exported models: enough to know what the
    outputs mean (depth semantics, size) and which data made them (hashes), without the dataset."""
    import hashlib

    m = reader.manifest
    identity = hashlib.sha256("".join(s["sha256"] for s in m["shards"]).encode()).hexdigest()
    return {"path": str(reader.root), "name": Path(reader.root).name, "created_by": m.get("created_by"),
            "sample_count": int(m["sample_count"]), "image_size": [int(v) for v in m["image_size"]],
            "depth": m["depth"], "shards_sha256": identity, "backgrounds_sha256": m["backgrounds"]["sha256"],
            "created_with": f"depthmask {__version__}"}


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


def input_size_of(config: TrainConfig) -> int:
    """The image size the network was trained at last (its final schedule stage): the size to predict at."""
    return int(config.schedule[-1][0])

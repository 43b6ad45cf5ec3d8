"""dm-export-model: a checkpoint as one ONNX or TorchScript graph a user can run without depthmask.

The graph (`ExportedNetwork`): inputs ``bg`` and ``fg_bg``, float32 (N, 3, S, S) RGB on [0, 1] (pixel / 255), the
training set's normalisation inside the graph; outputs ``depth`` (N, 1, S, S) normalised depth on [0, 1] (after the
sigmoid) and ``mask`` (N, 1, S, S) mask **logits** (object where > 0; probability = sigmoid), exactly the PyTorch
network's outputs. Batch size N is dynamic, S is the network's input size (its last training stage).

Metadata (`export_metadata`): ONNX metadata_props (one JSON document under ``depthmask`` plus a few flat keys) or
the TorchScript extra file ``depthmask.json``. Every export is reloaded and run next to the PyTorch model on a few
inputs (`check_parity`); a difference beyond `TOLERANCE` deletes the file and fails.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from pipeline import DepthmaskError, __version__
from pipeline.depth_model import EXPORT_METADATA_FILE, EXPORT_METADATA_KEY

from .predict import EXPORT_FORMAT, Predictor, load_predictor

FORMATS = ("onnx", "torchscript")
ONNX_OPSET = 17
# largest absolute difference allowed between the exported graph and the PyTorch model (float32 both), on the
# same uint8 inputs: depth on its [0, 1] scale, mask on the logit scale
TOLERANCE = {"depth": 1e-4, "mask": 1e-3}
PARITY_BATCH = 3  # != the trace batch (2), so the check also proves the batch size is dynamic
TRACE_BATCH = 2


class ExportedNetwork(nn.Module):
    """The network with its input normalisation: ``(bg, fg_bg)`` float RGB on [0, 1] -> ``(depth, mask_logits)``."""

    def __init__(self, model: nn.Module, normalization: dict[str, Any]):
        super().__init__()
        self.model = model
        for key in ("bg", "fg_bg"):
            self.register_buffer(f"{key}_mean", torch.tensor(normalization[key]["mean"]).view(1, 3, 1, 1))
            self.register_buffer(f"{key}_std", torch.tensor(normalization[key]["std"]).view(1, 3, 1, 1))

    def forward(self, bg: Tensor, fg_bg: Tensor) -> tuple[Tensor, Tensor]:
        return self.model((bg - self.bg_mean) / self.bg_std, (fg_bg - self.fg_bg_mean) / self.fg_bg_std)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_metadata(predictor: Predictor, checkpoint: Path, architecture: str) -> dict[str, Any]:
    """What a user needs to run the file without depthmask (stored in it; documented in docs/usage.md)."""
    s = predictor.input_size
    dataset = predictor.dataset or {}
    return {
        "format": EXPORT_FORMAT, "format_version": 1, "depthmask_version": __version__,
        "input_size": s,
        "inputs": {name: {"shape": ["N", 3, s, s], "dtype": "float32", "channel_order": "RGB", "layout": "NCHW",
                          "scale": "pixel / 255 (0..1)"} for name in ("bg", "fg_bg")},
        "normalization": {k: {"mean": v["mean"], "std": v["std"]} for k, v in predictor.normalization.items()
                          if k in ("bg", "fg_bg")},
        "normalization_in_graph": True,
        "outputs": {"depth": {"shape": ["N", 1, s, s], "meaning": "normalised depth on [0, 1] (after a sigmoid)"},
                    "mask": {"shape": ["N", 1, s, s], "meaning": "mask logits: object where > 0, "
                                                                 "probability = sigmoid(logits)"}},
        "depth": dataset.get("depth"),
        "dataset": {k: dataset.get(k) for k in ("name", "sample_count", "image_size", "depth", "shards_sha256",
                                                "backgrounds_sha256", "created_with")} if dataset else None,
        "architecture": architecture,
        "checkpoint_sha256": file_sha256(checkpoint),
        "fit_rule": "shorter side scaled to input_size (area when shrinking, bicubic when enlarging); dm-predict "
                    "covers the longer side with input_size squares overlapping by half",
        "tolerance": TOLERANCE,
    }


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    max_abs_diff: dict[str, float]
    tolerance: dict[str, float]
    metadata: dict[str, Any]


def parity_inputs(size: int, batch: int = PARITY_BATCH, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A few (bg, fg_bg) uint8 RGB pairs: smooth random backgrounds, each with a bright square pasted in."""
    rng = np.random.default_rng([seed, 0xE8])
    coarse = rng.integers(0, 256, (batch, 4, 4, 3), dtype=np.uint8)
    import cv2

    bg = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_LINEAR) for c in coarse])
    fg = bg.copy()
    for j in range(batch):
        x, y = rng.integers(0, size // 2, 2)
        fg[j, y : y + size // 3, x : x + size // 3] = rng.integers(0, 256, 3, dtype=np.uint8)
    return bg, fg


def check_parity(reference: Predictor, exported: Predictor, inputs: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    """Largest absolute differences of (depth, mask logits) between two predictors on the same inputs."""
    ref_depth, ref_mask = reference(*inputs)
    exp_depth, exp_mask = exported(*inputs)
    return {"depth": float(np.abs(ref_depth - exp_depth).max()), "mask": float(np.abs(ref_mask - exp_mask).max())}


def export_model(checkpoint: Path | str, output: Path | str, fmt: str, *, stats: Path | str | None = None,
                 overwrite: bool = False, log: Callable[[str], None] = lambda m: None) -> ExportResult:
    """Write `checkpoint` as an ONNX or TorchScript graph at `output`, checked against the PyTorch model."""
    from .checkpoint import describe_arch, model_from_checkpoint

    checkpoint, output = Path(checkpoint), Path(output)
    if fmt not in FORMATS:
        raise DepthmaskError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if output.exists() and not overwrite:
        raise DepthmaskError(f"--output: {output} exists; pass --overwrite to replace it")
    if not output.parent.is_dir():
        raise DepthmaskError(f"--output: folder {output.parent} does not exist")
    if fmt == "onnx" and output.suffix.lower() != ".onnx":
        raise DepthmaskError(f"--output: an ONNX file must end in .onnx (dm-predict and dm-build-lmdb tell formats "
                             f"by it), got {output.name}")
    if fmt == "torchscript" and output.suffix.lower() in (".onnx", ".pt2"):
        raise DepthmaskError(f"--output: {output.name}: a TorchScript file must not end in .onnx or .pt2")
    reference = load_predictor(checkpoint, device="cpu", amp=False, stats=stats)
    model, config, _ = model_from_checkpoint(checkpoint)
    metadata = export_metadata(reference, checkpoint, describe_arch(config.model))
    network = ExportedNetwork(model.eval(), reference.normalization).eval()
    tmp = output.with_name(f".{output.stem}.tmp-{os.getpid()}{output.suffix}")
    try:
        (_write_onnx if fmt == "onnx" else _write_torchscript)(network, metadata, reference.input_size, tmp)
        exported = load_predictor(tmp, device="cpu")
        diff = check_parity(reference, exported, parity_inputs(reference.input_size))
        log(f"parity with the PyTorch model on {PARITY_BATCH} inputs: max |diff| depth {diff['depth']:.2e}, "
            f"mask logits {diff['mask']:.2e} (tolerance {TOLERANCE['depth']:g} / {TOLERANCE['mask']:g})")
        failed = [k for k in TOLERANCE if not diff[k] <= TOLERANCE[k]]
        if failed:
            raise DepthmaskError(f"{output}: the exported {fmt} graph differs from the PyTorch model by "
                                 + ", ".join(f"{diff[k]:.3g} on {k} (tolerance {TOLERANCE[k]:g})" for k in failed)
                                 + "; nothing was written")
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(output, fmt, diff, dict(TOLERANCE), metadata)


def _example(size: int) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    return (torch.rand(TRACE_BATCH, 3, size, size, generator=generator),
            torch.rand(TRACE_BATCH, 3, size, size, generator=generator))


def _write_onnx(network: nn.Module, metadata: dict[str, Any], size: int, path: Path) -> None:
    try:
        import onnx
    except ImportError:
        raise DepthmaskError("--format onnx: writing ONNX metadata needs the onnx package: pip install onnx "
                             "onnxruntime") from None
    axes = {name: {0: "batch"} for name in ("bg", "fg_bg", "depth", "mask")}
    with warnings.catch_warnings():  # the tracer's notes about shape checks (constant here: S is fixed)
        warnings.simplefilter("ignore")
        torch.onnx.export(network, _example(size), str(path), input_names=["bg", "fg_bg"],
                          output_names=["depth", "mask"], dynamic_axes=axes, opset_version=ONNX_OPSET, dynamo=False)
    graph = onnx.load(str(path))
    flat = {EXPORT_METADATA_KEY: json.dumps(metadata), "input_size": str(size), "channel_order": "RGB",
            "input_scale": "pixel / 255", "mask_output": "logits", "depthmask_version": __version__}
    for key, value in flat.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    graph.producer_name, graph.doc_string = "depthmask", "bg, fg_bg -> depth, mask logits; see metadata 'depthmask'"
    onnx.save(graph, str(path))


def _write_torchscript(network: nn.Module, metadata: dict[str, Any], size: int, path: Path) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(network, _example(size), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={EXPORT_METADATA_FILE: json.dumps(metadata)})

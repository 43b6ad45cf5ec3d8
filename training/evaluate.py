"""dm-eval: a checkpoint's metrics on any dataset folder, beside the floors that make them mean something.

Metrics (`training.metrics.EvalMetrics`): everything dm-train reports (depth RMSE, AbsRel, log10, delta1-3 on the
[0, 1] scale; mask IoU, Dice, per-image IoU; the loss), the mask boundary F-score, depth errors on object and on
background pixels, and depth in metres when the dataset's depth is metric (``far_m`` in its manifest).

Floors (`floor_metrics`), on the same samples at the same size:
- ``constant``: the train split's mean depth everywhere, and the better of the all-background / all-object mask;
- ``diff_threshold`` (mask): object where ``max over RGB of |fg_bg - bg| > t``, ``t`` chosen on the train split
  (the IoU-best of every integer threshold, on up to ``threshold_samples`` evenly spaced train samples);
- ``background_depth`` (depth): the background's own stored depth, unchanged: a perfect background-depth
  predictor that ignores the object, so its errors are all the object's.
The network is evaluated at its input size (its last training stage): samples are area-resized to it, as dm-train
validates; inputs are normalised with the checkpoint's statistics (or --stats), never the evaluated dataset's.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch

from pipeline import DepthmaskError
from pipeline.codecs import DEPTH_MAX
from pipeline.plan import SPLIT_NAMES

from .metrics import BOUNDARY_TOLERANCE_PX, EvalMetrics, best_diff_threshold, diff_histograms

THRESHOLD_SAMPLES = 512


def split_choices() -> tuple[str, ...]:
    return (*SPLIT_NAMES, "all")


@dataclass(frozen=True)
class EvalOptions:
    split: str = "val"
    samples: int | None = None  # the first N samples of the split (as dm-train's --val-samples)
    batch_size: int = 32
    device: str = "auto"
    amp: bool | None = None  # bf16 autocast; None: where dm-train would use it
    stats: str | None = None  # dataset folder whose train-split statistics normalise the inputs (old checkpoints)
    boundary_tolerance: int = BOUNDARY_TOLERANCE_PX
    threshold_samples: int = THRESHOLD_SAMPLES


def _check_options(options: EvalOptions) -> None:
    if options.split not in split_choices():
        raise DepthmaskError(f"--split: unknown split {options.split!r}; expected one of {', '.join(split_choices())}")
    if options.samples is not None and options.samples < 1:
        raise DepthmaskError(f"--samples: expected a whole number >= 1, got {options.samples}")
    if options.batch_size < 1:
        raise DepthmaskError(f"--batch-size: expected a whole number >= 1, got {options.batch_size}")
    if options.boundary_tolerance < 0:
        raise DepthmaskError(f"--boundary-tolerance: expected a whole number >= 0, got {options.boundary_tolerance}")


def far_m_of(reader: Any) -> float | None:
    """The far plane in metres when the dataset's depth is metric (normalised = z / far_m), else None."""
    far = reader.manifest.get("depth", {}).get("far_m")
    return float(far) if far else None


def _dataset(data: Path | str, split: str, size: int) -> Any:
    from .data import DepthMaskDataset

    dataset = DepthMaskDataset(data, split)
    stored = dataset.reader.size[0]
    if size > stored:
        raise DepthmaskError(f"{data}: its images are {stored} px, smaller than the network's input size {size} px; "
                             "build the dataset at --size >= the network's size")
    dataset.set_size(size)
    return dataset


def _batches(dataset: Any, positions: np.ndarray, batch_size: int):
    for start in range(0, len(positions), batch_size):
        yield dataset.__getitems__([int(p) for p in positions[start : start + batch_size]])


def _first(dataset: Any, samples: int | None) -> np.ndarray:
    return np.arange(len(dataset) if samples is None else min(samples, len(dataset)))


def channel_diff(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, 1, H, W) max over RGB of |fg_bg - bg| of a uint8 batch (0..255)."""
    return (batch["fg_bg"].to(torch.int16) - batch["bg"].to(torch.int16)).abs().amax(1, keepdim=True)


def choose_threshold(data: Path | str, size: int, samples: int = THRESHOLD_SAMPLES, batch_size: int = 32,
                     fallback_split: str = "val") -> tuple[int, float, str]:
    """(t, train IoU, split used) of the |fg_bg - bg| > t mask floor, chosen on evenly spaced train samples (the
    evaluated split's when the dataset has no train split)."""
    try:
        dataset, used = _dataset(data, "train", size), "train"
    except DepthmaskError as exc:
        if "has no samples" not in str(exc):
            raise
        dataset, used = _dataset(data, fallback_split, size), fallback_split
    positions = np.unique(np.linspace(0, len(dataset) - 1, min(samples, len(dataset))).round().astype(np.int64))
    hist = torch.zeros(2, 256, dtype=torch.int64)
    for batch in _batches(dataset, positions, batch_size):
        hist += diff_histograms(channel_diff(batch), batch["mask"])
    t, iou = best_diff_threshold(hist)
    return t, iou, used


def _background_depth(reader: Any, indices: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 1, S, S) float depth on [0, 1] of each sample's background alone, resized as the samples are."""
    maps = []
    for index in indices.tolist():
        depth = reader.background(int(reader.record(int(index))["bg"]))[1]
        if depth.shape[0] != size:
            depth = cv2.resize(depth, (size, size), interpolation=cv2.INTER_AREA)
        maps.append(torch.from_numpy(depth.astype(np.float32) / DEPTH_MAX))
    return torch.stack(maps).unsqueeze(1)


def floor_metrics(data: Path | str, split: str, size: int, *, samples: int | None = None, batch_size: int = 32,
                  threshold_samples: int = THRESHOLD_SAMPLES,
                  boundary_tolerance: int = BOUNDARY_TOLERANCE_PX) -> dict[str, dict[str, float]]:
    """The floors of dm-eval on the first `samples` of `split` at `size` px (see the module docstring):
    ``{"constant": metrics, "diff_threshold": mask metrics + threshold, "background_depth": depth metrics}``."""
    dataset = _dataset(data, split, size)
    reader = dataset.reader
    far_m = far_m_of(reader)
    t, train_iou, threshold_split = choose_threshold(data, size, threshold_samples, batch_size, split)
    depth_mean = float(reader.stats("train")["depth"]["mean"][0])
    constant = {c: EvalMetrics(far_m, boundary_tolerance) for c in (0.0, 1.0)}
    heuristic = EvalMetrics(far_m, boundary_tolerance)
    for batch in _batches(dataset, _first(dataset, samples), batch_size):
        depth, mask = batch["depth"].float() / DEPTH_MAX, batch["mask"].float()
        flat = torch.full_like(depth, depth_mean)
        for c, m in constant.items():
            m.update(flat, depth, torch.full_like(depth, 1.0 if c else -1.0), mask)
        logits = torch.where(channel_diff(batch) > t, 1.0, -1.0)
        heuristic.update(_background_depth(reader, batch["index"], size), depth, logits, mask)
    results = {c: m.compute() for c, m in constant.items()}
    best = max(results, key=lambda c: results[c]["mask_iou"])
    combined = heuristic.compute()
    return {
        "constant": {**results[best], "depth_constant": depth_mean, "mask_constant": best},
        "diff_threshold": {**{k: v for k, v in combined.items() if k.startswith("mask_")}, "threshold": t,
                           "threshold_split": threshold_split, "threshold_iou": train_iou},
        "background_depth": {k: v for k, v in combined.items() if k.startswith("depth_") or k.startswith("pixels_")},
    }


def evaluate(data: Path | str, checkpoint: Path | str, options: EvalOptions = EvalOptions(),
             progress: bool = False) -> dict[str, Any]:
    """The checkpoint's metrics on `options.split` of `data`, and the floors on the same samples."""
    from tqdm import tqdm

    from .checkpoint import input_size_of, load_checkpoint, model_from_checkpoint, normalization_of
    from .inputs import BatchNormalizer
    from .distributed import pick_device
    from .losses import total_loss
    from .precision import fast_path_default
    from .predict import stats_normalization

    _check_options(options)
    state = load_checkpoint(checkpoint)
    normalization = stats_normalization(options.stats) if options.stats else normalization_of(state, checkpoint)
    model, config, _ = model_from_checkpoint(checkpoint)
    size = input_size_of(config)
    dataset = _dataset(data, options.split, size)
    device = pick_device(options.device)
    model = model.to(device).eval()
    use_bf16 = fast_path_default(device) if options.amp is None else options.amp
    normalizer = BatchNormalizer(normalization, device)
    metrics = EvalMetrics(far_m_of(dataset.reader), options.boundary_tolerance)
    positions = _first(dataset, options.samples)
    loss_sum, count = 0.0, 0
    with tqdm(total=len(positions), unit="sample", desc="eval", disable=not progress, mininterval=0.5) as bar:
        for batch in _batches(dataset, positions, options.batch_size):
            b = normalizer(batch)
            autocast = torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()
            with torch.inference_mode(), autocast:
                depth, logits = model(b["bg"], b["fg_bg"])
            _, parts = total_loss(depth, logits, b["depth"], b["mask"], config.loss)
            n = int(b["bg"].shape[0])
            loss_sum, count = loss_sum + parts["loss"] * n, count + n
            metrics.update(depth, b["depth"], logits, b["mask"])
            bar.update(n)
    floors = floor_metrics(data, options.split, size, samples=options.samples, batch_size=options.batch_size,
                           threshold_samples=options.threshold_samples, boundary_tolerance=options.boundary_tolerance)
    return {"data": str(data), "checkpoint": str(checkpoint), "split": options.split, "samples": count, "size": size,
            "far_m": far_m_of(dataset.reader), "precision": "bf16" if use_bf16 else "float32",
            "boundary_tolerance_px": options.boundary_tolerance,
            "model": {**metrics.compute(), "loss": loss_sum / count if count else math.nan}, "floors": floors}


# rows of the text report: (key, label); metric rows only when the dataset's depth is metric
REPORT_ROWS = (
    ("loss", "loss"), ("depth_rmse", "depth RMSE [0,1]"), ("depth_absrel", "depth AbsRel"),
    ("depth_log10", "depth log10"), ("depth_delta1", "depth delta1"), ("depth_delta2", "depth delta2"),
    ("depth_delta3", "depth delta3"), ("depth_rmse_object", "depth RMSE, object px"),
    ("depth_rmse_background", "depth RMSE, background px"), ("depth_absrel_object", "depth AbsRel, object px"),
    ("depth_absrel_background", "depth AbsRel, background px"), ("depth_rmse_m", "depth RMSE (m)"),
    ("depth_absrel_m", "depth AbsRel (metric px)"), ("depth_delta1_m", "depth delta1 (metric px)"),
    ("depth_delta2_m", "depth delta2 (metric px)"), ("depth_delta3_m", "depth delta3 (metric px)"),
    ("mask_iou", "mask IoU"), ("mask_dice", "mask Dice"), ("mask_iou_per_image", "mask IoU per image"),
    ("mask_boundary_f", "mask boundary F"),
)


def format_report(result: dict[str, Any]) -> str:
    """The result as a table: model | constant floor | the task's own floor."""
    floors = result["floors"]
    t = floors["diff_threshold"]["threshold"]
    header = ("metric", "model", "constant", "floor")
    lines = [f"{result['checkpoint']} on {result['data']} ({result['split']}, {result['samples']} samples at "
             f"{result['size']} px, {result['precision']}); floor: mask |fg_bg - bg| > {t} (chosen on "
             f"{floors['diff_threshold']['threshold_split']}), depth = the background's own depth"]
    rows = []
    for key, label in REPORT_ROWS:
        if key not in result["model"]:
            continue
        own = floors["diff_threshold"] if key.startswith("mask_") else floors["background_depth"]
        rows.append((label, result["model"][key], floors["constant"].get(key), own.get(key)))
    width = max(len(r[0]) for r in rows)
    lines.append(f"{header[0]:<{width}}  {header[1]:>9}  {header[2]:>9}  {header[3]:>9}")
    for label, *values in rows:
        lines.append(f"{label:<{width}}  " + "  ".join(f"{v:>9.4f}" if isinstance(v, float) else f"{'-':>9}"
                                                       for v in values))
    return "\n".join(lines)


def log_floors(data: Path | str, split: str, size: int, log: Callable[[str], None], **kwargs: Any) -> dict:
    """`floor_metrics` and one log line of the headline floors (for dm-train)."""
    floors = floor_metrics(data, split, size, **kwargs)
    log(f"floors on {split}: mask |fg_bg - bg| > {floors['diff_threshold']['threshold']}: IoU "
        f"{floors['diff_threshold']['mask_iou']:.4f}, boundary F {floors['diff_threshold']['mask_boundary_f']:.4f}; "
        f"background depth pasted: RMSE {floors['background_depth']['depth_rmse']:.4f} (object px "
        f"{floors['background_depth']['depth_rmse_object']:.4f}); constant: RMSE {floors['constant']['depth_rmse']:.4f}, "
        f"IoU {floors['constant']['mask_iou']:.4f}")
    return floors

"""The measuring half of tools/gpu_check.sh: each section writes OUT/parts/SECTION.json, `report` merges
the parts into OUT/gpu_check.json and OUT/gpu_check.md.

    python tools/gpu_check.py run OUT DATA SECTION... [--dry-run]    # env throughput loader ddp-single ...
    torchrun --nproc-per-node N tools/gpu_check.py run OUT DATA ddp  # the same DDP loop in a process group
    python tools/gpu_check.py depth-model OUT DEVICE_DATA CPU_DATA --seconds A B --device D
    python tools/gpu_check.py quality OUT RUN_DIR --seconds S
    python tools/gpu_check.py report OUT

Everything runs the library itself: `DepthMaskDataset`/`make_loader` for data, `build_model`, `BatchNormalizer`,
`total_loss` and `SegDepthMetrics` for the training steps (the same step as `training.train`), `dm-build-lmdb` and
`dm-train` (driven by the shell script) for the depth model and the quality run. `--dry-run` shrinks every
size so that the whole script runs in about a minute on a CPU; its figures prove the paths, not the speed.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
import traceback
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SECTIONS = ("env", "throughput", "loader", "ddp", "depth_model", "predict", "quality")
PAIRS = {"default": {}, "original": {"depth_arch": "resnet50-upproj", "mask_arch": "autoencoder"}}


# ---- sizes ---------------------------------------------------------------------------------------
def plan(dry_run: bool, stored: int) -> dict[str, Any]:
    """What each section measures. The GPU plan is sized for ~2.5 minutes of measurements before the
    5-minute quality run; the dry run keeps every path at the smallest sizes."""
    if dry_run:  # one size, the fewest steps, no loader workers in the DDP loop: each path once, fast
        return {"sizes": (32,), "batch": {32: 2}, "width": 0.25, "warmup": 0, "seconds": 0.0, "min_steps": 1,
                "compile": os.environ.get("GPU_CHECK_COMPILE") == "1", "compile_pairs": ("default",),
                "compile_sizes": (32,),
                "loader_size": 32, "loader_batch": 4, "loader_steps": 4,
                "ddp_size": 32, "ddp_batch": 4, "ddp_steps": 3, "ddp_val": 8, "ddp_workers": 0}
    from pipeline.options import DEFAULT_SIZE  # 224: the default dataset's images, which the GPU run trains on

    return {"sizes": (64, DEFAULT_SIZE), "batch": {64: 256, DEFAULT_SIZE: 128}, "width": 1.0, "warmup": 3,
            "seconds": 4.0, "min_steps": 10, "compile": True, "compile_pairs": tuple(PAIRS),
            "compile_sizes": (DEFAULT_SIZE,), "loader_size": min(DEFAULT_SIZE, stored), "loader_batch": 128,
            "loader_steps": 120,
            "ddp_size": 64, "ddp_batch": 128, "ddp_steps": 300, "ddp_val": 2048, "ddp_workers": None}


# ---- helpers -------------------------------------------------------------------------------------
def write_part(out: Path, name: str, data: dict[str, Any]) -> None:
    parts = out / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    tmp = parts / f".{name}.json.tmp"
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    tmp.replace(parts / f"{name}.json")


def guarded(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A section's figures, or its error: one failing path must not hide the others' figures."""
    started = time.perf_counter()
    try:
        result = fn()
        result.setdefault("status", "ok")
    except Exception as exc:  # noqa: BLE001 - recorded in the report, which then fails the check
        traceback.print_exc()
        result = {"status": "failed", "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    result["section_s"] = round(time.perf_counter() - started, 2)
    print(f"gpu_check: {name}: {result['status']} in {result['section_s']:.1f} s", file=sys.stderr, flush=True)
    return result


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device) -> float:
    """Peak allocated GPU memory since the last reset; on CPU the process's peak resident set (it only
    grows, so on CPU it is an upper bound of each measurement)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


class Step:
    """One training step as `training.train` takes it: normalise the uint8/uint16 batch on the device,
    forward under bf16 autocast when asked, `total_loss`, backward, AdamW."""

    def __init__(self, model_config, stats, device, *, amp: bool, channels_last: bool, compile_: bool,
                 ddp: bool = False, lr: float = 1e-3):
        import torch

        from training.inputs import BatchNormalizer
        from training.loss_config import LossConfig
        from training.models import build_model

        torch.manual_seed(0)
        self.device, self.amp = device, amp
        self.model = build_model(model_config).to(device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.model.train()
        self.net = self.model
        if ddp:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None)
        if compile_:
            self.net = torch.compile(self.net)
        self.normalizer = BatchNormalizer(stats, device, channels_last)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=1e-4)
        self.loss_config = LossConfig()

    def __call__(self, batch) -> Any:
        import torch

        from training.losses import total_loss

        b = self.normalizer(batch)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.amp else nullcontext()
        with autocast:
            depth, logits = self.net(b["bg"], b["fg_bg"])
        loss, _ = total_loss(depth, logits, b["depth"], b["mask"], self.loss_config)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


def first_batch(data: Path, split: str, size: int, count: int, device, augment=None) -> dict[str, Any]:
    """`count` real samples at `size`, as the loader delivers them, copied to the device once."""
    from training.data import DepthMaskDataset

    dataset = DepthMaskDataset(data, split, size=size, augment=augment)
    count = min(count, len(dataset))
    batch = dataset.__getitems__(list(range(count)))
    return {k: v.to(device) if k != "index" else v for k, v in batch.items()}


# ---- sections ------------------------------------------------------------------------------------
def section_env(ctx: dict[str, Any]) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None, "gpus": gpus, "gpu_count": len(gpus),
            "cpu_cores": os.cpu_count(), "machine": platform.node(), "dry_run": ctx["dry_run"],
            "device": str(ctx["device"])}


def _time_cell(step: Step, batch, device, warmup: int, seconds: float, min_steps: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    for _ in range(warmup):  # allocator, cudnn autotuning, AdamW state; the compilation when compiled
        step(batch)
    sync(device)
    warmup_s = time.perf_counter() - t0
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_steps or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        step(batch)
        sync(device)
        times.append(time.perf_counter() - t)
    median = statistics.median(times)
    n = int(batch["bg"].shape[0])
    return {"batch": n, "steps": len(times), "step_ms": median * 1e3, "samples_per_s": n / median,
            "warmup_s": warmup_s, "peak_memory_mb": peak_memory_mb(device)}


def section_throughput(ctx: dict[str, Any]) -> dict[str, Any]:
    """Samples/s of both pairs at both sizes, float32 vs bf16 + channels_last, eager and compiled
    (compiled at 224 px only, each compilation costing up to a minute or more: the fast path of every pair,
    and float32 of the default pair too)."""
    from training.models import ModelConfig, count_parameters

    device, p = ctx["device"], ctx["plan"]
    cells, ratios = [], []
    for size in p["sizes"]:
        batch = first_batch(ctx["data"], "train", size, p["batch"][size], device)
        stats = ctx["stats"]
        for pair, arch in PAIRS.items():
            config = ModelConfig(width=p["width"], **arch)
            modes = [(False, False), (True, False)]
            if p["compile"] and pair in p["compile_pairs"] and size in p["compile_sizes"]:
                modes += [(True, True)] + ([(False, True)] if pair == "default" else [])
            by_mode = {}
            for fast, compiled in modes:
                cell = {"pair": pair, "size": size, "precision": "bf16+channels_last" if fast else "float32",
                        "compile": compiled}
                try:
                    reset_peak(device)
                    step = Step(config, stats, device, amp=fast, channels_last=fast, compile_=compiled)
                    cell["params_m"] = count_parameters(step.model) / 1e6
                    cell.update(_time_cell(step, batch, device, p["warmup"], p["seconds"], p["min_steps"]))
                    by_mode[fast, compiled] = cell["samples_per_s"]
                except Exception as exc:  # noqa: BLE001 - e.g. out of memory, a compiler failure: recorded
                    cell["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
                finally:
                    step = None
                cells.append(cell)
                print(f"  {pair} {size}px {cell['precision']}{' compiled' if compiled else ''}: "
                      f"{cell.get('samples_per_s', float('nan')):.1f} samples/s", file=sys.stderr, flush=True)
            for compiled in (False, True):
                if (False, compiled) in by_mode and (True, compiled) in by_mode:
                    ratios.append({"pair": pair, "size": size, "compile": compiled,
                                   "fast_over_fp32": by_mode[True, compiled] / by_mode[False, compiled]})
            if (True, True) in by_mode and (True, False) in by_mode:
                ratios.append({"pair": pair, "size": size, "precision": "bf16+channels_last",
                               "compiled_over_eager": by_mode[True, True] / by_mode[True, False]})
    compiled_cells = [c for c in cells if c["compile"]]
    out = {"cells": cells, "ratios": ratios, "note": "median step time over >= "
           f"{p['min_steps']} steps and {p['seconds']} s after {p['warmup']} warm-up steps; one real batch kept "
           "on the device (the loader is measured separately)"}
    if not compiled_cells:
        out["compile_note"] = "compile skipped in the dry run (set GPU_CHECK_COMPILE=1 to exercise it)"
    if any("error" in c for c in cells):
        out["status"] = "failed"
    return out


def section_loader(ctx: dict[str, Any]) -> dict[str, Any]:
    """The default pair's fast-path training loop fed by `make_loader` with the train augmentation and one
    worker per core: the share of each step spent waiting for the next batch."""
    import torch

    from training.augment import AugmentConfig
    from training.data import DepthMaskDataset, make_loader
    from training.models import ModelConfig

    device, p = ctx["device"], ctx["plan"]
    workers = ctx["workers"]
    dataset = DepthMaskDataset(ctx["data"], "train", size=p["loader_size"], augment=AugmentConfig())
    fast = device.type == "cuda" or ctx["fast_cpu"]
    step = Step(ModelConfig(width=p["width"]), ctx["stats"], device, amp=fast, channels_last=fast, compile_=False)
    loader = make_loader(dataset, batch_size=p["loader_batch"], shuffle=True, workers=workers,
                         pin_memory=device.type == "cuda")
    steps = p["loader_steps"]
    loader.sampler.limit = min(len(dataset), steps * p["loader_batch"])
    skip = max(1, steps // 10)  # worker start-up and warm-up steps
    waits, computes, samples = [], [], 0
    it = iter(loader)
    t_first = time.perf_counter()
    for i in range(steps):
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            break
        t1 = time.perf_counter()
        step(batch)
        sync(device)
        t2 = time.perf_counter()
        if i == 0:
            first_batch_s = t1 - t_first
        if i >= skip:
            waits.append(t1 - t0)
            computes.append(t2 - t1)
            samples += int(batch["bg"].shape[0])
    del it
    # the loader alone, same settings: how far it could go without the model
    loader_only = make_loader(dataset, batch_size=p["loader_batch"], shuffle=True, workers=workers,
                              pin_memory=device.type == "cuda")
    loader_only.sampler.limit = loader.sampler.limit
    it = iter(loader_only)
    next(it)
    count, t0 = 0, time.perf_counter()
    for batch in it:
        count += int(batch["bg"].shape[0])
    loader_rate = count / max(time.perf_counter() - t0, 1e-9)
    total = sum(waits) + sum(computes)
    fraction = sum(waits) / total
    return {"size": p["loader_size"], "batch": p["loader_batch"], "workers": workers, "steps_timed": len(waits),
            "augment": "dm-train's default (mirror + photometry)",
            "precision": "bf16+channels_last" if fast else "float32",
            "train_samples_per_s": samples / total, "step_ms": 1e3 * total / len(waits),
            "waiting_fraction": fraction, "gpu_starved": fraction > 0.10, "loader_only_samples_per_s": loader_rate,
            "first_batch_s": first_batch_s, "peak_memory_mb": peak_memory_mb(device),
            "torch_threads": torch.get_num_threads()}


def section_ddp(ctx: dict[str, Any]) -> dict[str, Any]:
    """A few hundred steps at the same global batch, in a process group (torchrun: NCCL on GPUs, gloo on
    CPU; world size 1 still goes through the backend) or alone (the reference); then the held-out
    metrics, summed over ranks."""
    import torch
    import torch.distributed as dist

    from training.data import DepthMaskDataset, make_loader
    from training.metrics import SegDepthMetrics
    from training.models import ModelConfig

    p = ctx["plan"]
    grouped = "WORLD_SIZE" in os.environ
    rank, world = (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])) if grouped else (0, 1)
    device = ctx["device"]
    if grouped and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    backend = None
    if grouped:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    try:
        if p["ddp_batch"] % world:
            raise ValueError(f"global batch {p['ddp_batch']} does not split over {world} ranks")
        per_rank = p["ddp_batch"] // world
        fast = device.type == "cuda" or ctx["fast_cpu"]
        train_set = DepthMaskDataset(ctx["data"], "train", size=p["ddp_size"])
        step = Step(ModelConfig(width=p["width"]), ctx["stats"], device, amp=fast, channels_last=fast,
                    compile_=False, ddp=grouped)
        workers = p["ddp_workers"] if p["ddp_workers"] is not None else max(1, ctx["workers"] // world)
        loader = make_loader(train_set, batch_size=per_rank, shuffle=True, workers=workers, rank=rank,
                             world_size=world, pin_memory=device.type == "cuda")
        steps = p["ddp_steps"]
        losses: list[float] = []
        sync(device)
        t0 = time.perf_counter()
        done, epoch = 0, 0
        while done < steps:
            loader.sampler.set_epoch(epoch)
            for batch in loader:
                if int(batch["bg"].shape[0]) != per_rank:
                    continue  # a short last batch would change the global batch
                loss = step(batch)
                if grouped:  # the mean over ranks: what the single process computes over the global batch
                    dist.all_reduce(loss, op=dist.ReduceOp.SUM)
                    loss = loss / world
                losses.append(float(loss))
                done += 1
                if done == steps:
                    break
            epoch += 1
        sync(device)
        train_s = time.perf_counter() - t0
        val_set = DepthMaskDataset(ctx["data"], "val", size=p["ddp_size"])
        val_loader = make_loader(val_set, batch_size=per_rank, shuffle=False, workers=workers, rank=rank,
                                 world_size=world)
        val_loader.sampler.limit = min(len(val_set), p["ddp_val"])
        metrics = SegDepthMetrics()
        step.model.eval()
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if fast else nullcontext()
        with torch.no_grad():
            for batch in val_loader:
                b = step.normalizer(batch)
                with autocast:
                    depth, logits = step.model(b["bg"], b["fg_bg"])
                metrics.update(depth.float(), b["depth"], logits.float(), b["mask"])
        state = metrics.state_tensor()
        if grouped:
            state = state.to(device) if device.type == "cuda" else state
            dist.all_reduce(state, op=dist.ReduceOp.SUM)
            metrics.load_state_tensor(state.cpu())
        result = metrics.compute()
        tail = losses[-max(1, len(losses) // 10):]
        return {"rank": rank, "world_size": world, "backend": backend or "none (one process)",
                "device": str(device), "steps": len(losses), "global_batch": p["ddp_batch"], "size": p["ddp_size"],
                "train_s": train_s, "samples_per_s": len(losses) * p["ddp_batch"] / train_s,
                "first_loss": losses[0], "last_loss_mean": statistics.fmean(tail),
                "val_samples": int(result.get("num_images", val_loader.sampler.limit)),
                **{k: result[k] for k in ("depth_rmse", "depth_delta1", "mask_iou")}}
    finally:
        if grouped:
            dist.barrier()
            step = None
            dist.destroy_process_group()


def make_depth_model(path: Path) -> None:
    """A small TorchScript depth network (fixed seed, untrained): what `--depth-model` loads; it only has
    to run the model's CUDA path, not to be good."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, stride=2),
                        nn.ReLU(), nn.Conv2d(16, 1, 3, padding=1), nn.Softplus()).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 3, 64, 64)), str(path))


def write_predict_pairs(data: Path, folder: Path, count: int) -> int:
    """Val samples as a user's pairs: bg/NAME.jpg and fg_bg/NAME.jpg (matched by name)."""
    import cv2

    from pipeline import DatasetReader

    reader = DatasetReader(data)
    indices = reader.split_indices("val")[:count]
    for sub in ("bg", "fg_bg"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for index in indices:
        s = reader.decode(int(index))
        cv2.imwrite(str(folder / "bg" / f"{int(index):07d}.jpg"), s["bg"])
        cv2.imwrite(str(folder / "fg_bg" / f"{int(index):07d}.jpg"), s["fg_bg"])
    return len(indices)


def run_sections(args: argparse.Namespace) -> int:
    import torch

    from pipeline import DatasetReader
    from training.precision import cpu_has_native_bf16

    out, data = Path(args.out), Path(args.data)
    cuda = torch.cuda.is_available() and not args.dry_run
    device = torch.device("cuda") if cuda else torch.device("cpu")
    if not cuda:
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    else:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    reader = DatasetReader(data)
    ctx = {"out": out, "data": data, "dry_run": args.dry_run, "device": device,
           "plan": plan(args.dry_run, reader.size[0]), "stats": reader.stats("train"),
           "workers": args.workers if args.workers is not None else (os.cpu_count() or 1),
           "fast_cpu": cpu_has_native_bf16()}
    torchrun = "WORLD_SIZE" in os.environ
    for name in args.sections:
        if name == "env":
            write_part(out, "env", guarded(name, lambda: section_env(ctx)))
        elif name == "throughput":
            write_part(out, "throughput", guarded(name, lambda: section_throughput(ctx)))
        elif name == "loader":
            write_part(out, "loader", guarded(name, lambda: section_loader(ctx)))
        elif name == "ddp":
            result = guarded(name, lambda: section_ddp(ctx))
            if result.get("rank", int(os.environ.get("RANK", "0"))) == 0:
                write_part(out, "ddp_group" if torchrun else "ddp_single", result)
        elif name == "depth-model-file":
            make_depth_model(out / "depth_model.pt")
        elif name == "predict-pairs":
            write_predict_pairs(data, out / "pairs", 8 if args.dry_run else 64)
        else:
            raise SystemExit(f"error: gpu_check.py run: unknown section {name!r}")
    return 0


# ---- sections run by the shell script, recorded here ---------------------------------------------
def depth_model_part(args: argparse.Namespace) -> int:
    """Two builds with the same TorchScript model, on the device and on the CPU: their speed, and how
    far apart their depth maps are (the same up to float rounding)."""
    import numpy as np

    from pipeline import DatasetReader

    def run() -> dict[str, Any]:
        a, b = DatasetReader(args.device_data), DatasetReader(args.cpu_data)
        if len(a) != len(b):
            raise ValueError(f"{args.device_data} has {len(a)} samples, {args.cpu_data} {len(b)}")
        diffs, equal, pixels = [], 0, 0
        for i in range(len(a)):
            da = a.decode(i)["depth"].astype(np.int32)
            db = b.decode(i)["depth"].astype(np.int32)
            d = np.abs(da - db)
            diffs.append(int(d.max()))
            equal += int((d == 0).sum())
            pixels += d.size
        return {"device": args.device, "samples": len(a), "device_build_s": args.seconds[0],
                "cpu_build_s": args.seconds[1], "device_samples_per_s": len(a) / args.seconds[0],
                "cpu_samples_per_s": len(b) / args.seconds[1], "max_depth_diff_uint16": max(diffs),
                "equal_pixel_fraction": equal / pixels,
                "status": "ok" if max(diffs) <= args.tolerance else "failed",
                "tolerance_uint16": args.tolerance}
    write_part(Path(args.out), "depth_model", guarded("depth_model", run))
    return 0


def quality_part(args: argparse.Namespace) -> int:
    def run() -> dict[str, Any]:
        rows = [json.loads(line) for line in open(Path(args.run_dir) / "metrics.jsonl")]
        base, last = rows[0], rows[-1]
        epochs = [r for r in rows if "epoch" in r]
        if not epochs:
            raise ValueError(f"{args.run_dir}: no epoch finished")
        return {"minutes": last["elapsed_s"] / 60, "wall_s": args.seconds, "epochs": last["epoch"],
                "steps": last["step"], "size": last["size"], "depth_rmse": last["depth_rmse"],
                "depth_delta1": last["depth_delta1"], "mask_iou": last["mask_iou"],
                "constant_depth_rmse": base["depth_rmse"], "constant_mask_iou": base["mask_iou"],
                "command": args.command}
    write_part(Path(args.out), "quality", guarded("quality", run))
    return 0


def note_part(args: argparse.Namespace) -> int:
    """A section the shell script could not run, or ran as a command: its status and note."""
    data = {"status": args.status, "note": args.note}
    if args.seconds is not None:
        data["seconds"] = args.seconds
    write_part(Path(args.out), args.section, data)
    return 0


# ---- report --------------------------------------------------------------------------------------
def ddp_summary(single: dict[str, Any], group: dict[str, Any]) -> dict[str, Any]:
    """The process-group run against the single process: equal within tolerance. World size 1 differs only
    by float rounding; more ranks compute BatchNorm statistics on their share of the batch, so after a few
    steps the two models differ by more than rounding: the tolerance then scales with the error left."""
    world = group.get("world_size", 1)
    tol_rmse = 0.002 if world == 1 else max(0.005, 0.1 * single["depth_rmse"])
    tol_iou = 0.005 if world == 1 else max(0.02, 0.1 * (1.0 - single["mask_iou"]))
    gaps = {"depth_rmse_gap": abs(group["depth_rmse"] - single["depth_rmse"]),
            "mask_iou_gap": abs(group["mask_iou"] - single["mask_iou"]),
            "first_loss_gap": abs(group["first_loss"] - single["first_loss"])}
    ok = gaps["depth_rmse_gap"] <= tol_rmse and gaps["mask_iou_gap"] <= tol_iou
    return {"single": single, "group": group, **gaps, "tolerance_depth_rmse": tol_rmse, "tolerance_mask_iou": tol_iou,
            "equal_within_tolerance": ok, "status": "ok" if ok else "failed"}


def finite_numbers(obj: Any) -> list[float]:
    if isinstance(obj, bool):
        return []
    if isinstance(obj, (int, float)):
        return [float(obj)]
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in finite_numbers(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in finite_numbers(v)]
    return []


def markdown(report: dict[str, Any]) -> str:
    env = report["env"]
    title = ", ".join(env.get("gpus") or ["no GPU"]) + (" (dry run on CPU)" if env.get("dry_run") else "")
    lines = [f"# gpu_check: {title}",
             "", f"torch {env.get('torch')}, CUDA {env.get('cuda')}, {env.get('cpu_cores')} cores, "
             f"{report['wall_s']:.0f} s in all", "", "| section | what | figure |", "|---|---|---|"]

    def row(section: str, what: str, figure: Any) -> None:
        if isinstance(figure, float):
            figure = f"{figure:,.4g}" if abs(figure) < 10 else f"{figure:,.1f}"
        lines.append(f"| {section} | {what} | {figure} |")

    for name in SECTIONS[1:]:
        part = report[name]
        row(name, "status", part.get("status"))
        if "error" in part or "note" in part:
            row(name, "note", part.get("error") or part.get("note"))
    for c in report["throughput"].get("cells", []):
        what = f"{c['pair']} {c['size']} px b{c.get('batch', '?')} {c['precision']}"
        what += " compiled" if c["compile"] else ""
        row("throughput", what, c.get("error") or f"{c['samples_per_s']:,.1f} samples/s, {c['step_ms']:.1f} ms/step, "
            f"peak {c['peak_memory_mb']:,.0f} MB")
    for r in report["throughput"].get("ratios", []):
        key = "fast_over_fp32" if "fast_over_fp32" in r else "compiled_over_eager"
        row("throughput", f"{r['pair']} {r['size']} px {key}{' (compiled)' if r.get('compile') else ''}",
            f"{r[key]:.2f}x")
    loader = report["loader"]
    for key in ("train_samples_per_s", "waiting_fraction", "gpu_starved", "loader_only_samples_per_s", "workers"):
        if key in loader:
            row("loader", f"{key} ({loader['size']} px, batch {loader['batch']})", loader[key])
    ddp = report["ddp"]
    for key in ("depth_rmse_gap", "mask_iou_gap", "first_loss_gap", "equal_within_tolerance"):
        if key in ddp:
            row("ddp", key, ddp[key])
    for side in ("single", "group"):
        d = ddp.get(side)
        if d and d.get("status") == "ok":
            row("ddp", f"{side}: {d['backend']} x{d['world_size']}",
                f"{d['steps']} steps, {d['samples_per_s']:,.0f} samples/s, RMSE {d['depth_rmse']:.4f}, "
                f"IoU {d['mask_iou']:.4f}")
    for key in ("device_samples_per_s", "cpu_samples_per_s", "max_depth_diff_uint16", "equal_pixel_fraction"):
        if key in report["depth_model"]:
            row("depth_model", key, report["depth_model"][key])
    for key in ("seconds", "pairs_per_s"):
        if key in report["predict"]:
            row("predict", key, report["predict"][key])
    for key in ("minutes", "steps", "depth_rmse", "depth_delta1", "mask_iou"):
        if key in report["quality"]:
            row("quality", key, report["quality"][key])
    return "\n".join(lines) + "\n"


def report_part(args: argparse.Namespace) -> int:
    out = Path(args.out)
    parts = {p.stem: json.loads(p.read_text()) for p in sorted((out / "parts").glob("*.json"))}
    report: dict[str, Any] = {"wall_s": args.seconds}
    for name in SECTIONS:
        if name == "ddp":
            single, group = parts.get("ddp_single"), parts.get("ddp_group")
            if single and group and single.get("status") == "ok" and group.get("status") == "ok":
                report["ddp"] = ddp_summary(single, group)
            else:
                report["ddp"] = {"status": "failed", "error": "missing or failed run: "
                                 f"single {single and single.get('status')}, group {group and group.get('status')}",
                                 "single": single, "group": group}
        else:
            report[name] = parts.get(name, {"status": "failed", "error": "section did not run"})
    bad = [name for name in SECTIONS if report[name].get("status") not in ("ok", "skipped")]
    nonfinite = [name for name in SECTIONS if not all(math.isfinite(x) for x in finite_numbers(report[name]))]
    report["failed_sections"], report["nonfinite_sections"] = bad, nonfinite
    tmp = out / ".gpu_check.json.tmp"
    tmp.write_text(json.dumps(report, indent=1, default=str, allow_nan=True) + "\n")
    tmp.replace(out / "gpu_check.json")
    (out / ".gpu_check.md.tmp").write_text(markdown(report))
    (out / ".gpu_check.md.tmp").replace(out / "gpu_check.md")
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    if bad or nonfinite:
        print(f"error: gpu_check: sections failed: {', '.join(bad + nonfinite)} (see {out / 'gpu_check.md'})",
              file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run")
    p.add_argument("out")
    p.add_argument("data")
    p.add_argument("sections", nargs="+")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--workers", type=int, default=None)
    p.set_defaults(fn=run_sections)
    p = sub.add_parser("depth-model")
    p.add_argument("out")
    p.add_argument("device_data")
    p.add_argument("cpu_data")
    p.add_argument("--seconds", type=float, nargs=2, required=True)
    p.add_argument("--device", required=True)
    p.add_argument("--tolerance", type=int, default=64, help="largest uint16 depth difference accepted")
    p.set_defaults(fn=depth_model_part)
    p = sub.add_parser("quality")
    p.add_argument("out")
    p.add_argument("run_dir")
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--command", default="")
    p.set_defaults(fn=quality_part)
    p = sub.add_parser("note")
    p.add_argument("out")
    p.add_argument("section")
    p.add_argument("status", choices=("ok", "skipped", "failed"))
    p.add_argument("note")
    p.add_argument("--seconds", type=float, default=None)
    p.set_defaults(fn=note_part)
    p = sub.add_parser("report")
    p.add_argument("out")
    p.add_argument("--seconds", type=float, default=0.0)
    p.set_defaults(fn=report_part)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(main())

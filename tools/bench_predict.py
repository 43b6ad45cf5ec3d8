"""dm-predict throughput (pairs/s) of the default network pair (unet-small x2, width 1, untrained weights: speed
does not depend on them) through PyTorch eager, ONNX Runtime and TorchScript in the same run, and the export
parity figures (the largest |difference| to the PyTorch model that dm-export-model checks).

    python tools/bench_predict.py                      # CPU, 64 and 224 px
    python tools/bench_predict.py --device cuda --sizes 64,224,512

Each pair is a square at the network's size (one window: the network's own cost, with the uint8 -> input
conversion every backend pays); a full-size photo adds the fit and the windows (`--photo`: a 640x480 pair).
Figures are the median of --rounds timed rounds after a warm-up.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.checkpoint import KIND_WEIGHTS, save_checkpoint  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.export_model import export_model  # noqa: E402
from training.models import ModelConfig, build_model, count_parameters  # noqa: E402
from training.predict import load_predictor, predict_pairs  # noqa: E402

# about the default dataset's train-split statistics; any values time the same
NORMALIZATION = {k: {"mean": [0.45, 0.47, 0.44], "std": [0.22, 0.21, 0.24]} for k in ("bg", "fg_bg")}


def untrained_checkpoint(path: Path, size: int, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    config = TrainConfig(data="unused", output="unused", model=ModelConfig(), schedule=((size, 1),))
    model = build_model(config.model)
    save_checkpoint(path, {"kind": KIND_WEIGHTS, "config": config.to_dict(), "model": model.state_dict(),
                           "normalization": NORMALIZATION, "dataset": None, "created_by": "tools/bench_predict.py"})
    return path


def time_pairs(run, batch: int, rounds: int, min_s: float) -> float:
    run()  # warm-up (allocations, oneDNN / ORT kernels)
    rates = []
    for _ in range(rounds):
        count, start = 0, time.perf_counter()
        while True:
            run()
            count += batch
            elapsed = time.perf_counter() - start
            if elapsed >= min_s:
                break
        rates.append(count / elapsed)
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="64,224")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-s", type=float, default=3.0, help="Seconds per timed round.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch / ORT threads.  [default: torch's]")
    parser.add_argument("--photo", action="store_true", help="Also time a 640x480 pair (fit + windows + resize back).")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(f"device {args.device}, {threads} torch threads, batch {args.batch}, torch {torch.__version__}")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            ckpt = untrained_checkpoint(Path(tmp) / f"w{size}.pt", size)
            files = {}
            for fmt, suffix in (("onnx", ".onnx"), ("torchscript", ".torchscript")):
                started = time.perf_counter()
                result = export_model(ckpt, Path(tmp) / f"net{size}{suffix}", fmt)
                files[fmt] = result.path
                print(f"  {size} px export {fmt}: {time.perf_counter() - started:.1f} s, parity max |diff| depth "
                      f"{result.max_abs_diff['depth']:.2e}, mask logits {result.max_abs_diff['mask']:.2e} "
                      f"(tolerance {result.tolerance['depth']:g} / {result.tolerance['mask']:g})")
            backends = {"pytorch eager": load_predictor(ckpt, device=args.device, amp=False),
                        "onnxruntime": load_predictor(files["onnx"], device=args.device, threads=threads),
                        "torchscript": load_predictor(files["torchscript"], device=args.device)}
            bg = rng.integers(0, 256, (args.batch, size, size, 3), dtype=np.uint8)
            fg = bg.copy()
            fg[:, size // 4 : size // 2, size // 4 : size // 2] = 220
            params = count_parameters(build_model(ModelConfig()))
            print(f"  {size} px, {params / 1e6:.2f}M parameters:")
            base = None
            for name, predictor in backends.items():
                rate = time_pairs(lambda p=predictor: p(bg, fg), args.batch, args.rounds, args.min_s)
                base = base or rate
                line = f"    {name:<14} {rate:8.1f} pairs/s  ({rate / base:.2f}x eager)"
                if args.photo:
                    photo = [(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),) * 2]
                    photo_rate = time_pairs(lambda p=predictor: predict_pairs(p, photo), 1, args.rounds, args.min_s)
                    line += f"; 640x480 photo pairs: {photo_rate:.1f} pairs/s"
                print(line, flush=True)


if __name__ == "__main__":
    main()

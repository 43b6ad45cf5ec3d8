"""Training-step throughput of each depth/mask architecture pair.

One step = forward of both networks + ``total_loss`` + backward + ``AdamW.step()`` on a fixed synthetic batch.
Prints a table: pair, parameters, image size, batch size, samples/s (batch / median step time, robust to other
load on a shared machine), number of timed steps, device.

    python tools/bench_models.py                       # CPU, 2 threads, 64 and 224 px
    python tools/bench_models.py --device cuda         # GPU: bf16 autocast + channels_last
    python tools/bench_models.py --pairs unet-small,unet-resnet18 --sizes 64 --seconds 2
    python tools/bench_models.py --precision both      # float32 and the fast path, and their ratio

``--precision``: ``auto`` (default) measures what ``dm-train`` uses by default on the device
(``training.precision.fast_path_default``: bf16 autocast + channels_last on CUDA and on CPUs with native bf16),
``fp32``/``fast`` force one, ``both`` measures each pair both ways in one run and prints fast / fp32.

``--pairs`` takes ``depth[:mask][+shared]`` items separated by commas (``unet-resnet18+shared``,
``resnet50-upproj:autoencoder``). On CPU the heavy pairs (the originals and resnet34) are skipped at sizes
above 128 px unless ``--all-sizes`` is given. ``--rounds N`` repeats the sweep and keeps each pair's best round.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from training.losses import LossConfig, total_loss  # noqa: E402
from training.models import ModelConfig, build_model, count_parameters  # noqa: E402
from training.precision import fast_path_default  # noqa: E402

DEFAULT_PAIRS = (
    "unet-small",
    "unet-small+shared",
    "unet-resnet18",
    "unet-resnet18+shared",
    "unet-resnet34",
    "unet-resnet34+shared",
    "unet-resnet34:unet-small",
    "resnet50-upproj:autoencoder",
)
HEAVY_ON_CPU = ("resnet50-upproj", "autoencoder", "unet-resnet34")


@dataclass
class Result:
    pair: str
    params: int
    size: int
    batch: int
    samples_per_s: float
    steps: int
    device: str


def parse_pair(item: str) -> ModelConfig:
    shared = item.endswith("+shared")
    item = item.removesuffix("+shared")
    depth, _, mask = item.partition(":")
    return ModelConfig(depth_arch=depth, mask_arch=mask or depth, shared_encoder=shared)


def pair_name(cfg: ModelConfig) -> str:
    name = cfg.depth_arch if cfg.depth_arch == cfg.mask_arch else f"{cfg.depth_arch} / {cfg.mask_arch}"
    return name + (" (shared enc)" if cfg.shared_encoder else "")


def bench(cfg: ModelConfig, size: int, batch: int, device: torch.device, seconds: float, amp: bool,
          channels_last: bool) -> Result:
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_cfg = LossConfig()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    bg = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
    fg = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
    depth = torch.rand(batch, 1, size, size, device=device)
    mask = (torch.rand(batch, 1, size, size, device=device) > 0.7).float()

    def step() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            d, m = model(bg, fg)
        loss, _ = total_loss(d, m, depth, mask, loss_cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(2):  # warm-up (allocator, cudnn autotune, AdamW state)
        step()
    sync()
    # per-step times, summarised by the median: robust to other work on a shared machine
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return Result(pair_name(cfg), count_parameters(model), size, batch, batch / statistics.median(times), len(times),
                  str(device))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads on CPU (default 2)")
    p.add_argument("--sizes", default="64,224")
    p.add_argument("--pairs", default=",".join(DEFAULT_PAIRS))
    p.add_argument("--batch", type=int, default=None, help="batch size (default: CPU 16 @<=64px else 4; GPU 128/32)")
    p.add_argument("--seconds", type=float, default=3.0, help="timed duration per measurement")
    p.add_argument("--rounds", type=int, default=1,
                   help="repeat the sweep and report each pair's best round (for noisy shared machines)")
    p.add_argument("--all-sizes", action="store_true", help="on CPU, also run the heavy pairs above 128 px")
    p.add_argument("--precision", choices=("auto", "fp32", "fast", "both"), default="auto",
                   help="fast = bf16 autocast + channels_last; auto = dm-train's default on the device")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    gpu = device.type == "cuda"
    if gpu:
        torch.backends.cudnn.benchmark = True
    fast_modes = {"auto": [fast_path_default(device)], "fp32": [False], "fast": [True], "both": [False, True]}
    modes = fast_modes[args.precision]
    sizes = [int(s) for s in args.sizes.split(",") if s]
    configs = [parse_pair(item) for item in args.pairs.split(",") if item]

    desc = f"{device}" + (f" ({torch.get_num_threads()} threads)" if not gpu else f" {torch.cuda.get_device_name()}")
    desc += ", " + " vs ".join("bf16 autocast + channels_last" if fast else "fp32" for fast in modes)
    print(f"# train step = fwd + total_loss + bwd + AdamW; {desc}; torch {torch.__version__}")
    rate_cols = "".join(f" {'fast' if fast else 'fp32':>9}/s" for fast in modes)
    rate_cols += f" {'ratio':>6}" if len(modes) == 2 else ""
    header = f"{'arch (depth / mask)':<42} {'params':>9} {'px':>4} {'batch':>5}{rate_cols} {'steps':>5}  device"
    print(header)
    print("-" * len(header))
    jobs = []
    for size in sizes:
        for cfg in configs:
            heavy = cfg.depth_arch in HEAVY_ON_CPU or cfg.mask_arch in HEAVY_ON_CPU
            if not gpu and size > 128 and heavy and not args.all_sizes:
                continue
            batch = args.batch or ((128 if size <= 64 else 32) if gpu else (16 if size <= 64 else 4))
            jobs.append((cfg, size, batch))
    best: dict[tuple[int, bool], Result] = {}
    for round_ in range(args.rounds):
        for i, (cfg, size, batch) in enumerate(jobs):
            for fast in modes:  # interleaved, so both modes see the same machine load
                r = bench(cfg, size, batch, device, args.seconds, amp=fast, channels_last=fast)
                if args.rounds > 1:
                    print(f"  round {round_ + 1}: {r.pair} @{size}px {'fast' if fast else 'fp32'}: "
                          f"{r.samples_per_s:.1f} samples/s", file=sys.stderr, flush=True)
                if (i, fast) not in best or r.samples_per_s > best[i, fast].samples_per_s:
                    best[i, fast] = r
            if round_ == args.rounds - 1:
                rows = [best[i, fast] for fast in modes]
                r = rows[0]
                rates = "".join(f" {x.samples_per_s:>11.1f}" for x in rows)
                ratio = f" {rows[1].samples_per_s / rows[0].samples_per_s:>5.2f}x" if len(rows) == 2 else ""
                print(f"{r.pair:<42} {r.params / 1e6:>8.2f}M {r.size:>4} {r.batch:>5}{rates}{ratio} "
                      f"{sum(x.steps for x in rows):>5}  {r.device}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""DataLoader throughput of a recipe dataset against a materialised one, in the same run (issue 14 section 3),
and the batched torch compositor's samples/s.

    python tools/bench_recipe_loader.py RECIPES MATERIALISED [--samples 12000] [--warmup 3000] [--workers 2]
                                        [--size 224] [--no-augment]

Both through DepthMaskDataset + make_loader (train split, the default augmentation: mirror and photometry),
delivered batches counted once the persistent workers are warm (a warm-up pass excluded: worker start-up,
which reads every asset, and the per-worker caches; its seconds are printed), the materialised shards read
through the page cache before each of its arms (`read_through`). Each arm twice: batches sent
through make_loader's batch ring (training.batch_ring), and as torch sends them (the baseline). Recipes: the
workers composite each sample from the assets (compose.py); materialised: they decode the stored JPEG/PNGs.
Then dm-train --composite-on device's path: the same loader with the workers sending only placements and
augmentation draws, each delivered batch composited, resized and augmented by training.device_batches in
this process (on the CPU here, batches/s and samples/s; on CUDA as well when there is one, synchronised
per batch as a training step would be). Then composite_torch alone on this machine's CPU (one and two
threads) from the recipes' stored placements; a GPU, when there is one, is measured as well (otherwise
stated unmeasured).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.recipes import RecipeStore  # noqa: E402
from pipeline.options import DEFAULT_SIZE  # noqa: E402
from training.augment import AugmentConfig  # noqa: E402
from training.composite_torch import CompositeAssets, all_variants, composite_placements, used_variants  # noqa: E402
from training.data import DepthMaskDataset, make_loader  # noqa: E402
from training.device_batches import DeviceCompositor  # noqa: E402


def read_through(root: Path) -> float:
    """Read every file under `root` once and return the seconds it took: the page cache then holds the
    materialised shards (5 GB; this machine has 24 GiB), as it does from a training run's second epoch on.
    Without it the materialised arm's speed depends on what earlier jobs left in the cache (1,250 samples/s
    cold vs ~2,000 warm here); with it the comparison is the one most favourable to materialised data."""
    start = time.perf_counter()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb", buffering=0) as f:
                while f.read(16 << 20):
                    pass
    return time.perf_counter() - start


def loader_rate(root: Path, args: argparse.Namespace, batch_ring: bool = True, **options) -> tuple[float, float, float]:
    """(samples/s delivered once the workers are warm, seconds to the first batch, seconds of the warm-up pass).
    A warm-up pass of --warmup samples (worker start-up, which reads every asset, and each worker's caches
    of converted backgrounds and cut-outs) is excluded: a training run pays it once; then --samples are timed
    from the same persistent workers (the next epoch: other samples)."""
    dataset = DepthMaskDataset(root, "train", size=args.size, augment=None if args.no_augment else AugmentConfig(),
                               **options)
    loader = make_loader(dataset, batch_size=args.batch_size, shuffle=True, workers=args.workers,
                         batch_ring=batch_ring)
    loader.sampler.limit = args.warmup
    start = time.perf_counter()
    batches = iter(loader)
    next(batches)
    first = time.perf_counter() - start
    for _ in batches:
        pass
    warm = time.perf_counter() - start
    loader.sampler.limit = args.samples
    loader.sampler.set_epoch(1)
    count, start = 0, time.perf_counter()
    for batch in loader:
        count += batch["bg"].shape[0]
    rate = count / (time.perf_counter() - start)
    del batches, loader
    return rate, first, warm


def device_rate(root: Path, args: argparse.Namespace, device: str, **options) -> tuple[float, float]:
    """(batches/s, samples/s) delivered with --composite-on device: the loader's placement batches finished on
    `device` (the assets built there first, not timed)."""
    dataset = DepthMaskDataset(root, "train", size=args.size, augment=AugmentConfig(), composite_on="device",
                               **options)
    finish = DeviceCompositor(dataset, device).finish
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    loader = make_loader(dataset, batch_size=args.batch_size, shuffle=True, workers=args.workers,
                         pin_memory=device.startswith("cuda"))
    loader.sampler.limit = args.samples if device != "cpu" else min(args.samples, 1000)  # ~80 samples/s on a CPU
    it = iter(loader)
    finish(next(it))
    sync()
    batches, count, start = 0, 0, time.perf_counter()
    for batch in it:
        out = finish(batch)
        sync()
        batches += 1
        count += out["fg_bg"].shape[0]
    elapsed = time.perf_counter() - start
    del it, loader
    return batches / elapsed, count / elapsed


def composite_rate(store: RecipeStore, device: str, batch: int, batches: int) -> float:
    rng = np.random.default_rng(0)
    train = store.split_indices("train")
    plans = [store.placements(np.sort(rng.choice(train, batch, replace=False))) for _ in range(batches + 1)]
    variants = (all_variants(store.foregrounds, store.plan.flip) if store.placement == "fixed"
                else used_variants(plans, store.foreground_at))
    assets = CompositeAssets.build(store.backgrounds, variants, device)
    composite_placements(assets, plans[0])  # warm-up
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    start = time.perf_counter()
    for p in plans[1:]:
        out = composite_placements(assets, p)
    sync()
    assert out["fg_bg"].shape[0] == batch
    return batch * batches / (time.perf_counter() - start)


def loader_rows(args: argparse.Namespace) -> None:
    """Each round runs every arm once, in the same order (the machine's load drifts between rounds: compare
    within a round); the medians over rounds follow."""
    arms = (("materialised (decode JPEG/PNG)", args.materialised, {}),
            ("recipes, fixed placements (composite)", args.recipes, {}),
            ("recipes, per-epoch placements", args.recipes, {"placements": "per-epoch"}))
    ratios: dict[tuple[bool, str], list[float]] = {}
    rates: dict[tuple[bool, str], list[float]] = {}
    for round_ in range(args.rounds):
        for ring in (True, False):
            print(f"  round {round_ + 1}, batches sent "
                  f"{'through the batch ring' if ring else 'as torch sends them (new shared memory each)'}:")
            first_rate = None
            for name, root, options in arms:
                if root == args.materialised:
                    print(f"    (materialised shards read through the page cache first: {read_through(root):.1f} s)")
                rate, first, warm = loader_rate(root, args, batch_ring=ring, **options)
                first_rate = first_rate or rate
                rates.setdefault((ring, name), []).append(rate)
                ratios.setdefault((ring, name), []).append(rate / first_rate)
                print(f"    {name:40s} {rate:8.0f} samples/s   {rate / first_rate:.2f}x materialised   "
                      f"(first batch {first:.1f} s, warm-up pass {warm:.1f} s)", flush=True)
    if args.rounds > 1:
        print(f"  medians over {args.rounds} rounds:")
        for (ring, name), values in rates.items():
            print(f"    {'ring ' if ring else 'torch'} {name:40s} {statistics.median(values):8.0f} samples/s   "
                  f"{statistics.median(ratios[(ring, name)]):.2f}x materialised (per round: "
                  f"{', '.join(f'{r:.2f}' for r in ratios[(ring, name)])})")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        batches, samples = device_rate(args.recipes, args, device, placements="per-epoch")
        print(f"  recipes, per-epoch, --composite-on device ({device}): {batches:6.1f} batches/s "
              f"{samples:8.0f} samples/s")
    if not torch.cuda.is_available():
        print("  --composite-on device on a GPU: unmeasured (no GPU here)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", type=Path)
    parser.add_argument("materialised", type=Path)
    parser.add_argument("--samples", type=int, default=12000,
                        help="Timed samples per arm, after the warm-up pass (12,000: ~3 s for recipes at 224 px).")
    parser.add_argument("--warmup", type=int, default=3000, help="Samples of the untimed warm-up pass per arm.")
    parser.add_argument("--no-augment", action="store_true", help="Without the default augmentation.")
    parser.add_argument("--rounds", type=int, default=1, help="Rounds of all loader arms (medians printed).")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE)
    parser.add_argument("--composite-batch", type=int, default=256)
    parser.add_argument("--composite-batches", type=int, default=8)
    parser.add_argument("--composite-only", action="store_true", help="Skip the DataLoader rows.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}; "
          f"{args.workers} workers, batch {args.batch_size}, {args.size} px, {args.samples} delivered samples per arm")
    if not args.composite_only:
        loader_rows(args)
    store = RecipeStore.open(args.recipes)
    print(f"  recipes: {len(store):,} samples, {store.placement} placements")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        rate = composite_rate(store, "cpu", args.composite_batch, args.composite_batches)
        print(f"  composite_torch on the CPU, {threads} thread(s), batch {args.composite_batch}: {rate:8.0f} samples/s "
              f"(placements drawn beforehand)")
    if torch.cuda.is_available():
        rate = composite_rate(store, "cuda", 4096, 20)
        print(f"  composite_torch on {torch.cuda.get_device_name()}, batch 4096: {rate:8.0f} samples/s")
    else:
        print("  composite_torch on a GPU: unmeasured (no GPU here)")


if __name__ == "__main__":
    main()

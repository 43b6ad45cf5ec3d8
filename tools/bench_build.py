"""Benchmark of the dataset build, against the original workflow in the same run.

    python tools/bench_build.py --subset 10000            # ratio vs the original way on 10,000 samples
    python tools/bench_build.py --subset 10000 --full     # plus the full default build (424,320 samples)
    python tools/bench_build.py --small 2000 --subset 0   # a --limit build vs the fixed cost it paid before

Ours: `build_dataset` with --workers (default: all cores) into sharded LMDB, statistics included.
Baseline, the original way, on the same samples: one process composites each sample (with the same
compositing code, so only the pipeline design differs) and writes fg_bg, mask and depth as JPG files
into folders; a second pass reads every file back and accumulates per-channel statistics.
Peak memory is the largest sum of RSS over the build's whole process tree, sampled every second.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import BuildOptions, build_dataset  # noqa: E402
from pipeline.assets import DEFAULT_PROCEDURAL_BACKGROUNDS  # noqa: E402
from pipeline.build import BackgroundPass, assets_for_build  # noqa: E402
from pipeline.shard_worker import ShardContext, render_sample, shard_samples  # noqa: E402
from pipeline.codecs import default_codecs  # noqa: E402
from pipeline.plan import SamplePlan, make_split  # noqa: E402


class PeakRss:
    """Peak of the summed resident memory of this process and all its descendants."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        root = os.getpid()
        while not self._stop.wait(1.0):
            self.peak = max(self.peak, tree_rss(root))


def tree_rss(root: int) -> int:
    parents, rss = {}, {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            parents[int(name)] = int(fields[1])
            rss[int(name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    total = 0
    for pid in rss:
        p = pid
        while p and p != root:
            p = parents.get(p, 0)
        if p == root:
            total += rss[pid]
    return total


# The subset comparison uses the original's layout (102 scenes x 104 cut-outs x 20 placements) on both
# sides: its scenes render in ~3 s, the default's 1,020 in ~25 s, a fixed cost that would swamp a
# 10,000-sample comparison of the pipeline designs. --full builds the default layout.
SUBSET_LAYOUT = {"backgrounds": 102, "foregrounds": 104, "positions": 20}


def ours(out: Path, limit: int | None, workers: int, layout: dict | None = None) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    with PeakRss() as mem:
        t = time.perf_counter()
        summary = build_dataset(BuildOptions(output=out, limit=limit, workers=workers, **(layout or {})), progress=False,
                                log=lambda m: None)
        seconds = time.perf_counter() - t
    return {"samples": summary.samples, "seconds": seconds, "rate": summary.samples / seconds,
            "kb_per_sample": summary.kb_per_sample, "peak_rss_mb": mem.peak / 2**20,
            "bytes": summary.bytes_on_disk, "backgrounds": read_backgrounds_count(out)}


def read_backgrounds_count(out: Path) -> int:
    import json

    return json.loads((out / "manifest.json").read_text())["backgrounds"]["records"]


def baseline(out: Path, limit: int) -> dict:
    """The original workflow: one process, image files in folders, then a statistics pass."""
    shutil.rmtree(out, ignore_errors=True)
    for sub in ("fg_bg", "mask", "depth"):
        (out / sub).mkdir(parents=True)
    options = BuildOptions(output=out, limit=limit, **SUBSET_LAYOUT)
    plan = SamplePlan(options.backgrounds, options.foregrounds, options.positions, options.flip, limit)
    t = time.perf_counter()
    assets = assets_for_build(options)
    context = ShardContext(out, options, plan, assets, make_split(options.backgrounds, options.foregrounds,
                                                                  options.val_fraction, options.seed),
                           default_codecs(), [], None)
    s = shard_samples(context, 0, plan.count)
    for j in range(plan.count):
        sample = render_sample(context, int(s["bg"][j]), int(s["fg"][j]), bool(s["flip"][j]),
                               int(s["x"][j]), int(s["y"][j]))
        fg_bg, mask, depth = sample.fg_bg, sample.mask, sample.depth
        name = f"{j:07d}.jpg"
        cv2.imwrite(str(out / "fg_bg" / name), fg_bg, [cv2.IMWRITE_JPEG_QUALITY, 90])
        cv2.imwrite(str(out / "mask" / name), mask, [cv2.IMWRITE_JPEG_QUALITY, 90])
        cv2.imwrite(str(out / "depth" / name), (depth >> 8).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
    sums = {k: np.zeros(3) for k in ("fg_bg", "mask", "depth")}
    squares = {k: np.zeros(3) for k in ("fg_bg", "mask", "depth")}
    for sub in ("fg_bg", "mask", "depth"):
        for name in sorted(os.listdir(out / sub)):
            img = cv2.imread(str(out / sub / name), cv2.IMREAD_COLOR).astype(np.float64) / 255.0
            sums[sub] += img.sum(axis=(0, 1))
            squares[sub] += (img * img).sum(axis=(0, 1))
    seconds = time.perf_counter() - t
    size = sum(f.stat().st_size for f in out.rglob("*.jpg"))
    return {"samples": plan.count, "seconds": seconds, "rate": plan.count / seconds,
            "kb_per_sample": size / 1024 / plan.count}


def small(out: Path, limit: int, workers: int) -> None:
    """A `--limit` build of the default, beside what such a build cost before issue 10: every one of
    the 1,020 scenes rendered and encoded in the build process before any worker started, and
    stored (timed here in the same run; its bytes added to ours)."""
    built = ours(out / "small", limit, workers)
    t = time.perf_counter()
    everything = BackgroundPass(BuildOptions(output=out, workers=1), default_codecs())
    everything(DEFAULT_PROCEDURAL_BACKGROUNDS)
    render_all = time.perf_counter() - t
    stored_all = sum(len(b.image) + len(b.depth) for b in everything.stored)
    stored_used = sum(len(b.image) + len(b.depth) for b in everything.stored[:(built["backgrounds"])])
    before_kb = (built["bytes"] - stored_used + stored_all) / 1024 / built["samples"]
    print(f"--limit {limit:,} of the default ({built['backgrounds']} backgrounds used, {workers} workers):")
    print(f"  now:    {built['seconds']:7.1f} s  {built['kb_per_sample']:.2f} KB/sample")
    print(f"  before: {built['seconds'] + render_all:7.1f} s  {before_kb:.2f} KB/sample  (now + rendering all "
          f"{DEFAULT_PROCEDURAL_BACKGROUNDS:,} scenes in one process: {render_all:.1f} s, and storing them)")
    print(f"  ratio:  {(built['seconds'] + render_all) / built['seconds']:.2f}x faster, "
          f"{before_kb / built['kb_per_sample']:.2f}x smaller")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subset", type=int, default=10000, help="samples for the comparison with the baseline")
    parser.add_argument("--full", action="store_true", help="also build the full default dataset")
    parser.add_argument("--small", type=int, default=0, help="also a --limit build of this many default samples")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--scratch", type=Path, default=None, help="folder for the outputs (deleted afterwards)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="dm-bench-", dir=args.scratch))
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}, opencv {cv2.__version__}; workers {args.workers}")
    try:
        if args.small:
            small(scratch, args.small, args.workers)
        if not args.subset:
            return
        base = baseline(scratch / "baseline", args.subset)
        ours_subset = ours(scratch / "ours-subset", args.subset, args.workers, SUBSET_LAYOUT)
        print(f"subset of {args.subset:,} samples:")
        print(f"  baseline (1 process, JPG files, stats pass): {base['rate']:8.0f} samples/s  "
              f"{base['seconds']:7.1f} s  {base['kb_per_sample']:.2f} KB/sample (mask, depth lossy)")
        print(f"  depthmask build (LMDB, {args.workers} workers):     {ours_subset['rate']:8.0f} samples/s  "
              f"{ours_subset['seconds']:7.1f} s  {ours_subset['kb_per_sample']:.2f} KB/sample "
              f"(mask, depth lossless)")
        print(f"  ratio: {ours_subset['rate'] / base['rate']:.2f}x")
        shutil.rmtree(scratch / "baseline", ignore_errors=True)
        if args.full:
            full = ours(scratch / "full", None, args.workers)
            print(f"full default build: {full['samples']:,} samples in {full['seconds']:.1f} s = {full['rate']:.0f} "
                  f"samples/s; {full['bytes'] / 2**30:.2f} GiB, {full['kb_per_sample']:.2f} KB/sample; "
                  f"peak memory {full['peak_rss_mb']:.0f} MB (process tree)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

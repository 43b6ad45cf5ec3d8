"""Benchmark of builds from the user's folders (issue 4's figures), each against a baseline in the same run.

    python tools/bench_real.py out/bench_real --limit 40000 --model-samples 3000

1. Throughput: the procedural default vs real-photo folders with --bg-depth (composite mode), the
   same sample count, both with every core. The folders are written by tools/make_photo_folders.py
   (no photos can be downloaded here): 102 backgrounds as 640x480 JPEGs with 16-bit depth PNGs, 104
   RGBA cut-outs twice the allowed size, so decoding, fitting and scaling down are all exercised.
2. A small depth model, trained here for --train-seconds on the folders' exact depth (fg_bg ->
   depth, 112 px) and saved as TorchScript, builds the same samples with --depth-mode composite and
   with --depth-mode per-sample: the throughput ratio, and how far apart their depth maps are on the
   background pixels (and on the object), both also against the exact depth.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_photo_folders import write_backgrounds, write_foregrounds  # noqa: E402
from pipeline import BuildOptions, DatasetReader, build_dataset  # noqa: E402
from pipeline.assets import UserInputs  # noqa: E402
from pipeline.depth_model import DepthModelSpec  # noqa: E402

MODEL_SIZE = 112


def timed_build(out: Path, workers: int, **options) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    summary = build_dataset(BuildOptions(output=out, workers=workers, **options), progress=False, log=lambda m: None)
    seconds = time.perf_counter() - start
    return {"samples": summary.samples, "seconds": seconds, "rate": summary.samples / seconds,
            "kb": summary.kb_per_sample}


class SmallDepthNet(nn.Module):
    """Encoder-decoder, 3 -> 1 channels, ~0.1M parameters: a stand-in for a monocular depth model."""

    def __init__(self) -> None:
        super().__init__()

        def block(i: int, o: int, stride: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, stride, 1), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

        self.down = nn.Sequential(block(3, 16, 2), block(16, 32, 2), block(32, 64, 2), block(64, 64))
        self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear"), block(64, 32),
                                nn.Upsample(scale_factor=2, mode="bilinear"), block(32, 16),
                                nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(16, 1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.up(self.down(x)))


def model_inputs(images_bgr: np.ndarray) -> torch.Tensor:
    """The DepthModelSpec contract (ImageNet mean/std, RGB, NCHW) at MODEL_SIZE."""
    spec = DepthModelSpec(path=Path("unused"), input_size=MODEL_SIZE)
    mean = np.asarray(spec.mean, np.float32) * 255
    std = np.asarray(spec.std, np.float32) * 255
    import cv2

    small = np.stack([cv2.resize(i, (MODEL_SIZE, MODEL_SIZE), interpolation=cv2.INTER_AREA) for i in images_bgr])
    return torch.from_numpy(((small[..., ::-1] - mean) / std).transpose(0, 3, 1, 2).copy()).float()


def train_depth_model(data: Path, seconds: float, out: Path) -> dict:
    """Fit SmallDepthNet to fg_bg -> exact depth on the train split, for a fixed time; save TorchScript."""
    import cv2

    reader = DatasetReader(data)
    train = reader.split_indices("train")
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    net = SmallDepthNet()
    optimiser = torch.optim.Adam(net.parameters(), lr=2e-3)
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        batch = [reader.decode(int(i)) for i in rng.choice(train, 16)]
        x = model_inputs(np.stack([s["fg_bg"] for s in batch]))
        y = torch.from_numpy(np.stack([cv2.resize(s["depth"], (MODEL_SIZE, MODEL_SIZE), interpolation=cv2.INTER_AREA)
                                       for s in batch]).astype(np.float32) / 65535).unsqueeze(1)
        loss = (net(x) - y).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        steps += 1
    net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(net, torch.zeros(1, 3, MODEL_SIZE, MODEL_SIZE)), str(out))
    return {"steps": steps, "last_l1": float(loss.detach()), "params": sum(p.numel() for p in net.parameters())}


def depth_gaps(a: Path, b: Path, exact: Path, limit: int) -> dict:
    """RMSE on [0, 1] between datasets' depth, over background pixels and over object pixels."""
    readers = {"composite": DatasetReader(a), "per_sample": DatasetReader(b), "exact": DatasetReader(exact)}
    sq = {k: [0.0, 0.0] for k in ("composite-per_sample", "composite-exact", "per_sample-exact")}
    counts = [0, 0]
    for index in range(limit):
        records = [r.record(index) for r in readers.values()]
        assert len({(r["bg"], r["fg"], r["x"], r["y"], r["flip"]) for r in records}) == 1, "plans differ"
        samples = {k: r.decode(index) for k, r in readers.items()}
        on = samples["exact"]["mask"] > 0
        depth = {k: s["depth"].astype(np.float64) / 65535 for k, s in samples.items()}
        for pair in sq:
            x, y = pair.split("-")
            diff2 = (depth[x] - depth[y]) ** 2
            sq[pair][0] += float(diff2[~on].sum())
            sq[pair][1] += float(diff2[on].sum())
        counts[0] += int((~on).sum())
        counts[1] += int(on.sum())
    return {pair: {"background": (v[0] / counts[0]) ** 0.5, "object": (v[1] / counts[1]) ** 0.5} for pair, v in sq.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path)
    parser.add_argument("--limit", type=int, default=40000, help="Samples per throughput build.")
    parser.add_argument("--model-samples", type=int, default=3000, help="Samples per depth-model build.")
    parser.add_argument("--train-seconds", type=float, default=90.0)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    work: Path = args.work
    photos = work / "photos"
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, torch {torch.__version__}")
    if not (photos / "bg").exists():
        start = time.perf_counter()
        write_backgrounds(photos, 102, 1, 480)
        write_foregrounds(photos, 104, 1, 2.0)
        print(f"wrote photo-like folders in {time.perf_counter() - start:.1f} s")
    real = UserInputs(bg_dir=photos / "bg", bg_depth_dir=photos / "bg_depth", fg_dir=photos / "fg")
    proc = timed_build(work / "procedural", args.workers, limit=args.limit)
    folders = timed_build(work / "folders", args.workers, limit=args.limit, inputs=real)
    print(f"\n1. build throughput, {args.limit:,} samples each, workers={args.workers or os.cpu_count()}")
    print(f"   procedural default      {proc['rate']:8.0f} samples/s  ({proc['seconds']:.1f} s, {proc['kb']:.2f} KB/sample)")
    print(f"   folders + --bg-depth    {folders['rate']:8.0f} samples/s  ({folders['seconds']:.1f} s, "
          f"{folders['kb']:.2f} KB/sample)  ratio {folders['rate'] / proc['rate']:.2f}")

    exact = timed_build(work / "exact", args.workers, limit=args.model_samples, inputs=real)
    model_path = work / "small_depth.pt"
    fit = train_depth_model(work / "folders", args.train_seconds, model_path)
    spec = DepthModelSpec(path=model_path, input_size=MODEL_SIZE, output="depth", far=1.0, device="cpu")
    composite = timed_build(work / "model_composite", args.workers, limit=args.model_samples, inputs=UserInputs(
        bg_dir=photos / "bg", fg_dir=photos / "fg", depth_model=spec))
    per_sample = timed_build(work / "model_per_sample", args.workers, limit=args.model_samples, inputs=UserInputs(
        bg_dir=photos / "bg", fg_dir=photos / "fg", depth_model=spec, depth_mode="per-sample"))
    gaps = depth_gaps(work / "model_composite", work / "model_per_sample", work / "exact", args.model_samples)
    print(f"\n2. depth model ({fit['params']:,} parameters, {fit['steps']} steps in {args.train_seconds:.0f} s, "
          f"last L1 {fit['last_l1']:.4f}), {args.model_samples:,} samples each")
    print(f"   --depth-mode composite  {composite['rate']:8.0f} samples/s  ({composite['kb']:.2f} KB/sample)")
    print(f"   --depth-mode per-sample {per_sample['rate']:8.0f} samples/s  ({per_sample['kb']:.2f} KB/sample)  "
          f"composite / per-sample = {composite['rate'] / per_sample['rate']:.1f}x")
    print("   depth RMSE on [0, 1]          background pixels   object pixels")
    for pair, g in gaps.items():
        print(f"   {pair:<28}  {g['background']:.4f}              {g['object']:.4f}")


if __name__ == "__main__":
    main()

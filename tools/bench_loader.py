"""DataLoader throughput of depthmask's LMDB dataset against the original way, in the same run.

    python tools/bench_loader.py DATASET [--samples 8000] [--workers 2] [--size 224]

Ours: `DepthMaskDataset` (validation transform, the default training augmentation, and the same with
crop + rotation, which must warp) through `make_loader`:
workers fetch whole batches from the shards and send uint8/uint16 tensors, which is what a GPU run
copies to the device and normalises there; one row adds the normalisation to float on the CPU in
the consuming process (`BatchNormalizer`), as a CPU run does.
Baseline, the original way, on the same samples: a folder per sample with fg_bg.jpg, bg.jpg,
mask.png, depth.png, decoded with PIL in a per-sample Dataset (float tensors made in the workers),
default collation, the same workers and batch size.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import DatasetReader  # noqa: E402
from pipeline.options import DEFAULT_SIZE  # noqa: E402
from training.augment import AugmentConfig  # noqa: E402
from training.data import DepthMaskDataset, make_loader  # noqa: E402
from training.inputs import BatchNormalizer  # noqa: E402


class FolderDataset(torch.utils.data.Dataset):
    """The original layout: image files per sample, decoded with PIL, float tensors per sample."""

    def __init__(self, root: Path, count: int):
        self.root, self.count = root, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        folder = self.root / f"{i:07d}"

        def rgb(name: str) -> torch.Tensor:
            return torch.from_numpy(np.asarray(Image.open(folder / name).convert("RGB"), np.float32) / 255.0).permute(2, 0, 1)

        mask = np.asarray(Image.open(folder / "mask.png"), np.float32) / 255.0
        depth = np.asarray(Image.open(folder / "depth.png"), np.float32) / 65535.0
        return {"bg": rgb("bg.jpg"), "fg_bg": rgb("fg_bg.jpg"), "mask": torch.from_numpy(mask)[None],
                "depth": torch.from_numpy(depth)[None]}


def export_folders(reader: DatasetReader, indices: np.ndarray, root: Path) -> None:
    for j, index in enumerate(indices):
        s = reader.decode(int(index))
        folder = root / f"{j:07d}"
        folder.mkdir(parents=True)
        cv2.imwrite(str(folder / "fg_bg.jpg"), s["fg_bg"], [cv2.IMWRITE_JPEG_QUALITY, 90])
        cv2.imwrite(str(folder / "bg.jpg"), s["bg"], [cv2.IMWRITE_JPEG_QUALITY, 90])
        cv2.imwrite(str(folder / "mask.png"), s["mask"])
        cv2.imwrite(str(folder / "depth.png"), s["depth"])


def timed(loader, consume, passes: int) -> float:
    """Samples per second over `passes` epochs, after one warm-up batch (worker start-up excluded)."""
    it = iter(loader)
    consume(next(it))
    count, start = 0, time.perf_counter()
    for batch in it:
        count += consume(batch)
    for _ in range(passes - 1):
        for batch in loader:
            count += consume(batch)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--samples", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE)
    parser.add_argument("--passes", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}; "
          f"{args.workers} workers, batch {args.batch_size}, {args.size} px, {args.samples} samples x {args.passes} passes")
    rows = []
    for label, augment, normalise in (
            ("depthmask LMDB, val transform", None, False),
            ("  + normalised to float in the main process", None, True),
            ("depthmask LMDB, train augmentation (default: mirror)", AugmentConfig(), False),
            ("  the same with crop 0.8 + rotation 5 (warped)", AugmentConfig(min_scale=0.8, max_rotation_deg=5.0),
             False)):
        dataset = DepthMaskDataset(args.dataset, "train", size=args.size, augment=augment)
        loader = make_loader(dataset, batch_size=args.batch_size, shuffle=True, workers=args.workers)
        loader.sampler.limit = args.samples
        normalize = BatchNormalizer(dataset.stats())
        consume = (lambda b: normalize(b)["bg"].shape[0]) if normalise else (lambda b: b["bg"].shape[0])
        rows.append((label, timed(loader, consume, args.passes)))
        del loader
    reader = DatasetReader(args.dataset)
    indices = reader.split_indices("train")[: args.samples]
    scratch = Path(tempfile.mkdtemp(prefix="dm-loader-"))
    try:
        export_folders(reader, indices, scratch)
        loader = torch.utils.data.DataLoader(FolderDataset(scratch, len(indices)), batch_size=args.batch_size,
                                             shuffle=True, num_workers=args.workers, persistent_workers=True)
        base = timed(loader, lambda b: b["bg"].shape[0], args.passes)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"  {'baseline: JPG/PNG folders, PIL, per-sample':52s} {base:8.0f} samples/s")
    for label, rate in rows:
        print(f"  {label:52s} {rate:8.0f} samples/s   {rate / base:.2f}x baseline")


if __name__ == "__main__":
    main()

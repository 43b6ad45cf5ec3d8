"""depthmask against the data-loading systems users already know, on the same samples, in the same run.

    python -m venv --system-site-packages out/peers-venv
    out/peers-venv/bin/pip install webdataset litdata datasets           # the extra depthmask[bench]
    python -m venv --system-site-packages out/peers-venv-mds             # mosaicml-streaming pins numpy < 2.2
    out/peers-venv-mds/bin/pip install mosaicml-streaming                # the extra depthmask[bench-mds]
    dm-build-lmdb out/peers-src --limit 20000 --no-progress
    out/peers-venv/bin/python tools/bench_peers.py out/peers-src --samples 20000 --rounds 3

The first N samples of a depthmask dataset are written into each peer's format with that library's own writer:
WebDataset (`ShardWriter`, tar shards of 1,000 samples), LitData (`optimize`, 64 MB chunks), MosaicML streaming
(`MDSWriter`, 64 MB shards), Hugging Face datasets (`Dataset.from_generator` with `Image` features, then
`save_to_disk`: Arrow). Encodings: bg and fg_bg are the very JPEG bytes depthmask stores (q90, so every system
holds the same pixels); the mask a 1-bit PNG and the depth a 16-bit PNG, both lossless, encoded by Pillow (by
the library's own encoder where it has one that keeps 16 bits: WebDataset's `.png` writer, streaming's `png`
column, HF's `Image` feature for the mask; LitData's image types decode to RGB, so there the PNGs are stored as
bytes). Each is read back with the library's own dataset class through a torch DataLoader (2 workers, batch
64, shuffled as for training), delivering what depthmask delivers: bg, fg_bg (B, 3, H, W) uint8 RGB, mask
(B, 1, H, W) uint8 in {0, 1}, depth (B, 1, H, W) uint16, index (B,). depthmask: `DepthMaskDataset` +
`make_loader`, as dm-train reads.

Per system: write samples/s (from the decoded samples, memory-mapped: the cost of encoding and the container;
depthmask's is its build, which also composites and renders each sample), bytes per sample on disk, read
samples/s (delivered batches, after the first), first-batch latency (dataset and loader creation included), and
whether mask and depth read back equal depthmask's decode (they must) and the images equal OpenCV's decode of the
same JPEG bytes. Every measurement runs in a fresh process with the right interpreter; the order alternates
between rounds; medians, and ratios to depthmask in the same run.
"""
from __future__ import annotations

import argparse
import functools
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PEERS = ("webdataset", "litdata", "mds", "hf")
SYSTEMS = ("depthmask", *PEERS)
LABELS = {"depthmask": "depthmask (LMDB shards, materialised)", "webdataset": "WebDataset (tar shards)",
          "litdata": "LitData (optimize chunks)", "mds": "MosaicML streaming (MDS shards)",
          "hf": "Hugging Face datasets (Arrow)"}
SHARD_SAMPLES = 1000  # WebDataset samples per tar
CHUNK_BYTES = 1 << 26  # LitData / MDS chunk size: 64 MB


# ---- the source: the first N samples, decoded once, memory-mapped --------------------------------
class Source:
    """The samples every writer stores: JPEG bytes of fg_bg and of its background exactly as depthmask
    stores them, the mask (0/1) and the full depth map as depthmask decodes them."""

    def __init__(self, cache: Path):
        meta = json.loads((cache / "meta.json").read_text())
        self.count, self.size = meta["count"], meta["size"]
        self.mask = np.load(cache / "mask.npy", mmap_mode="r")
        self.depth = np.load(cache / "depth.npy", mmap_mode="r")
        self.bg_of = np.load(cache / "bg_of.npy")
        self._fg = np.load(cache / "fg_offsets.npy")
        self._fg_blob = np.memmap(cache / "fg_jpeg.bin", np.uint8, "r")
        bg_blob = (cache / "bg_jpeg.bin").read_bytes()
        bg_offsets = np.load(cache / "bg_offsets.npy")
        self._bg = [bg_blob[a:b] for a, b in zip(bg_offsets[:-1], bg_offsets[1:])]

    def fg_jpeg(self, i: int) -> bytes:
        return self._fg_blob[self._fg[i] : self._fg[i + 1]].tobytes()

    def bg_jpeg(self, i: int) -> bytes:
        return self._bg[int(self.bg_of[i])]


def build_cache(data: Path, count: int, cache: Path) -> None:
    """Decode the first `count` samples with depthmask's reader (the reference of every comparison)."""
    from pipeline import DatasetReader
    from pipeline.format import BACKGROUND_RECORD, encode_key, unpack_record
    from pipeline.shards import open_readonly

    reader = DatasetReader(data)
    if count > len(reader):
        raise SystemExit(f"error: --samples {count}: {data} holds only {len(reader)} samples")
    size = reader.size[0]
    tmp = cache.with_name(cache.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    mask = np.lib.format.open_memmap(tmp / "mask.npy", "w+", np.uint8, (count, size, size))
    depth = np.lib.format.open_memmap(tmp / "depth.npy", "w+", np.uint16, (count, size, size))
    bg_of = np.empty(count, np.int64)
    offsets = [0]
    with open(tmp / "fg_jpeg.bin", "wb") as fg_file:
        for i in range(count):
            record = reader.record(i)
            s = reader.decode(i)
            mask[i] = s["mask"] >= 128
            depth[i] = s["depth"]
            bg_of[i] = s["bg_index"]
            fg_file.write(record["fg_bg"])
            offsets.append(offsets[-1] + len(record["fg_bg"]))
    mask.flush()
    depth.flush()
    entry = reader.manifest["backgrounds"]
    env = open_readonly(data / entry["path"])
    bg_offsets, blobs = [0], []
    with env.begin(buffers=False) as txn:
        for b in range(int(entry["records"])):
            blobs.append(unpack_record(txn.get(encode_key(b)), BACKGROUND_RECORD)["image"])
            bg_offsets.append(bg_offsets[-1] + len(blobs[-1]))
    (tmp / "bg_jpeg.bin").write_bytes(b"".join(blobs))
    np.save(tmp / "bg_offsets.npy", np.asarray(bg_offsets, np.int64))
    np.save(tmp / "fg_offsets.npy", np.asarray(offsets, np.int64))
    np.save(tmp / "bg_of.npy", bg_of)
    (tmp / "meta.json").write_text(json.dumps({"count": count, "size": size, "data": str(data.resolve())}))
    shutil.rmtree(cache, ignore_errors=True)
    tmp.rename(cache)


# ---- encodings shared by the peers ----------------------------------------------------------------
def png_mask(mask01: np.ndarray) -> bytes:
    """1-bit PNG (Pillow mode '1') of a 0/1 mask."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(mask01.astype(bool)).save(out, format="PNG")
    return out.getvalue()


def png_depth(depth: np.ndarray) -> bytes:
    """16-bit grayscale PNG (Pillow mode 'I;16') of a uint16 depth map."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(depth)).save(out, format="PNG")
    return out.getvalue()


def pil_rgb(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def pil_gray(data_or_image: Any, dtype: type) -> np.ndarray:
    """A decoded mask ('1' -> 0/1) or 16-bit depth ('I;16' or 'I' -> uint16), from bytes or a PIL image."""
    from PIL import Image

    encoded = isinstance(data_or_image, (bytes, bytearray, memoryview))  # litdata gives memoryviews
    image = Image.open(io.BytesIO(data_or_image)) if encoded else data_or_image
    return np.asarray(image).astype(dtype, copy=False)


def to_batch(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """HWC numpy samples -> depthmask's batch layout (the collation every peer loader ends with)."""
    import torch

    def stack(key: str, dtype: type) -> np.ndarray:
        return np.stack([np.asarray(s[key], dtype) for s in samples])

    return {"bg": torch.from_numpy(stack("bg", np.uint8)).permute(0, 3, 1, 2),
            "fg_bg": torch.from_numpy(stack("fg_bg", np.uint8)).permute(0, 3, 1, 2),
            "mask": torch.from_numpy(stack("mask", np.uint8)).unsqueeze(1),
            "depth": torch.from_numpy(stack("depth", np.uint16)).unsqueeze(1),
            "index": torch.from_numpy(np.asarray([int(s["index"]) for s in samples], np.int64))}


def _worker_init(_: int) -> None:
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


# ---- WebDataset ------------------------------------------------------------------------------------
def write_webdataset(source: Source, out: Path) -> None:
    import webdataset as wds

    with wds.ShardWriter(str(out / "shard-%06d.tar"), maxcount=SHARD_SAMPLES, verbose=0) as sink:
        for i in range(source.count):
            # .jpg values are bytes (stored as they are), .png values arrays (webdataset's Pillow encoder)
            sink.write({"__key__": f"{i:08d}", "bg.jpg": source.bg_jpeg(i), "fg_bg.jpg": source.fg_jpeg(i),
                        "mask.png": np.asarray(source.mask[i], bool), "depth.png": np.asarray(source.depth[i]),
                        "index.cls": i})


def _pil_open(data: bytes) -> Any:
    from PIL import Image

    return Image.open(io.BytesIO(data))


def _wds_sample(sample: dict[str, Any]) -> dict[str, Any]:
    return {"bg": np.asarray(sample["bg.jpg"]), "fg_bg": np.asarray(sample["fg_bg.jpg"]),
            "mask": pil_gray(sample["mask.png"], np.uint8), "depth": pil_gray(sample["depth.png"], np.uint16),
            "index": sample["index.cls"]}


def loader_webdataset(out: Path, batch: int, workers: int):
    import torch
    import webdataset as wds

    urls = sorted(str(p) for p in out.glob("shard-*.tar"))
    # "rgb8" decodes the JPEGs to HWC uint8 with Pillow; the PNGs stay Pillow images (16 bits kept)
    dataset = (wds.WebDataset(urls, shardshuffle=len(urls), empty_check=False).shuffle(1000)
               .decode(wds.handle_extension("png", _pil_open), "rgb8")
               .map(_wds_sample).batched(batch, collation_fn=to_batch, partial=True))
    return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers, worker_init_fn=_worker_init,
                                       persistent_workers=False, prefetch_factor=4 if workers else None)


# ---- LitData -----------------------------------------------------------------------------------------
def _litdata_item(cache: str, i: int) -> dict[str, Any]:
    import litdata

    source = _source(cache)
    return {"index": i, "bg": litdata.Jpeg(bytes=source.bg_jpeg(i)), "fg_bg": litdata.Jpeg(bytes=source.fg_jpeg(i)),
            "mask": png_mask(source.mask[i]), "depth": png_depth(source.depth[i])}


@functools.lru_cache(maxsize=1)
def _source(cache: str) -> Source:
    return Source(Path(cache))


def write_litdata(source: Source, out: Path, cache: Path) -> None:
    """litdata.optimize sets the process's multiprocessing start method to spawn (force=True) and leaves it so:
    every DataLoader made afterwards in the process would spawn its workers. The caller's method is put back."""
    import multiprocessing

    import litdata

    previous = multiprocessing.get_start_method(allow_none=True)
    try:
        litdata.optimize(fn=functools.partial(_litdata_item, str(cache)), inputs=list(range(source.count)),
                         output_dir=str(out), chunk_bytes=CHUNK_BYTES, num_workers=1, reorder_files=False,
                         verbose=False)
    finally:
        multiprocessing.set_start_method(previous, force=True)


def _litdata_dataset_class():
    import litdata

    class DepthMaskLitData(litdata.StreamingDataset):
        """litdata's dataset; items converted to depthmask's arrays (its Jpeg type decodes to CHW tensors)."""

        def __getitem__(self, index: Any) -> dict[str, Any]:
            item = super().__getitem__(index)
            return {"bg": item["bg"].permute(1, 2, 0).numpy(), "fg_bg": item["fg_bg"].permute(1, 2, 0).numpy(),
                    "mask": pil_gray(item["mask"], np.uint8), "depth": pil_gray(item["depth"], np.uint16),
                    "index": item["index"]}

    return DepthMaskLitData


def loader_litdata(out: Path, batch: int, workers: int):
    import litdata

    dataset = _litdata_dataset_class()(str(out), shuffle=True, seed=0)
    return litdata.StreamingDataLoader(dataset, batch_size=batch, num_workers=workers, collate_fn=to_batch,
                                       worker_init_fn=_worker_init, prefetch_factor=4 if workers else None)


# ---- MosaicML streaming ------------------------------------------------------------------------------
def write_mds(source: Source, out: Path) -> None:
    from PIL import Image
    from streaming import MDSWriter

    columns = {"index": "int64", "bg": "bytes", "fg_bg": "bytes", "mask": "png", "depth": "png"}
    with MDSWriter(out=str(out), columns=columns, size_limit=CHUNK_BYTES, progress_bar=False) as writer:
        for i in range(source.count):
            # the JPEG bytes as stored (its "jpeg" column would re-encode an in-memory image at quality 75)
            writer.write({"index": i, "bg": source.bg_jpeg(i), "fg_bg": source.fg_jpeg(i),
                          "mask": Image.fromarray(np.asarray(source.mask[i], bool)),
                          "depth": Image.fromarray(np.asarray(source.depth[i]))})


def loader_mds(out: Path, batch: int, workers: int):
    import torch
    from streaming import StreamingDataset
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()

    class DepthMaskMDS(StreamingDataset):
        def __getitem__(self, index: int) -> dict[str, Any]:
            item = super().__getitem__(index)
            return {"bg": pil_rgb(item["bg"]), "fg_bg": pil_rgb(item["fg_bg"]),
                    "mask": pil_gray(item["mask"], np.uint8), "depth": pil_gray(item["depth"], np.uint16),
                    "index": item["index"]}

    dataset = DepthMaskMDS(local=str(out), shuffle=True, shuffle_seed=0, batch_size=batch)
    return torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=workers, collate_fn=to_batch,
                                       worker_init_fn=_worker_init, prefetch_factor=4 if workers else None)


# ---- Hugging Face datasets ---------------------------------------------------------------------------
def _hf_samples(cache: str) -> Iterator[dict[str, Any]]:
    source = _source(cache)
    for i in range(source.count):
        # Image(): bytes are stored as given (JPEG; 16-bit PNG, since encoding an I;16 array itself gives TIFF),
        # a bool array is encoded by datasets (1-bit PNG)
        yield {"index": i, "bg": {"bytes": source.bg_jpeg(i), "path": None},
               "fg_bg": {"bytes": source.fg_jpeg(i), "path": None}, "mask": np.asarray(source.mask[i], bool),
               "depth": {"bytes": png_depth(source.depth[i]), "path": None}}


def write_hf(source: Source, out: Path, cache: Path) -> None:
    import datasets

    features = datasets.Features({"index": datasets.Value("int64"), "bg": datasets.Image(),
                                  "fg_bg": datasets.Image(), "mask": datasets.Image(), "depth": datasets.Image()})
    work = out.with_name(out.name + ".cache")
    dataset = datasets.Dataset.from_generator(_hf_samples, gen_kwargs={"cache": str(cache)}, features=features,
                                              cache_dir=str(work))
    dataset.save_to_disk(str(out))
    del dataset
    shutil.rmtree(work, ignore_errors=True)


def _hf_batch(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return to_batch([{"bg": np.asarray(s["bg"].convert("RGB")), "fg_bg": np.asarray(s["fg_bg"].convert("RGB")),
                      "mask": pil_gray(s["mask"], np.uint8), "depth": pil_gray(s["depth"], np.uint16),
                      "index": s["index"]} for s in samples])


def loader_hf(out: Path, batch: int, workers: int):
    import datasets
    import torch

    datasets.disable_progress_bars()
    dataset = datasets.load_from_disk(str(out))  # Arrow, memory-mapped; Image columns decode to Pillow images
    return torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                                       collate_fn=_hf_batch, worker_init_fn=_worker_init,
                                       generator=torch.Generator().manual_seed(0),
                                       prefetch_factor=4 if workers else None)


# ---- depthmask -----------------------------------------------------------------------------------------
def loader_depthmask(data: Path, batch: int, workers: int, count: int):
    from training.data import DepthMaskDataset, make_loader

    dataset = DepthMaskDataset(data, "all")
    dataset.indices = dataset.indices[:count]  # the samples the peers hold
    loader = make_loader(dataset, batch_size=batch, shuffle=True, workers=workers)
    loader.sampler.limit = count
    return loader


def write_depthmask(source: Source, out: Path, data: Path) -> dict[str, Any]:
    """depthmask's writer is its build: the same options as the source dataset, the first N samples, one
    worker (the peers' writers run in one process too); the rendering of the scene assets, which a build does
    once before its first sample, is timed apart and left out."""
    from pipeline.build import assets_for_build, build_dataset
    from pipeline.options import BuildOptions

    options = BuildOptions(output=out, limit=source.count, size=source.size, workers=1)
    t0 = time.perf_counter()
    assets_for_build(options)
    assets_s = time.perf_counter() - t0
    summary = build_dataset(options, progress=False, log=lambda m: None)
    return {"assets_s": assets_s, "build_s": summary.seconds}


# ---- one measurement, in its own process ------------------------------------------------------------------
def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def role_write(args: argparse.Namespace) -> dict[str, Any]:
    source = Source(args.cache)
    out = Path(args.target)
    shutil.rmtree(out, ignore_errors=True)
    if args.system != "litdata":  # litdata's optimize makes its output folder itself
        out.mkdir(parents=True)
    t0 = time.perf_counter()
    extra: dict[str, Any] = {}
    if args.system == "webdataset":
        write_webdataset(source, out)
    elif args.system == "litdata":
        write_litdata(source, out, args.cache)
    elif args.system == "mds":
        write_mds(source, out)
    elif args.system == "hf":
        write_hf(source, out, args.cache)
    elif args.system == "depthmask":
        extra = write_depthmask(source, out, args.data)
    seconds = time.perf_counter() - t0
    if "assets_s" in extra:
        seconds -= extra["assets_s"]  # the build renders the assets once more; the timed load above
    return {"system": args.system, "write_s": seconds, "write_samples_per_s": source.count / seconds,
            "bytes": folder_bytes(out), "samples": source.count, **extra}


def make_loader_for(system: str, args: argparse.Namespace, count: int):
    if system == "depthmask":
        return loader_depthmask(args.data, args.batch_size, args.workers, count)
    return globals()[f"loader_{system}"](Path(args.target), args.batch_size, args.workers)


def check_batch(batch: dict[str, Any], source: Source, tally: dict[str, int]) -> None:
    """Mask and depth against depthmask's decode; images against OpenCV's decode of the same JPEG bytes."""
    import cv2

    idx = batch["index"].numpy()
    mask = batch["mask"].numpy()[:, 0]
    depth = batch["depth"].numpy()[:, 0]
    for j, i in enumerate(idx):
        tally["samples"] += 1
        tally["mask_equal"] += int(mask.dtype == np.uint8 and np.array_equal(mask[j], source.mask[i]))
        tally["depth_equal"] += int(depth.dtype == np.uint16 and np.array_equal(depth[j], source.depth[i]))
        for key, data in (("bg", source.bg_jpeg(i)), ("fg_bg", source.fg_jpeg(i))):
            ref = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            got = batch[key][j].permute(1, 2, 0).numpy()
            diff = int(np.abs(got.astype(np.int16) - ref.astype(np.int16)).max()) if got.shape == ref.shape else 255
            tally[f"{key}_equal"] += int(diff == 0)
            tally[f"{key}_max_diff"] = max(tally[f"{key}_max_diff"], diff)


def role_read(args: argparse.Namespace) -> dict[str, Any]:
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    source = Source(args.cache)
    t0 = time.perf_counter()
    loader = make_loader_for(args.system, args, source.count)
    it = iter(loader)
    first = next(it)
    first_s = time.perf_counter() - t0
    shapes = {k: (tuple(v.shape), str(v.dtype)) for k, v in first.items()}
    count, seen = 0, [first["index"].numpy()]
    t1 = time.perf_counter()
    for batch in it:
        count += int(batch["bg"].shape[0])
        seen.append(batch["index"].numpy())
    read_s = time.perf_counter() - t1
    del it, loader
    seen_all = np.concatenate(seen)
    result = {"system": args.system, "read_samples_per_s": count / read_s, "first_batch_s": first_s,
              "delivered": int(seen_all.size), "distinct": int(np.unique(seen_all).size), "shapes": shapes}
    if args.verify:
        tally = {k: 0 for k in ("samples", "mask_equal", "depth_equal", "bg_equal", "fg_bg_equal", "bg_max_diff",
                                "fg_bg_max_diff")}
        for batch in make_loader_for(args.system, args, source.count):
            check_batch(batch, source, tally)
        result["check"] = tally
    return result


def run_role(system: str, role: str, python: str, args: argparse.Namespace, verify: bool = False) -> dict[str, Any]:
    cmd = [python, str(Path(__file__).resolve()), "--role", role, "--system", system, "--cache", str(args.cache),
           "--target", str(args.scratch / system), "--batch-size", str(args.batch_size), "--workers", str(args.workers),
           str(args.data)]
    if verify:
        cmd.append("--verify")
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"error: {system} {role} failed:\n{tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def interpreters(args: argparse.Namespace) -> dict[str, str]:
    """Each system's Python: the peers' venvs (streaming's own, for its numpy pin), depthmask's this one."""
    out = {}
    for system in args.systems:
        if system == "depthmask":
            out[system] = sys.executable
        else:
            out[system] = str(args.mds_python if system == "mds" else args.peer_python)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write-rounds", type=int, default=1,
                        help="writes per system (each a full write of --samples); reads are --rounds")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--scratch", type=Path, default=Path("out/peers"))
    parser.add_argument("--peer-python", type=Path, default=Path("out/peers-venv/bin/python"))
    parser.add_argument("--mds-python", type=Path, default=Path("out/peers-venv-mds/bin/python"))
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    # one measurement in a child process
    parser.add_argument("--role", choices=("write", "read"), help=argparse.SUPPRESS)
    parser.add_argument("--system", help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--verify", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        fn = role_write if args.role == "write" else role_read
        print(json.dumps(fn(args), default=str))
        return
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in args.systems if s not in SYSTEMS]
    if unknown or "depthmask" not in args.systems:
        raise SystemExit(f"error: --systems: expected depthmask plus any of {', '.join(PEERS)}, got {args.systems}")
    pythons = interpreters(args)
    for system, python in pythons.items():
        if not Path(python).exists():
            raise SystemExit(f"error: {system}: interpreter {python} does not exist (see the set-up in --help)")
    args.scratch.mkdir(parents=True, exist_ok=True)
    args.cache = args.scratch / f"source-{args.samples}"
    if not (args.cache / "meta.json").exists():
        t0 = time.perf_counter()
        build_cache(args.data, args.samples, args.cache)
        print(f"decoded {args.samples} samples of {args.data} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
          f"{args.workers} workers, batch {args.batch_size}, {args.samples} samples, {args.rounds} rounds",
          flush=True)
    writes: dict[str, list[dict[str, Any]]] = {s: [] for s in args.systems}
    reads: dict[str, list[dict[str, Any]]] = {s: [] for s in args.systems}
    checks: dict[str, dict[str, Any]] = {}
    order = list(args.systems)
    for r in range(max(args.rounds, args.write_rounds)):
        for system in order if r % 2 == 0 else order[::-1]:
            if r < args.write_rounds:
                w = run_role(system, "write", pythons[system], args)
                writes[system].append(w)
                print(f"  round {r + 1} {system:10s} write {w['write_samples_per_s']:8.0f} samples/s  "
                      f"{w['bytes'] / w['samples'] / 1024:6.2f} KB/sample", file=sys.stderr, flush=True)
            if r < args.rounds:
                x = run_role(system, "read", pythons[system], args, verify=system not in checks)
                if "check" in x:
                    checks[system] = x.pop("check")
                reads[system].append(x)
                print(f"  round {r + 1} {system:10s} read  {x['read_samples_per_s']:8.0f} samples/s  first batch "
                      f"{x['first_batch_s']:.2f} s  load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
        order = order[1:] + order[:1]  # a different system goes first each round, too
    rows = summarise(args, writes, reads, checks)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "writes": writes, "reads": reads}, indent=1, default=str))


def summarise(args, writes, reads, checks) -> list[dict[str, Any]]:
    base_read = {r: x["read_samples_per_s"] for r, x in enumerate(reads["depthmask"])}
    rows = []
    for system in args.systems:
        ratios = [x["read_samples_per_s"] / base_read[r] for r, x in enumerate(reads[system])]
        w = writes[system]
        check = checks.get(system, {})
        n = max(check.get("samples", 0), 1)
        rows.append({
            "system": system, "label": LABELS[system],
            "write_samples_per_s": statistics.median(x["write_samples_per_s"] for x in w),
            "kb_per_sample": statistics.median(x["bytes"] / x["samples"] for x in w) / 1024,
            "read_samples_per_s": statistics.median(x["read_samples_per_s"] for x in reads[system]),
            "read_rounds": [round(x["read_samples_per_s"]) for x in reads[system]],
            "read_ratio_to_depthmask": statistics.median(ratios),
            "first_batch_s": statistics.median(x["first_batch_s"] for x in reads[system]),
            "delivered": reads[system][0]["delivered"], "distinct": reads[system][0]["distinct"],
            "mask_depth_equal": check.get("mask_equal") == check.get("samples") == check.get("depth_equal") and n > 1,
            "images_equal_fraction": (check.get("bg_equal", 0) + check.get("fg_bg_equal", 0)) / (2 * n),
            "image_max_diff": max(check.get("bg_max_diff", 0), check.get("fg_bg_max_diff", 0)),
            "checked": check.get("samples", 0),
        })
    dm = rows[0]
    for row in rows:
        row["kb_ratio_to_depthmask"] = row["kb_per_sample"] / dm["kb_per_sample"]
        row["write_ratio_to_depthmask"] = row["write_samples_per_s"] / dm["write_samples_per_s"]
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print("| system | write samples/s | KB/sample (x depthmask) | read samples/s (rounds) | read x depthmask | "
          "first batch s | mask+depth equal | images equal (max diff) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} | {r['write_samples_per_s']:,.0f} | {r['kb_per_sample']:.2f} "
              f"({r['kb_ratio_to_depthmask']:.2f}x) | {r['read_samples_per_s']:,.0f} "
              f"({' / '.join(f'{x:,}' for x in r['read_rounds'])}) | {r['read_ratio_to_depthmask']:.2f}x | "
              f"{r['first_batch_s']:.2f} | {'yes' if r['mask_depth_equal'] else 'NO'} ({r['checked']:,} checked) | "
              f"{r['images_equal_fraction']:.1%} ({r['image_max_diff']}) |")


if __name__ == "__main__":
    main()

"""`dm-stats`: describe a dataset from its manifest, and `--verify` it by re-reading every record.

Verification runs each shard in its own short-lived process, so a shard damaged badly enough to
crash the LMDB reader is reported as damaged instead of taking the whole check down.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import lmdb
import numpy as np

from .codecs import DecodeError, codecs_from_manifest
from .errors import DepthmaskError
from .procs import worker_context
from .format import BACKGROUNDS_NAME, decode_key, payload_crc32, read_manifest, unpack_record
from .plan import SPLIT_NAMES, SamplePlan, Split
from .shards import ShardHasher, close_readonly, open_readonly
from .stats import ChannelSums, StatsAccumulator, image_sums, summarise

_FIELD_LABELS = {"bg": "background", "fg_bg": "composite", "mask": "mask", "depth": "depth"}


def check_shard_files(root: Path, manifest: dict[str, Any]) -> None:
    """Cheap structural check: every shard present, of the recorded size, openable, with the recorded
    number of records. A truncated or replaced shard is named here without a full --verify."""
    for entry in manifest["shards"] + [manifest["backgrounds"]]:
        path = root / entry["path"]
        if not path.is_file():
            raise DepthmaskError(f"{path}: shard file is missing")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise DepthmaskError(f"{path}: {size:,} bytes on disk but the manifest records {entry['bytes']:,} "
                                 "(truncated or replaced?); run dm-stats --verify for details")
        env = open_readonly(path)
        try:
            entries = env.stat()["entries"]
        except lmdb.Error as exc:
            raise DepthmaskError(f"{path}: not a readable LMDB shard: {exc}") from None
        finally:
            close_readonly(path)
        if entries != entry["records"]:
            raise DepthmaskError(f"{path}: holds {entries} records but the manifest records {entry['records']}")


def describe_dataset(root: str | Path) -> dict[str, Any]:
    """The facts dm-stats prints, as plain data (also its --json output)."""
    root = Path(root)
    manifest = read_manifest(root)
    check_shard_files(root, manifest)
    fields = manifest["fields"]
    h, w = manifest["image_size"]
    sizes = manifest["sizes"]
    stats = manifest["stats"]["all"]
    n = manifest["sample_count"]
    items = []
    for name, count, nbytes, channels in (
        ("bg", manifest["backgrounds"]["records"], manifest["backgrounds"]["bytes"], 3),
        ("fg_bg", n, sizes["fg_bg"], 3),
        ("mask", n, sizes["mask"], 1),
        ("depth", n, sizes["depth"], 1),
    ):
        items.append({"item": name, "type": _codec_label(fields[name]), "count": count,
                      "image_size": [h, w, channels], "bytes": nbytes,
                      "mean": stats[name]["mean"], "std": stats[name]["std"]})
    return {
        "path": str(root),
        "format": f"{manifest['format']} v{manifest['format_version']}",
        "samples": n,
        "shards": len(manifest["shards"]),
        "bytes_on_disk": sizes["total_on_disk"],
        "kb_per_sample": sizes["total_on_disk"] / 1024 / max(n, 1),
        "split_counts": manifest["split"]["counts"],
        "val_backgrounds": manifest["split"]["val_backgrounds"],
        "val_foregrounds": manifest["split"]["val_foregrounds"],
        "depth": manifest["depth"],
        "seed": manifest["build"]["seed"],
        "items": items,
        "stats_by_split": {k: {f: {"mean": v[f]["mean"], "std": v[f]["std"]} for f in v}
                           for k, v in manifest["stats"].items()},
    }


def _codec_label(description: dict[str, Any]) -> str:
    if description["codec"] == "jpeg":
        return f"JPEG q{description['quality']}"
    return f"PNG {description['bit_depth']}-bit"


def format_table(info: dict[str, Any]) -> str:
    header = ("item", "type", "count", "image size", "size on disk", "mean", "std")
    rows = [header]
    for it in info["items"]:
        rows.append((it["item"], it["type"], f"{it['count']:,}", "x".join(map(str, it["image_size"])),
                     human_bytes(it["bytes"]), _floats(it["mean"]), _floats(it["std"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * wd for wd in widths))
    counts = info["split_counts"]
    depth = info["depth"]
    lines += [
        "",
        f"dataset      {info['path']} ({info['format']}, seed {info['seed']})",
        f"samples      {info['samples']:,} in {info['shards']} shard(s); {human_bytes(info['bytes_on_disk'])} on disk, "
        f"{info['kb_per_sample']:.2f} KB/sample",
        f"splits       train {counts['train']:,}  val {counts['val']:,}  mixed (in neither) {counts['mixed']:,}; "
        f"held out: {len(info['val_backgrounds'])} backgrounds, {len(info['val_foregrounds'])} foregrounds",
        "depth        " + describe_depth(depth),
        "statistics   per channel (RGB order), on the [0, 1] scale, exact over the stored (decoded) data",
    ]
    return "\n".join(lines)


def describe_depth(depth: dict) -> str:
    if "far_m" in depth:
        return f"{depth['kind']}, normalised = z / {depth['far_m']:g} m (near {depth['near_m']:g} m), sky = 1.0"
    return f"{depth['kind']} from {depth.get('source', '?')}; {depth.get('normalisation', '')}"


def _floats(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.4f}" for v in values) + "]"


def human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


# ---- --verify ------------------------------------------------------------------------------------
@dataclass
class VerifyReport:
    records: int = 0
    shards: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_dataset(root: str | Path, *, workers: int = 0,
                   progress: Callable[[int], None] | None = None) -> VerifyReport:
    """Re-read every record: keys in place, records well formed, payload checksums, every image
    decodable at the right size, shard content hashes, and the statistics recomputed exactly."""
    root = Path(root)
    manifest = read_manifest(root)
    report = VerifyReport(shards=len(manifest["shards"]))
    bg_sums, bg_problems = _background_sums(root, manifest)
    report.problems += bg_problems
    if bg_problems:
        return report
    acc = StatsAccumulator()
    tasks = [(root, manifest, entry, bg_sums) for entry in manifest["shards"]]
    for entry, result in _run_isolated(_verify_shard, tasks, workers or os.cpu_count() or 1):
        if result is None:
            report.problems.append(f"{entry['path']}: reading the shard crashed the reader (corrupted pages)")
            continue
        report.records += result["records"]
        report.problems += result["problems"]
        acc.merge(StatsAccumulator.from_json(result["stats"]))
        if progress:
            progress(result["records"])
    if not report.problems:
        report.problems += _compare_stats(manifest, acc)
    return report


def _background_sums(root: Path, manifest: dict[str, Any]) -> tuple[list[ChannelSums], list[str]]:
    path = root / BACKGROUNDS_NAME
    codecs = codecs_from_manifest(manifest["fields"])
    hasher, sums, problems = ShardHasher(), [], []
    h, w = manifest["image_size"]
    try:
        env = open_readonly(path)
        with env.begin(buffers=False) as txn:
            for key, value in txn.cursor():
                hasher.update(key, value)
                record = unpack_record(value)
                image = codecs.fg_bg.decode(record["image"])
                if image.shape != (h, w, 3):
                    problems.append(f"{BACKGROUNDS_NAME} key {decode_key(key)}: image is {image.shape}")
                s, q = image_sums(image)
                cs = ChannelSums(3)
                cs.add(s, q, h * w)
                sums.append(cs)
    except (lmdb.Error, ValueError, KeyError, DepthmaskError) as exc:
        return [], [f"{BACKGROUNDS_NAME}: unreadable: {exc}"]
    finally:
        close_readonly(path)
    if hasher.hexdigest() != manifest["backgrounds"]["sha256"]:
        problems.append(f"{BACKGROUNDS_NAME}: content hash differs from the manifest")
    return sums, problems


def _background_depths(root: Path, codecs: Any) -> list[np.ndarray]:
    """The stored background depths (delta-coded sample depths are relative to them)."""
    path = root / BACKGROUNDS_NAME
    with open_readonly(path).begin(buffers=False) as txn:
        return [codecs.background_depth.decode(unpack_record(value)["depth"]) for _, value in txn.cursor()]


def _verify_shard(root: Path, manifest: dict[str, Any], entry: dict[str, Any],
                  bg_sums: list[ChannelSums]) -> dict[str, Any]:
    path = root / entry["path"]
    name = entry["path"]
    codecs = codecs_from_manifest(manifest["fields"])
    p = manifest["plan"]
    plan = SamplePlan(p["backgrounds"], p["foregrounds"], p["positions"], p["flip"], p["limit"])
    split = Split(tuple(manifest["split"]["val_backgrounds"]), tuple(manifest["split"]["val_foregrounds"]))
    h, w = manifest["image_size"]
    hasher, acc, problems = ShardHasher(), StatsAccumulator(), []
    expected = entry["start"]
    bg_depths = _background_depths(root, codecs)
    try:
        env = open_readonly(path)
        with env.begin(buffers=False) as txn:
            for key, value in txn.cursor():
                hasher.update(key, value)
                try:
                    index = decode_key(key)
                except ValueError as exc:
                    problems.append(f"{name}: malformed key {key!r}: {exc}")
                    continue
                if index != expected:
                    problems.append(f"{name} key {index}: out of place (expected key {expected})")
                expected = index + 1
                problems += _check_record(name, index, value, codecs, plan, split, (h, w), acc, bg_sums, bg_depths)
    except DepthmaskError as exc:
        problems.append(str(exc))
    except lmdb.Error as exc:
        problems.append(f"{name}: shard is corrupted: {exc}")
    if expected != entry["stop"] and not problems:
        problems.append(f"{name}: records end at key {expected - 1}, expected {entry['stop'] - 1}")
    if hasher.records != entry["records"]:
        problems.append(f"{name}: {hasher.records} records, the manifest records {entry['records']}")
    if hasher.hexdigest() != entry["sha256"]:
        problems.append(f"{name}: content hash differs from the manifest")
    return {"records": hasher.records, "problems": problems, "stats": acc.to_json()}


def _check_record(name: str, index: int, value: bytes, codecs: Any, plan: SamplePlan, split: Split,
                  size: tuple[int, int], acc: StatsAccumulator, bg_sums: list[ChannelSums],
                  bg_depths: list[np.ndarray]) -> list[str]:
    where = f"{name} key {index}"
    try:
        record = unpack_record(value)
        payload = (record["fg_bg"], record["mask"], record["depth"])
        bg, fg, flip = int(record["bg"]), int(record["fg"]), bool(record["flip"])
    except (ValueError, KeyError, TypeError) as exc:
        return [f"{where}: malformed record: {exc}"]
    problems = []
    if payload_crc32(*payload) != record.get("crc32"):
        problems.append(f"{where}: payload checksum mismatch (damaged bytes)")
    want_bg, want_fg, _, want_flip = (int(v) for v in plan.locate(index))
    if (bg, fg, flip) != (want_bg, want_fg, bool(want_flip)):
        problems.append(f"{where}: holds bg {bg} fg {fg} flip {flip}, the plan says bg {want_bg} fg {want_fg}")
    try:
        fg_bg = codecs.fg_bg.decode(payload[0])
        mask = codecs.mask.decode(payload[1])
        depth = codecs.depth.decode(payload[2], bg_depths[bg] if 0 <= bg < len(bg_depths) else None,
                                    (int(record["x"]), int(record["y"])))
    except (DecodeError, KeyError, TypeError, ValueError) as exc:
        return problems + [f"{where}: {exc}"]
    for label, image in (("fg_bg", fg_bg), ("mask", mask), ("depth", depth)):
        if image.shape[:2] != size:
            problems.append(f"{where}: {label} is {image.shape[1]}x{image.shape[0]}, expected {size[1]}x{size[0]}")
    if problems:
        return problems
    split_name = SPLIT_NAMES[int(split.assign(np.array([bg]), np.array([fg]))[0])]
    acc.add_image(split_name, "fg_bg", fg_bg)
    acc.add_image(split_name, "mask", mask)
    acc.add_image(split_name, "depth", depth)
    if 0 <= bg < len(bg_sums):
        acc.add_sums(split_name, "bg", bg_sums[bg])
    return []


def _compare_stats(manifest: dict[str, Any], acc: StatsAccumulator) -> list[str]:
    problems = []
    recomputed = {"all": summarise(acc.total())}
    for split in ("train", "val"):
        if split in manifest["stats"]:
            recomputed[split] = summarise(acc.total((split,)))
    for split, fields in recomputed.items():
        for name, values in fields.items():
            stored = manifest["stats"].get(split, {}).get(name, {}).get("exact_sums_stored_order")
            if stored != values["exact_sums_stored_order"]:
                problems.append(f"statistics of {name} ({split}) differ from the manifest")
    return problems


def _run_isolated(fn: Callable[..., dict[str, Any]], tasks: list[tuple], workers: int):
    """Run fn(*task) in one forked process per task, `workers` at a time; yield (task[2], result or
    None when the process died without answering)."""
    ctx = worker_context()
    running: list[tuple[Any, Any, Any]] = []
    queue = list(tasks)
    while queue or running:
        while queue and len(running) < workers:
            task = queue.pop(0)
            reader, writer = ctx.Pipe(duplex=False)
            process = ctx.Process(target=_child, args=(fn, task, writer), daemon=True)
            process.start()
            writer.close()
            running.append((task, process, reader))
        task, process, reader = running.pop(0)
        try:
            result = reader.recv()
        except EOFError:
            result = None
        process.join()
        reader.close()
        yield task[2], result


def _child(fn: Callable[..., dict[str, Any]], task: tuple, writer: Any) -> None:
    import cv2

    cv2.setNumThreads(1)
    writer.send(fn(*task))
    writer.close()

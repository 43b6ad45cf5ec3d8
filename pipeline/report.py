"""`dm-stats`: describe a dataset from its manifest, and `--verify` it by re-reading every record.

Verification runs each shard in its own short-lived process, so a shard damaged badly enough to
crash the LMDB reader is reported as damaged instead of taking the whole check down.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import lmdb
import numpy as np

from .codecs import DecodeError, codecs_from_manifest
from .errors import DepthmaskError
from .procs import worker_context
from .recipe_verify import describe_recipes, verify_recipes
from .recipes import is_recipe_dataset
from .format import (BACKGROUND_RECORD, RecordError, decode_key, manifest_summary, payload_crc32, read_manifest,
                     unpack_record)
from .manifest import FIELD_BYTES, ShardTotals, manifest_plan, manifest_split, stats_problems
from .plan import SPLIT_NAMES, SamplePlan, Split, manifest_counts
from .shards import ShardHasher, check_file_size, close_readonly, open_readonly
from .stats import ChannelSums, StatsAccumulator

_FIELD_LABELS = {"bg": "background", "fg_bg": "composite", "mask": "mask", "depth": "depth"}


def dataset_files(root: Path, manifest: dict[str, Any]) -> list[tuple[Path, dict[str, Any]]]:
    """(path, manifest entry) of every LMDB file of a dataset: the shards, then the backgrounds file."""
    return [(root / entry["path"], entry) for entry in manifest["shards"] + [manifest["backgrounds"]]]


def check_shard_files(root: Path, manifest: dict[str, Any]) -> None:
    """Cheap structural check: every shard present, of the recorded size, openable, with the recorded
    number of records. A truncated or replaced shard is named here without a full --verify."""
    for path, entry in dataset_files(root, manifest):
        check_file_size(path, entry["bytes"])
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
    if is_recipe_dataset(root):
        return describe_recipes(root)
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
    return manifest_summary(root, manifest, items)


def _codec_label(description: dict[str, Any]) -> str:
    if description["codec"] == "jpeg":
        return f"JPEG q{description.get('quality', '?')}"
    return f"PNG {description.get('bit_depth', '?')}-bit"


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
        (f"samples      {info['samples']:,} in {info['shards']} shard(s); " if "assets" not in info else
         f"samples      {info['samples']:,} rebuilt from {info['assets']['backgrounds']:,} backgrounds and "
         f"{info['assets']['foregrounds']:,} foregrounds (recipes, fg_bg statistics before JPEG); ")
        + f"{human_bytes(info['bytes_on_disk'])} on disk, {info['kb_per_sample']:.2f} KB/sample",
        f"splits       train {counts['train']:,}  val {counts['val']:,}  "
        + (f"unseen_bg {counts['unseen_bg']:,}  unseen_fg {counts['unseen_fg']:,}; " if "unseen_bg" in counts
           else f"mixed (in neither) {counts['mixed']:,}; ")
        + f"held out: {len(info['val_backgrounds'])} backgrounds, {len(info['val_foregrounds'])} foregrounds",
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
    """Check everything a reader trusts. Re-read every record: keys in place, records well formed, payload
    checksums, every image decodable at the right size, shard content hashes; recompute every derived
    field of the manifest (statistics with their sums, counts, split, sizes, shard ranges and paths, codecs,
    depth semantics) and compare it with what the manifest says."""
    root = Path(root)
    if is_recipe_dataset(root):
        return verify_recipes(root, workers=workers or os.cpu_count() or 1)
    manifest = read_manifest(root)  # keys, types, paths inside the folder, self-consistency
    report = VerifyReport(shards=len(manifest["shards"]))
    report.problems += check_derived_fields(manifest)
    damaged = set()
    for path, entry in dataset_files(root, manifest):
        try:
            check_file_size(path, entry["bytes"])  # before mapping: reading past the end is a SIGBUS
        except DepthmaskError as exc:
            report.problems.append(str(exc))
            damaged.add(entry["path"])
    if manifest["backgrounds"]["path"] in damaged:
        return report
    bg_sums, bg_problems = _background_sums(root, manifest)
    report.problems += bg_problems
    if bg_problems:
        return report
    totals = ShardTotals()
    tasks = [(root, manifest, entry, bg_sums) for entry in manifest["shards"] if entry["path"] not in damaged]
    for entry, result in _run_isolated(_verify_shard, tasks, workers or os.cpu_count() or 1):
        if result is None:
            report.problems.append(f"{entry['path']}: reading the shard crashed the reader (corrupted pages)")
            continue
        report.records += result["records"]
        report.problems += result["problems"]
        totals.add(result)
        if progress:
            progress(result["records"])
    if not report.problems:  # totals over every record: only meaningful when every record was read
        report.problems += stats_problems(manifest, totals.acc)
        report.problems += _compare_totals(manifest, totals)
    return report


def _differs(what: str, stored: Any, expected: Any) -> list[str]:
    if stored == expected:
        return []
    return [f"manifest.json: {what} is {json.dumps(stored)[:80]}, but {json.dumps(expected)[:80]} follows from "
            "the build's options"]


def check_derived_fields(manifest: dict[str, Any]) -> list[str]:
    """Fields that follow from the build's options and the assets, recomputed: plan, counts, image size,
    split lists and counts, shard ranges and paths, codecs, depth semantics."""
    from .codecs import default_codecs
    from .format import BACKGROUNDS_NAME, SHARDS_DIR, shard_name
    from .plan import plan_split
    from .resume import shard_ranges

    content, plan_entry = manifest["build"]["content"], manifest["plan"]
    problems: list[str] = []
    try:
        for key in ("backgrounds", "foregrounds", "positions", "flip", "limit"):
            if content.get(key) is not None or key == "limit":
                problems += _differs(f"plan.{key}", plan_entry[key], content.get(key))
        plan = manifest_plan(manifest)
        problems += _differs("backgrounds.records", manifest["backgrounds"]["records"], plan.used_backgrounds)
        problems += _differs("sample_count", manifest["sample_count"], plan.count)
        problems += _differs("image_size", manifest["image_size"], [content["size"], content["size"]])
        problems += _differs("build.seed", manifest["build"]["seed"], content["seed"])
        problems += _differs("build.shard_size", manifest["build"]["shard_size"], content["shard_size"])
        split = plan_split(plan, content["val_fraction"], content["seed"])
        problems += _differs("split.val_backgrounds", manifest["split"]["val_backgrounds"], list(split.val_backgrounds))
        problems += _differs("split.val_foregrounds", manifest["split"]["val_foregrounds"], list(split.val_foregrounds))
        counts = manifest_counts(split.counts(plan))
        problems += _differs("split.counts", manifest["split"]["counts"], counts)
        ranges = [{"path": f"{SHARDS_DIR}/{shard_name(i)}", "start": a, "stop": b, "records": b - a}
                  for i, (a, b) in enumerate(shard_ranges(plan.count, content["shard_size"]))]
        problems += _differs("shards (paths and ranges)",
                             [{k: s[k] for k in ("path", "start", "stop", "records")} for s in manifest["shards"]],
                             ranges)
        problems += _differs("backgrounds.path", manifest["backgrounds"]["path"], BACKGROUNDS_NAME)
        problems += _differs("fields", manifest["fields"],
                             default_codecs(content["jpeg_quality"], content["depth_storage"]).describe())
        problems += _check_depth_semantics(manifest["depth"], content)
        for split_name in SPLIT_NAMES:
            if (split_name in manifest["stats"]) != (counts[split_name] > 0):
                problems.append(f"manifest.json: stats.{split_name} is {'present' if split_name in manifest['stats'] else 'absent'} "
                                f"but split {split_name} holds {counts[split_name]} samples")
    except (KeyError, TypeError, ValueError, DepthmaskError) as exc:
        problems.append(f"manifest.json: the build's options (build.content) are unusable: {type(exc).__name__}: {exc}")
    return problems


def _check_depth_semantics(depth: dict[str, Any], content: dict[str, Any]) -> list[str]:
    """Procedural scenes: z-depth over [0, FAR_M] metres; user depth: the `far` the build was given."""
    inputs = content.get("inputs")
    procedural = inputs is None or (inputs.get("backgrounds_from") == "procedural"
                                    and not (inputs.get("depth_model") and inputs.get("depth_mode") == "per-sample"))
    if procedural:
        from .scenes.backgrounds import FAR_M

        return (_differs("depth.kind", depth.get("kind"), "z-depth") + _differs("depth.far_m", depth.get("far_m"), FAR_M)
                + _differs("depth.near_m", depth.get("near_m"), 0.0))
    source = inputs.get("bg_depth") or inputs.get("depth_model") or {}
    far = source.get("far")
    return (_differs("depth.far", depth.get("far"), far)
            + _differs("depth.kind", depth.get("kind"), "relative" if far is None else "scaled"))


def _compare_totals(manifest: dict[str, Any], totals: ShardTotals) -> list[str]:
    sizes = manifest["sizes"]
    # (each shard's and the backgrounds file's bytes are checked against the file already)
    expected = totals.sizes(manifest["shards"], manifest["backgrounds"]["bytes"])
    problems = [f"manifest.json: sizes.{k} is {sizes[k]:,}, the dataset holds {v:,}" for k, v in expected.items()
                if sizes[k] != v]
    split_counts = manifest_counts(totals.split_counts)
    if split_counts != manifest["split"]["counts"]:
        problems.append(f"manifest.json: split.counts is {manifest['split']['counts']}, the records give {split_counts}")
    return problems


def _background_sums(root: Path, manifest: dict[str, Any]) -> tuple[list[ChannelSums], list[str]]:
    entry = manifest["backgrounds"]
    path, name = root / entry["path"], entry["path"]
    codecs = codecs_from_manifest(manifest["fields"])
    hasher, sums, problems = ShardHasher(), [], []
    h, w = manifest["image_size"]
    try:
        env = open_readonly(path)
        with env.begin(buffers=False) as txn:
            for key, value in txn.cursor():
                hasher.update(key, value)
                where = f"{name} key {_key_label(key)}"
                try:
                    record = unpack_record(value, BACKGROUND_RECORD)
                    image = codecs.fg_bg.decode(record["image"])
                    depth = codecs.background_depth.decode(record["depth"])
                except (RecordError, DecodeError) as exc:
                    problems.append(f"{where}: malformed record: {exc}")
                    continue
                for label, array in (("image", image), ("depth", depth)):
                    if array.shape[:2] != (h, w):
                        problems.append(f"{where}: {label} is {array.shape[1]}x{array.shape[0]}, expected {w}x{h}")
                sums.append(ChannelSums.of_image(image))
    except (lmdb.Error, DepthmaskError) as exc:
        return [], [f"{name}: unreadable: {exc}"]
    finally:
        close_readonly(path)
    if hasher.records != entry["records"]:
        problems.append(f"{name}: {hasher.records} records, the manifest records {entry['records']}")
    if hasher.hexdigest() != entry["sha256"]:
        problems.append(f"{name}: content hash differs from the manifest")
    return sums, problems


def _key_label(key: bytes) -> str:
    try:
        return str(decode_key(key))
    except ValueError:
        return repr(key)


def _background_depths(root: Path, manifest: dict[str, Any], codecs: Any) -> list[np.ndarray]:
    """The stored background depths (delta-coded sample depths are relative to them); checked already."""
    path = root / manifest["backgrounds"]["path"]
    with open_readonly(path).begin(buffers=False) as txn:
        return [codecs.background_depth.decode(unpack_record(value, BACKGROUND_RECORD)["depth"])
                for _, value in txn.cursor()]


def _verify_shard(root: Path, manifest: dict[str, Any], entry: dict[str, Any],
                  bg_sums: list[ChannelSums]) -> dict[str, Any]:
    path = root / entry["path"]
    name = entry["path"]
    codecs = codecs_from_manifest(manifest["fields"])
    plan, split = manifest_plan(manifest), manifest_split(manifest)
    h, w = manifest["image_size"]
    hasher, acc, problems = ShardHasher(), StatsAccumulator(), []
    totals = {"field_bytes": {name: 0 for name in FIELD_BYTES}, "split_counts": {n: 0 for n in SPLIT_NAMES}}
    expected = entry["start"]
    bg_depths = _background_depths(root, manifest, codecs)
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
                try:
                    problems += _check_record(name, index, value, codecs, plan, split, (h, w), acc, bg_sums,
                                              bg_depths, totals)
                except Exception as exc:  # noqa: BLE001 - one record's surprise must not hide the others
                    problems.append(f"{name} key {index}: cannot be checked: {type(exc).__name__}: {exc}")
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
    return {"records": hasher.records, "problems": problems, "stats": acc.to_json(), **totals}


def _check_record(name: str, index: int, value: bytes, codecs: Any, plan: SamplePlan, split: Split,
                  size: tuple[int, int], acc: StatsAccumulator, bg_sums: list[ChannelSums],
                  bg_depths: list[np.ndarray], totals: dict[str, dict[str, int]]) -> list[str]:
    where = f"{name} key {index}"
    try:
        record = unpack_record(value)
    except RecordError as exc:
        return [f"{where}: malformed record: {exc}"]
    payload = (record["fg_bg"], record["mask"], record["depth"])
    bg, fg, flip = record["bg"], record["fg"], record["flip"]
    problems = []
    if payload_crc32(*payload) != record["crc32"]:
        problems.append(f"{where}: payload checksum mismatch (damaged bytes)")
    want_bg, want_fg, _, want_flip = (int(v) for v in plan.locate(index))
    if (bg, fg, flip) != (want_bg, want_fg, bool(want_flip)):
        problems.append(f"{where}: holds bg {bg} fg {fg} flip {flip}, the plan says bg {want_bg} fg {want_fg} "
                        f"flip {bool(want_flip)}")
    if not 0 <= bg < len(bg_depths):
        return problems + [f"{where}: malformed record: field 'bg' is {bg}, expected 0..{len(bg_depths) - 1}"]
    try:
        fg_bg = codecs.fg_bg.decode(payload[0])
        mask = codecs.mask.decode(payload[1])
        depth = codecs.depth.decode(payload[2], bg_depths[bg], (record["x"], record["y"]))
    except DecodeError as exc:
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
    acc.add_sums(split_name, "bg", bg_sums[bg])
    for label, data in zip(("fg_bg", "mask", "depth"), payload):
        totals["field_bytes"][label] += len(data)
    totals["split_counts"][split_name] += 1
    return []


def _run_isolated(fn: Callable[..., dict[str, Any]], tasks: list[tuple], workers: int):
    """Run fn(*task) in one worker process per task (started from the forkserver, see procs.py), `workers` at a time; yield (task[2], result or
    None when the process died without answering)."""
    ctx = worker_context(preload=(__name__,))
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
    """A failure of the check itself is one problem of this shard, never a traceback on the terminal."""
    import cv2

    cv2.setNumThreads(1)
    try:
        result = fn(*task)
    except Exception as exc:  # noqa: BLE001
        result = {"records": 0, "stats": {}, "field_bytes": {name: 0 for name in FIELD_BYTES},
                  "split_counts": {n: 0 for n in SPLIT_NAMES},
                  "problems": [f"{task[2]['path']}: the check failed: {type(exc).__name__}: {exc}"]}
    writer.send(result)
    writer.close()

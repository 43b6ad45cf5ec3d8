"""The on-disk contract: folder layout, keys, record packing, manifest I/O (see docs/format.md)."""
from __future__ import annotations

import hashlib
import json
import math
import os
import zlib
import struct
from pathlib import Path
from typing import Any

import msgpack

from .errors import DepthmaskError

FORMAT_NAME = "depthmask-lmdb"
FORMAT_VERSION = 1

MANIFEST_NAME = "manifest.json"
BUILD_STATE_NAME = "build.json"
LOCK_NAME = ".build.lock"
SHARDS_DIR = "shards"
BACKGROUNDS_NAME = "backgrounds.lmdb"

# Every field of a sample record and of a background record, with the msgpack type it must hold.
SAMPLE_RECORD: dict[str, type] = {"fg_bg": bytes, "mask": bytes, "depth": bytes, "bg": int, "fg": int, "flip": bool,
                                  "x": int, "y": int, "crc32": int}
BACKGROUND_RECORD: dict[str, type] = {"image": bytes, "depth": bytes}
RECORD_FIELDS = tuple(SAMPLE_RECORD)
_TYPE_NAMES = {bytes: "binary data", int: "an integer", bool: "true or false", str: "a string", float: "a number",
               list: "an array", dict: "a map", type(None): "nil",
               msgpack.Timestamp: "a msgpack extension type -1 (timestamp)"}  # decoded by msgpack itself, no ext_hook

_KEY = struct.Struct(">Q")


def encode_key(index: int) -> bytes:
    """Global sample index -> 8-byte big-endian key (so LMDB's byte order is index order)."""
    return _KEY.pack(index)


def decode_key(key: bytes) -> int:
    if len(key) != 8:
        raise ValueError(f"key of {len(key)} bytes, expected 8")
    return _KEY.unpack(key)[0]


def payload_crc32(fg_bg: bytes, mask: bytes, depth: bytes) -> int:
    """Per-record checksum of the image payloads, so verification can name the damaged key."""
    return zlib.crc32(depth, zlib.crc32(mask, zlib.crc32(fg_bg)))


def pack_record(record: dict[str, Any]) -> bytes:
    return msgpack.packb(record, use_bin_type=True)


class RecordError(ValueError):
    """A record that is not what the format says; the message says what is wrong (never empty)."""


def unpack_record(value: bytes, fields: dict[str, type] = SAMPLE_RECORD) -> dict[str, Any]:
    """Plain msgpack types only (no ext types, so nothing executable can hide in a record), and every field of
    `fields` present with its type: whatever the bytes, either a checked record or a RecordError."""
    try:
        record = msgpack.unpackb(value, raw=False, strict_map_key=True, ext_hook=_refuse_ext)
    except RecordError:
        raise
    except Exception as exc:  # noqa: BLE001 - msgpack raises many types (ExtraData, StackError, ...)
        raise RecordError(f"not valid msgpack ({_describe(exc)})") from None
    if not isinstance(record, dict):
        raise RecordError(f"holds {_type_name(record)}, expected a msgpack map")
    for name, kind in fields.items():
        if name not in record:
            raise RecordError(f"field {name!r} is missing")
        item = record[name]
        if not isinstance(item, kind) or (kind is int and isinstance(item, bool)):
            raise RecordError(f"field {name!r} holds {_type_name(item)}, expected {_TYPE_NAMES[kind]}")
    return record


def _type_name(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


_MSGPACK_ERRORS = {"StackError": "nested too deeply", "FormatError": "bytes that are not msgpack",
                   "ExtraData": "trailing bytes after the record"}


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    what = _MSGPACK_ERRORS.get(type(exc).__name__) or (text[0][:120] if text else "")
    return f"{type(exc).__name__}: {what}" if what else type(exc).__name__


def _refuse_ext(code: int, data: bytes) -> Any:
    raise RecordError(f"holds a msgpack extension type {code}; only plain types are allowed")


def shard_name(shard_id: int) -> str:
    return f"shard-{shard_id:05d}.lmdb"


def shard_path(root: Path, shard_id: int) -> Path:
    return Path(root) / SHARDS_DIR / shard_name(shard_id)


def shard_sidecar_path(root: Path, shard_id: int) -> Path:
    """Written after the shard is renamed into place: its presence marks the shard done."""
    return shard_path(root, shard_id).with_suffix(".json")


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write to a temporary name in the same folder, fsync, then rename over the target."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")  # as remove_stale_json_tmp expects
    data = json.dumps(obj, indent=1, sort_keys=True).encode()
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def remove_stale_json_tmp(path: Path) -> None:
    """Temporaries of `write_json_atomic(path, ...)` left by a process killed before its rename."""
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        stale.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_json(path: Path, what: str) -> Any:
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read())
    except FileNotFoundError:
        raise DepthmaskError(f"{path}: {what} is missing") from None
    except (OSError, ValueError) as exc:
        raise DepthmaskError(f"{path}: {what} is unreadable or not valid JSON ({exc})") from None


def read_manifest(root: Path) -> dict[str, Any]:
    """Load and check the manifest of a complete dataset; every failure is a one-line DepthmaskError."""
    root = Path(root)
    if not root.exists():
        raise DepthmaskError(f"{root}: dataset folder does not exist")
    if not root.is_dir():
        raise DepthmaskError(f"{root}: is a file, expected a dataset folder")
    path = root / MANIFEST_NAME
    if not path.exists():
        if (root / BUILD_STATE_NAME).exists():
            raise DepthmaskError(
                f"{root}: the build of this dataset did not finish (no {MANIFEST_NAME}); "
                "run the same dm-build-lmdb command again to resume it"
            )
        raise DepthmaskError(f"{root}: not a depthmask dataset (no {MANIFEST_NAME})")
    manifest = read_json(path, "manifest")
    check_format(manifest, path)
    check_manifest(manifest, path)
    check_dataset_paths(root, manifest, path)
    return manifest


def check_format(meta: Any, path: Path) -> None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise DepthmaskError(f"{path}: not a {FORMAT_NAME} manifest")
    version = meta.get("format_version")
    if meta.get("kind") == "recipes" and version != FORMAT_VERSION:  # pipeline.recipes.RECIPE_KIND (a newer format)
        raise DepthmaskError(
            f"{path}: format version {version!r} is not supported by a reader of stored samples: this is a recipe "
            "dataset (no stored samples); dm-train, dm-eval and dm-export-samples read it, or materialise it with "
            "dm-build-lmdb OUT --from-recipes DATASET"
        )
    if version != FORMAT_VERSION:
        raise DepthmaskError(
            f"{path}: format version {version!r} is not supported (this depthmask reads version "
            f"{FORMAT_VERSION}); rebuild the dataset with this version of dm-build-lmdb"
        )


# ---- what a reader trusts in a manifest --------------------------------------------------------
# A schema of the keys readers use: a type, a {key: schema} map ("key?" may be absent), or a one-item
# list [schema] for a list of any length. Checked before anything is opened, so a missing or mistyped
# key is one line naming the key, never a KeyError deep inside a reader.
_COUNT, _NUMBER, _TEXT, _FLAG = "a whole number >= 0", "a finite number", "a string", "true or false"
_SUMS = {"pixels": _TEXT, "sum": [_TEXT], "sum_sq": [_TEXT]}
_FIELD_STATS = {"mean": [_NUMBER], "std": [_NUMBER], "exact_sums_stored_order": _SUMS}
_SPLIT_STATS = {name: _FIELD_STATS for name in ("bg", "fg_bg", "mask", "depth")}
_FILE = {"path": _TEXT, "records": _COUNT, "sha256": _TEXT, "bytes": _COUNT}
MANIFEST_SCHEMA: dict[str, Any] = {
    "sample_count": _COUNT,
    "image_size": [_COUNT],
    "fields": {"fg_bg": {"codec": _TEXT, "quality?": _COUNT}, "bg": {"codec": _TEXT}, "mask": {"codec": _TEXT},
               "depth": {"codec": _TEXT, "transform?": _TEXT}, "bg_depth?": {"codec": _TEXT}},
    "depth": {"kind": _TEXT, "far_m?": _NUMBER, "near_m?": _NUMBER},
    "plan": {"backgrounds": _COUNT, "foregrounds": _COUNT, "positions": _COUNT, "flip": _FLAG, "limit": (_COUNT, None)},
    "split": {"val_backgrounds": [_COUNT], "val_foregrounds": [_COUNT],
              "counts": {"train": _COUNT, "val": _COUNT, "mixed": _COUNT}},
    "build": {"seed": _COUNT, "shard_size": _COUNT, "content": {}},
    "assets": {},
    "backgrounds": _FILE,
    "shards": [{**_FILE, "start": _COUNT, "stop": _COUNT}],
    "stats": {"all": _SPLIT_STATS, "train?": _SPLIT_STATS, "val?": _SPLIT_STATS},
    "sizes": {name: _COUNT for name in ("fg_bg", "mask", "depth", "backgrounds_file", "shards", "total_on_disk")},
}


def check_manifest(manifest: dict[str, Any], path: Path) -> None:
    """Every key a reader uses is present with the right type, and the manifest agrees with itself:
    contiguous shard ranges covering sample_count, and mean/std equal to what the exact sums give.
    (`dm-stats --verify` also recomputes every derived field from the data.)"""
    _check_schema(manifest, MANIFEST_SCHEMA, "", path)
    if len(manifest["image_size"]) != 2 or min(manifest["image_size"]) < 1:
        raise DepthmaskError(f"{path}: key image_size is {manifest['image_size']!r}, expected [height, width]")
    expected_start = 0
    for i, shard in enumerate(manifest["shards"]):
        start, stop, records = shard["start"], shard["stop"], shard["records"]
        if start != expected_start or stop < start or records != stop - start:
            raise DepthmaskError(f"{path}: key shards[{i}] covers samples {start}..{stop} with {records} records; "
                                 f"expected to start at {expected_start} and hold stop - start records")
        expected_start = stop
    if expected_start != manifest["sample_count"]:
        raise DepthmaskError(f"{path}: the shards hold {expected_start} samples but key sample_count is "
                             f"{manifest['sample_count']}")
    _check_stats_match_sums(manifest["stats"], path)


def _check_schema(value: Any, schema: Any, where: str, path: Path) -> None:
    if isinstance(schema, tuple):  # alternatives, e.g. (_COUNT, None)
        if value is None and None in schema:
            return
        schema = schema[0]
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise _mistyped(path, where, value, "a JSON object")
        for key, sub in schema.items():
            name = key.rstrip("?")
            if name not in value:
                if key.endswith("?"):
                    continue
                raise DepthmaskError(f"{path}: key {_join(where, name)} is missing")
            _check_schema(value[name], sub, _join(where, name), path)
    elif isinstance(schema, list):
        if not isinstance(value, list):
            raise _mistyped(path, where, value, "a JSON list")
        for i, item in enumerate(value):
            _check_schema(item, schema[0], f"{where}[{i}]", path)
    elif not _is(value, schema):
        raise _mistyped(path, where, value, schema)


def _is(value: Any, kind: str) -> bool:
    if kind == _COUNT:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if kind == _NUMBER:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind == _TEXT:
        return isinstance(value, str)
    return isinstance(value, bool)  # _FLAG


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _mistyped(path: Path, where: str, value: Any, expected: str) -> DepthmaskError:
    shown = json.dumps(value)[:60] if not isinstance(value, float) else repr(value)
    return DepthmaskError(f"{path}: key {where} is {shown}, expected {expected}")


def _check_stats_match_sums(stats: dict[str, Any], path: Path) -> None:
    from .stats import FIELDS, ChannelSums

    for split, fields in stats.items():
        _check_schema(fields, _SPLIT_STATS, f"stats.{split}", path)  # every split recorded, not only all/train/val
        for name, entry in fields.items():
            if name not in FIELDS:
                continue
            channels, maximum = FIELDS[name]
            where = f"stats.{split}.{name}"
            try:
                sums = ChannelSums.from_json(entry["exact_sums_stored_order"])
                valid = sums.channels == channels and len(sums.squares) == channels and sums.pixels > 0
                mean, std = sums.mean_std(maximum) if valid else ([], [])
            except (ValueError, TypeError):
                valid = False
            if not valid:
                raise DepthmaskError(f"{path}: key {where}.exact_sums_stored_order does not hold {channels} "
                                     "channel(s) of exact integer sums")
            if channels == 3:
                mean, std = mean[::-1], std[::-1]
            if entry["mean"] != mean or entry["std"] != std:
                raise DepthmaskError(f"{path}: key {where}.mean/std differs from what its exact sums give "
                                     "(edited manifest?)")


def check_relative_path(root: Path, relative: str, what: str, path: Path) -> Path:
    """`root / relative` for a path read from a manifest: refused when absolute, when it leaves `root` (..), or
    when a symbolic link on the way leads outside it; checked before anything is opened."""
    candidate = Path(relative)
    if not relative or candidate.is_absolute() or ".." in candidate.parts or "\\" in relative:
        raise DepthmaskError(f"{path}: key {what} is {relative!r}; a dataset path must be relative and stay "
                             "inside the dataset folder")
    full = Path(root) / candidate
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(full)]) != real_root:
        raise DepthmaskError(f"{path}: key {what} is {relative!r}, which leads outside the dataset folder "
                             "(through a symbolic link)")
    return full


def check_dataset_paths(root: Path, manifest: dict[str, Any], path: Path) -> None:
    check_relative_path(root, manifest["backgrounds"]["path"], "backgrounds.path", path)
    for i, shard in enumerate(manifest["shards"]):
        check_relative_path(root, shard["path"], f"shards[{i}].path", path)


def manifest_identity(root: Path) -> tuple[int, int, int, int] | None:
    """(device, inode, size, mtime) of the manifest: a dataset replaced (e.g. by dm-build-lmdb --overwrite,
    whose manifest is a new file) or removed has another identity, or none."""
    try:
        st = os.stat(Path(root) / MANIFEST_NAME)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def manifest_digest(root: Path) -> str | None:
    """sha256 of the manifest's bytes (it names every file's content hash, so it identifies the dataset)."""
    try:
        return hashlib.sha256((Path(root) / MANIFEST_NAME).read_bytes()).hexdigest()
    except OSError:
        return None


def manifest_summary(root: Path, manifest: dict[str, Any], items: list[dict[str, Any]]) -> dict[str, Any]:
    """What dm-stats prints of any dataset kind, from its manifest (the kind adds its own keys)."""
    sizes, n = manifest["sizes"], manifest["sample_count"]
    return {
        "path": str(root),
        "format": f"{manifest['format']} v{manifest['format_version']}",
        "samples": n,
        "shards": len(manifest.get("shards", [])),
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

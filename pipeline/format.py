"""The on-disk contract: folder layout, keys, record packing, manifest I/O (see docs/format.md)."""
from __future__ import annotations

import json
import zlib
import os
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

RECORD_FIELDS = ("fg_bg", "mask", "depth", "bg", "fg", "flip", "x", "y", "crc32")

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


def unpack_record(value: bytes) -> dict[str, Any]:
    """Plain msgpack types only: no ext types, so nothing executable can hide in a record."""
    record = msgpack.unpackb(value, raw=False, strict_map_key=True, ext_hook=_refuse_ext)
    if not isinstance(record, dict):
        raise ValueError("record is not a msgpack map")
    return record


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"record holds a msgpack extension type {code}; only plain types are allowed")


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
    return manifest


def check_format(meta: Any, path: Path) -> None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise DepthmaskError(f"{path}: not a {FORMAT_NAME} manifest")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise DepthmaskError(
            f"{path}: format version {version!r} is not supported (this depthmask reads version "
            f"{FORMAT_VERSION}); rebuild the dataset with this version of dm-build-lmdb"
        )

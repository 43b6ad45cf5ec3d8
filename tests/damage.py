"""Ways to damage a finished dataset, for tests: every command that reads a dataset must answer each of them
with one clear line (see test_damaged_datasets.py). A new command gets the same tests by adding itself there.

Every function damages the dataset folder it is given in place (work on a copy: conftest.copy_dataset) and
returns what a message about it should name. Records are crafted with plain msgpack, as an attacker would.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import lmdb
import msgpack

DELETE = object()  # edit_manifest(..., DELETE) removes the key


def _manifest(root: Path) -> dict[str, Any]:
    return json.loads((Path(root) / "manifest.json").read_text())


def _write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    (Path(root) / "manifest.json").write_text(json.dumps(manifest, indent=1))


def edit_manifest(root: Path, path_in_json: str, value: Any) -> str:
    """Set (or with DELETE remove) one manifest key: 'stats.all.fg_bg.mean.0', 'shards.2.path', 'sample_count'."""
    manifest = _manifest(root)
    *parents, last = path_in_json.split(".")
    node: Any = manifest
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) else last
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
    _write_manifest(root, manifest)
    return last


def shard_file(root: Path, shard: int) -> Path:
    return Path(root) / _manifest(root)["shards"][shard]["path"]


def shard_of_index(root: Path, index: int) -> int:
    return next(i for i, s in enumerate(_manifest(root)["shards"]) if s["start"] <= index < s["stop"])


def truncate_file(path: Path, keep: float = 0.5) -> str:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])
    return Path(path).name


def truncate_shard(root: Path, shard: int = 2, keep: float = 0.5) -> str:
    return truncate_file(shard_file(root, shard), keep)


def truncate_backgrounds(root: Path, keep: float = 0.5) -> str:
    return truncate_file(Path(root) / _manifest(root)["backgrounds"]["path"], keep)


def delete_shard(root: Path, shard: int = 1) -> str:
    path = shard_file(root, shard)
    path.unlink()
    return path.name


def delete_backgrounds(root: Path) -> str:
    (Path(root) / "backgrounds.lmdb").unlink()
    return "backgrounds.lmdb"


def rewrite_shard(root: Path, shard: int, change: Callable[[dict[int, bytes]], None]) -> Path:
    """Rewrite a shard's records through `change(records)` (index -> value bytes, edited in place) as a new LMDB
    file, and record its new size in the manifest (as a careful attacker would: only the records are wrong)."""
    path = shard_file(root, shard)
    env = lmdb.open(str(path), subdir=False, readonly=True, lock=False)
    with env.begin() as txn:
        records = {int.from_bytes(k, "big"): bytes(v) for k, v in txn.cursor()}
    env.close()
    change(records)
    path.unlink()
    env = lmdb.open(str(path), subdir=False, map_size=64 << 20, lock=False)
    with env.begin(write=True) as txn:
        for index in sorted(records):
            txn.put(index.to_bytes(8, "big"), records[index])
    env.close()
    Path(str(path) + "-lock").unlink(missing_ok=True)
    manifest = _manifest(root)
    manifest["shards"][shard]["bytes"] = path.stat().st_size
    _write_manifest(root, manifest)
    return path


def craft_record(root: Path, index: int, value: Any, *, raw: bool = False) -> str:
    """Replace sample `index`'s record by `value`: a dict merged into the real record (a field set to DELETE is
    removed), any other object packed as the whole record, or bytes stored as they are with raw=True."""
    def change(records: dict[int, bytes]) -> None:
        if raw:
            records[index] = value
            return
        if isinstance(value, dict):
            record = msgpack.unpackb(records[index], raw=False)
            for key, item in value.items():
                if item is DELETE:
                    record.pop(key, None)
                else:
                    record[key] = item
            records[index] = msgpack.packb(record, use_bin_type=True)
        else:
            records[index] = msgpack.packb(value, use_bin_type=True)

    return rewrite_shard(root, shard_of_index(root, index), change).name


def nested_arrays(depth: int = 4) -> Any:
    """[[[[1.5, nan]]]]: a nested array where binary data is expected."""
    value: Any = [1.5, float("nan")]
    for _ in range(depth):
        value = [value]
    return value


def deeply_nested_bytes(depth: int = 5000) -> bytes:
    """A record that is an array in an array ... 5,000 deep (msgpack refuses it as too deeply nested)."""
    return b"\x91" * depth + b"\x01"


def absolute_shard_path(root: Path, shard: int = 0) -> str:
    """The shard's path made absolute (to the very same file: readers must still refuse it)."""
    path = shard_file(root, shard)
    edit_manifest(root, f"shards.{shard}.path", str(path.resolve()))
    return f"shards[{shard}].path"


def escaping_shard_path(root: Path, shard: int = 0) -> str:
    """shards[shard].path = '../<folder>-outside/...', a real copy of the shard outside the dataset folder."""
    root = Path(root)
    outside = root.parent / f"{root.name}-outside"
    outside.mkdir(exist_ok=True)
    shutil.copy(shard_file(root, shard), outside / "stolen.lmdb")
    edit_manifest(root, f"shards.{shard}.path", f"../{outside.name}/stolen.lmdb")
    return f"shards[{shard}].path"


def symlink_escape(root: Path, shard: int = 0) -> str:
    """The shard file replaced by a symbolic link to a copy outside the dataset folder."""
    path = shard_file(root, shard)
    outside = Path(root).parent / f"{Path(root).name}-outside.lmdb"
    shutil.copy(path, outside)
    path.unlink()
    os.symlink(outside, path)
    return f"shards[{shard}].path"


def replace_dataset(root: Path, other: Path) -> None:
    """What dm-build-lmdb --overwrite does to a reader: the files replaced by another dataset's (new inodes)."""
    root, other = Path(root), Path(other)
    for name in ("manifest.json", "backgrounds.lmdb"):
        (root / name).unlink()
    shutil.rmtree(root / "shards")
    shutil.copytree(other / "shards", root / "shards")
    shutil.copy(other / "backgrounds.lmdb", root / "backgrounds.lmdb")
    shutil.copy(other / "manifest.json", root / "manifest.json")


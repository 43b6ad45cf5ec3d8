"""LMDB shard files: a writer that never leaves a half-written shard under its final name, the
content hash, and read-only opening that is safe in DataLoader workers (fork, spawn, forkserver)."""
from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path
from typing import Iterator

import lmdb

from .errors import DepthmaskError
from .format import decode_key, encode_key

COMMIT_EVERY = 1000
DEFAULT_MAP_SIZE = 64 << 30  # virtual reservation: LMDB files are sparse and grow as written

_LENGTH = struct.Struct(">Q")


class ShardHasher:
    """sha256 over, for each record in key order: key (8 bytes), u64be(len(value)), value."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.records = 0

    def update(self, key: bytes, value: bytes) -> None:
        self._hash.update(key)
        self._hash.update(_LENGTH.pack(len(value)))
        self._hash.update(value)
        self.records += 1

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def tmp_path_for(final: Path) -> Path:
    """Per process, so a straggler from a killed build can never rename another process's file."""
    return final.with_name(f"{final.name}.tmp-{os.getpid()}")


def remove_stale_tmp(final: Path) -> None:
    for stale in final.parent.glob(final.name + ".tmp*"):
        stale.unlink(missing_ok=True)


def remove_lmdb_file(path: Path) -> None:
    for p in (path, Path(str(path) + "-lock")):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


class ShardWriter:
    """Context manager: appends records in key order to `<final>.tmp-PID`; only a clean exit syncs it and
    renames it to `final`. Any exception inside removes the temporary file and re-raises."""

    def __init__(self, final: Path, *, tmp: Path | None = None, map_size: int = DEFAULT_MAP_SIZE,
                 commit_every: int = COMMIT_EVERY):
        self.final = Path(final)
        self.tmp = Path(tmp) if tmp is not None else tmp_path_for(self.final)
        self.map_size = map_size
        self.commit_every = commit_every
        self.hasher = ShardHasher()
        self._env: lmdb.Environment | None = None
        self._txn: lmdb.Transaction | None = None
        self._pending = 0
        self._last_key: bytes | None = None

    def __enter__(self) -> "ShardWriter":
        remove_lmdb_file(self.tmp)
        self._env = lmdb.open(str(self.tmp), subdir=False, map_size=self.map_size, lock=False,
                              sync=False, metasync=False, readahead=False, max_dbs=0)  # meminit on: no stray memory in files
        self._txn = self._env.begin(write=True)
        return self

    def put(self, index: int, value: bytes) -> None:
        key = encode_key(index)
        if self._last_key is not None and key <= self._last_key:
            raise AssertionError(f"shard keys must be appended in increasing order ({index})")
        try:
            if not self._txn.put(key, value, append=True):
                raise AssertionError(f"LMDB refused the append of key {index}")
            self._pending += 1
            if self._pending >= self.commit_every:
                self._txn.commit()
                self._txn = self._env.begin(write=True)
                self._pending = 0
        except lmdb.MapFullError:
            raise self._map_full() from None
        self.hasher.update(key, value)
        self._last_key = key

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None:
                self._finish()
                return False
        except lmdb.MapFullError:
            self._abort()
            raise self._map_full() from None
        except BaseException:
            self._abort()
            raise
        self._abort()
        return False

    def _map_full(self) -> DepthmaskError:
        return DepthmaskError(f"{self.final}: shard outgrew its LMDB map size ({self.map_size >> 20} MiB); "
                              "raise --max-shard-size-mb or lower --shard-size")

    def _finish(self) -> None:
        self._txn.commit()
        self._txn = None
        self._env.sync(True)
        self._env.close()
        self._env = None
        os.replace(self.tmp, self.final)

    def _abort(self) -> None:
        if self._txn is not None:
            try:
                self._txn.abort()
            except lmdb.Error:
                pass
            self._txn = None
        if self._env is not None:
            try:
                self._env.close()
            except lmdb.Error:
                pass
            self._env = None
        remove_lmdb_file(self.tmp)


# ---- reading -------------------------------------------------------------------------------------
# py-lmdb >= 2 refuses to open one path twice in a process, and an environment inherited over fork
# is unusable. So environments are opened lazily and cached per process: a cache inherited from a
# parent (different pid) is dropped without closing, and readers never pickle an open handle.
_OPEN: dict[str, lmdb.Environment] = {}
_OPEN_PID = os.getpid()


def open_readonly(path: Path) -> lmdb.Environment:
    global _OPEN_PID
    if _OPEN_PID != os.getpid():
        _OPEN.clear()
        _OPEN_PID = os.getpid()
    env = _OPEN.get(str(path))  # fast path: the same spelling as last time (no realpath syscalls)
    if env is not None:
        return env
    key = os.path.realpath(path)
    env = _OPEN.get(key)
    if env is None:
        if not os.path.isfile(key):
            raise DepthmaskError(f"{path}: shard file is missing")
        try:
            env = lmdb.open(key, subdir=False, readonly=True, lock=False, readahead=False,
                            max_readers=2048, max_dbs=0)
        except lmdb.Error as exc:
            raise DepthmaskError(f"{path}: not a readable LMDB shard (truncated or corrupted?): {exc}") from None
        _OPEN[key] = env
    _OPEN[str(path)] = env
    return env


def check_file_size(path: Path, expected: int) -> None:
    """A file of a finished dataset must be exactly as large as its manifest records, checked before it is
    mapped: reading a mapped LMDB file beyond its end kills the process with SIGBUS, no message."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise DepthmaskError(f"{path}: shard file is missing") from None
    except OSError as exc:
        raise DepthmaskError(f"{path}: cannot read the shard file ({exc.strerror})") from None
    if not os.path.isfile(path):
        raise DepthmaskError(f"{path}: not a regular file, expected an LMDB shard")
    if size != expected:
        raise DepthmaskError(f"{path}: {size:,} bytes on disk but the manifest records {expected:,} "
                             "(truncated or replaced?); the dataset is damaged: restore the file or rebuild "
                             "the dataset")


def open_checked(path: Path, expected_bytes: int) -> lmdb.Environment:
    """open_readonly after check_file_size (first open in this process; later calls hit the cache)."""
    if _OPEN_PID == os.getpid() and str(path) in _OPEN:
        return _OPEN[str(path)]
    check_file_size(path, expected_bytes)
    return open_readonly(path)


def close_readonly(path: Path) -> None:
    env = _OPEN.pop(os.path.realpath(path), None)
    _OPEN.pop(str(path), None)
    for alias in [k for k, v in _OPEN.items() if v is env]:
        del _OPEN[alias]
    if env is not None and _OPEN_PID == os.getpid():
        env.close()


def iterate_records(path: Path) -> Iterator[tuple[int, bytes]]:
    """All (index, value) of a shard in key order."""
    env = open_readonly(path)
    try:
        with env.begin(buffers=False) as txn:
            for key, value in txn.cursor():
                yield decode_key(key), value
    except lmdb.Error as exc:
        raise DepthmaskError(f"{path}: shard is corrupted: {exc}") from None

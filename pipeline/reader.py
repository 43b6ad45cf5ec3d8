"""Reading a finished dataset: the manifest, records by global index, the stored backgrounds, splits.

A reader holds no open LMDB handle when pickled, opens shards lazily and read-only without locks,
and is therefore safe to hand to DataLoader workers under fork, spawn or forkserver.
"""
from __future__ import annotations

import bisect
import os
from pathlib import Path
from typing import Any

import lmdb
import numpy as np

from .codecs import DecodeError, codecs_from_manifest
from .errors import DepthmaskError
from .format import (BACKGROUND_RECORD, MANIFEST_NAME, RecordError, encode_key, manifest_digest, manifest_identity,
                     read_manifest, unpack_record)
from .manifest import manifest_plan, manifest_split
from .plan import SPLIT_NAMES, SamplePlan
from .shards import open_checked, open_readonly


_SPLIT_GROUPS = {"mixed": ("unseen_bg", "unseen_fg")}  # the samples in neither train nor val


class DatasetReader:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.manifest = read_manifest(self.root)  # paths and keys checked before anything is opened
        self.identity = manifest_identity(self.root)
        self.digest = manifest_digest(self.root)
        self.codecs = codecs_from_manifest(self.manifest["fields"])
        self.shards = self.manifest["shards"]
        self._starts = [s["start"] for s in self.shards]
        self._backgrounds: list[tuple[np.ndarray, np.ndarray]] | None = None
        self._opened: set[str] = set()  # files checked and opened by process _opened_pid
        self._opened_pid = os.getpid()

    def __len__(self) -> int:
        return int(self.manifest["sample_count"])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_backgrounds"] = None  # decoded again, once, in each process
        state["_opened"] = set()  # and each file checked again when the process first opens it
        state["_opened_pid"] = None
        return state

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.manifest["image_size"]
        return int(h), int(w)

    def check_unchanged(self) -> None:
        """Stop if the dataset was replaced or removed since this reader was made: its files would then
        belong to another dataset than the manifest (and the statistics) this reader holds. A manifest
        rewritten with the same bytes (a byte-identical rebuild, a restored copy) names the same content."""
        identity = manifest_identity(self.root)
        if identity == self.identity:
            return
        if identity is not None and manifest_digest(self.root) == self.digest:
            self.identity = identity
            return
        raise DepthmaskError(f"{self.root}: the dataset changed while it was being read ({MANIFEST_NAME} was "
                                 "replaced or removed, e.g. by dm-build-lmdb --overwrite); start again on the "
                                 "dataset as it is now")

    def _open(self, entry: dict[str, Any]) -> lmdb.Environment:
        """A dataset file, opened once per process: the dataset's identity and the file's size are checked first."""
        path = self.root / entry["path"]
        if self._opened_pid != os.getpid():  # a forked worker inherits the set, not the open files
            self._opened, self._opened_pid = set(), os.getpid()
        if entry["path"] not in self._opened:
            self.check_unchanged()
            env = open_checked(path, entry["bytes"])
            self._opened.add(entry["path"])
            return env
        return open_readonly(path)

    def shard_of(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} is outside 0..{len(self) - 1}")
        return self.shards[bisect.bisect_right(self._starts, index) - 1]

    def where(self, index: int) -> str:
        """How messages name a sample: its shard file and key."""
        return f"{self.root / self.shard_of(index)['path']} key {index}"

    def raw(self, index: int) -> bytes:
        shard = self.shard_of(index)
        path = self.root / shard["path"]
        env = self._open(shard)
        try:
            with env.begin(buffers=False) as txn:
                value = txn.get(encode_key(index))
        except lmdb.Error as exc:
            raise DepthmaskError(f"{path}: shard is corrupted: {exc}") from None
        if value is None:
            raise DepthmaskError(f"{path}: sample {index} is missing from its shard")
        return value

    def record(self, index: int) -> dict[str, Any]:
        """A sample's record, checked: every field of the format with its type, bg and fg in range."""
        value = self.raw(index)
        where = self.where(index)
        try:
            record = unpack_record(value)
        except RecordError as exc:
            raise DepthmaskError(f"{where}: malformed record: {exc}") from None
        plan = self.manifest["plan"]
        for name, count in (("bg", self.manifest["backgrounds"]["records"]), ("fg", plan["foregrounds"])):
            if not 0 <= record[name] < count:
                raise DepthmaskError(f"{where}: malformed record: field {name!r} is {record[name]}, expected "
                                     f"0..{count - 1}")
        return record

    def decode(self, index: int, *, reduce: int = 1) -> dict[str, Any]:
        """One sample as arrays: fg_bg (H,W,3) uint8 BGR, mask (H,W) uint8 0/255, depth (H,W) uint16,
        bg (H,W,3) uint8 BGR (shared, do not modify), plus the plan fields."""
        record = self.record(index)
        try:
            fg_bg = self.codecs.fg_bg.decode(record["fg_bg"], reduce)
            mask = self.codecs.mask.decode(record["mask"])
            bg_image, bg_depth = self.background(record["bg"])
            depth = self.codecs.depth.decode(record["depth"], bg_depth, (record["x"], record["y"]))
        except DecodeError as exc:
            raise DepthmaskError(f"{self.where(index)}: {exc}") from None
        return {"fg_bg": fg_bg, "mask": mask, "depth": depth, "bg": bg_image, "bg_index": record["bg"],
                "fg_index": record["fg"], "flip": record["flip"], "x": record["x"], "y": record["y"]}

    def background(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(image BGR uint8, depth uint16) of a stored background, decoded once per process."""
        if self._backgrounds is None:
            self._backgrounds = self._load_backgrounds()
        return self._backgrounds[index]

    def _load_backgrounds(self) -> list[tuple[np.ndarray, np.ndarray]]:
        entry = self.manifest["backgrounds"]
        path = self.root / entry["path"]
        env = self._open(entry)
        out = []
        try:
            with env.begin(buffers=False) as txn:
                for i in range(entry["records"]):
                    value = txn.get(encode_key(i))
                    if value is None:
                        raise DepthmaskError(f"{path}: background {i} is missing")
                    record = unpack_record(value, BACKGROUND_RECORD)
                    out.append((self.codecs.fg_bg.decode(record["image"]),
                                self.codecs.background_depth.decode(record["depth"])))
        except (lmdb.Error, RecordError, DecodeError) as exc:
            raise DepthmaskError(f"{path}: backgrounds file is damaged: {exc}") from None
        return out

    def plan(self) -> SamplePlan:
        return manifest_plan(self.manifest)

    def split_indices(self, name: str) -> np.ndarray:
        """Global sample indices of a split (one of SPLIT_NAMES, 'mixed' = unseen_bg + unseen_fg as format
        version 1 named them, or 'all'), ascending."""
        if name == "all":
            return np.arange(len(self), dtype=np.int64)
        wanted = _SPLIT_GROUPS.get(name, (name,))
        if not set(wanted) <= set(SPLIT_NAMES):
            raise DepthmaskError(f"--split: unknown split {name!r}; expected one of all, {', '.join(SPLIT_NAMES)}, "
                                 "mixed")
        split = manifest_split(self.manifest)
        index = np.arange(len(self), dtype=np.int64)
        bg, fg, _, _ = self.plan().locate(index)
        return index[np.isin(split.assign(bg, fg), [SPLIT_NAMES.index(n) for n in wanted])]

    def stats(self, split: str = "all") -> dict[str, Any]:
        """Per-field mean/std (RGB order, [0, 1] scale) over a split ('all' when not recorded per split)."""
        stats = self.manifest["stats"]
        return stats.get(split, stats["all"])

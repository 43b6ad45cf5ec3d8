"""The dataset folder as a resource: checks, the build lock, and what counts as ours."""
from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
from pathlib import Path

from .errors import DepthmaskError
from .format import BACKGROUNDS_NAME, BUILD_STATE_NAME, LOCK_NAME, MANIFEST_NAME, SHARDS_DIR

# Every name a build writes, and nothing else: the one list behind the foreign-folder check and
# --overwrite's removal. Temporaries end in .tmp-PID (LMDB files) or are .NAME.tmp-PID (JSON files).
_LMDB = r"(\.tmp(-[0-9]+)?|-lock)?"
TOP_LEVEL_FILES = [re.compile(p) for p in (
    re.escape(MANIFEST_NAME), re.escape(BUILD_STATE_NAME), re.escape(LOCK_NAME),
    rf"\.{re.escape(MANIFEST_NAME)}\.tmp-[0-9]+", rf"\.{re.escape(BUILD_STATE_NAME)}\.tmp-[0-9]+",
    re.escape(BACKGROUNDS_NAME) + _LMDB, r"\.part-[0-9]+-of-[0-9]+\.lock", r"\.write-probe-[0-9]+",
    r"(background_pixels|foregrounds)\.lmdb" + _LMDB)]  # (the asset files of a recipe dataset, recipes.py)
SHARD_FILES = [re.compile(p) for p in (
    r"shard-[0-9]{5,}\.lmdb" + _LMDB, r"shard-[0-9]{5,}\.json", r"\.shard-[0-9]{5,}\.json\.tmp-[0-9]+")]


def _ours(name: str, patterns: list[re.Pattern]) -> bool:
    return any(p.fullmatch(name) for p in patterns)


def prepare_output_folder(root: Path) -> Path:
    """The folder must exist as a writable folder or be creatable (with its parents, as `dm-build-lmdb
    out/default` in a fresh clone needs)."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DepthmaskError(f"{root}: output path is a file, expected a folder")
    if not root.exists():
        try:
            root.mkdir(parents=True, exist_ok=True)  # parts of a partitioned build may create it at the same moment
        except OSError as exc:
            raise DepthmaskError(f"{root}: cannot create the output folder ({exc.strerror})") from None
    probe = root / f".write-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise DepthmaskError(f"{root}: output folder is not writable ({exc.strerror})") from None
    return root


def foreign_entries(root: Path) -> list[str]:
    """Paths (relative to root) of everything in the folder, at any depth, that a build does not
    write: another file, a folder, a link, a name that merely looks like ours."""
    root = Path(root)
    out = []
    for name in sorted(os.listdir(root)):
        path = root / name
        if name == SHARDS_DIR and path.is_dir() and not path.is_symlink():
            out += [f"{SHARDS_DIR}/{inner}" for inner in sorted(os.listdir(path))
                    if not (_ours(inner, SHARD_FILES) and _plain_file(path / inner))]
        elif not (_ours(name, TOP_LEVEL_FILES) and _plain_file(path)):
            out.append(name)
    return out


def _plain_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def is_part_lock(name: str) -> bool:
    return re.fullmatch(r"\.part-[0-9]+-of-[0-9]+\.lock", name) is not None


def remove_part_locks(root: Path) -> None:
    for name in os.listdir(root):
        if is_part_lock(name):
            (root / name).unlink(missing_ok=True)


def remove_dataset(root: Path) -> None:
    """Delete exactly what a build writes, the manifest first, so no reader sees a dataset half gone.
    Refuses (before removing anything) a folder that holds anything else."""
    root = Path(root)
    foreign = foreign_entries(root)
    if foreign:
        raise DepthmaskError(f"{root}: holds files that are not part of a dataset ({', '.join(foreign[:5])}"
                             f"{' ...' if len(foreign) > 5 else ''}); refusing to overwrite: move them away or "
                             "choose an empty or new folder")
    for name in (MANIFEST_NAME, BUILD_STATE_NAME):
        (root / name).unlink(missing_ok=True)
    shards = root / SHARDS_DIR
    if shards.is_dir():
        for name in os.listdir(shards):
            if _ours(name, SHARD_FILES):
                (shards / name).unlink(missing_ok=True)
        shards.rmdir()
    for name in os.listdir(root):
        if _ours(name, TOP_LEVEL_FILES) and name != LOCK_NAME and not is_part_lock(name):
            (root / name).unlink(missing_ok=True)


# ---- storage ------------------------------------------------------------------------------------
# Below this much free space a failed write is taken for a full disk.
FULL_DISK_BYTES = 64 << 20


def free_bytes(path: Path) -> int | None:
    """Free space of the file system holding `path` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None
    return usage.free if usage.total else None  # /proc and the like: no size to speak of


def storage_error(exc: BaseException, root: Path, path: Path | None = None) -> DepthmaskError:
    """A failed write as one line: a full disk (ENOSPC, a quota, or LMDB's 'Input/output error' with
    hardly any space left) says so and names the folder; another failure names the file and cause."""
    where = path or root
    code = getattr(exc, "errno", None)
    text = getattr(exc, "strerror", None) or str(exc)
    free = free_bytes(root)
    full = code in (errno.ENOSPC, errno.EDQUOT) or "No space left" in text or "quota" in text.lower() or (
        ("Input/output error" in text or code == errno.EIO) and free is not None and free < FULL_DISK_BYTES)
    if full:
        left = f"{free / 2**20:,.0f} MiB free" if free is not None else "free space unknown"
        return DepthmaskError(f"{root}: the disk is full ({left}; writing {Path(where).name} failed: {text}); "
                              "free some space, then run the same command again to resume")
    return DepthmaskError(f"{where}: write failed: {text}")


class BuildLock:
    """An flock on `.build.lock`: exclusive for a whole build, shared for a partition (`--part`), plus
    an exclusive lock per partition, so parts build side by side but never twice, and never beside a
    whole build. The kernel drops the locks when a process dies, SIGKILL included."""

    def __init__(self, root: Path, part: tuple[int, int] | None = None):
        self.root = Path(root)
        self.part = part
        self._handles: list = []

    def __enter__(self) -> "BuildLock":
        mode = fcntl.LOCK_SH if self.part else fcntl.LOCK_EX
        self._take(self.root / LOCK_NAME, mode)
        if self.part:
            self._take(self.root / f".part-{self.part[0]}-of-{self.part[1]}.lock", fcntl.LOCK_EX)
        return self

    def _take(self, path: Path, mode: int) -> None:
        handle = open(path, "a+b")
        try:
            fcntl.flock(handle.fileno(), mode | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                self.release()
                raise DepthmaskError(
                    f"{self.root}: another build is running into this folder (lock {path.name} is held); "
                    "wait for it to finish or stop it first"
                ) from None
            raise
        self._handles.append((path, handle))

    def release(self, *, remove: bool = False) -> None:
        for path, handle in reversed(self._handles):
            if remove:
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
            handle.close()
        self._handles.clear()

    def __exit__(self, *exc) -> None:
        self.release()

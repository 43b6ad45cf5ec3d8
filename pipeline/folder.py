"""The dataset folder as a resource: checks, the build lock, and what counts as ours."""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
from pathlib import Path

from .errors import DepthmaskError
from .format import BACKGROUNDS_NAME, BUILD_STATE_NAME, LOCK_NAME, MANIFEST_NAME, SHARDS_DIR

OWN_NAMES = {MANIFEST_NAME, BUILD_STATE_NAME, LOCK_NAME, SHARDS_DIR, BACKGROUNDS_NAME}


def prepare_output_folder(root: Path) -> Path:
    """The folder must be creatable or exist as a writable folder; its parent must exist."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DepthmaskError(f"{root}: output path is a file, expected a folder")
    if not root.exists():
        if not root.parent.is_dir():
            raise DepthmaskError(f"{root}: parent folder {root.parent} does not exist (create it first)")
        try:
            root.mkdir(exist_ok=True)  # parts of a partitioned build may create it at the same moment
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
    """Names in the folder that a build did not make (temporary files of ours are ours)."""
    out = []
    for name in sorted(os.listdir(root)):
        if name in OWN_NAMES or name.startswith(("." + MANIFEST_NAME, "." + BUILD_STATE_NAME, BACKGROUNDS_NAME)):
            continue
        if name.startswith(".write-probe-") or is_part_lock(name):
            continue
        out.append(name)
    return out


def is_part_lock(name: str) -> bool:
    return name.startswith(".part-") and name.endswith(".lock")


def remove_part_locks(root: Path) -> None:
    for name in os.listdir(root):
        if is_part_lock(name):
            (root / name).unlink(missing_ok=True)


def remove_dataset(root: Path) -> None:
    """Delete what a build made, the manifest first, so no reader sees a dataset half gone."""
    for name in (MANIFEST_NAME, BUILD_STATE_NAME):
        try:
            (root / name).unlink()
        except FileNotFoundError:
            pass
    shutil.rmtree(root / SHARDS_DIR, ignore_errors=True)
    for name in os.listdir(root):
        if name.startswith(BACKGROUNDS_NAME):
            (root / name).unlink()


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

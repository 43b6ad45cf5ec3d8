"""The run folder as a resource: what dm-train writes there, the lock one run holds on it, and the rules
for starting, resuming and overwriting (nothing dm-train did not write is ever removed).

A run folder holds `last.pt`, `best.pt`, `metrics.jsonl`, `config.json`, `curves.png`, TensorBoard event
files under `tb/`, and while a file is being written its temporary
`.NAME.tmp-PID`; a running dm-train holds an flock on the folder. Everything else in it is the user's.
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
from pathlib import Path

from pipeline import DepthmaskError

LAST_NAME = "last.pt"
BEST_NAME = "best.pt"
METRICS_NAME = "metrics.jsonl"
CONFIG_NAME = "config.json"
CURVES_NAME = "curves.png"
TENSORBOARD_DIR = "tb"
RUN_FILES = (LAST_NAME, BEST_NAME, METRICS_NAME, CONFIG_NAME, CURVES_NAME)
_TEMPORARY = re.compile(r"^\.(%s)\.tmp-\d+(\.png)?$" % "|".join(re.escape(n) for n in RUN_FILES))
_TB_EVENTS = re.compile(r"^events\.out\.tfevents\..+")


def is_own_temporary(name: str) -> bool:
    """A temporary file of one of the run's files, left by a process killed before its rename."""
    return bool(_TEMPORARY.match(name))


def own_entries(folder: Path) -> list[Path]:
    """The files in `folder` that dm-train writes (run files, temporaries, TensorBoard event files)."""
    out = []
    for name in sorted(os.listdir(folder)):
        path = folder / name
        if name in RUN_FILES or is_own_temporary(name):
            if path.is_file() and not path.is_symlink():
                out.append(path)
        elif name == TENSORBOARD_DIR and path.is_dir() and not path.is_symlink():
            out += [p for p in sorted(path.iterdir()) if _TB_EVENTS.match(p.name) and p.is_file()]
    return out


def foreign_entries(folder: Path) -> list[str]:
    """Names in the folder that dm-train did not write (a `tb/` of only event files is ours)."""
    own = {p.name for p in own_entries(folder) if p.parent == folder}
    out = []
    for name in sorted(os.listdir(folder)):
        if name in own:
            continue
        path = folder / name
        if name == TENSORBOARD_DIR and path.is_dir() and not path.is_symlink():
            extra = [p.name for p in sorted(path.iterdir()) if not (_TB_EVENTS.match(p.name) and p.is_file())]
            out += [f"{TENSORBOARD_DIR}/{n}" for n in extra]
            continue
        out.append(name)
    return out


def remove_run_files(folder: Path) -> None:
    """Delete what dm-train wrote (and only that); an emptied `tb/` goes too."""
    for path in own_entries(folder):
        path.unlink(missing_ok=True)
    tb = folder / TENSORBOARD_DIR
    if tb.is_dir() and not tb.is_symlink() and not any(tb.iterdir()):
        tb.rmdir()


def remove_stale_temporaries(folder: Path) -> None:
    for name in os.listdir(folder):
        if is_own_temporary(name):
            (folder / name).unlink(missing_ok=True)


class RunLock:
    """An exclusive flock on the run folder itself for the whole run: a second dm-train into the same folder
    is refused at once, and no lock file is left behind. The kernel drops it when the process dies, SIGKILL
    included."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise DepthmaskError(f"{self.folder}: another dm-train is running into this folder (it is locked); "
                                     "wait for it to finish, stop it, or choose another --output") from None
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def open_run_folder(folder: Path, *, resume: bool, overwrite: bool) -> tuple[RunLock, bool]:
    """Create or check the run folder and lock it; returns (lock, created). Refuses, before anything is
    written or removed: a file in its place; a folder holding a run without --resume/--overwrite; a folder
    holding anything dm-train did not write, unless --overwrite (which then removes only dm-train's files)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DepthmaskError(f"{folder}: output path is a file, expected a folder")
    created = not folder.exists()
    if resume and created:
        raise DepthmaskError(f"{folder}: nothing to resume (the folder does not exist); run without --resume to start")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DepthmaskError(f"{folder}: cannot create the run folder ({exc.strerror})") from None
    lock = RunLock(folder)
    try:
        lock.acquire()
        _check_contents(folder, resume=resume, overwrite=overwrite)
    except BaseException:
        lock.release()
        if created:
            remove_if_only_ours(folder)
        raise
    return lock, created


def _check_contents(folder: Path, *, resume: bool, overwrite: bool) -> None:
    last = folder / LAST_NAME
    if resume:
        if not last.is_file():
            raise DepthmaskError(f"{folder}: nothing to resume (no {LAST_NAME}); run without --resume to start")
        return
    foreign = foreign_entries(folder)
    if overwrite:
        remove_run_files(folder)
        return
    if last.exists():
        raise DepthmaskError(f"{folder}: holds a run already ({LAST_NAME}); pass --resume to continue it or "
                             "--overwrite to start over")
    if foreign or own_entries(folder):
        names = (foreign or [p.name for p in own_entries(folder)])[:5]
        raise DepthmaskError(f"{folder}: folder is not empty and holds no run to resume ({', '.join(names)}); "
                             "choose an empty or new --output, or pass --overwrite to replace dm-train's files "
                             "in it (nothing else is removed)")


def remove_if_only_ours(folder: Path) -> None:
    """A run folder this process created, after a failure before training began: remove it if nothing but
    dm-train's files are in it, so a failed start leaves nothing that looks like a run."""
    try:
        if foreign_entries(folder):
            return
        remove_run_files(folder)
        folder.rmdir()
    except OSError:
        pass


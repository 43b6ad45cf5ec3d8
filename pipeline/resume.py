"""What an output folder already holds, and what a build may do with it: a complete dataset (nothing
to do, or refused without --overwrite), an interrupted build (resumed only with the same options and
assets, recorded in build.json), another folder's files (refused before anything is written), and
which shards are left to build. Shared by the materialised build (build.py) and the recipe build
(recipe_build.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import DepthmaskError
from .folder import foreign_entries, remove_dataset
from .format import (BUILD_STATE_NAME, MANIFEST_NAME, read_json, remove_stale_json_tmp, shard_path,
                     shard_sidecar_path, write_json_atomic)
from .plan import SPLIT_NAMES
from .recipes import is_recipe_manifest
from .shards import remove_lmdb_file, remove_stale_tmp

Shard = tuple[int, int, int]  # (shard id, first sample, stop)


def shard_ranges(count: int, shard_size: int) -> list[tuple[int, int]]:
    """[start, stop) of each shard of a plan of `count` samples."""
    return [(start, min(start + shard_size, count)) for start in range(0, count, shard_size)]


def refuse_foreign_folder(root: Path) -> None:
    """Checked before anything is written: a folder holding other files is left exactly as it is."""
    if (root / MANIFEST_NAME).exists() or (root / BUILD_STATE_NAME).exists():
        return
    foreign = foreign_entries(root)
    if foreign:
        raise DepthmaskError(f"{root}: folder is not empty and is not a depthmask dataset "
                             f"({', '.join(foreign[:5])}); choose an empty or new folder")


def existing_dataset(root: Path, content: dict[str, Any], *, overwrite: bool,
                     assets: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The manifest of a complete dataset of these content options (nothing to do), or None to build.
    Refuse to clobber: a complete dataset of other options (or, given `assets`, the names and hashes of
    the user's files, of other files) or an interrupted build of other options is refused; --overwrite
    removes either (exactly what a build writes; refused when anything else is there)."""
    manifest_path = root / MANIFEST_NAME
    state_path = root / BUILD_STATE_NAME
    if overwrite and (manifest_path.exists() or state_path.exists()):
        remove_dataset(root)
        return None
    if manifest_path.exists():
        manifest = read_json(manifest_path, "manifest")
        same_content = manifest.get("build", {}).get("content") == content
        if same_content and (assets is None or manifest.get("assets") == assets):
            return manifest
        kind = "recipe dataset" if is_recipe_manifest(manifest) else "materialised dataset"
        what = "with other options" if not same_content else (
            f"from other files ({changed_assets(manifest.get('assets', {}), assets)} changed)")
        raise DepthmaskError(f"{root}: already holds a complete dataset built {what} (a {kind}); "
                             "pass --overwrite to replace it, or choose another folder")
    if state_path.exists():
        state = read_json(state_path, "build state")
        if state.get("content") != content:
            diffs = describe_differences(state.get("content", {}), content)
            raise DepthmaskError(f"{root}: holds an interrupted build with other options ({diffs}); rerun it with "
                                 "the same options to resume, or pass --overwrite to start over")
    return None


def describe_differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = sorted(set(old) | set(new))
    return ", ".join(f"{k}: {old.get(k)!r} then, {new.get(k)!r} now" for k in keys if old.get(k) != new.get(k))


def record_build_state(root: Path, state: dict[str, Any]) -> None:
    """build.json: the content options and asset hashes (`state["assets"]`) of a build in progress,
    written once; a resumed build whose assets differ from the recorded ones is refused."""
    path = root / BUILD_STATE_NAME
    if path.exists():
        old = read_json(path, "build state")
        if old.get("assets") != state["assets"]:
            changed = changed_assets(old.get("assets", {}), state["assets"])
            raise DepthmaskError(f"{root}: the assets changed since this build started ({changed}); "
                                 "pass --overwrite to rebuild from scratch")
        return
    write_json_atomic(path, state)


def changed_assets(old: dict[str, Any], new: dict[str, Any]) -> str:
    """The names of the assets that differ between two asset descriptions (AssetSet.describe)."""
    changed = []
    for kind in ("backgrounds", "foregrounds"):
        for a, b in zip(old.get(kind, []), new.get(kind, [])):
            if a != b:
                changed.append(b.get("name", "?"))
        if len(old.get(kind, [])) != len(new.get(kind, [])):
            changed.append(f"{kind} count")
    if old.get("source") != new.get("source"):
        changed.append("source")
    return ", ".join(changed[:5]) or "unknown"


def shards_in_part(ranges: list[tuple[int, int]], part: tuple[int, int] | None) -> list[Shard]:
    """The shards part K of N builds (every N-th, from K - 1), or all of them."""
    shards = [(i, start, stop) for i, (start, stop) in enumerate(ranges)]
    if part is None:
        return shards
    k, n = part
    return [s for s in shards if s[0] % n == k - 1]


def shards_to_build(root: Path, ranges: list[tuple[int, int]], content: dict[str, Any],
                    part: tuple[int, int] | None, merge_only: bool) -> list[Shard]:
    """Shards of this part without a finished file + sidecar of these options; leftovers of killed
    runs are removed (not when only merging)."""
    todo = []
    for shard_id, start, stop in shards_in_part(ranges, part):
        final = shard_path(root, shard_id)
        sidecar = shard_sidecar_path(root, shard_id)
        if final.exists() and sidecar.exists():
            entry = read_json(sidecar, "shard sidecar")
            if entry.get("content") == content and (entry.get("start"), entry.get("stop")) == (start, stop) \
                    and set(entry.get("split_counts", {})) == set(SPLIT_NAMES):  # (not a sidecar of older splits)
                continue
        if not merge_only:
            remove_stale_tmp(final)
            remove_lmdb_file(final)
            sidecar.unlink(missing_ok=True)
            remove_stale_json_tmp(sidecar)  # a worker killed while writing it
        todo.append((shard_id, start, stop))
    return todo

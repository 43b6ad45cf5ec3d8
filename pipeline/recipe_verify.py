"""`dm-stats` of a recipe dataset: describe it from its manifest, and `--verify` it: every asset file
re-read and hashed (a damaged or replaced file is named), every asset decoded and compared with the
hash the build recorded, the split recomputed, and the statistics recomputed exactly from the samples
a reader rebuilds."""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import lmdb

from .errors import DepthmaskError
from .format import encode_key, manifest_summary
from .manifest import stats_problems
from .plan import manifest_counts, plan_split
from .procs import worker_context
from .recipes import ASSET_FILES, RecipeStore, read_recipe_manifest
from .shards import ShardHasher, check_file_size, close_readonly, iterate_records
from .stats import ChannelSums, StatsAccumulator


def describe_recipes(root: str | Path) -> dict[str, Any]:
    """The facts dm-stats prints for a recipe dataset (the same keys as a materialised one's)."""
    root = Path(root)
    manifest = read_recipe_manifest(root)
    for name in ASSET_FILES:
        check_file_size(root / name, manifest["files"][name]["bytes"])
    h, w = manifest["image_size"]
    n = manifest["sample_count"]
    stats = manifest["stats"]["all"]
    sizes = manifest["sizes"]
    items = [{"item": "bg", "type": f"JPEG q{manifest['fields']['bg'].get('quality', '?')}",
              "count": manifest["files"]["backgrounds.lmdb"]["records"], "image_size": [h, w, 3],
              "bytes": sizes["backgrounds_file"], "mean": stats["bg"]["mean"], "std": stats["bg"]["std"]}]
    for name, channels in (("fg_bg", 3), ("mask", 1), ("depth", 1)):
        items.append({"item": name, "type": "rebuilt" + (" (pre-JPEG)" if name == "fg_bg" else ""), "count": n,
                      "image_size": [h, w, channels], "bytes": 0, "mean": stats[name]["mean"],
                      "std": stats[name]["std"]})
    return {**manifest_summary(root, manifest, items),
            "format": f"{manifest['format']} v{manifest['format_version']} ({manifest['kind']})",
            "kind": manifest["kind"],
            "assets": {"backgrounds": manifest["files"]["background_pixels.lmdb"]["records"],
                       "foregrounds": manifest["files"]["foregrounds.lmdb"]["records"]}}


def _file_problems(root: Path, manifest: dict[str, Any]) -> list[str]:
    """Each asset file: its size, its records and its content hash against the manifest."""
    problems = []
    for name in ASSET_FILES:
        entry, path = manifest["files"][name], root / name
        try:
            check_file_size(path, entry["bytes"])
            hasher = ShardHasher()
            for index, value in iterate_records(path):
                hasher.update(encode_key(index), value)
        except DepthmaskError as exc:
            problems.append(f"{name}: damaged asset store: {exc}")
            continue
        except lmdb.Error as exc:
            problems.append(f"{name}: damaged asset store: not a readable LMDB file ({exc})")
            continue
        finally:
            close_readonly(path)
        if hasher.records != entry["records"]:
            problems.append(f"{name}: damaged asset store: {hasher.records} records, the manifest records "
                            f"{entry['records']}")
        elif hasher.hexdigest() != entry["sha256"]:
            problems.append(f"{name}: damaged asset store: content hash differs from the manifest")
    return problems


def _chunk(root: str, start: int, stop: int) -> dict[str, Any]:
    import cv2

    from .recipe_build import StatsContext, chunk_stats

    cv2.setNumThreads(1)
    store = RecipeStore.open(root)
    sums = [ChannelSums.of_image(bg_input) for _, bg_input, _ in store.backgrounds]
    return chunk_stats(StatsContext(store, sums), start, stop)


def verify_recipes(root: str | Path, *, workers: int = 1):
    """A VerifyReport (pipeline.report) of a recipe dataset."""
    from .report import VerifyReport

    root = Path(root)
    manifest = read_recipe_manifest(root)
    report = VerifyReport(shards=0)
    report.problems += _file_problems(root, manifest)
    if report.problems:
        return report
    try:
        store = RecipeStore.open(root)
        store.backgrounds, store.foregrounds  # decoded and checked against the asset hashes
    except DepthmaskError as exc:
        return VerifyReport(problems=[str(exc)])
    content = manifest["build"]["content"]
    plan = store.plan
    split = plan_split(plan, content["val_fraction"], content["seed"])
    if (list(split.val_backgrounds), list(split.val_foregrounds)) != (manifest["split"]["val_backgrounds"],
                                                                      manifest["split"]["val_foregrounds"]):
        report.problems.append("manifest.json: split.val_backgrounds / val_foregrounds differ from what the build's "
                               "options give")
    if manifest["split"]["counts"] != manifest_counts(split.counts(plan)):
        report.problems.append("manifest.json: split.counts differs from what the plan gives")
    step = max(1, -(-len(store) // max(1, workers * 4)))
    ranges = [(a, min(a + step, len(store))) for a in range(0, len(store), step)]
    acc = StatsAccumulator()
    if workers <= 1:
        results = [_chunk(str(root), a, b) for a, b in ranges]
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=worker_context(("pipeline.recipe_verify",))) as pool:
            results = list(pool.map(_chunk, [str(root)] * len(ranges), *zip(*ranges)))
    for result in results:
        acc.merge(StatsAccumulator.from_json(result["stats"]))
    report.records = len(store)
    report.problems += stats_problems(manifest, acc)
    return report

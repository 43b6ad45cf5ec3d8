"""`build_recipes`: a recipe dataset (docs/format.md, "Recipe datasets"): the assets once, the plan,
seed and split, and the exact statistics of the samples a reader rebuilds; no per-sample composites.

Data flow: options -> plan + assets (parent, backgrounds rendered in workers as for a materialised
build) -> asset files (parent) -> statistics chunks of `shard_size` samples (workers; each writes a
sidecar `shards/shard-NNNNN.json` when done, so a killed build resumes at the first missing chunk) ->
manifest (parent, last). The folder rules (lock, foreign files, --overwrite) are the materialised
build's (folder.py).
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .assets import AssetSet
from .compose import MASK_ON
from .errors import DepthmaskError
from .folder import BuildLock, prepare_output_folder, storage_error
from .format import (BACKGROUNDS_NAME, BUILD_STATE_NAME, FORMAT_NAME, MANIFEST_NAME, SHARDS_DIR, pack_record,
                     read_json, remove_stale_json_tmp, shard_sidecar_path, write_json_atomic)
from .manifest import file_entry, split_stats
from .options import BuildOptions, validate_options
from .plan import SPLIT_NAMES, SPLIT_RULE, SamplePlan, Split, manifest_counts
from .procs import wait_for_tasks, worker_context
from .recipe_codecs import BACKGROUND_PIXELS_CODEC, FOREGROUND_CODEC
from .recipes import (BACKGROUND_PIXELS_NAME, FOREGROUNDS_NAME, RECIPE_FORMAT_VERSION, RECIPE_KIND, RecipeStore)
from .recipe_stats import (BackgroundTables, ForegroundTables, SampleLayout, SampleSums, background_tables,
                           foreground_tables, sample_layout, sample_sums)
from .resume import existing_dataset, record_build_state, refuse_foreign_folder
from .shards import DEFAULT_MAP_SIZE, ShardWriter, remove_stale_tmp
from .stats import ChannelSums, StatsAccumulator

STORES = ("samples", "recipes")
PER_SAMPLE_REFUSAL = ("--store recipes: per-sample model depth (--depth-mode per-sample) is the model's output on "
                      "every composite, which no recipe can rebuild; use --depth-mode composite or --store samples")

REBUILD_RULE = (
    "sample i: (bg, fg, position, flip) from the index order; x, y = the plan's placement of key i // variants "
    "(SplitMix64, docs/format.md); the foreground's BGRA is mirrored when flip; fg_bg = bg_pixels with, inside the "
    "box at (x, y), round((bg * (255 - a) + c * a) / 255) per channel (integer, exact: v = bg*(255-a) + c*a + 128, "
    "(v + (v >> 8)) >> 8); mask = 255 where a >= 128 inside the box, else 0; depth = bg_depth with the object's "
    "depth on its mask, object depth = min(bg_depth at the contact pixel (lowest mask row, middle of its mask "
    "columns), every bg_depth under the mask); bg input = backgrounds.lmdb image")
PER_EPOCH_RULE = (
    "epoch e (optional, training samples only; val, unseen_bg and unseen_fg keep the stored placements): "
    "s = SplitMix64(seed, e, stream 0xE90C); x, y = the placement of key i (not i // variants) drawn with s; "
    "flip = bit 0 of SplitMix64(s, i, stream 5) when the plan flips")
STATS_NOTE = ("exact over the samples as a reader rebuilds them: fg_bg over the composites before any JPEG "
              "encoding, bg over the decoded JPEG inputs (backgrounds.lmdb), mask and depth lossless")


def recipe_content(options: BuildOptions) -> dict[str, Any]:
    """The content options of a recipe dataset: a materialised build's plus the store."""
    return {**options.content(), "store": RECIPE_KIND}


def validate_recipe_options(options: BuildOptions) -> None:
    validate_options(options)
    if options.inputs.per_sample_depth:
        raise DepthmaskError(PER_SAMPLE_REFUSAL)
    if options.part is not None or options.merge_only:
        raise DepthmaskError("--store recipes: --part and --merge are for materialised builds; a recipe build "
                             "stores only the assets and runs whole on one machine")
    if options.max_shard_size_mb != DEFAULT_MAP_SIZE >> 20:
        raise DepthmaskError("--store recipes: --max-shard-size-mb sizes the shards of materialised builds; a recipe "
                             "build writes none (give it to --from-recipes when materialising the recipes)")


# ---- statistics of the samples a reader rebuilds ---------------------------------------------------
class StatsContext:
    """What a statistics worker needs: the store (lossless images, depths, foregrounds), the exact
    sums of each background's decoded JPEG input, and, made on first use, the tables recipe_stats
    reads: per foreground variant (foreground, flip, scale level), per background (the last one:
    samples come background by background) and the last few layouts (with fixed placements every
    whole background shows the same foregrounds in the same order)."""

    LAYOUTS_KEPT = 4

    def __init__(self, store: RecipeStore, input_sums: list[ChannelSums]):
        self.store = store
        self.input_sums = input_sums
        self._foregrounds: dict[tuple[int, bool, int], ForegroundTables] = {}
        self._background: tuple[int, BackgroundTables] | None = None
        self._layouts: dict[tuple[tuple[int, bool, int], ...], SampleLayout] = {}

    def prepare(self) -> None:
        self.store.backgrounds, self.store.foregrounds  # read (and checked) once per process, before any chunk

    def background(self, b: int) -> BackgroundTables:
        if self._background is None or self._background[0] != b:
            image, _, depth = self.store.backgrounds[b]
            self._background = (b, background_tables(image, depth))
        return self._background[1]

    def layout(self, variants: tuple[tuple[int, bool, int], ...]) -> SampleLayout:
        """The layout of samples showing these (foreground, flip, level) variants, in this order."""
        if variants not in self._layouts:
            for key in set(variants) - set(self._foregrounds):
                self._foregrounds[key] = foreground_tables(self.store.prepared(*key), *self.store.size)
            while len(self._layouts) >= self.LAYOUTS_KEPT:
                del self._layouts[next(iter(self._layouts))]
            self._layouts[variants] = sample_layout([self._foregrounds[key] for key in variants])
        return self._layouts[variants]


def _exact_total(values: np.ndarray) -> list[int]:
    """Column sums of an int64 array as Python ints (no int64 total can overflow)."""
    return [int(v) for v in np.atleast_1d(values.sum(axis=0, dtype=object))]


def _add_samples(acc: StatsAccumulator, split: str, sums: SampleSums, bg_input: ChannelSums, pixels: int) -> None:
    """The sums of some samples of one split that share one background."""
    n = len(sums.mask_on)
    acc.add_sums_raw(split, "fg_bg", _exact_total(sums.fg_bg_sums), _exact_total(sums.fg_bg_squares), pixels * n)
    on = _exact_total(sums.mask_on)[0]
    acc.add_sums_raw(split, "mask", [on * MASK_ON], [on * MASK_ON * MASK_ON], pixels * n)
    acc.add_sums_raw(split, "depth", _exact_total(sums.depth_sums), _exact_total(sums.depth_squares), pixels * n)
    acc.add_sums(split, "bg", bg_input, times=n)


def chunk_stats(context: StatsContext, start: int, stop: int) -> dict[str, Any]:
    """Exact sums per split of samples [start, stop) as RecipeStore.render gives them, computed per
    background for all its samples at once (recipe_stats: no sample is composited)."""
    context.prepare()
    store = context.store
    p = store.placements(np.arange(start, stop, dtype=np.int64), object_depths=False)
    splits = store.split.assign(p["bg"], p["fg"])
    acc = StatsAccumulator()
    counts = {name: 0 for name in SPLIT_NAMES}
    pixels = store.size[0] * store.size[1]
    for b in np.unique(p["bg"]):
        at = np.flatnonzero(p["bg"] == b)
        variants = tuple(zip(p["fg"][at].tolist(), p["flip"][at].tolist(), p["level"][at].tolist()))
        sums = sample_sums(context.background(int(b)), context.layout(variants), p["x"][at], p["y"][at])
        for s in np.unique(splits[at]):
            mine = splits[at] == s
            _add_samples(acc, SPLIT_NAMES[s], sums.select(mine), context.input_sums[b], pixels)
            counts[SPLIT_NAMES[s]] += int(mine.sum())
    return {"stats": acc.to_json(), "split_counts": counts}


_CONTEXT: StatsContext | None = None


def _init_stats_worker(context: StatsContext) -> None:
    global _CONTEXT
    import cv2

    cv2.setNumThreads(1)
    _CONTEXT = context
    context.prepare()


def _chunk_task(root: str, content: dict[str, Any], chunk: int, start: int, stop: int) -> int:
    try:
        result = chunk_stats(_CONTEXT, start, stop)
        write_json_atomic(shard_sidecar_path(Path(root), chunk), {"kind": RECIPE_KIND, "shard": chunk,
                                                                  "start": start, "stop": stop, "content": content,
                                                                  **result})
    except DepthmaskError:
        raise
    except OSError as exc:
        raise storage_error(exc, Path(root), shard_sidecar_path(Path(root), chunk)) from None
    except Exception as exc:  # noqa: BLE001 - one line for the parent, not a pickled traceback
        raise DepthmaskError(f"statistics of samples {start}..{stop - 1} failed: {type(exc).__name__}: {exc}") from None
    return stop - start


def _chunks_to_do(root: Path, ranges: list[tuple[int, int]], content: dict[str, Any]) -> list[tuple[int, int, int]]:
    todo = []
    for chunk, (start, stop) in enumerate(ranges):
        sidecar = shard_sidecar_path(root, chunk)
        remove_stale_json_tmp(sidecar)
        if sidecar.exists():
            entry = read_json(sidecar, "statistics sidecar")
            if entry.get("content") == content and (entry.get("start"), entry.get("stop")) == (start, stop):
                continue
            sidecar.unlink()
        todo.append((chunk, start, stop))
    return todo


def _run_chunks(root: Path, context: StatsContext, content: dict[str, Any], todo: list[tuple[int, int, int]],
                workers: int, show_progress: bool) -> None:
    from tqdm import tqdm

    bar = tqdm(total=sum(b - a for _, a, b in todo), unit="sample", disable=not show_progress, mininterval=0.5,
               desc="statistics")
    try:
        if workers <= 1:
            _init_stats_worker(context)
            for chunk, start, stop in todo:
                bar.update(_chunk_task(str(root), content, chunk, start, stop))
            return
        with ProcessPoolExecutor(max_workers=workers, mp_context=worker_context(("pipeline.recipe_build",)),
                                 initializer=_init_stats_worker, initargs=(context,)) as pool:
            wait_for_tasks(pool, [pool.submit(_chunk_task, str(root), content, *task) for task in todo], root,
                           on_result=bar.update)
    finally:
        bar.close()


# ---- the asset files -------------------------------------------------------------------------------
def _write_file(root: Path, name: str, values: Callable[[], list[bytes]]) -> None:
    """One asset file, keys 0..n-1, written under a temporary name and renamed into place (the values
    are only made when the file is not there yet)."""
    final = root / name
    if final.exists():
        return
    tmp = final.with_name(f"{name}.tmp-{os.getpid()}")
    records = values()
    with ShardWriter(final, tmp=tmp, map_size=max(64 << 20, 4 * sum(len(v) for v in records))) as writer:
        for i, value in enumerate(records):
            writer.put(i, value)


def _encode_all(encode: Callable[[np.ndarray], bytes], images: list[np.ndarray], workers: int) -> list[bytes]:
    """encode(image) of every image, in threads (OpenCV releases the GIL while it encodes)."""
    if workers <= 1:
        return [encode(image) for image in images]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(encode, images, chunksize=16))


def write_asset_files(root: Path, assets: AssetSet, stored: list[Any], workers: int = 1) -> None:
    """backgrounds.lmdb exactly as a materialised build writes it (the JPEG `bg` input and the depth),
    the lossless background images, and the foregrounds; PNGs encoded in `workers` threads."""
    _write_file(root, BACKGROUNDS_NAME, lambda: [pack_record({"image": s.image, "depth": s.depth,
                                                              "name": assets.background_names[i],
                                                              "ground_top": assets.ground_tops[i]})
                                                 for i, s in enumerate(stored)])
    _write_file(root, BACKGROUND_PIXELS_NAME, lambda: [
        pack_record({"image": data}) for data in _encode_all(BACKGROUND_PIXELS_CODEC.encode, assets.backgrounds,
                                                              workers)])
    _write_file(root, FOREGROUNDS_NAME, lambda: [
        pack_record({"image": data, "name": name})
        for data, name in zip(_encode_all(FOREGROUND_CODEC.encode, assets.foregrounds, workers),
                              assets.foreground_names)])


# ---- the parent side -------------------------------------------------------------------------------
def build_recipes(options: BuildOptions, *, progress: bool = True,
                  log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)):
    """Build (or resume) the recipe dataset of `options` into options.output; returns a BuildSummary."""
    from .build import (ALREADY_COMPLETE, BackgroundPass, BuildSummary, assets_for_build, sample_plan, shard_ranges,
                        split_of_plan)
    from .codecs import default_codecs

    validate_recipe_options(options)
    started = time.perf_counter()
    content = recipe_content(options)
    codecs = default_codecs(options.jpeg_quality, options.resolved_depth_storage)
    renderer = BackgroundPass(options, codecs)
    counts: list[int] = []

    def plan_backgrounds(available: int, n_foregrounds: int) -> int:
        counts[:] = [available]
        return sample_plan(options, available, n_foregrounds).used_backgrounds

    def assets_of_plan() -> AssetSet:
        return assets_for_build(options, progress=progress, log=log, plan_backgrounds=plan_backgrounds,
                                render=renderer)

    # as for a materialised build: the user's files are read and checked before anything is written (a bad
    # input leaves no trace), a foreign folder is refused before the lock is taken
    assets = assets_of_plan() if options.uses_folders else None
    root = prepare_output_folder(Path(options.output))
    refuse_foreign_folder(root)
    with BuildLock(root) as lock:
        existing = existing_dataset(root, content, overwrite=options.overwrite,
                                    assets=None if assets is None else assets.describe())
        if existing is not None:
            lock.release(remove=True)
            return BuildSummary(root, True, existing["sample_count"], 0, 0, 0.0, existing["sizes"]["total_on_disk"],
                                notes=[ALREADY_COMPLETE])
        if assets is None:
            assets = assets_of_plan()
        plan = sample_plan(options, counts[0], len(assets.foregrounds))
        split = split_of_plan(options, plan, log)
        description = assets.describe()
        stored = renderer.stored_for(assets)
        try:
            (root / SHARDS_DIR).mkdir(exist_ok=True)
            for name in (BACKGROUNDS_NAME, BACKGROUND_PIXELS_NAME, FOREGROUNDS_NAME):
                remove_stale_tmp(root / name)
            record_build_state(root, {"format": FORMAT_NAME, "format_version": RECIPE_FORMAT_VERSION,
                                      "kind": RECIPE_KIND, "content": content, "assets": description})
            write_asset_files(root, assets, stored, workers=options.workers or os.cpu_count() or 1)
        except OSError as exc:
            raise storage_error(exc, root) from None
        placement = getattr(options, "resolved_placement", "fixed")
        scale = None
        if placement == "depth-scaled":
            from .placement import procedural_depth_scale

            scale = procedural_depth_scale(len(assets.foregrounds), seed=options.seed, size=options.size)
        store = RecipeStore(plan=plan, split=split, seed=options.seed, size=options.size,
                            backgrounds=[(image, None, depth) for image, depth in
                                         zip(assets.backgrounds, assets.background_depths)],
                            ground_tops=assets.ground_tops, foregrounds=list(assets.foregrounds),
                            placement=placement, depth_scale=scale)
        ranges = shard_ranges(plan.count, options.shard_size)
        todo = _chunks_to_do(root, ranges, content)
        if todo:
            log(f"recipes: statistics of {sum(b - a for _, a, b in todo):,} samples in {len(todo)} chunk(s) into {root}")
            workers = min(options.workers or os.cpu_count() or 1, len(todo))
            _run_chunks(root, StatsContext(store, [s.sums for s in stored]), content, todo, workers, progress)
        manifest = recipe_manifest(root, options, plan, split, assets, description, codecs, ranges,
                                   [hashlib.sha256(s.image).hexdigest() for s in stored], store)
        try:
            write_json_atomic(root / MANIFEST_NAME, manifest)
        except OSError as exc:
            remove_stale_json_tmp(root / MANIFEST_NAME)
            raise storage_error(exc, root) from None
        (root / BUILD_STATE_NAME).unlink(missing_ok=True)
        lock.release(remove=True)
    return BuildSummary(root, True, plan.count, 0, sum(b - a for _, a, b in todo), time.perf_counter() - started,
                        manifest["sizes"]["total_on_disk"])


def recipe_manifest(root: Path, options: BuildOptions, plan: SamplePlan, split: Split, assets: AssetSet,
                    description: dict[str, Any], codecs: Any, ranges: list[tuple[int, int]],
                    input_hashes: list[str], store: RecipeStore) -> dict[str, Any]:
    from .version import __version__

    acc = StatsAccumulator()
    split_counts = {name: 0 for name in SPLIT_NAMES}
    for chunk, _ in enumerate(ranges):
        entry = read_json(shard_sidecar_path(root, chunk), "statistics sidecar")
        acc.merge(StatsAccumulator.from_json(entry["stats"]))
        for name in SPLIT_NAMES:
            split_counts[name] += entry["split_counts"][name]
    stats = split_stats(acc, [name for name in SPLIT_NAMES if split_counts[name]])
    files = {name: file_entry(root, name) for name in (BACKGROUNDS_NAME, BACKGROUND_PIXELS_NAME, FOREGROUNDS_NAME)}
    file_bytes = sum(f["bytes"] for f in files.values())
    return {
        "format": FORMAT_NAME,
        "format_version": RECIPE_FORMAT_VERSION,
        "kind": RECIPE_KIND,
        "created_by": f"depthmask {__version__}",
        "sample_count": plan.count,
        "image_size": [options.size, options.size],
        "fields": {"bg": codecs.fg_bg.describe(), "bg_depth": codecs.background_depth.describe(),
                   "bg_pixels": BACKGROUND_PIXELS_CODEC.describe(), "foreground": FOREGROUND_CODEC.describe(),
                   "fg_bg": {"rebuilt": "alpha composite of bg_pixels and the foreground, before any JPEG",
                             "channels": 3, "dtype": "uint8"},
                   "mask": {"rebuilt": "255 where the foreground's alpha >= 128, else 0", "channels": 1,
                            "dtype": "uint8", "values": [0, 255]},
                   "depth": {"rebuilt": "bg_depth with the object's depth on its mask", "channels": 1,
                             "dtype": "uint16"},
                   "materialised_depth_storage": options.resolved_depth_storage,
                   "materialised_jpeg_quality": options.jpeg_quality},
        "depth": assets.depth,
        "plan": {"backgrounds": plan.n_backgrounds, "foregrounds": plan.n_foregrounds, "positions": plan.positions,
                 "flip": plan.flip, "limit": plan.limit, "placement_kind": store.placement,
                 "index_order": "index = ((bg * foregrounds + fg) * positions + position) * variants + flip; "
                                "variants = 2 with flip, else 1",
                 "placement": "x, y from SplitMix64(seed, index // variants); flipped twins share the placement"},
        "split": {"val_backgrounds": list(split.val_backgrounds), "val_foregrounds": list(split.val_foregrounds),
                  "counts": manifest_counts(split_counts), "rule": SPLIT_RULE},
        "build": {"content": recipe_content(options), "seed": options.seed, "shard_size": options.shard_size},
        "assets": description,
        "files": files,
        "backgrounds": files[BACKGROUNDS_NAME],
        "recipe": {"ground_tops": [int(g) for g in assets.ground_tops], "bg_input_sha256": input_hashes,
                   "depth_scale": None if store.depth_scale is None else {
                       "widths_m": [float(w) for w in store.depth_scale.widths_m],
                       "metres_per_unit": store.depth_scale.metres_per_unit, "focal_px": store.depth_scale.focal_px},
                   "rebuild": REBUILD_RULE,
                   "per_epoch": PER_EPOCH_RULE, "statistics": STATS_NOTE},
        "stats": stats,
        "sizes": {"backgrounds_file": files[BACKGROUNDS_NAME]["bytes"],
                  "background_pixels_file": files[BACKGROUND_PIXELS_NAME]["bytes"],
                  "foregrounds_file": files[FOREGROUNDS_NAME]["bytes"], "total_on_disk": file_bytes},
    }

"""`build_dataset`: render or load the assets, build every shard in parallel worker processes,
resume what an earlier run left, and write the manifest last.

Data flow: options -> plan + assets (parent) -> shard tasks -> workers (compose, encode, sums, write
one shard each) -> shard sidecars -> manifest (parent). The parent never opens a shard for writing.
"""
from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import lmdb
import numpy as np

from .assets import (DEFAULT_PROCEDURAL_BACKGROUNDS, DEFAULT_PROCEDURAL_FOREGROUNDS, AssetSet, RenderedBackground,
                     procedural_background)
from .assets import load_assets
from .codecs import FieldCodecs, default_codecs
from .errors import DepthmaskError
from .options import DEFAULT_SHARD_SIZE, DEFAULT_SIZE, BuildOptions, validate_options  # noqa: F401 - re-exported
from .procs import wait_for_tasks, watch_parent, worker_context
from .shard_worker import ShardContext, build_shard_reporting, build_shard_task, init_worker
from .folder import BuildLock, free_bytes, prepare_output_folder, remove_part_locks, storage_error
from .format import (BACKGROUNDS_NAME, BUILD_STATE_NAME, FORMAT_NAME, FORMAT_VERSION, MANIFEST_NAME, SHARDS_DIR,
                     pack_record, remove_stale_json_tmp, shard_path, shard_sidecar_path, write_json_atomic)
from .manifest import merge_manifest
from .plan import SamplePlan, Split, empty_val_reason, plan_split
from .resume import (existing_dataset, record_build_state, refuse_foreign_folder, shard_ranges,  # noqa: F401
                     shards_in_part, shards_to_build)  # (shard_ranges re-exported for recipe_build)
from .shards import ShardWriter, remove_stale_tmp
from .stats import ChannelSums

ALREADY_COMPLETE = "dataset is already complete with these options; nothing to do (--overwrite rebuilds it)"


@dataclass
class BuildSummary:
    output: Path
    complete: bool
    samples: int
    shards: int
    built_samples: int  # by this run (0 when everything was already there)
    seconds: float
    bytes_on_disk: int
    part: tuple[int, int] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def kb_per_sample(self) -> float:
        return self.bytes_on_disk / 1024 / max(self.samples, 1)

    @property
    def samples_per_second(self) -> float:
        return self.built_samples / self.seconds if self.seconds > 0 else 0.0


def assets_for_build(options: BuildOptions, *, progress: bool = False, log: Callable[[str], None] = lambda m: None,
                     plan_backgrounds: Callable[[int, int], int] | None = None,
                     render: Callable[[int], list[RenderedBackground]] | None = None) -> AssetSet:
    """assets.load_assets with a build's options: `plan_backgrounds` (default: the plan's rule without
    resource checks) decides how many backgrounds are used, `render` where procedural ones are rendered."""
    return load_assets(options.inputs, options.backgrounds, options.foregrounds, seed=options.seed,
                       size=options.size, log=log, progress=progress,
                       plan_backgrounds=plan_backgrounds or (lambda available, n_fg:
                                                             sample_plan(options, available, n_fg).used_backgrounds),
                       render=render)


def sample_plan(options: BuildOptions, n_backgrounds: int, n_foregrounds: int) -> SamplePlan:
    return SamplePlan(n_backgrounds, n_foregrounds, options.resolved_positions, options.flip, options.limit)


def split_of_plan(options: BuildOptions, plan: SamplePlan, log: Callable[[str], None]) -> Split:
    """The plan's split; an empty val split is a warning (dm-train needs one), not an error."""
    split = plan_split(plan, options.val_fraction, options.seed)
    reason = empty_val_reason(plan, split, options.val_fraction)
    if reason:
        log(f"warning: the val split is empty ({reason}); dm-train needs one: build more samples "
            "(--limit, --backgrounds, --foregrounds) or a larger --val-fraction")
    return split


# ---- backgrounds: rendered, encoded and summed in worker processes -------------------------------
# Below this many backgrounds per worker, starting a pool costs more than it saves (~1 s to start
# and stop two workers on the shared 2-core VM, against ~25-55 ms per background).
MIN_BACKGROUNDS_PER_WORKER = 16


@dataclass
class StoredBackground:
    """A background as backgrounds.lmdb stores it, and the exact sums of its decoded stored image."""

    image: bytes
    depth: bytes
    sums: ChannelSums


def encode_background(codecs: FieldCodecs, image: np.ndarray, depth: np.ndarray) -> StoredBackground:
    data = codecs.fg_bg.encode(image)
    return StoredBackground(data, codecs.background_depth.encode(depth), ChannelSums.of_image(codecs.fg_bg.decode(data)))


_RENDER_CODECS: FieldCodecs | None = None


def _init_render_worker(build_pid: int, jpeg_quality: int, depth_storage: str) -> None:
    global _RENDER_CODECS
    import cv2

    cv2.setNumThreads(1)
    _RENDER_CODECS = default_codecs(jpeg_quality, depth_storage)
    watch_parent(build_pid)


def _render_background_task(index: int, seed: int, size: int) -> tuple[RenderedBackground, StoredBackground]:
    rendered = procedural_background(index, seed=seed, size=size)
    return rendered, encode_background(_RENDER_CODECS, rendered.image, rendered.depth)


class BackgroundPass:
    """Renders the first N procedural backgrounds in a pool of worker processes (each returns the
    arrays composed, their hash, ground row, stored encodings and exact sums), or here when there are
    too few to pay for a pool. The stored encodings are kept for _write_backgrounds."""

    def __init__(self, options: BuildOptions, codecs: FieldCodecs):
        self.options = options
        self.codecs = codecs
        self.rendered: list[RenderedBackground] | None = None
        self.stored: list[StoredBackground] | None = None

    def __call__(self, count: int) -> list[RenderedBackground]:
        options = self.options
        workers = min(options.workers or os.cpu_count() or 1, count // MIN_BACKGROUNDS_PER_WORKER)
        if workers <= 1:
            self.rendered = [procedural_background(i, seed=options.seed, size=options.size) for i in range(count)]
            self.stored = [encode_background(self.codecs, b.image, b.depth) for b in self.rendered]
            return self.rendered
        initargs = (os.getpid(), options.jpeg_quality, options.resolved_depth_storage)
        with ProcessPoolExecutor(max_workers=workers, mp_context=worker_context(preload=(__name__,)), initializer=_init_render_worker,
                                 initargs=initargs) as pool:
            try:
                results = list(pool.map(_render_background_task, range(count), [options.seed] * count,
                                        [options.size] * count, chunksize=max(1, count // (workers * 8))))
            except BrokenProcessPool:
                raise DepthmaskError("a worker rendering backgrounds died unexpectedly (killed, or out of "
                                     "memory?); run the same command again") from None
        self.rendered = [rendered for rendered, _ in results]
        self.stored = [stored for _, stored in results]
        return self.rendered

    def stored_for(self, assets: AssetSet) -> list[StoredBackground]:
        """The stored form of each background of `assets`: from the workers where the arrays are the
        ones they rendered (per-sample depth replaces the depths), else encoded here."""
        out = []
        for i, (image, depth) in enumerate(zip(assets.backgrounds, assets.background_depths)):
            mine = self.rendered is not None and i < len(self.rendered) and \
                self.rendered[i].image is image and self.rendered[i].depth is depth
            out.append(self.stored[i] if mine else encode_background(self.codecs, image, depth))
        return out


# ---- the parent side -----------------------------------------------------------------------------
def build_dataset(options: BuildOptions, *, progress: bool = True,
                  log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
                  assets_from: Callable[[Callable[[int, int], int]], AssetSet] | None = None) -> BuildSummary:
    """Build (or resume, or finish merging) the dataset described by `options` into options.output.
    `assets_from(plan_backgrounds)` gives the assets instead of rendering them or reading the user's
    folders (materialise.py: a recipe dataset's stored assets); it calls plan_backgrounds as assets_for_build does."""
    validate_options(options)
    started = time.perf_counter()
    output = Path(options.output)
    codecs = default_codecs(options.jpeg_quality, options.resolved_depth_storage)
    renderer = BackgroundPass(options, codecs)

    available_backgrounds: list[int] = []  # the plan's background count: the option's, or the folder's files

    def plan_backgrounds(available: int, n_foregrounds: int) -> int:
        plan = sample_plan(options, available, n_foregrounds)
        check_resources(options, output, plan)
        available_backgrounds[:] = [available]
        return plan.used_backgrounds

    def assets_of_plan() -> AssetSet:
        if assets_from is not None:
            return assets_from(plan_backgrounds)
        return assets_for_build(options, progress=progress, log=log, plan_backgrounds=plan_backgrounds,
                                render=renderer)

    if options.uses_folders:
        # the user's files are read and checked before anything is written: a bad input leaves no trace
        assets = assets_of_plan()
    else:  # the embedded default: sizes are checked before the folder is touched, scenes rendered later
        plan_backgrounds(options.backgrounds or DEFAULT_PROCEDURAL_BACKGROUNDS,
                         options.foregrounds or DEFAULT_PROCEDURAL_FOREGROUNDS)
        assets = None
    root = prepare_output_folder(output)
    refuse_foreign_folder(root)
    lock = BuildLock(root, options.part)
    with lock:
        existing = existing_dataset(root, options.content(), overwrite=options.overwrite,
                                    assets=None if assets is None else assets.describe())
        if existing is not None:
            if options.part is None:
                lock.release(remove=True)
            return BuildSummary(root, True, existing["sample_count"], len(existing["shards"]), 0, 0.0,
                                existing["sizes"]["total_on_disk"], notes=[ALREADY_COMPLETE])
        if assets is None:
            assets = assets_of_plan()
        plan = sample_plan(options, available_backgrounds[0], len(assets.foregrounds))
        assert plan.used_backgrounds == len(assets.backgrounds)
        split = split_of_plan(options, plan, log)
        asset_description = assets.describe()
        with cleaned_on_storage_error(root, [root / BUILD_STATE_NAME]):
            (root / SHARDS_DIR).mkdir(exist_ok=True)
            if options.part is None:  # alone in the folder: leftovers of killed runs can go
                remove_stale_tmp(root / BACKGROUNDS_NAME)
            record_build_state(root, {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                                      "content": options.content(), "assets": asset_description})
            bg_sums = _write_backgrounds(root, assets, renderer.stored_for(assets))
        ranges = shard_ranges(plan.count, options.shard_size)
        todo = shards_to_build(root, ranges, options.content(), options.part, options.merge_only)
        if options.merge_only and todo:
            missing = ", ".join(str(s) for s, _, _ in todo[:8]) + (" ..." if len(todo) > 8 else "")
            raise DepthmaskError(f"{root}: cannot merge, {len(todo)} shard(s) not built yet: {missing}")
        context = ShardContext(root, options, plan, assets, split, codecs, bg_sums, progress=None)
        built = sum(stop - start for _, start, stop in todo)
        already = len(shards_in_part(ranges, options.part)) - len(todo)
        if todo:
            log(f"building {built:,} samples in {len(todo)} shard(s) into {root}"
                + (f" (part {options.part[0]}/{options.part[1]})" if options.part else "")
                + (f"; {already} shard(s) already done, resuming" if already else ""))
            try:
                _run_shards(context, todo, options, progress)
            except BaseException:  # the workers are gone: their temporaries go too (the shards are this run's)
                for shard_id, _, _ in todo:
                    remove_stale_tmp(shard_path(root, shard_id))
                    remove_stale_json_tmp(shard_sidecar_path(root, shard_id))
                raise
        if options.part is not None:
            seconds = time.perf_counter() - started
            return BuildSummary(root, False, plan.count, len(shards_in_part(ranges, options.part)), built, seconds,
                                _folder_bytes(root), part=options.part,
                                notes=[f"part {options.part[0]}/{options.part[1]} done; when every part is done, "
                                       f"run the same command with --merge instead of --part to write the manifest"])
        manifest = merge_manifest(root, options, plan, split, codecs, assets, asset_description, ranges)
        with cleaned_on_storage_error(root, [root / MANIFEST_NAME]):
            write_json_atomic(root / MANIFEST_NAME, manifest)
        (root / BUILD_STATE_NAME).unlink(missing_ok=True)
        for name in (MANIFEST_NAME, BUILD_STATE_NAME):  # of builds killed while writing them
            remove_stale_json_tmp(root / name)
        lock.release(remove=True)
        remove_part_locks(root)
        seconds = time.perf_counter() - started
        return BuildSummary(root, True, plan.count, len(ranges), built, seconds, manifest["sizes"]["total_on_disk"])


@contextmanager
def cleaned_on_storage_error(root: Path, json_files: list[Path]):
    """Writes of the parent: a failed write (full disk, I/O error) is one line naming the folder, and
    leaves no temporary of `json_files` (the LMDB writer removes its own)."""
    try:
        yield
    except (OSError, lmdb.Error) as exc:
        for path in json_files:
            remove_stale_json_tmp(path)
        raise storage_error(exc, root) from None


# ---- sizes the plan implies, checked before anything is rendered or written ----------------------
# Measured on the default (224 px, delta depth): ~11.9 KB per sample, ~22 KB per stored background;
# both scale with the pixel count. Full depth PNGs add ~7 KB per sample.
SAMPLE_BYTES_224 = 12 * 1024
FULL_DEPTH_BYTES_224 = 7 * 1024
BACKGROUND_BYTES_224 = 22 * 1024


def check_resources(options: BuildOptions, output: Path, plan: SamplePlan) -> None:
    """Refuse, in one line, a plan whose samples would not fit on the disk or whose assets would not
    fit in memory (the parent and each worker hold every background and foreground of the plan)."""
    shards = -(-plan.count // options.shard_size)
    processes = 1 + min(options.workers or os.cpu_count() or 1, shards)
    fg_side = options.inputs.fg_max_size or options.size * 5 // 7
    per_process = plan.used_backgrounds * options.size ** 2 * 5 + plan.n_foregrounds * fg_side ** 2 * 4 * 3
    need_memory = per_process * processes
    available = available_memory()
    if available is not None and need_memory > available:
        raise DepthmaskError(f"{output}: this plan's {plan.used_backgrounds:,} backgrounds and "
                             f"{plan.n_foregrounds:,} foregrounds need about {_gib(need_memory)} of memory in "
                             f"{processes} processes, but {_gib(available)} is available; lower --backgrounds, "
                             "--foregrounds, --limit or --workers")
    scale = (options.size / 224) ** 2
    per_sample = (SAMPLE_BYTES_224 + (FULL_DEPTH_BYTES_224 if options.resolved_depth_storage == "full" else 0)) * scale
    remaining = max(0, plan.count - _samples_done(output, options.shard_size))
    need_disk = int(remaining * per_sample + plan.used_backgrounds * BACKGROUND_BYTES_224 * scale)
    free = free_bytes(output)
    if free is not None and need_disk > free:
        raise DepthmaskError(f"{output}: this plan has {plan.count:,} samples ({_plan_words(plan)}), about "
                             f"{_gib(need_disk)} on disk at ~{per_sample / 1024:.0f} KB/sample, but only "
                             f"{_gib(free)} is free there; lower --limit, --positions, --backgrounds or "
                             "--foregrounds")


def _plan_words(plan: SamplePlan) -> str:
    return (f"{plan.used_backgrounds:,} backgrounds x {plan.n_foregrounds:,} foregrounds x {plan.positions:,} "
            f"positions x {plan.variants}" + (f", first {plan.limit:,}" if plan.limit is not None else ""))


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.0f} MiB"


def _samples_done(output: Path, shard_size: int) -> int:
    """An upper bound of the samples an interrupted build already wrote (its finished shards)."""
    try:
        return shard_size * sum(1 for name in os.listdir(output / SHARDS_DIR) if name.endswith(".json"))
    except OSError:
        return 0


def available_memory() -> int | None:
    """MemAvailable of /proc/meminfo (Linux), None where unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _write_backgrounds(root: Path, assets: AssetSet, stored: list[StoredBackground]) -> list[ChannelSums]:
    """Store every background of the plan once (JPEG as fg_bg, plus its depth); return exact sums of
    the decoded stored images, which every sample's `bg` statistics are made of."""
    final = root / BACKGROUNDS_NAME
    if not final.exists():
        # a per-process temporary name: the parts of a partitioned build may all get here at once
        tmp = final.with_name(f"{BACKGROUNDS_NAME}.tmp-{os.getpid()}")
        with ShardWriter(final, tmp=tmp, map_size=max(64 << 20, 4 * sum(len(b.image) + len(b.depth) for b in stored))) as writer:
            for i, background in enumerate(stored):
                writer.put(i, pack_record({"image": background.image, "depth": background.depth,
                                           "name": assets.background_names[i],
                                           "ground_top": assets.ground_tops[i]}))
    return [background.sums for background in stored]


def _run_shards(context: ShardContext, todo: list[tuple[int, int, int]], options: BuildOptions,
                show_progress: bool) -> None:
    from tqdm import tqdm

    total = sum(stop - start for _, start, stop in todo)
    workers = min(options.workers or os.cpu_count() or 1, len(todo))
    bar = tqdm(total=total, unit="sample", disable=not show_progress, smoothing=0.1, dynamic_ncols=True,
               mininterval=0.5)
    try:
        if workers == 1:
            _init_worker_inline(context, bar)
            for shard_id, start, stop in todo:
                build_shard_reporting(context, shard_id, start, stop)
            return
        _run_pool(context, todo, workers, bar)
    finally:
        bar.close()


class _BarCounter:
    """Stands in for the shared counter when shards are built in the parent process."""

    def __init__(self, bar: Any):
        self.bar = bar
        self.value = 0

    def get_lock(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bar.update(self.value)
        self.value = 0


def _init_worker_inline(context: ShardContext, bar: Any) -> None:
    context.progress = _BarCounter(bar)
    context.prepare(model_threads=1)  # as in pool workers: a model's sums must not depend on --workers


def _run_pool(context: ShardContext, todo: list[tuple[int, int, int]], workers: int, bar: Any) -> None:
    mp_context = worker_context(preload=(__name__,))
    counter = mp_context.Value("q", 0)
    context.progress = counter
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp_context, initializer=init_worker,
                             initargs=(context, os.getpid())) as pool:
        shown = [0]

        def show_progress() -> None:
            bar.update(counter.value - shown[0])
            shown[0] = counter.value

        wait_for_tasks(pool, [pool.submit(build_shard_task, *task) for task in todo], context.root,
                       on_tick=show_progress)
    bar.update(counter.value - shown[0])


def _folder_bytes(root: Path) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                total += os.stat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


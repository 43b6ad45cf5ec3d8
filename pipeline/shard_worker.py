"""The shard worker: a `ShardContext` (what every worker process needs, set once per process), the
per-sample rendering, and `build_shard`, which writes one shard under a temporary name, renames it
into place and writes its sidecar last. Runs in worker processes or, with one worker, in the build."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import cv2
import lmdb
import numpy as np

from .assets import AssetSet
from .codecs import FieldCodecs
from .compose import (MASK_ON, composite, object_depth, paste_depth, paste_mask, pasted_depth_sums,
                      prepare_foreground)
from .errors import DepthmaskError
from .folder import storage_error
from .format import pack_record, payload_crc32, shard_path, shard_sidecar_path, write_json_atomic
from .manifest import FIELD_BYTES
from .options import BuildOptions
from .placement import ScaledForegrounds, depth_scaled_placements, fixed_placements, procedural_depth_scale
from .plan import SPLIT_NAMES, SamplePlan
from .procs import watch_parent
from .shards import ShardWriter
from .stats import ChannelSums, StatsAccumulator, image_sums

PROGRESS_EVERY = 64


@dataclass
class ShardContext:
    """What each worker needs, set once per process (inherited over fork, pickled once under spawn)."""

    root: Path
    options: BuildOptions
    plan: SamplePlan
    assets: AssetSet
    split: Any
    codecs: FieldCodecs
    bg_sums: list[ChannelSums]
    progress: Any  # multiprocessing.Value('q') or None
    prepared: list[tuple[Any, Any]] | None = None
    bg_depth_sums: list[tuple[int, int]] | None = None
    depth_model: Any = None  # per-sample mode: the loaded model, once per process
    scaled: ScaledForegrounds | None = None  # depth-scaled placement: cut-outs per (fg, level, flip)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["depth_model"] = None  # loaded again in each worker
        return state

    def prepare(self, model_threads: int | None = None) -> None:
        """Per-process set-up: pre-multiplied foregrounds (both orientations), background depth sums,
        and in per-sample mode the depth model."""
        if self.options.inputs.per_sample_depth and self.depth_model is None:
            from .depth_model import load_depth_model

            self.depth_model = load_depth_model(self.options.inputs.depth_model, threads=model_threads)
        if self.prepared is None:
            self.prepared = [(prepare_foreground(fg), prepare_foreground(fg, flip=True))
                             for fg in self.assets.foregrounds]
            self.bg_depth_sums = []
            for depth in self.assets.background_depths:
                sums, squares = image_sums(depth)
                self.bg_depth_sums.append((sums[0], squares[0]))
        if self.scaled is None and self.options.resolved_placement == "depth-scaled":
            self.scaled = ScaledForegrounds(self.assets.foregrounds)


_PROCESS_CONTEXT: ShardContext | None = None


def init_worker(context: ShardContext, build_pid: int) -> None:
    global _PROCESS_CONTEXT
    cv2.setNumThreads(1)  # one process per core already
    _PROCESS_CONTEXT = context
    _PROCESS_CONTEXT.prepare(model_threads=1)
    watch_parent(build_pid)


def build_shard_task(shard_id: int, start: int, stop: int) -> dict[str, Any]:
    return build_shard_reporting(_PROCESS_CONTEXT, shard_id, start, stop)


def build_shard_reporting(context: ShardContext, shard_id: int, start: int, stop: int) -> dict[str, Any]:
    """build_shard with every failure as one line (a worker's traceback never reaches the user)."""
    final = shard_path(context.root, shard_id)
    try:
        return build_shard(context, shard_id, start, stop)
    except DepthmaskError:
        raise
    except (OSError, lmdb.Error) as exc:  # a full disk among them
        raise storage_error(exc, context.root, final) from None
    except Exception as exc:  # noqa: BLE001 - surfaced to the parent as one line, not a pickled traceback
        raise DepthmaskError(f"shard {shard_id}: build failed: {type(exc).__name__}: {exc}") from None


def shard_samples(context: ShardContext, start: int, stop: int) -> dict[str, np.ndarray]:
    """Vectorised plan of a shard: per sample bg, fg, flip, x, y, scale level and split."""
    plan, assets, options = context.plan, context.assets, context.options
    index = np.arange(start, stop, dtype=np.int64)
    bg, fg, _, flipped = plan.locate(index)
    widths = np.array([f.shape[1] for f in assets.foregrounds], np.int64)
    heights = np.array([f.shape[0] for f in assets.foregrounds], np.int64)
    ground = np.array(assets.ground_tops, np.int64)
    key = plan.placement_key(index)
    if options.resolved_placement == "depth-scaled":
        scale = procedural_depth_scale(len(widths), seed=options.seed, size=options.size)
        x, y, level = depth_scaled_placements(options.seed, key, fg, widths[fg], heights[fg], bg,
                                              assets.background_depths, ground[bg], options.size, scale)
    else:
        x, y, level = fixed_placements(options.seed, key, widths[fg], heights[fg], ground[bg], options.size)
    return {"index": index, "bg": bg, "fg": fg, "flip": flipped, "x": x, "y": y, "level": level,
            "split": context.split.assign(bg, fg)}


class RenderedSample(NamedTuple):
    """One composed sample before encoding: its arrays, the prepared foreground pasted, and the
    object's depth value."""

    fg_bg: np.ndarray
    mask: np.ndarray
    depth: np.ndarray
    prepared: Any
    object_depth: Any


def render_sample(context: ShardContext, bg: int, fg: int, flip: bool, x: int, y: int,
                  level: int = 0) -> RenderedSample:
    """One sample composed (the cut-out scaled to `level`): pure, used by the build, the benchmarks and the tests."""
    context.prepare()
    prepared = context.prepared[fg][1 if flip else 0] if level == 0 else context.scaled.get(fg, level, flip)
    background = context.assets.backgrounds[bg]
    bg_depth = context.assets.background_depths[bg]
    fg_bg = composite(background, prepared, x, y)
    mask = paste_mask(background.shape[:2], prepared, x, y)
    value = object_depth(bg_depth, prepared, x, y)
    depth = paste_depth(bg_depth, prepared, x, y, value)
    return RenderedSample(fg_bg, mask, depth, prepared, value)


def _rendered(context: ShardContext, plan: dict[str, np.ndarray]) -> Iterator[tuple[RenderedSample, Any]]:
    """Each sample of a shard's plan rendered, in order, paired with the model's depth in per-sample
    mode (None otherwise). The model sees batches of its batch size counted from the shard's first sample,
    so a shard's batches are the same whatever the workers or resumes."""
    model = context.depth_model
    count = len(plan["index"])
    chunk = model.spec.batch_size if model is not None else PROGRESS_EVERY
    for first in range(0, count, chunk):
        rendered = [render_sample(context, int(plan["bg"][j]), int(plan["fg"][j]), bool(plan["flip"][j]),
                                  int(plan["x"][j]), int(plan["y"][j]), int(plan["level"][j]))
                    for j in range(first, min(first + chunk, count))]
        depths = model.predict([r.fg_bg for r in rendered]) if model is not None else [None] * len(rendered)
        for sample, depth in zip(rendered, depths):
            yield sample, depth


def build_shard(context: ShardContext, shard_id: int, start: int, stop: int) -> dict[str, Any]:
    """Build one shard under a temporary name, rename it into place, then write its sidecar."""
    codecs = context.codecs
    plan = shard_samples(context, start, stop)
    acc = StatsAccumulator()
    field_bytes = {name: 0 for name in FIELD_BYTES}
    split_counts = {name: 0 for name in SPLIT_NAMES}
    bg_uses: dict[tuple[str, int], int] = {}
    final = shard_path(context.root, shard_id)
    unreported = 0
    with ShardWriter(final, map_size=context.options.max_shard_size_mb << 20) as writer:
        for j, (sample, model_depth) in enumerate(_rendered(context, plan)):
            fg_bg, mask, depth, prepared, value = sample
            bg, fg, flip = int(plan["bg"][j]), int(plan["fg"][j]), bool(plan["flip"][j])
            x, y = int(plan["x"][j]), int(plan["y"][j])
            split = SPLIT_NAMES[plan["split"][j]]
            if model_depth is not None:
                depth = model_depth
            jpeg = codecs.fg_bg.encode(fg_bg)
            mask_png = codecs.mask.encode(mask)
            depth_png = codecs.depth.encode(depth, context.assets.background_depths[bg],
                                            (x, y, prepared.width, prepared.height))
            # statistics of what a reader will decode: fg_bg is lossy, so decode it; mask and depth
            # are lossless, so their arrays are exactly what will be read back
            acc.add_image(split, "fg_bg", codecs.fg_bg.decode(jpeg))
            on = int(prepared.mask.sum())
            acc.add_sums_raw(split, "mask", [on * MASK_ON], [on * MASK_ON * MASK_ON], mask.size)
            if model_depth is not None:
                acc.add_image(split, "depth", depth)
            else:
                d_sum, d_sq = pasted_depth_sums(*context.bg_depth_sums[bg], context.assets.background_depths[bg],
                                                prepared, x, y, value)
                acc.add_sums_raw(split, "depth", [d_sum], [d_sq], depth.size)
            bg_uses[(split, bg)] = bg_uses.get((split, bg), 0) + 1
            split_counts[split] += 1
            field_bytes["fg_bg"] += len(jpeg)
            field_bytes["mask"] += len(mask_png)
            field_bytes["depth"] += len(depth_png)
            record = {"fg_bg": jpeg, "mask": mask_png, "depth": depth_png, "bg": bg, "fg": fg, "flip": flip,
                      "x": x, "y": y, "crc32": payload_crc32(jpeg, mask_png, depth_png)}
            if context.scaled is not None:  # depth-scaled: the level of placement.scale_foreground pasted
                record["scale_level"] = int(plan["level"][j])
            writer.put(start + j, pack_record(record))
            unreported += 1
            if unreported >= PROGRESS_EVERY and context.progress is not None:
                with context.progress.get_lock():
                    context.progress.value += unreported
                unreported = 0
    if unreported and context.progress is not None:
        with context.progress.get_lock():
            context.progress.value += unreported
    for (split, bg), uses in sorted(bg_uses.items()):
        acc.add_sums(split, "bg", context.bg_sums[bg], times=uses)
    entry = {
        "shard": shard_id,
        "path": str(final.relative_to(context.root)),
        "start": start,
        "stop": stop,
        "records": writer.hasher.records,
        "sha256": writer.hasher.hexdigest(),
        "bytes": final.stat().st_size,
        "field_bytes": field_bytes,
        "split_counts": split_counts,
        "content": context.options.content(),
        "stats": acc.to_json(),
    }
    write_json_atomic(shard_sidecar_path(context.root, shard_id), entry)
    return entry

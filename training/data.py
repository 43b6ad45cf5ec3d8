"""Reading a depthmask dataset into training batches.

Workers fetch and decode whole batches (`__getitems__`) and send uint8/uint16 tensors: four times
less inter-process traffic than float32, and the normalisation runs where the batch is used (on the
GPU when there is one; see `BatchNormalizer`). Decoding is sized to the target: JPEGs are decoded at
1/2 or 1/4 scale when that is still at least the target size.

The batch path decodes straight into the batch: JPEGs to RGB (no conversion), each worker keeps its
backgrounds converted and resized once, the background-relative depth box is pasted into a copy of
the background's depth. A make_loader worker writes each batch into one of a few reused shared-memory
slots and the loader yields views of the slot, freed when the last is gone (training.batch_ring: torch's new
shared memory per batch costs a page fault per 4 KiB, ~0.5 ms a 224 px sample here); in another DataLoader the batch
tensors are allocated in shared memory, so sending them copies nothing. Its values are exactly those of
the straightforward decode through the reader's codecs, converted to RGB (tests/reference_decode.py, the
reference it is tested against).
A recipe sample is rendered straight into the batch arrays (RecipeReader.render_into: the background's RGB
pixels copied, the object's box composited in place with compose.py's integer math), exactly
RecipeStore.render in RGB (tests/test_recipe_loading.py). With composite_on="device" a worker sends only
the batch's placements and augmentation draws, and training.device_batches composites it on the device.

Determinism: the augmentation of a sample is drawn from (seed, epoch, sample index), so it does not
depend on the number of workers or on which worker got the sample; the sampler passes the epoch
along with each index, so persistent workers need no signal when an epoch changes.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline import DatasetReader, DepthmaskError

from .augment import AugmentConfig
from .batch_ring import BatchRing, ReceivedSlots, RingBatch
from .camera_effects import CameraEffects, apply_camera_effects
from .recipe_source import COMPOSITE_ON, PLACEMENT_MODES, RecipeReader, is_recipe_dataset
from .sampler import EpochSampler
from .transforms import (augment_matrix, augment_uniforms, colour_matrices, photometric, pixel_exact_mirror,
                         warp_sample)

__all__ = ["DatasetLoader", "DepthMaskDataset", "collate_batches", "decode_reduction", "make_loader"]

# OpenCV's own thread pool does not survive fork: a DataLoader worker forked after the parent ran a
# parallel OpenCV call can hang on its first one. Data work is parallel over workers instead.
cv2.setNumThreads(1)
CAMERA_STREAM = 0xCA3  # the camera effects' generator: (seed, epoch, index, CAMERA_STREAM)
PREFETCH_BATCHES = 4  # batches each worker of make_loader's loaders works ahead
BATCH_SLOTS = PREFETCH_BATCHES + 2  # a worker's batch ring: never makes it wait (training.batch_ring)

def _batch_array(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """An uninitialised array. In a DataLoader worker (without a batch ring) the memory is shared from the
    start (as default_collate's batches are), so sending the batch to the main process copies nothing;
    elsewhere numpy's heap memory, which malloc reuses from batch to batch."""
    if torch.utils.data.get_worker_info() is not None and hasattr(torch.UntypedStorage, "_new_shared"):
        dt = torch.from_numpy(np.empty(0, dtype)).dtype
        storage = torch.UntypedStorage._new_shared(math.prod(shape) * dt.itemsize)
        return torch.empty(0, dtype=dt).set_(storage, 0, shape).numpy()
    return np.empty(shape, dtype)


def decode_reduction(stored: int, target: int) -> int:
    """Largest JPEG DCT reduction (1, 2, 4, 8) that still decodes at >= the target size."""
    reduce = 1
    while reduce < 8 and stored // (reduce * 2) >= target:
        reduce *= 2
    return reduce


class DepthMaskDataset(Dataset):
    """(bg, fg_bg, mask, depth) of one split, as uint8 / uint16 tensors at `size` x `size`.

    Items: bg, fg_bg (3, H, W) uint8 RGB; mask (1, H, W) uint8 in {0, 1}; depth (1, H, W) uint16 with
    normalised depth = value / 65535. `BatchNormalizer` turns a batch into normalised float tensors.
    Indexing takes a sample position or (epoch, position) pairs (see `EpochSampler`).

    composite_on="device" (recipe datasets): a batch is only its placements and augmentation draws
    (`placement_batch`), composited where it is used by training.device_batches.DeviceCompositor.
    """

    def __init__(self, root: str | Path, split: str = "train", *, size: int | None = None,
                 augment: AugmentConfig | None = None, seed: int = 0, placements: str = "fixed",
                 camera: CameraEffects | None = None, composite_on: str = "workers"):
        self.recipes = is_recipe_dataset(root)
        if composite_on not in COMPOSITE_ON:
            raise DepthmaskError(f"--composite-on: expected one of {', '.join(COMPOSITE_ON)}, got {composite_on!r}")
        if composite_on == "device":
            _check_device_compositing(root, self.recipes, augment, camera)
        self.composite_on = composite_on
        if placements not in PLACEMENT_MODES:
            raise DepthmaskError(f"--placements: expected one of {', '.join(PLACEMENT_MODES)}, got {placements!r}")
        if placements != "fixed" and not self.recipes:
            raise DepthmaskError(f"{root}: --placements {placements} needs a recipe dataset (dm-build-lmdb --store "
                                 "recipes); a materialised dataset stores one placement per sample")
        self.placements = placements
        self.camera = camera if camera is not None and camera.active else None
        self.reader = RecipeReader(root) if self.recipes else DatasetReader(root)
        self.split = split
        self.indices = self.reader.split_indices(split)
        if len(self.indices) == 0:
            raise DepthmaskError(f"{root}: split {split!r} has no samples")
        self.augment = augment
        self.seed = seed
        self._ring: BatchRing | None = None
        self.set_size(size or self.reader.size[0])

    def __len__(self) -> int:
        return len(self.indices)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_bg_cache"], state["_scratch_arrays"], state["_ring"] = {}, None, None
        return state

    def use_batch_ring(self, slots: int) -> None:
        """In a DataLoader worker: send batches through `slots` reused shared-memory slots (training.batch_ring;
        the loader takes them). make_loader's workers call this."""
        self._ring = BatchRing(slots)

    def _batch_arrays(self, layout: tuple) -> dict[str, np.ndarray]:
        """Arrays to fill for a batch of `layout`: in a ring slot, else new (in shared memory in a worker)."""
        if self._ring is not None:
            return self._ring.slot(layout)
        return {name: _batch_array(shape, dtype) for name, shape, dtype in layout}

    def _batch_of(self, arrays: dict[str, np.ndarray]) -> Any:
        """The filled arrays as the batch the dataset returns (a RingBatch from a ring slot)."""
        if self._ring is not None:
            return self._ring.send(arrange_batch)
        return arrange_batch({name: torch.from_numpy(a) for name, a in arrays.items()})

    def set_size(self, size: int) -> None:
        """Change the output size (progressive resizing); loaders made afterwards use it."""
        stored = self.reader.size[0]
        if not 8 <= size <= stored:
            raise DepthmaskError(f"size {size}: must be between 8 and the stored size {stored}")
        self.size = int(size)
        self._reduce = decode_reduction(stored, self.size)
        self._bg_cache = {}
        self._scratch_arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def stats(self) -> dict[str, Any]:
        """Normalisation statistics: the training split's (falls back to the whole dataset's)."""
        return self.reader.stats("train")

    def _background(self, bg_index: int) -> tuple[np.ndarray, np.ndarray]:
        """(image RGB uint8 at the output size, depth uint16 at the stored size) of a background: resized
        and converted once per process, then only copied into batches."""
        entry = self._bg_cache.get(bg_index)
        if entry is None:
            image, depth = self.reader.background(bg_index)
            if image.shape[0] != self.size:
                image = cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_AREA)
            entry = self._bg_cache[bg_index] = (cv2.cvtColor(image, cv2.COLOR_BGR2RGB), depth)
        return entry

    def _scratch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(fg_bg, mask, depth) arrays at the stored size, reused by every recipe sample rendered at a smaller
        output size (made once per process)."""
        stored = self.reader.size[0]
        scratch = self._scratch_arrays
        if scratch is None or scratch[0].shape[0] != stored:
            scratch = self._scratch_arrays = (np.empty((stored, stored, 3), np.uint8), np.empty((stored, stored), np.uint8),
                                              np.empty((stored, stored), np.uint16))
        return scratch

    def _render_into(self, p: dict[str, np.ndarray], j: int, fg_bg: np.ndarray, mask: np.ndarray,
                     depth: np.ndarray) -> None:
        """Recipe sample j of placements `p` into the given arrays at the output size: rendered in place at the
        stored size (RecipeReader.render_into), else into scratch arrays area-resized as _decode_into resizes
        a record's (the 0 / 1 mask stays 0 / 1)."""
        s = self.size
        if self.reader.size[0] == s:
            self.reader.render_into(p, j, fg_bg, mask, depth)
            return
        full_fg, full_mask, full_depth = self._scratch()
        self.reader.render_into(p, j, full_fg, full_mask, full_depth)
        cv2.resize(full_fg, (s, s), dst=fg_bg, interpolation=cv2.INTER_AREA)
        cv2.resize(full_mask, (s, s), dst=mask, interpolation=cv2.INTER_AREA)
        cv2.resize(full_depth, (s, s), dst=depth, interpolation=cv2.INTER_AREA)

    def _sample_into(self, source: Any, fg_bg: np.ndarray, mask: np.ndarray, depth: np.ndarray) -> None:
        """A sample's fg_bg, mask and depth, unaugmented at the output size: a recipe sample ((placements,
        row)) rendered, a materialised record decoded."""
        if isinstance(source, tuple):
            self._render_into(*source, fg_bg, mask, depth)
        else:
            self._decode_into(source, fg_bg, mask, depth)

    def _decode_into(self, record: dict[str, Any], fg_bg: np.ndarray, mask: np.ndarray, depth: np.ndarray) -> None:
        """A record's fg_bg (RGB), mask (0/1) and depth, unaugmented at the output size, into the given
        arrays: the codecs' decode, area-resized (the mask re-binarised), in fewer passes and copies."""
        s = self.size
        codecs = self.reader.codecs
        fg = codecs.fg_bg.decode(record["fg_bg"], self._reduce, rgb=True)
        if fg.shape[0] == s:
            np.copyto(fg_bg, fg)
        else:
            cv2.resize(fg, (s, s), dst=fg_bg, interpolation=cv2.INTER_AREA)
        stored = codecs.mask.decode(record["mask"])  # 0 / 255
        if stored.shape[0] == s:
            np.greater_equal(stored, 128, out=mask.view(np.bool_))
        else:  # area-resized 0/1 values stay 0/1 (>= half covered)
            cv2.resize((stored >= 128).view(np.uint8), (s, s), dst=mask, interpolation=cv2.INTER_AREA)
        bg_depth = self._background(int(record["bg"]))[1]
        full = depth if bg_depth.shape[0] == s else np.empty_like(bg_depth)
        codecs.depth.decode(record["depth"], bg_depth, (int(record["x"]), int(record["y"])), out=full)
        if full is not depth:
            cv2.resize(full, (s, s), dst=depth, interpolation=cv2.INTER_AREA)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([item]).items()}

    def _placements_of(self, pairs: list[tuple[int, int]],
                       index: np.ndarray) -> list[tuple[dict[str, np.ndarray], int]]:
        """Per sample of a recipe batch (its placements, its row in them); per-epoch ones from (seed, epoch, index)."""
        epochs = [epoch for epoch, _ in pairs] if self.placements == "per-epoch" else [None]
        placements: list[Any] = [None] * len(pairs)
        for e in dict.fromkeys(epochs):
            chosen = [j for j, (epoch, _) in enumerate(pairs) if e is None or epoch == e]
            p = self.reader.placements(index[chosen], e)
            for k, j in enumerate(chosen):
                placements[j] = (p, k)
        return placements

    def placement_batch(self, items: Sequence[int | tuple[int, int]]) -> dict[str, torch.Tensor]:
        """A recipe batch as what composites it (composite_on="device"): index, bg, fg, flip, level, x, y,
        object_depth (N,) int64; with augmentation also mirror (N,) bool and colour (N, 3, 4) float32 (the RGB
        photometric matrix), drawn from (seed, epoch, index) exactly as the workers' augmentation draws them."""
        pairs = [item if isinstance(item, tuple) else (0, item) for item in items]
        index = self.indices[[int(position) for _, position in pairs]]
        rows = self._placements_of(pairs, index)
        out = {"index": torch.from_numpy(np.asarray(index, np.int64))}
        for key in ("bg", "fg", "flip", "level", "x", "y", "object_depth"):
            out[key] = torch.tensor([int(p[key][k]) for p, k in rows], dtype=torch.int64)
        if self.augment is not None:
            u = augment_uniforms(self.seed, [epoch for epoch, _ in pairs], index)
            mirror = [bool(pixel_exact_mirror(augment_matrix(row, self.size, self.augment), self.size)) for row in u]
            out.update(mirror=torch.tensor(mirror), colour=torch.from_numpy(colour_matrices(u, self.augment)))
        return out

    def __getitems__(self, items: Sequence[int | tuple[int, int]]) -> Any:
        """A whole batch, decoded straight into the batch tensors (in shared memory in a worker; in a make_loader
        worker, a batch_ring.RingBatch the loader takes); with composite_on="device", only its placements
        (`placement_batch`)."""
        if self.composite_on == "device":
            return self.placement_batch(items)
        n, s = len(items), self.size
        pairs = [item if isinstance(item, tuple) else (0, item) for item in items]
        arrays = self._batch_arrays((("bg", (n, s, s, 3), np.uint8), ("fg_bg", (n, s, s, 3), np.uint8),
                                     ("mask", (n, s, s), np.uint8), ("depth", (n, s, s), np.uint16),
                                     ("index", (n,), np.int64)))
        bg, fg_bg, mask, depth, index = (arrays[k] for k in ("bg", "fg_bg", "mask", "depth", "index"))
        index[:] = self.indices[[int(position) for _, position in pairs]]
        augment = self.augment
        if augment is not None:  # the batch's draws at once
            uniforms = augment_uniforms(self.seed, [epoch for epoch, _ in pairs], index)
            colours = colour_matrices(uniforms, augment)
        plain = None  # a sample's unaugmented arrays, for crop / rotation
        placements = self._placements_of(pairs, index) if self.recipes else None  # the batch's at once
        for j, (epoch, _) in enumerate(pairs):
            sample = int(index[j])
            source = placements[j] if placements is not None else self.reader.record(sample)
            bg_index = int(source[0]["bg"][source[1]]) if placements is not None else int(source["bg"])
            try:
                bg_image = self._background(bg_index)[0]
                if augment is None:
                    np.copyto(bg[j], bg_image)
                    self._sample_into(source, fg_bg[j], mask[j], depth[j])
                else:  # the geometry, then the photometry
                    m = augment_matrix(uniforms[j], s, augment)
                    dst = (bg[j], fg_bg[j], mask[j], depth[j])
                    if pixel_exact_mirror(m, s) is None:  # crop / rotation: warped from a plain copy
                        if plain is None:
                            plain = (np.empty((s, s, 3), np.uint8), np.empty((s, s), np.uint8),
                                     np.empty((s, s), np.uint16))
                        unwarped = plain
                    else:  # identity or mirror (the default): straight into the batch, warped in place
                        unwarped = dst[1:]
                    self._sample_into(source, *unwarped)
                    warp_sample(m, bg_image, *unwarped, s, out=dst)
                    photometric(colours[j], bg[j], fg_bg[j], in_place=True)
                if self.camera is not None:  # its own stream: the augmentation's draws stay as they were
                    apply_camera_effects(np.random.default_rng([self.seed, epoch, sample, CAMERA_STREAM]),
                                         self.camera, bg[j], fg_bg[j])
            except ValueError as exc:  # DecodeError: the record's fields are checked by the reader
                raise DepthmaskError(f"{self.reader.where(sample)}: {exc}") from None
        return self._batch_of(arrays)


def arrange_batch(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A batch's NHWC / NHW arrays as DepthMaskDataset's items: NCHW in shape, NHWC in memory (channels_last
    tensors, no copy)."""
    return {"bg": t["bg"].permute(0, 3, 1, 2), "fg_bg": t["fg_bg"].permute(0, 3, 1, 2), "mask": t["mask"].unsqueeze(1),
            "depth": t["depth"].unsqueeze(1), "index": t["index"]}


def _check_device_compositing(root: str | Path, recipes: bool, augment: AugmentConfig | None,
                               camera: CameraEffects | None) -> None:
    """composite_on="device" composites recipes with the mirror and photometry only (training.device_batches)."""
    if not recipes:
        raise DepthmaskError(f"{root}: --composite-on device needs a recipe dataset (dm-build-lmdb --store recipes); "
                             "a materialised dataset stores its composites")
    if augment is not None and (augment.min_scale < 1 or augment.max_rotation_deg > 0):
        raise DepthmaskError("--composite-on device: --augment-scale < 1 and --augment-rotation > 0 are not done on "
                             "the device; use --composite-on workers for them")
    if camera is not None and camera.active:
        raise DepthmaskError("--composite-on device: --jpeg-roundtrip, --sensor-noise and --blur are not done on the "
                             "device; use --composite-on workers for them")


def collate_batches(batch: Any) -> Any:
    """The dataset already returns whole batches; fall back to stacking for single items."""
    if isinstance(batch, (dict, RingBatch)):
        return batch
    return {k: torch.stack([b[k] for b in batch]) for k in batch[0]}


class DatasetLoader(torch.utils.data.DataLoader):
    """A DataLoader that stops at the start of a pass if its dataset was replaced or removed since the run began
    (workers also check when they open a file): a run never goes on with data it did not start with."""

    def __iter__(self) -> Any:
        self.dataset.reader.check_unchanged()
        if getattr(self, "received_slots", None) is None:  # one per loader: its mappings of the workers' slots
            self.received_slots = ReceivedSlots(self.num_workers * BATCH_SLOTS)
        return _TakenBatches(super().__iter__(), self.received_slots.take)


class _TakenBatches:
    """The DataLoader's iterator, with each batch that came through a worker's ring slot taken as it is yielded
    (training.batch_ring: tensors on the slot, which goes back to its worker when they are gone)."""

    def __init__(self, batches: Any, take: Any):
        self._batches, self._take = batches, take

    def __iter__(self) -> "_TakenBatches":
        return self

    def __next__(self) -> Any:
        return self._take(next(self._batches))

    def __len__(self) -> int:
        return len(self._batches)


def make_loader(dataset: DepthMaskDataset, *, batch_size: int, shuffle: bool, workers: int, seed: int = 0,
                rank: int = 0, world_size: int = 1, pin_memory: bool = False,
                multiprocessing_context: str | None = None, batch_ring: bool = True) -> torch.utils.data.DataLoader:
    """The loader of a DepthMaskDataset: whole batches per worker task, an EpochSampler, persistent workers.
    `batch_ring`: workers send batches through reused shared-memory slots (training.batch_ring), not torch's
    new shared memory per batch. The batches yielded are the same, and as with torch's they are views of shared
    memory: a batch (or any view of it) that is kept keeps its slot, and the worker uses new memory meanwhile."""
    sampler = EpochSampler(len(dataset), shuffle=shuffle, seed=seed, rank=rank, world_size=world_size)
    prefetch = PREFETCH_BATCHES if workers > 0 else None
    return DatasetLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate_batches,
        pin_memory=pin_memory, drop_last=False, persistent_workers=workers > 0,
        prefetch_factor=prefetch, multiprocessing_context=multiprocessing_context if workers else None,
        worker_init_fn=functools.partial(_worker_init, batch_slots=BATCH_SLOTS if batch_ring else 0)
        if workers > 0 else None)


def _worker_init(_: int, batch_slots: int = 0) -> None:
    """Single-threaded OpenCV and torch in each worker (the parallelism is the workers), and the batch ring
    (training.batch_ring) of `batch_slots` slots."""
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    dataset = torch.utils.data.get_worker_info().dataset
    if batch_slots and isinstance(dataset, DepthMaskDataset) and dataset.composite_on == "workers":
        dataset.use_batch_ring(batch_slots)

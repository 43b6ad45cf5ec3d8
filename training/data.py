"""Reading a depthmask dataset into training batches.

Workers fetch and decode whole batches (`__getitems__`) and send uint8/uint16 tensors: four times
less inter-process traffic than float32, and the normalisation runs where the batch is used (on the
GPU when there is one; see `BatchNormalizer`). Decoding is sized to the target: JPEGs are decoded at
1/2 or 1/4 scale when that is still at least the target size.

The batch path decodes straight into the batch: JPEGs to RGB (no conversion), each worker keeps its
backgrounds converted and resized once, the background-relative depth box is pasted into a copy of
the background's depth, and in a worker the batch tensors are allocated in shared memory, so sending
them to the main process copies nothing. Its values are exactly those of `load()` (the
straightforward decode through the reader's codecs, in BGR) converted to RGB.

Determinism: the augmentation of a sample is drawn from (seed, epoch, sample index), so it does not
depend on the number of workers or on which worker got the sample; the sampler passes the epoch
along with each index, so persistent workers need no signal when an epoch changes.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from pipeline import DatasetReader, DepthmaskError
from pipeline.codecs import DecodeError

from .augment import AugmentConfig  # also importable from here, as before

DEPTH_MAX = 65535.0

# OpenCV's own thread pool does not survive fork: a DataLoader worker forked after the parent ran a
# parallel OpenCV call can hang on its first one. Data work is parallel over workers instead.
cv2.setNumThreads(1)

# OpenCV >= 4.10 decodes a JPEG straight to RGB (IMREAD_COLOR_RGB, which replaces IMREAD_COLOR's colour
# bit and combines with the reduced-scale bits); older versions decode BGR and convert.
_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)
_IMREAD_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                   8: cv2.IMREAD_REDUCED_COLOR_8}


def decode_jpeg_rgb(data: bytes, reduce: int = 1) -> np.ndarray:
    """A colour JPEG as an RGB uint8 array, at 1/`reduce` scale: the pixels of the codec's BGR decode,
    channels reversed."""
    buf = np.frombuffer(data, np.uint8)
    if _IMREAD_RGB is not None:
        image = cv2.imdecode(buf, (_IMREAD_REDUCED[reduce] & ~cv2.IMREAD_COLOR) | _IMREAD_RGB)
    else:
        image = cv2.imdecode(buf, _IMREAD_REDUCED[reduce])
        if image is not None and image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image is None or image.ndim != 3:
        raise DecodeError("not a decodable colour JPEG")
    return image


def _batch_array(shape: tuple[int, ...], dtype: type) -> tuple[np.ndarray, torch.Tensor]:
    """An uninitialised array and the tensor on its memory. In a DataLoader worker the memory is shared
    from the start (as default_collate's batches are), so sending the batch to the main process copies
    nothing; elsewhere numpy's heap memory, which malloc reuses from batch to batch."""
    if torch.utils.data.get_worker_info() is not None and hasattr(torch.UntypedStorage, "_new_shared"):
        dt = torch.from_numpy(np.empty(0, dtype)).dtype
        storage = torch.UntypedStorage._new_shared(math.prod(shape) * dt.itemsize)
        tensor = torch.empty(0, dtype=dt).set_(storage, 0, shape)
        return tensor.numpy(), tensor
    array = np.empty(shape, dtype)
    return array, torch.from_numpy(array)


def decode_reduction(stored: int, target: int) -> int:
    """Largest JPEG DCT reduction (1, 2, 4, 8) that still decodes at >= the target size."""
    reduce = 1
    while reduce < 8 and stored // (reduce * 2) >= target:
        reduce *= 2
    return reduce


def resize_sample(bg: np.ndarray, fg_bg: np.ndarray, mask: np.ndarray, depth: np.ndarray,
                  size: int) -> tuple[np.ndarray, ...]:
    """Area-resize to size x size; the mask is re-binarised (>= half covered) so it stays binary."""
    def area(a: np.ndarray) -> np.ndarray:
        return a if a.shape[0] == size and a.shape[1] == size else cv2.resize(a, (size, size),
                                                                               interpolation=cv2.INTER_AREA)
    mask = area(mask)
    if mask.dtype == np.uint8 and mask.max(initial=0) > 1:
        mask = (mask >= 128).astype(np.uint8)
    return area(bg), area(fg_bg), mask, area(depth)


def augment_matrix(rng: np.random.Generator, size: int, config: AugmentConfig) -> np.ndarray:
    """A 2x3 affine map from output pixels to input pixels: random crop-scale, rotation, mirror."""
    scale = rng.uniform(config.min_scale, 1.0)
    angle = math.radians(rng.uniform(-config.max_rotation_deg, config.max_rotation_deg))
    flip = rng.random() < config.hflip
    crop = scale * size
    cx = rng.uniform(crop / 2, size - crop / 2)
    cy = rng.uniform(crop / 2, size - crop / 2)
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    fx = -1.0 if flip else 1.0
    # output pixel u (centred) -> input = centre + R * S * diag(fx, 1) * u
    m = np.array([[c * fx, -s, 0.0], [s * fx, c, 0.0]])
    half = (size - 1) / 2
    m[:, 2] = [cx - 0.5 - (m[0, 0] * half + m[0, 1] * half), cy - 0.5 - (m[1, 0] * half + m[1, 1] * half)]
    return m


def _pixel_exact_mirror(m: np.ndarray, size: int) -> bool | None:
    """True if the 2x3 map `m` is exactly the left-right mirror of a size x size image, False if exactly the
    identity, None for any other map."""
    if m[0, 1] != 0 or m[1, 0] != 0 or m[1, 1] != 1 or m[1, 2] != 0:
        return None
    if m[0, 0] == 1 and m[0, 2] == 0:
        return False
    if m[0, 0] == -1 and m[0, 2] == size - 1:
        return True
    return None


def warp_sample(m: np.ndarray, bg, fg_bg, mask, depth, size: int,
                out: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, ...]:
    """Apply one geometric transform to all four arrays: linear for images, nearest for mask and
    depth (no invented in-between depths at object edges, and the mask stays binary). `out`: four
    arrays to write into (size x size, the inputs' types).

    The map of the default augmentation (no crop, no rotation) is the identity or a mirror: then the
    arrays are copied or flipped, the same values as the warp's at ~1/25 of its cost."""
    arrays = (bg, fg_bg, mask, depth)
    dst = out if out is not None else (None,) * 4
    mirror = _pixel_exact_mirror(m, size)
    if mirror is not None and all(a.shape[:2] == (size, size) for a in arrays):
        if mirror:
            return tuple(cv2.flip(a, 1, dst=d) for a, d in zip(arrays, dst))
        if out is None:
            return tuple(a.copy() for a in arrays)
        for a, d in zip(arrays, out):
            np.copyto(d, a)
        return tuple(out)
    flags_img = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    flags_nn = cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
    border = cv2.BORDER_REFLECT_101
    return (cv2.warpAffine(bg, m, (size, size), dst=dst[0], flags=flags_img, borderMode=border),
            cv2.warpAffine(fg_bg, m, (size, size), dst=dst[1], flags=flags_img, borderMode=border),
            cv2.warpAffine(mask, m, (size, size), dst=dst[2], flags=flags_nn, borderMode=border),
            cv2.warpAffine(depth, m, (size, size), dst=dst[3], flags=flags_nn, borderMode=border))


def photometric(rng: np.random.Generator, config: AugmentConfig, *images: np.ndarray, rgb: bool = False,
                in_place: bool = False) -> list[np.ndarray]:
    """Same brightness/contrast (one lookup table) and saturation change on every image given (BGR,
    or RGB with `rgb`: the same result in the other channel order). `in_place` overwrites the images."""
    b = rng.uniform(-config.brightness, config.brightness) * 255
    k = rng.uniform(1 - config.contrast, 1 + config.contrast)
    sat = rng.uniform(1 - config.saturation, 1 + config.saturation)
    lut = np.clip((np.arange(256) - 128.0) * k + 128.0 + b, 0, 255).astype(np.uint8)
    to_gray, from_gray = (cv2.COLOR_RGB2GRAY, cv2.COLOR_GRAY2RGB) if rgb else (cv2.COLOR_BGR2GRAY, cv2.COLOR_GRAY2BGR)
    out = []
    for img in images:
        dst = img if in_place else None
        img = cv2.LUT(img, lut, dst=dst)
        gray = cv2.cvtColor(cv2.cvtColor(img, to_gray), from_gray)
        out.append(cv2.addWeighted(img, sat, gray, 1 - sat, 0, dst=dst))
    return out


class DepthMaskDataset(Dataset):
    """(bg, fg_bg, mask, depth) of one split, as uint8 / uint16 tensors at `size` x `size`.

    Items: bg, fg_bg (3, H, W) uint8 RGB; mask (1, H, W) uint8 in {0, 1}; depth (1, H, W) uint16 with
    normalised depth = value / 65535. `BatchNormalizer` turns a batch into normalised float tensors.
    Indexing takes a sample position or (epoch, position) pairs (see `EpochSampler`).
    """

    def __init__(self, root: str | Path, split: str = "train", *, size: int | None = None,
                 augment: AugmentConfig | None = None, seed: int = 0):
        self.reader = DatasetReader(root)
        self.split = split
        self.indices = self.reader.split_indices(split)
        if len(self.indices) == 0:
            raise DepthmaskError(f"{root}: split {split!r} has no samples")
        self.augment = augment
        self.seed = seed
        self.set_size(size or self.reader.size[0])

    def __len__(self) -> int:
        return len(self.indices)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_bg_cache"] = {}
        return state

    def set_size(self, size: int) -> None:
        """Change the output size (progressive resizing); loaders made afterwards use it."""
        stored = self.reader.size[0]
        if not 8 <= size <= stored:
            raise DepthmaskError(f"size {size}: must be between 8 and the stored size {stored}")
        self.size = int(size)
        self._reduce = decode_reduction(stored, self.size)
        self._bg_cache = {}

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

    def load(self, position: int, epoch: int = 0) -> tuple[np.ndarray, ...]:
        """One sample as HWC numpy arrays (bg, fg_bg BGR uint8; mask 0/1 uint8; depth uint16), decoded the
        straightforward way through the reader's codecs (the reference for the batch path)."""
        index = int(self.indices[position])
        record = self.reader.record(index)
        codecs = self.reader.codecs
        try:
            fg_bg = codecs.fg_bg.decode(record["fg_bg"], self._reduce)
            mask = codecs.mask.decode(record["mask"])
            depth = codecs.depth.decode(record["depth"], self.reader.background(int(record["bg"]))[1],
                                        (int(record["x"]), int(record["y"])))
        except ValueError as exc:  # DecodeError: the record's fields are checked by the reader
            raise DepthmaskError(f"{self.reader.where(index)}: {exc}") from None
        mask = (mask >= 128).astype(np.uint8)
        bg = cv2.cvtColor(self._background(int(record["bg"]))[0], cv2.COLOR_RGB2BGR)
        if self.augment is None:
            bg, fg_bg, mask, depth = resize_sample(bg, fg_bg, mask, depth, self.size)
        else:
            rng = np.random.default_rng([self.seed, epoch, index])
            if mask.shape[0] != self.size:
                _, fg_bg, mask, depth = resize_sample(bg, fg_bg, mask, depth, self.size)
            elif fg_bg.shape[0] != self.size:
                fg_bg = cv2.resize(fg_bg, (self.size, self.size), interpolation=cv2.INTER_AREA)
            m = augment_matrix(rng, self.size, self.augment)
            bg, fg_bg, mask, depth = warp_sample(m, bg, fg_bg, mask, depth, self.size)
            bg, fg_bg = photometric(rng, self.augment, bg, fg_bg)
        return bg, fg_bg, mask, depth

    def _decode_into(self, record: dict[str, Any], fg_bg: np.ndarray, mask: np.ndarray, depth: np.ndarray) -> None:
        """A record's fg_bg (RGB), mask (0/1) and depth, unaugmented at the output size, into the given
        arrays: the values of `load()` without augmentation (fg_bg in RGB), fewer passes and copies."""
        s = self.size
        fg = decode_jpeg_rgb(record["fg_bg"], self._reduce)
        if fg.shape[0] == s:
            np.copyto(fg_bg, fg)
        else:
            cv2.resize(fg, (s, s), dst=fg_bg, interpolation=cv2.INTER_AREA)
        stored = self.reader.codecs.mask.decode(record["mask"])  # 0 / 255
        if stored.shape[0] == s:
            np.greater_equal(stored, 128, out=mask.view(np.bool_))
        else:  # area-resized 0/1 values stay 0/1 (>= half covered)
            cv2.resize((stored >= 128).view(np.uint8), (s, s), dst=mask, interpolation=cv2.INTER_AREA)
        bg_depth = self._background(int(record["bg"]))[1]
        full = depth if bg_depth.shape[0] == s else np.empty_like(bg_depth)
        codec = self.reader.codecs.depth
        if codec.background_relative:
            # the codec's reconstruction, pasted straight into the output: the background's depth, and
            # the box's non-zero values at the record's (x, y)
            box = cv2.imdecode(np.frombuffer(record["depth"], np.uint8), cv2.IMREAD_UNCHANGED)
            if box is None or box.ndim != 2 or box.dtype != np.uint16:
                raise DecodeError("not a decodable 16-bit 1-channel PNG")
            x, y = int(record["x"]), int(record["y"])
            h, w = box.shape
            if x < 0 or y < 0 or y + h > bg_depth.shape[0] or x + w > bg_depth.shape[1]:
                raise DecodeError(f"depth box {w}x{h} at ({x}, {y}) falls outside the image")
            np.copyto(full, bg_depth)
            np.copyto(full[y : y + h, x : x + w], box, where=box != 0)
        else:
            decoded = codec.decode(record["depth"])
            if decoded.shape != full.shape:
                raise DecodeError(f"depth is {decoded.shape}, expected {full.shape}")
            np.copyto(full, decoded)
        if full is not depth:
            cv2.resize(full, (s, s), dst=depth, interpolation=cv2.INTER_AREA)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([item]).items()}

    def __getitems__(self, items: Sequence[int | tuple[int, int]]) -> dict[str, torch.Tensor]:
        """A whole batch, decoded straight into the batch tensors (in shared memory in a worker)."""
        n, s = len(items), self.size
        pairs = [item if isinstance(item, tuple) else (0, item) for item in items]
        (bg, bg_t), (fg_bg, fg_bg_t) = _batch_array((n, s, s, 3), np.uint8), _batch_array((n, s, s, 3), np.uint8)
        (mask, mask_t), (depth, depth_t) = _batch_array((n, s, s), np.uint8), _batch_array((n, s, s), np.uint16)
        index, index_t = _batch_array((n,), np.int64)
        index[:] = self.indices[[int(position) for _, position in pairs]]
        augment = self.augment
        if augment is not None:
            plain = (np.empty((s, s, 3), np.uint8), np.empty((s, s), np.uint8), np.empty((s, s), np.uint16))
        for j, (epoch, _) in enumerate(pairs):
            sample = int(index[j])
            record = self.reader.record(sample)
            try:
                bg_image = self._background(int(record["bg"]))[0]
                if augment is None:
                    np.copyto(bg[j], bg_image)
                    self._decode_into(record, fg_bg[j], mask[j], depth[j])
                else:  # as load(): the geometry, then the photometry, from one generator
                    self._decode_into(record, *plain)
                    rng = np.random.default_rng([self.seed, epoch, sample])
                    m = augment_matrix(rng, s, augment)
                    warp_sample(m, bg_image, *plain, s, out=(bg[j], fg_bg[j], mask[j], depth[j]))
                    photometric(rng, augment, bg[j], fg_bg[j], rgb=True, in_place=True)
            except ValueError as exc:  # DecodeError: the record's fields are checked by the reader
                raise DepthmaskError(f"{self.reader.where(sample)}: {exc}") from None
        return {
            # NHWC in memory, NCHW in shape: a channels_last tensor, no copy
            "bg": bg_t.permute(0, 3, 1, 2),
            "fg_bg": fg_bg_t.permute(0, 3, 1, 2),
            "mask": mask_t.unsqueeze(1),
            "depth": depth_t.unsqueeze(1),
            "index": index_t,
        }


def collate_batches(batch: Any) -> Any:
    """The dataset already returns whole batches; fall back to stacking for single items."""
    if isinstance(batch, dict):
        return batch
    return {k: torch.stack([b[k] for b in batch]) for k in batch[0]}


class EpochSampler(Sampler):
    """Each epoch: a permutation drawn from (seed, epoch), split across ranks so every sample is seen
    exactly once per epoch over all ranks (no padding, no duplicates; ranks may differ by one
    sample). Yields (epoch, position) so workers know the epoch. `start` skips samples already
    consumed, for resuming mid-epoch."""

    def __init__(self, length: int, *, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1,
                 limit: int | None = None):
        self.length, self.shuffle, self.seed = length, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.limit = limit  # use only the first `limit` of each epoch's order (a fresh subset per epoch)
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def positions(self) -> np.ndarray:
        if self.shuffle:
            order = np.random.default_rng([self.seed, 0xE90C, self.epoch]).permutation(self.length)
        else:
            order = np.arange(self.length)
        return order[: self.epoch_length][self.rank :: self.world_size]

    @property
    def epoch_length(self) -> int:
        return self.length if self.limit is None else min(self.limit, self.length)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for position in self.positions()[self.start :]:
            yield self.epoch, int(position)

    def __len__(self) -> int:
        return max(0, len(range(self.rank, self.epoch_length, self.world_size)) - self.start)


class BatchNormalizer:
    """uint8/uint16 batch -> float tensors on `device`: images standardised with the dataset's
    per-channel mean/std, mask in {0, 1}, depth on [0, 1]. Runs after the host-to-device copy."""

    def __init__(self, stats: dict[str, Any], device: torch.device | str = "cpu",
                 channels_last: bool = False):
        self.device = torch.device(device)
        self.channels_last = channels_last

        def vec(name: str, key: str) -> torch.Tensor:
            return torch.tensor(stats[name][key], dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

        self.mean = {k: vec(k, "mean") * 255 for k in ("bg", "fg_bg")}
        self.inv_std = {k: 1.0 / (vec(k, "std") * 255) for k in ("bg", "fg_bg")}

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        non_blocking = self.device.type == "cuda"
        out = {}
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        for k in ("bg", "fg_bg"):
            x = batch[k].to(self.device, non_blocking=non_blocking)
            # one conversion straight into the wanted layout, then in place: 3.5x faster on CPU than
            # (x.float() - mean) * inv_std followed by a layout copy
            out[k] = x.to(torch.float32, memory_format=layout).sub_(self.mean[k]).mul_(self.inv_std[k])
        out["mask"] = batch["mask"].to(self.device, non_blocking=non_blocking).float()
        out["depth"] = batch["depth"].to(self.device, non_blocking=non_blocking).to(torch.float32) / DEPTH_MAX
        out["index"] = batch["index"]
        return out

    def denormalize(self, x: torch.Tensor, key: str) -> torch.Tensor:
        """Back to [0, 1] RGB, for pictures."""
        return (x / self.inv_std[key] + self.mean[key]) / 255.0


class DatasetLoader(torch.utils.data.DataLoader):
    """A DataLoader that stops at the start of a pass if its dataset was replaced or removed since the run began
    (workers also check when they open a file): a run never goes on with data it did not start with."""

    def __iter__(self) -> Any:
        self.dataset.reader.check_unchanged()
        return super().__iter__()


def make_loader(dataset: DepthMaskDataset, *, batch_size: int, shuffle: bool, workers: int, seed: int = 0,
                rank: int = 0, world_size: int = 1, pin_memory: bool = False,
                multiprocessing_context: str | None = None) -> torch.utils.data.DataLoader:
    sampler = EpochSampler(len(dataset), shuffle=shuffle, seed=seed, rank=rank, world_size=world_size)
    return DatasetLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate_batches,
        pin_memory=pin_memory, drop_last=False, persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None, multiprocessing_context=multiprocessing_context if workers else None,
        worker_init_fn=_worker_init if workers > 0 else None)


def _worker_init(_: int) -> None:
    cv2.setNumThreads(1)
    torch.set_num_threads(1)

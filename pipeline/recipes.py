"""Recipe datasets: the assets and the plan, no per-sample composites (docs/format.md, "Recipe datasets").

Every sample of a depthmask dataset is a pure function of (assets, plan, seed, index): its placement
comes from a counter-based hash and its compositing is exact integer math (compose.py). A recipe
dataset stores the backgrounds (lossless colour, the JPEG the network sees as `bg`, the depth) and
the foregrounds (lossless BGRA) once, with the plan, seed, split and exact statistics; a reader
rebuilds sample i on demand. `RecipeStore` is that reader: `render(i)` is the reference any other
compositor (the loader's batched torch code) must equal.

With `epoch` set, training samples get fresh placements and flips drawn from (seed, epoch, index);
the held-out splits (val, unseen_bg, unseen_fg) always keep the stored ones, so validation never
changes between epochs.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import lmdb
import numpy as np

from .assets import AssetSet, array_hash
from .codecs import DecodeError, JpegCodec, Png16Codec
from .compose import PreparedForeground, composite, object_depth, paste_depth, paste_mask, prepare_foreground
from .errors import DepthmaskError
from .format import (BACKGROUND_RECORD, BACKGROUNDS_NAME, FORMAT_NAME, MANIFEST_NAME, RecordError, encode_key,
                     read_json, unpack_record)
from .placement import DepthScale, depth_scaled_placements, fixed_placements, scale_foreground
from .plan import SPLIT_NAMES, SamplePlan, Split, mix64
from .recipe_codecs import BACKGROUND_PIXELS_CODEC, FOREGROUND_CODEC
from .shards import close_readonly, open_checked

RECIPE_KIND = "recipes"
RECIPE_FORMAT_VERSION = 2  # version 1 readers refuse it by its version; samples datasets stay version 1
BACKGROUND_PIXELS_NAME = "background_pixels.lmdb"  # key b: {"image": lossless PNG (BGR)}
FOREGROUNDS_NAME = "foregrounds.lmdb"  # key f: {"image": lossless PNG (BGRA), "name": str}
ASSET_FILES = (BACKGROUNDS_NAME, BACKGROUND_PIXELS_NAME, FOREGROUNDS_NAME)
PIXELS_RECORD: dict[str, type] = {"image": bytes}
FOREGROUND_RECORD: dict[str, type] = {"image": bytes, "name": str}

PLACEMENTS = ("fixed", "depth-scaled")  # the layouts a recipe rebuilds; others are refused by name
EPOCH_STREAM = 0xE90C  # seed of epoch e: SplitMix64(seed, e, EPOCH_STREAM)
FLIP_STREAM = 5  # per-epoch flips: bit 0 of SplitMix64(epoch seed, index, FLIP_STREAM)
_HELD_OUT = tuple(k for k, name in enumerate(SPLIT_NAMES) if name != "train")


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed per-epoch placements of `epoch` are drawn with (a 64-bit integer)."""
    if not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise DepthmaskError(f"epoch: expected a whole number >= 0 (or None for the stored plan), got {epoch!r}")
    return int(mix64(seed, np.array([int(epoch)], np.int64), EPOCH_STREAM)[0])


class RecipeStore:
    """The assets, plan and split of a recipe dataset, and the samples rebuilt from them.

    - `plan` (SamplePlan), `split` (Split), `seed`, `size` ((height, width) of every image), `len(store)`
    - `backgrounds`: per background (image BGR uint8 lossless, the network's `bg` input BGR uint8, depth uint16)
    - `foregrounds`: per foreground its BGRA uint8 cut-out; `ground_tops`: per background its first ground row
    - `placements(indices, epoch=None)`, `render(index, epoch=None)`, `split_indices(name)`, `stats(split)`
    Open a dataset folder with `RecipeStore.open(root)`; `RecipeStore.from_assets(...)` makes one in memory.
    Picklable: a store opened from a folder drops its arrays when pickled and reads them again in the
    process that uses them (DataLoader workers), checking every asset's hash against the manifest.
    """

    def __init__(self, *, plan: SamplePlan, split: Split, seed: int, size: int,
                 backgrounds: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None, ground_tops: list[int],
                 foregrounds: list[np.ndarray] | None, placement: str = "fixed", root: Path | None = None,
                 manifest: dict[str, Any] | None = None, depth_scale: DepthScale | None = None):
        if placement not in PLACEMENTS:
            raise DepthmaskError(f"placement {placement!r}: this depthmask rebuilds recipe samples with the "
                                 f"{' or '.join(PLACEMENTS)} layout only; use a depthmask that knows it")
        self.plan = plan
        self.split = split
        self.seed = int(seed)
        self.placement = placement
        if placement == "depth-scaled" and depth_scale is None:
            raise DepthmaskError("placement depth-scaled: the dataset records no depth scale (object widths, focal "
                                 "length); rebuild it with this version of dm-build-lmdb")
        self.depth_scale = depth_scale
        self.root = None if root is None else Path(root)
        self.manifest = manifest
        self.ground_tops = [int(g) for g in ground_tops]
        self._size = int(size)
        self._backgrounds = backgrounds
        self._foregrounds = foregrounds
        self._prepared: dict[tuple[int, bool, int], PreparedForeground] = {}

    # ---- construction ---------------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | Path) -> "RecipeStore":
        """A recipe dataset folder: the manifest is read and checked now, the assets on first use."""
        root = Path(root)
        manifest = read_recipe_manifest(root)
        p = manifest["plan"]
        plan = SamplePlan(p["backgrounds"], p["foregrounds"], p["positions"], p["flip"], p["limit"])
        split = Split(tuple(manifest["split"]["val_backgrounds"]), tuple(manifest["split"]["val_foregrounds"]))
        scale = manifest["recipe"].get("depth_scale")
        if scale is not None:
            scale = DepthScale(np.array(scale["widths_m"], np.float64), float(scale["metres_per_unit"]),
                               float(scale["focal_px"]))
        return cls(plan=plan, split=split, seed=manifest["build"]["seed"], size=manifest["image_size"][0],
                   backgrounds=None, ground_tops=manifest["recipe"]["ground_tops"], foregrounds=None,
                   placement=p.get("placement_kind", "fixed"), root=root, manifest=manifest, depth_scale=scale)

    @classmethod
    def from_assets(cls, assets: AssetSet, plan: SamplePlan, split: Split, *, seed: int, size: int,
                    jpeg_quality: int, placement: str = "fixed",
                    depth_scale: DepthScale | None = None) -> "RecipeStore":
        """A store over assets in memory (as a build composes them); the `bg` inputs are the backgrounds'
        JPEG round trip at `jpeg_quality`, as a materialised build stores them."""
        codec = JpegCodec(jpeg_quality)
        backgrounds = [(image, codec.decode(codec.encode(image)), depth)
                       for image, depth in zip(assets.backgrounds, assets.background_depths)]
        return cls(plan=plan, split=split, seed=seed, size=size, backgrounds=backgrounds,
                   ground_tops=assets.ground_tops, foregrounds=list(assets.foregrounds), placement=placement,
                   depth_scale=depth_scale)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_prepared"] = {}
        if self.root is not None:  # read again (and checked) in the process that uses it
            state["_backgrounds"] = None
            state["_foregrounds"] = None
        return state

    # ---- what it holds ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.plan.count

    @property
    def size(self) -> tuple[int, int]:
        return self._size, self._size

    @property
    def backgrounds(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        if self._backgrounds is None:
            self._backgrounds = load_backgrounds(self.root, self.manifest)
        return self._backgrounds

    @property
    def foregrounds(self) -> list[np.ndarray]:
        if self._foregrounds is None:
            self._foregrounds = load_foregrounds(self.root, self.manifest)
        return self._foregrounds

    def foreground_at(self, fg: int, level: int = 0) -> np.ndarray:
        """The BGRA cut-out of foreground `fg` at scale level `level` (placement.scale_foreground; 0: itself)."""
        return scale_foreground(self.foregrounds[int(fg)], int(level))

    def prepared(self, fg: int, flip: bool, level: int = 0) -> PreparedForeground:
        """The pre-multiplied cut-out of foreground `fg` at `level` (mirrored with `flip`), made once per process."""
        key = (int(fg), bool(flip), int(level))
        if key not in self._prepared:
            self._prepared[key] = prepare_foreground(self.foreground_at(key[0], key[2]), flip=key[1])
        return self._prepared[key]

    def stats(self, split: str = "all") -> dict[str, Any]:
        """Per-field mean/std (RGB order, [0, 1] scale) over a split; fg_bg over the composites before JPEG."""
        if self.manifest is None:
            raise DepthmaskError("an in-memory recipe store has no statistics; build the dataset to get them")
        stats = self.manifest["stats"]
        return stats.get(split, stats["all"])

    def split_of(self, indices: np.ndarray) -> np.ndarray:
        """Per sample the index into SPLIT_NAMES (0 train, 1 val, 2 unseen_bg, 3 unseen_fg)."""
        bg, fg, _, _ = self.plan.locate(self._checked(indices))
        return self.split.assign(bg, fg)

    def split_indices(self, name: str) -> np.ndarray:
        """Global sample indices of a split (SPLIT_NAMES, 'mixed' = unseen_bg + unseen_fg, or 'all'), ascending."""
        index = np.arange(len(self), dtype=np.int64)
        if name == "all":
            return index
        wanted = {"mixed": ("unseen_bg", "unseen_fg")}.get(name, (name,))
        if not set(wanted) <= set(SPLIT_NAMES):
            raise DepthmaskError(f"--split: unknown split {name!r}; expected one of all, {', '.join(SPLIT_NAMES)}, "
                                 "mixed")
        return index[np.isin(self.split_of(index), [SPLIT_NAMES.index(n) for n in wanted])]

    # ---- samples ------------------------------------------------------------------------------------
    def _checked(self, indices: Any) -> np.ndarray:
        index = np.asarray(indices, dtype=np.int64).reshape(-1)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            bad = int(index[(index < 0) | (index >= len(self))][0])
            raise IndexError(f"sample {bad} is outside 0..{len(self) - 1}")
        return index

    def placements(self, indices: Any, epoch: int | None = None, *,
                   object_depths: bool = True) -> dict[str, np.ndarray]:
        """Per sample (int64 arrays, flip bool): bg, fg, flip, x, y (top-left of the foreground's box), level
        (the cut-out's scale level: 0 with fixed placement),
        object_depth (the uint16 depth the object stands at; left out with object_depths=False, for a
        caller that derives it faster for many samples at once). epoch None: the stored plan; epoch e:
        training samples drawn afresh from (seed, e, index), held-out samples as stored."""
        index = self._checked(indices)
        plan = self.plan
        bg, fg, _, flip = plan.locate(index)
        widths = np.array([f.shape[1] for f in self.foregrounds], np.int64)[fg]
        heights = np.array([f.shape[0] for f in self.foregrounds], np.int64)[fg]
        ground = np.array(self.ground_tops, np.int64)[bg]
        x, y, level = self._layout(self.seed, plan.placement_key(index), bg, fg, widths, heights, ground)
        if epoch is not None:
            seed_e = epoch_seed(self.seed, epoch)
            fresh = ~np.isin(self.split.assign(bg, fg), _HELD_OUT)
            xe, ye, le = self._layout(seed_e, index, bg, fg, widths, heights, ground)
            flip_e = (mix64(seed_e, index, FLIP_STREAM) & np.uint64(1)).astype(bool) if plan.flip else flip
            x, y, level = np.where(fresh, xe, x), np.where(fresh, ye, y), np.where(fresh, le, level)
            flip = np.where(fresh, flip_e, flip)
        out = {"bg": bg, "fg": fg, "flip": flip.astype(bool), "x": x, "y": y}
        if object_depths:
            out["object_depth"] = np.array([object_depth(self.backgrounds[int(b)][2],
                                                         self.prepared(int(f), bool(m), int(k)), int(i), int(j))
                                            for b, f, m, k, i, j in zip(bg, fg, flip, level, x, y)], np.int64)
        out["level"] = level
        return out

    def _layout(self, seed: int, key: np.ndarray, bg: np.ndarray, fg: np.ndarray, widths: np.ndarray,
                heights: np.ndarray, ground: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, level) of the dataset's placement (placement.py), drawn with `seed` for `key`."""
        if self.placement == "depth-scaled":
            return depth_scaled_placements(seed, key, fg, widths, heights, bg, [b[2] for b in self.backgrounds],
                                           ground, self._size, self.depth_scale)
        return fixed_placements(seed, key, widths, heights, ground, self._size)

    def render(self, index: int, epoch: int | None = None) -> dict[str, np.ndarray]:
        """Sample `index` rebuilt: bg (the network's input, BGR uint8; shared, do not modify), fg_bg (the
        composite before any JPEG, BGR uint8), mask (uint8 0 / 255), depth (uint16); plus its placement."""
        p = {k: v[0] for k, v in self.placements([index], epoch).items()}
        image, bg_input, bg_depth = self.backgrounds[int(p["bg"])]
        prepared = self.prepared(int(p["fg"]), bool(p["flip"]), int(p["level"]))
        x, y = int(p["x"]), int(p["y"])
        return {"bg": bg_input, "fg_bg": composite(image, prepared, x, y),
                "mask": paste_mask(image.shape[:2], prepared, x, y),
                "depth": paste_depth(bg_depth, prepared, x, y, int(p["object_depth"])),
                "bg_index": int(p["bg"]), "fg_index": int(p["fg"]), "flip": bool(p["flip"]), "x": x, "y": y}


# ---- the folder ----------------------------------------------------------------------------------
def is_recipe_manifest(manifest: Any) -> bool:
    return isinstance(manifest, dict) and manifest.get("kind") == RECIPE_KIND


def is_recipe_dataset(root: str | Path) -> bool:
    """Whether `root` holds the manifest of a recipe dataset (any other case: False, for the caller to judge)."""
    try:
        return is_recipe_manifest(read_json(Path(root) / MANIFEST_NAME, "manifest"))
    except DepthmaskError:
        return False


def read_recipe_manifest(root: Path) -> dict[str, Any]:
    """The manifest of a complete recipe dataset, checked (format, version, kind, the keys readers use)."""
    root = Path(root)
    if not root.is_dir():
        raise DepthmaskError(f"{root}: dataset folder does not exist" if not root.exists()
                             else f"{root}: is a file, expected a dataset folder")
    path = root / MANIFEST_NAME
    if not path.exists():
        raise DepthmaskError(f"{root}: the build of this dataset did not finish (no {MANIFEST_NAME}); run the same "
                             "dm-build-lmdb command again to resume it" if (root / "build.json").exists()
                             else f"{root}: not a depthmask dataset (no {MANIFEST_NAME})")
    manifest = read_json(path, "manifest")
    check_recipe_format(manifest, path)
    for key in ("sample_count", "image_size", "plan", "split", "build", "assets", "files", "stats", "recipe"):
        if key not in manifest:
            raise DepthmaskError(f"{path}: key {key} is missing")
    for name in ASSET_FILES:
        entry = manifest["files"].get(name)
        if not isinstance(entry, dict) or entry.get("path") != name:
            raise DepthmaskError(f"{path}: key files.{name} is missing or names another file")
    return manifest


def check_recipe_format(manifest: Any, path: Path) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise DepthmaskError(f"{path}: not a {FORMAT_NAME} manifest")
    if manifest.get("kind") != RECIPE_KIND:
        raise DepthmaskError(f"{path}: not a recipe dataset (kind {manifest.get('kind', 'samples')!r})")
    if manifest.get("format_version") != RECIPE_FORMAT_VERSION:
        raise DepthmaskError(f"{path}: recipe format version {manifest.get('format_version')!r} is not supported "
                             f"(this depthmask reads version {RECIPE_FORMAT_VERSION}); rebuild the dataset with "
                             "this version of dm-build-lmdb")


def _records(root: Path, manifest: dict[str, Any], name: str, fields: dict[str, type]) -> list[dict[str, Any]]:
    """Every record of one asset file, in key order, checked: any damage is one line naming the file."""
    entry = manifest["files"][name]
    path = Path(root) / name
    env = open_checked(path, entry["bytes"])
    out = []
    try:
        with env.begin(buffers=False) as txn:
            for i in range(entry["records"]):
                value = txn.get(encode_key(i))
                if value is None:
                    raise DepthmaskError(f"{path}: record {i} is missing (damaged asset store)")
                out.append(unpack_record(value, fields))
    except RecordError as exc:
        raise DepthmaskError(f"{path}: damaged asset store: {exc}") from None
    except lmdb.Error as exc:
        raise DepthmaskError(f"{path}: damaged asset store: {exc}") from None
    finally:
        close_readonly(path)
    return out


def load_backgrounds(root: Path, manifest: dict[str, Any]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(lossless image, bg input, depth) per background, each checked against the manifest's asset hash."""
    jpeg = JpegCodec(int(manifest["fields"]["bg"].get("quality", 90)))
    depth_codec = Png16Codec(background_relative=False)
    stored = _records(root, manifest, BACKGROUNDS_NAME, BACKGROUND_RECORD)
    pixels = _records(root, manifest, BACKGROUND_PIXELS_NAME, PIXELS_RECORD)
    hashes = [a["sha256"] for a in manifest["assets"]["backgrounds"]]
    input_hashes = manifest["recipe"]["bg_input_sha256"]
    out = []
    for i, (record, lossless) in enumerate(zip(stored, pixels)):
        if i >= len(input_hashes) or hashlib.sha256(record["image"]).hexdigest() != input_hashes[i]:
            raise DepthmaskError(f"{Path(root) / BACKGROUNDS_NAME}: the bg input of background {i} differs from the "
                                 "one the dataset was built with (its sha256 in manifest.json); the asset store was "
                                 "changed or damaged: rebuild the dataset")
        try:
            image = BACKGROUND_PIXELS_CODEC.decode(lossless["image"])
            bg_input = jpeg.decode(record["image"])
            depth = depth_codec.decode(record["depth"])
        except DecodeError as exc:
            raise DepthmaskError(f"{Path(root) / BACKGROUND_PIXELS_NAME} / {BACKGROUNDS_NAME} background {i}: "
                                 f"damaged asset: {exc}") from None
        if i >= len(hashes) or array_hash(image, depth) != hashes[i]:
            raise DepthmaskError(f"{Path(root) / BACKGROUND_PIXELS_NAME}: background {i} differs from the asset "
                                 "the dataset was built with (its sha256 in manifest.json); the asset store was "
                                 "changed or damaged: rebuild the dataset")
        out.append((image, bg_input, depth))
    return out


def load_foregrounds(root: Path, manifest: dict[str, Any]) -> list[np.ndarray]:
    hashes = [a["sha256"] for a in manifest["assets"]["foregrounds"]]
    out = []
    for i, record in enumerate(_records(root, manifest, FOREGROUNDS_NAME, FOREGROUND_RECORD)):
        try:
            bgra = FOREGROUND_CODEC.decode(record["image"])
        except DecodeError as exc:
            raise DepthmaskError(f"{Path(root) / FOREGROUNDS_NAME} foreground {i}: damaged asset: {exc}") from None
        if i >= len(hashes) or array_hash(bgra) != hashes[i]:
            raise DepthmaskError(f"{Path(root) / FOREGROUNDS_NAME}: foreground {i} differs from the asset the "
                                 "dataset was built with (its sha256 in manifest.json); the asset store was changed "
                                 "or damaged: rebuild the dataset")
        out.append(bgra)
    return out


def recipe_folder_bytes(root: Path) -> int:
    return sum(os.stat(Path(root) / name).st_size for name in ASSET_FILES if (Path(root) / name).exists())

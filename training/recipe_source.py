"""A recipe dataset seen through the reader interface DepthMaskDataset uses (pipeline.recipes).

`RecipeReader` answers what the loader asks a DatasetReader (size, statistics, split indices, a
background's network input and depth, how to name a sample, whether the dataset changed) and, in
place of stored records, gives a batch's placements and renders one sample straight into arrays the
caller gives (`render_into`): the composite before any JPEG in RGB, the mask 0 / 1 and the depth at
the stored size, exactly RecipeStore.render's (compose.py's integer math) with the channels reversed
and the mask divided by 255. Per process it keeps each background's lossless pixels in RGB and each
cut-out variant pre-multiplied in RGB, so a sample is a copy of the background plus the object's box.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline import DepthmaskError
from pipeline.compose import PreparedForeground, composite_into, paste_depth_into, paste_mask_into, \
    swap_channels
from pipeline.format import MANIFEST_NAME
from pipeline.recipes import RecipeStore, is_recipe_dataset

from .config import PLACEMENT_MODES

# dm-train --composite-on: where recipe samples are composited (training.device_batches for "device")
COMPOSITE_ON = ("workers", "device")

__all__ = ["COMPOSITE_ON", "PLACEMENT_MODES", "RecipeReader", "is_recipe_dataset", "open_reader", "training_data_info"]


def open_reader(root: str | Path) -> Any:
    """The reader of a dataset folder of either kind: RecipeReader for recipes, else DatasetReader."""
    from pipeline import DatasetReader

    return RecipeReader(root) if is_recipe_dataset(root) else DatasetReader(root)


def training_data_info(reader: Any) -> dict[str, Any]:
    """checkpoint.dataset_info of either kind (a recipe is identified by its asset files' hashes)."""
    from .checkpoint import dataset_info

    if not isinstance(reader, RecipeReader):
        return dataset_info(reader)
    import hashlib

    from pipeline import __version__

    m = reader.manifest
    files = m["files"]
    return {"path": str(reader.root), "name": reader.root.name, "created_by": m.get("created_by"), "kind": "recipes",
            "sample_count": int(m["sample_count"]), "image_size": [int(v) for v in m["image_size"]],
            "depth": m["depth"], "assets_sha256": hashlib.sha256("".join(files[k]["sha256"] for k in sorted(files))
                                                                  .encode()).hexdigest(),
            "created_with": f"depthmask {__version__}"}


class RecipeReader:
    """The loader's view of a recipe dataset folder; `render_batch` rebuilds samples from the assets."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.store = RecipeStore.open(self.root)
        self.manifest = self.store.manifest
        self._digest = (self.root / MANIFEST_NAME).read_bytes()
        self._pixels_rgb: dict[int, np.ndarray] = {}
        self._variants_rgb: dict[tuple[int, bool, int], PreparedForeground] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()  # the store drops its arrays itself; the RGB caches are made again
        state["_pixels_rgb"], state["_variants_rgb"] = {}, {}
        return state

    def __len__(self) -> int:
        return len(self.store)

    @property
    def size(self) -> tuple[int, int]:
        return self.store.size

    def stats(self, split: str = "all") -> dict[str, Any]:
        return self.store.stats(split)

    def split_indices(self, name: str) -> np.ndarray:
        return self.store.split_indices(name)

    def background(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(the network's bg input BGR uint8, depth uint16) of a background, as DatasetReader.background."""
        _, bg_input, depth = self.store.backgrounds[index]
        return bg_input, depth

    def record(self, index: int) -> dict[str, Any]:
        """The stored placement of sample `index` (bg, fg, flip, x, y), the fields a materialised record names."""
        p = self.store.placements([int(index)])
        return {k: (bool(p[k][0]) if k == "flip" else int(p[k][0])) for k in ("bg", "fg", "flip", "x", "y")}

    def decode(self, index: int) -> dict[str, Any]:
        """Sample `index` as DatasetReader.decode gives it (bg, fg_bg BGR, mask 0 / 255, depth), fg_bg before JPEG."""
        return self.store.render(int(index))

    def where(self, index: int) -> str:
        return f"{self.root} (recipe) sample {index}"

    def check_unchanged(self) -> None:
        path = self.root / MANIFEST_NAME
        if not path.exists() or path.read_bytes() != self._digest:
            raise DepthmaskError(f"{self.root}: the dataset changed while it was being read ({MANIFEST_NAME} was "
                                 "replaced or removed); start the run again")

    def placements(self, indices: np.ndarray, epoch: int | None) -> dict[str, np.ndarray]:
        """RecipeStore.placements: epoch None the stored placements, else per-epoch ones (held-out splits keep
        theirs)."""
        return self.store.placements(indices, epoch)

    def background_pixels_rgb(self, index: int) -> np.ndarray:
        """The lossless pixels background `index`'s composites are made of, RGB, made once per process."""
        pixels = self._pixels_rgb.get(index)
        if pixels is None:
            pixels = self._pixels_rgb[index] = np.ascontiguousarray(self.store.backgrounds[index][0][:, :, ::-1])
        return pixels

    def variant_rgb(self, fg: int, flip: bool, level: int) -> PreparedForeground:
        """The pre-multiplied cut-out (RecipeStore.prepared) for RGB images, made once per process."""
        key = (fg, flip, level)
        variant = self._variants_rgb.get(key)
        if variant is None:
            variant = self._variants_rgb[key] = swap_channels(self.store.prepared(fg, flip, level))
        return variant

    def render_into(self, p: dict[str, np.ndarray], j: int, fg_bg: np.ndarray, mask: np.ndarray,
                    depth: np.ndarray) -> None:
        """Sample j of placements `p` at the stored size into fg_bg (H, W, 3) uint8 RGB (the composite before
        JPEG), mask (H, W) uint8 0 / 1 and depth (H, W) uint16: the background copied, the object's box
        composited in place (compose's integer math), no other temporaries."""
        b, x, y = int(p["bg"][j]), int(p["x"][j]), int(p["y"][j])
        fg = self.variant_rgb(int(p["fg"][j]), bool(p["flip"][j]), int(p["level"][j]))
        np.copyto(fg_bg, self.background_pixels_rgb(b))
        composite_into(fg_bg, fg, x, y)
        mask.fill(0)
        paste_mask_into(mask, fg, x, y, on=1)
        np.copyto(depth, self.store.backgrounds[b][2])
        paste_depth_into(depth, fg, x, y, int(p["object_depth"][j]))

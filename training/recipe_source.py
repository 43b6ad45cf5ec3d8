"""A recipe dataset seen through the reader interface DepthMaskDataset uses (pipeline.recipes).

`RecipeReader` answers what the loader asks a DatasetReader (size, statistics, split indices, a
background's network input and depth, how to name a sample, whether the dataset changed) and, in
place of stored records, renders a batch of samples at the stored size: the composite before any
JPEG, the mask and the depth, exactly RecipeStore.render's (compose.py's integer math).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline import DepthmaskError
from pipeline.compose import composite, paste_depth, paste_mask
from pipeline.format import MANIFEST_NAME
from pipeline.recipes import RecipeStore, is_recipe_dataset

from .config import PLACEMENT_MODES

__all__ = ["PLACEMENT_MODES", "RecipeReader", "is_recipe_dataset", "open_reader", "training_data_info"]


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

    def render_batch(self, indices: np.ndarray, epoch: int | None) -> list[tuple[int, np.ndarray, np.ndarray,
                                                                               np.ndarray]]:
        """Per sample (bg index, fg_bg BGR uint8 before JPEG, mask uint8 0 / 255, depth uint16) at the stored
        size; epoch None: the stored placements, else per-epoch ones (held-out splits keep theirs)."""
        store = self.store
        p = store.placements(indices, epoch)
        levels = p.get("level", np.zeros(len(p["bg"]), np.int64))
        out = []
        for b, f, m, k, x, y, d in zip(p["bg"], p["fg"], p["flip"], levels, p["x"], p["y"], p["object_depth"]):
            image, _, bg_depth = store.backgrounds[int(b)]
            fg = store.prepared(int(f), bool(m), int(k))
            x, y = int(x), int(y)
            out.append((int(b), composite(image, fg, x, y), paste_mask(image.shape[:2], fg, x, y),
                        paste_depth(bg_depth, fg, x, y, int(d))))
        return out

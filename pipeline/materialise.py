"""`materialise_recipes`: a recipe dataset (recipes.py) written out as the ordinary sharded dataset of
the options it was built with: the same files, shard hashes and manifest as a direct materialised build.

Data flow: recipe manifest -> the recorded content options (RecordedOptions) + the stored assets
(lossless backgrounds, their depths, the BGRA foregrounds, each checked against its hash in the
manifest, all read before OUTPUT is touched) -> build.build_dataset, which takes them in place of
rendering scenes or reading the user's folders. Everything else (plan, split, compositing, codecs,
shards, statistics, resume, lock, --overwrite, --part/--merge) is the materialised build's own.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .assets import AssetSet, UserInputs
from .build import BuildSummary, build_dataset
from .errors import DepthmaskError
from .format import MANIFEST_NAME
from .options import BuildOptions, validate_options
from .recipes import RecipeStore
from .shards import DEFAULT_MAP_SIZE

# BuildOptions fields a recipe's build.content holds under the same name (placement and inputs: see below)
CONTENT_FIELDS = ("seed", "backgrounds", "foregrounds", "positions", "flip", "limit", "size", "shard_size",
                  "val_fraction", "jpeg_quality", "depth_storage")
# what AssetSet.describe() writes itself; the rest of an asset's entry is its source files (AssetSet.*_files)
_BACKGROUND_KEYS = ("name", "sha256")
_FOREGROUND_KEYS = ("name", "sha256", "width", "height")


@dataclass(frozen=True)
class RecordedOptions(BuildOptions):
    """BuildOptions whose content is the one a recipe dataset recorded (its build.content without the
    store). The folders and depth model it was built from are not needed, their assets being in the
    recipe store, so `inputs` stays empty and content() and uses_folders answer from the record."""

    recorded: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def uses_folders(self) -> bool:
        return "inputs" in self.recorded

    def content(self) -> dict[str, Any]:
        return dict(self.recorded)


def recorded_options(manifest: dict[str, Any], path: Path, output: Path, **run: Any) -> RecordedOptions:
    """The options of a recipe manifest's build.content, with the run options `run` (workers, part,
    merge_only, overwrite, max_shard_size_mb)."""
    recorded = manifest["build"].get("content") if isinstance(manifest["build"], dict) else None
    if not isinstance(recorded, dict):
        raise DepthmaskError(f"{path}: key build.content is missing")
    content = {k: v for k, v in recorded.items() if k != "store"}
    for key in CONTENT_FIELDS:
        if key not in content:
            raise DepthmaskError(f"{path}: key build.content.{key} is missing")
    fg_max_size = content.get("inputs", {}).get("fg_max_size")  # (build.check_resources' memory estimate)
    return RecordedOptions(output=Path(output), **{k: content[k] for k in CONTENT_FIELDS},
                           placement=content.get("placement", "fixed"), inputs=UserInputs(fg_max_size=fg_max_size),
                           recorded=content, **run)


def _source_files(entries: list[dict[str, Any]], own: tuple[str, ...]) -> list[dict[str, Any]] | None:
    files = [{k: v for k, v in entry.items() if k not in own} for entry in entries]
    return files if any(files) else None


def recipe_assets(store: RecipeStore) -> AssetSet:
    """The AssetSet the recipe dataset was built from, as its build composed it: the lossless images and
    depths and the BGRA foregrounds (each checked against its hash when read), with the names, sources
    and depth semantics of its manifest, so that describe() gives the recorded asset description."""
    manifest = store.manifest
    description = manifest["assets"]
    backgrounds = store.backgrounds
    return AssetSet(backgrounds=[image for image, _, _ in backgrounds],
                    background_depths=[depth for _, _, depth in backgrounds],
                    ground_tops=list(store.ground_tops), foregrounds=list(store.foregrounds),
                    background_names=[entry["name"] for entry in description["backgrounds"]],
                    foreground_names=[entry["name"] for entry in description["foregrounds"]],
                    source=description["source"], depth=manifest["depth"],
                    background_files=_source_files(description["backgrounds"], _BACKGROUND_KEYS),
                    foreground_files=_source_files(description["foregrounds"], _FOREGROUND_KEYS),
                    background_hashes=[entry["sha256"] for entry in description["backgrounds"]])


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def materialise_recipes(recipes: str | Path, output: str | Path, *, workers: int = 0,
                        part: tuple[int, int] | None = None, merge_only: bool = False, overwrite: bool = False,
                        max_shard_size_mb: int = DEFAULT_MAP_SIZE >> 20, progress: bool = True,
                        log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> BuildSummary:
    """Build (or resume) in `output` the materialised dataset of the recipe dataset `recipes`: the files
    a direct build of its options gives. Only run options may be chosen; a bad recipe folder (missing,
    incomplete, materialised, damaged) is one line and leaves `output` untouched."""
    recipes, output = Path(recipes), Path(output)
    try:
        store = RecipeStore.open(recipes)
    except DepthmaskError as exc:
        raise DepthmaskError(f"--from-recipes: {exc}") from None
    if _same_folder(recipes, output):
        raise DepthmaskError(f"{output}: is the recipe dataset given to --from-recipes; materialise it into "
                             "another folder")
    options = recorded_options(store.manifest, recipes / MANIFEST_NAME, output, workers=workers, part=part,
                               merge_only=merge_only, overwrite=overwrite, max_shard_size_mb=max_shard_size_mb)
    validate_options(options)
    assets = recipe_assets(store)
    plan = store.plan

    def assets_from(plan_backgrounds: Callable[[int, int], int]) -> AssetSet:
        used = plan_backgrounds(plan.n_backgrounds, plan.n_foregrounds)
        if used != len(assets.backgrounds) or plan.n_foregrounds != len(assets.foregrounds):
            raise DepthmaskError(f"{recipes / MANIFEST_NAME}: its plan uses {used} backgrounds and "
                                 f"{plan.n_foregrounds} foregrounds, but the asset files hold "
                                 f"{len(assets.backgrounds)} and {len(assets.foregrounds)}")
        return assets

    return build_dataset(options, progress=progress, log=log, assets_from=assets_from)

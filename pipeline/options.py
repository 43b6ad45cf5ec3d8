"""`BuildOptions`: everything that decides a dataset's content and how a build runs, and their
validation (one line per bad option, before anything is read or written)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .assets import (DEFAULT_POSITIONS_FOLDERS, DEFAULT_POSITIONS_PROCEDURAL, DEFAULT_PROCEDURAL_BACKGROUNDS,
                     DEFAULT_PROCEDURAL_FOREGROUNDS, UserInputs, validate_inputs)
from .checks import count, run_checks
from .codecs import DEFAULT_JPEG_QUALITY, DEPTH_STORAGE
from .errors import DepthmaskError
from .placement import DEFAULT_PROCEDURAL_PLACEMENT, validate_placement
from .shards import DEFAULT_MAP_SIZE

DEFAULT_SIZE = 224  # the one place the default image size is written (the training side imports it)
DEFAULT_SHARD_SIZE = 4096


@dataclass(frozen=True)
class BuildOptions:
    """Everything that decides a dataset's content, plus how to run the build.

    Content options (seed, counts, size, codecs, split, shard size) are recorded in the manifest; a
    resumed build must repeat them. Run options (workers, part, overwrite, progress) are free.
    """

    output: Path
    seed: int = 0
    backgrounds: int | None = None  # None: 1,020 procedural, or every file of inputs.bg_dir
    foregrounds: int | None = None  # None: 104 procedural, or every file of inputs.fg_dir
    positions: int | None = None  # None: 2 on procedural backgrounds, 20 on the user's
    flip: bool = True
    limit: int | None = None
    size: int = DEFAULT_SIZE
    shard_size: int = DEFAULT_SHARD_SIZE
    val_fraction: float = 0.1
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    depth_storage: str | None = None  # None: "delta", or "full" for per-sample model depth
    inputs: UserInputs = field(default_factory=UserInputs)  # the user's folders and depth sources
    placement: str | None = None  # None: placement.DEFAULT_PROCEDURAL_PLACEMENT, fixed with folders
    workers: int = 0  # 0: all cores
    part: tuple[int, int] | None = None  # (K, N): build only part K of N
    merge_only: bool = False
    overwrite: bool = False
    max_shard_size_mb: int = DEFAULT_MAP_SIZE >> 20

    @property
    def uses_folders(self) -> bool:
        return self.inputs != UserInputs()

    @property
    def resolved_positions(self) -> int:
        if self.positions is not None:
            return self.positions
        return DEFAULT_POSITIONS_FOLDERS if self.inputs.bg_dir else DEFAULT_POSITIONS_PROCEDURAL

    @property
    def resolved_depth_storage(self) -> str:
        if self.depth_storage is not None:
            return self.depth_storage
        return "full" if self.inputs.per_sample_depth else "delta"

    @property
    def resolved_placement(self) -> str:
        if self.placement is not None:
            return self.placement
        return "fixed" if self.uses_folders else DEFAULT_PROCEDURAL_PLACEMENT

    def content(self) -> dict[str, Any]:
        content = {"seed": self.seed,
                   "backgrounds": self.backgrounds if self.backgrounds or self.inputs.bg_dir
                   else DEFAULT_PROCEDURAL_BACKGROUNDS,
                   "foregrounds": self.foregrounds if self.foregrounds or self.inputs.fg_dir
                   else DEFAULT_PROCEDURAL_FOREGROUNDS,
                   "positions": self.resolved_positions, "flip": self.flip, "limit": self.limit, "size": self.size,
                   "shard_size": self.shard_size, "val_fraction": self.val_fraction,
                   "jpeg_quality": self.jpeg_quality, "depth_storage": self.resolved_depth_storage}
        if self.uses_folders:
            content["inputs"] = self.inputs.content()
        if self.resolved_placement != "fixed":  # (fixed datasets keep format version 1's content)
            content["placement"] = self.resolved_placement
        return content



def validate_options(options: BuildOptions) -> None:
    checks = [
        ("--seed", options.seed, isinstance(options.seed, int) and 0 <= options.seed < 2**63, "a whole number >= 0"),
        ("--backgrounds", options.backgrounds, options.backgrounds is None or count(options.backgrounds),
         "a whole number >= 1"),
        ("--foregrounds", options.foregrounds, options.foregrounds is None or count(options.foregrounds),
         "a whole number >= 1"),
        ("--positions", options.positions, options.positions is None or count(options.positions),
         "a whole number >= 1"),
        ("--limit", options.limit, options.limit is None or count(options.limit), "a whole number >= 1"),
        ("--size", options.size, count(options.size) and 192 <= options.size <= 1024,
         "a whole number from 192 to 1024 (foregrounds are up to 160 px wide)"),
        ("--shard-size", options.shard_size, count(options.shard_size), "a whole number >= 1"),
        ("--val-fraction", options.val_fraction, 0.0 <= options.val_fraction < 0.5, "a fraction in [0, 0.5)"),
        ("--jpeg-quality", options.jpeg_quality, count(options.jpeg_quality) and options.jpeg_quality <= 100,
         "a whole number from 1 to 100"),
        ("--depth-storage", options.depth_storage, options.depth_storage is None or options.depth_storage in DEPTH_STORAGE,
         " or ".join(DEPTH_STORAGE)),
        ("--workers", options.workers, isinstance(options.workers, int) and options.workers >= 0,
         "a whole number >= 1 (or 0 for all cores)"),
        ("--max-shard-size-mb", options.max_shard_size_mb, count(options.max_shard_size_mb), "a whole number >= 1"),
    ]
    run_checks(checks)
    if options.part is not None:
        k, n = options.part
        if not (count(n) and count(k) and k <= n):
            raise DepthmaskError(f"--part: expected K/N with 1 <= K <= N, got {k}/{n}")
        if options.merge_only:
            raise DepthmaskError("--part and --merge cannot be combined: merge after all parts are built")
        if options.overwrite:  # a part would remove what the other parts are writing beside it
            raise DepthmaskError("--part and --overwrite cannot be combined: remove the old dataset with a whole "
                                 "build's --overwrite, or choose a new folder, then build the parts")
    validate_inputs(options.inputs, options.size)
    validate_placement(options.resolved_placement, procedural_backgrounds=options.inputs.bg_dir is None,
                       procedural_foregrounds=options.inputs.fg_dir is None,
                       per_sample_depth=options.inputs.per_sample_depth)
    if options.inputs.per_sample_depth and options.depth_storage == "delta":
        raise DepthmaskError("--depth-storage delta: per-sample model depth differs from the background's depth "
                             "everywhere; use --depth-storage full (the default in per-sample mode)")

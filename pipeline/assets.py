"""The assets a build composes: backgrounds (colour + depth) and foreground cut-outs.

The embedded default renders them procedurally (pipeline.scenes); the user's folders
(pipeline.sources) and depth models (pipeline.depth_model) give the same AssetSet. Backgrounds and
foregrounds come from either source independently.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .compose import depth_to_uint16
from .depth_model import DepthModelSpec
from .errors import DepthmaskError
from .sources import DepthMapOptions

# Rows of ground below the horizon kept clear of the horizon line itself when placing objects.
GROUND_MARGIN_ROWS = 4

# The embedded default: 1,020 scenes x 104 cut-outs x 2 placements x 2 (flip) = 424,320 samples, the
# original's count. Its real data had 102 photos x 20 placements; scenes cost nothing to render here,
# and ten times as many (each placed twice) took held-out depth RMSE after 20 CPU minutes from 0.102
# to 0.057 (docs/benchmarks.md). Folders keep the original's 20 placements.
DEFAULT_PROCEDURAL_BACKGROUNDS = 1020
DEFAULT_PROCEDURAL_FOREGROUNDS = 104
DEFAULT_POSITIONS_PROCEDURAL = 2
DEFAULT_POSITIONS_FOLDERS = 20


@dataclass(frozen=True)
class AssetSet:
    backgrounds: list[np.ndarray]  # (size, size, 3) uint8 BGR
    background_depths: list[np.ndarray]  # (size, size) uint16: depth / far * 65535
    ground_tops: list[int]  # first row where objects may touch the ground (0 = anywhere)
    foregrounds: list[np.ndarray]  # (h, w, 4) uint8 BGRA
    background_names: list[str]
    foreground_names: list[str]
    source: dict[str, Any]  # how the assets were made, for the manifest
    depth: dict[str, Any]  # depth semantics, for the manifest
    background_files: list[dict[str, str]] | None = None  # user folders: source file names and sha256
    foreground_files: list[dict[str, str]] | None = None
    background_hashes: list[str] | None = None  # array_hash(image, depth) when already computed (render workers)

    def describe(self) -> dict[str, Any]:
        """Per-asset names and content hashes (of the arrays composed, and for the user's folders of
        the source files): a changed asset is detected on resume."""
        hashes = self.background_hashes or [array_hash(img, d) for img, d in
                                            zip(self.backgrounds, self.background_depths)]
        backgrounds = [{"name": n, "sha256": h} for n, h in zip(self.background_names, hashes)]
        foregrounds = [{"name": n, "sha256": array_hash(fg), "width": int(fg.shape[1]), "height": int(fg.shape[0])}
                       for n, fg in zip(self.foreground_names, self.foregrounds)]
        for entries, files in ((backgrounds, self.background_files), (foregrounds, self.foreground_files)):
            for entry, extra in zip(entries, files or []):
                entry.update(extra)
        return {"source": self.source, "backgrounds": backgrounds, "foregrounds": foregrounds}


def array_hash(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class RenderedBackground:
    """One procedural background as the build composes it, with its content hash."""

    image: np.ndarray  # (size, size, 3) uint8 BGR
    depth: np.ndarray  # (size, size) uint16
    ground_top: int
    sha256: str


def procedural_background(index: int, *, seed: int, size: int) -> RenderedBackground:
    """Background `index` of the set drawn from `seed`: a pure function, run in any process."""
    from . import scenes

    background = scenes.render_background(index, seed=seed, size=size)
    depth = depth_to_uint16(background.depth_m, scenes.FAR_M)
    return RenderedBackground(background.image, depth,
                              int(np.clip(background.horizon_row + GROUND_MARGIN_ROWS, 0, size - 1)),
                              array_hash(background.image, depth))


# How a build renders the first N procedural backgrounds (e.g. in worker processes); default: here.
RenderBackgrounds = Callable[[int], list[RenderedBackground]]


def render_here(seed: int, size: int) -> RenderBackgrounds:
    return lambda count: [procedural_background(i, seed=seed, size=size) for i in range(count)]


PROCEDURAL_DEPTH = {
    "kind": "z-depth",
    "units_of_far": "metres",
    "near_m": 0.0,
    "stored": "uint16 PNG; normalised depth = value / 65535 = clip(z_m / far_m, 0, 1)",
    "sky": 1.0,
    "exact": True,
    "object_rule": "object depth = min(background depth at its ground-contact pixel, "
                   "every background depth it covers); constant over the object's mask",
}


def procedural_source(seed: int) -> dict[str, Any]:
    from . import scenes

    return {"kind": "procedural", "seed": seed, "generator": "pipeline.scenes",
            "generator_version": scenes.GENERATOR_VERSION}


def procedural_foregrounds(n_foregrounds: int, *, seed: int) -> tuple[list[np.ndarray], list[str]]:
    from . import scenes

    return scenes.render_foregrounds(n_foregrounds, seed=seed), [f"procedural-fg-{i:04d}" for i in range(n_foregrounds)]


DEPTH_MODES = ("composite", "per-sample")
COMPOSITE_RULE = ("object depth = min(background depth at its ground-contact pixel, every background depth it "
                  "covers); constant over the object's mask")


@dataclass(frozen=True)
class UserInputs:
    """Where a build's assets come from when they are not all procedural (docs/inputs.md)."""

    bg_dir: Path | None = None
    fg_dir: Path | None = None
    fg_masks_dir: Path | None = None
    bg_depth_dir: Path | None = None
    bg_depth: DepthMapOptions = field(default_factory=DepthMapOptions)
    depth_model: DepthModelSpec | None = None
    depth_mode: str = "composite"
    fg_max_size: int | None = None  # None: 5/7 of the image size (160 px at 224)
    ground_top: float = 0.0  # user backgrounds: objects touch the ground at or below this fraction of the height

    @property
    def per_sample_depth(self) -> bool:
        return self.depth_model is not None and self.depth_mode == "per-sample"

    def content(self) -> dict[str, Any]:
        """What decides the dataset's content, for resume checks (folders are identified by the hashes
        of their files, in the asset description, not by where they lie)."""
        model = self.depth_model
        return {
            "backgrounds_from": "folder" if self.bg_dir else "procedural",
            "foregrounds_from": "folder" if self.fg_dir else "procedural",
            "fg_masks": self.fg_masks_dir is not None,
            "bg_depth": None if self.bg_depth_dir is None else {"kind": self.bg_depth.kind, "far": self.bg_depth.far},
            "depth_model": None if model is None else {
                "format": model.fmt(), "input_size": model.input_size, "mean": list(model.mean),
                "std": list(model.std), "output": model.output, "far": model.far},
            "depth_mode": self.depth_mode,
            "fg_max_size": self.fg_max_size,
            "ground_top": self.ground_top,
        }


def validate_inputs(inputs: UserInputs, size: int) -> None:
    """Option combinations, checked before anything is read or written."""
    from .depth_model import validate_spec

    if inputs.depth_mode not in DEPTH_MODES:
        raise DepthmaskError(f"--depth-mode: expected composite or per-sample, got {inputs.depth_mode!r}")
    if inputs.fg_masks_dir is not None and inputs.fg_dir is None:
        raise DepthmaskError("--fg-masks: needs --fg DIR (the foreground images the masks belong to)")
    if inputs.bg_depth_dir is not None and inputs.bg_dir is None:
        raise DepthmaskError("--bg-depth: needs --bg DIR (procedural backgrounds have exact depth already)")
    if inputs.bg_depth_dir is not None and inputs.depth_model is not None:
        raise DepthmaskError("--bg-depth and --depth-model: give one depth source, not both")
    if inputs.bg_dir is not None and inputs.bg_depth_dir is None and inputs.depth_model is None:
        raise DepthmaskError("--bg: real backgrounds need a depth source: --bg-depth DIR (precomputed maps, "
                             "with --bg-depth-kind depth|inverse) or --depth-model FILE (TorchScript, .pt2 or "
                             ".onnx, with --depth-mode composite|per-sample); depth is never invented")
    if inputs.depth_model is not None and inputs.bg_dir is None and inputs.depth_mode == "composite":
        raise DepthmaskError("--depth-model: procedural backgrounds have exact depth; use it with --bg DIR, or "
                             "with --depth-mode per-sample to run it on every composite")
    if inputs.depth_mode == "per-sample" and inputs.depth_model is None:
        raise DepthmaskError("--depth-mode per-sample: needs --depth-model FILE")
    if inputs.bg_depth.kind not in ("depth", "inverse"):
        raise DepthmaskError(f"--bg-depth-kind: expected depth or inverse, got {inputs.bg_depth.kind!r}")
    if inputs.bg_depth.far is not None and not inputs.bg_depth.far > 0:
        raise DepthmaskError(f"--depth-far: expected a positive number, got {inputs.bg_depth.far!r}")
    if inputs.fg_max_size is not None and not (isinstance(inputs.fg_max_size, int) and 8 <= inputs.fg_max_size <= size):
        raise DepthmaskError(f"--fg-max-size: expected a whole number from 8 to --size ({size}), got "
                             f"{inputs.fg_max_size!r}")
    if not (isinstance(inputs.ground_top, (int, float)) and 0.0 <= inputs.ground_top < 1.0):
        raise DepthmaskError(f"--ground-top: expected a fraction of the image height in [0, 1), got {inputs.ground_top!r}")
    if inputs.depth_model is not None:
        validate_spec(inputs.depth_model)


def default_fg_max_size(size: int) -> int:
    return size * 5 // 7


def load_assets(inputs: UserInputs, n_backgrounds: int | None, n_foregrounds: int | None, *, seed: int, size: int,
                log: Callable[[str], None] = lambda m: None, progress: bool = False,
                plan_backgrounds: Callable[[int, int], int] = lambda available, n_foregrounds: available,
                render: RenderBackgrounds | None = None) -> AssetSet:
    """The build's assets: each of backgrounds and foregrounds from the user's folder or rendered.

    Foregrounds come first: `plan_backgrounds(backgrounds available, foreground count)` says how many
    backgrounds the plan uses (a --limit build uses a prefix of them) and may refuse the plan; only
    those are rendered or loaded. `render` renders procedural backgrounds (the build passes a pool of
    worker processes)."""
    from . import scenes, sources

    render = render or render_here(seed, size)
    fg_listing = sources.list_folder("--fg", inputs.fg_dir, sources.IMAGE_EXTENSIONS) if inputs.fg_dir else None
    masks = (sources.list_folder("--fg-masks", inputs.fg_masks_dir, sources.IMAGE_EXTENSIONS)
             if inputs.fg_masks_dir else None)
    bg_listing = sources.list_folder("--bg", inputs.bg_dir, sources.IMAGE_EXTENSIONS) if inputs.bg_dir else None
    for listing in (bg_listing, fg_listing, masks):
        if listing is not None and listing.skipped:
            log(f"warning: {listing.option} {listing.root}: skipped {len(listing.skipped)} file(s) that are not "
                f"images: {', '.join(listing.skipped[:5])}{' ...' if len(listing.skipped) > 5 else ''}")
    if fg_listing is not None:
        loaded = sources.load_foregrounds(fg_listing, masks, inputs.fg_max_size or default_fg_max_size(size),
                                          n_foregrounds)
        foregrounds, fg_names, fg_files = [f.cutout for f in loaded], [f.name for f in loaded], [f.files for f in loaded]
        fg_source = {"kind": "folder", "files": len(loaded), "masks": "--fg-masks" if masks else "alpha",
                     "max_side": inputs.fg_max_size or default_fg_max_size(size)}
    else:
        foregrounds, fg_names = procedural_foregrounds(n_foregrounds or DEFAULT_PROCEDURAL_FOREGROUNDS, seed=seed)
        fg_source, fg_files = procedural_source(seed), None
    hashes = None
    if bg_listing is not None:
        files = sources._first(bg_listing, n_backgrounds)  # --backgrounds N beyond the folder is an error
        backgrounds = sources.load_backgrounds(bg_listing, size, plan_backgrounds(len(files), len(foregrounds)))
        depths, depth_files, depth_info = _background_depths(inputs, backgrounds, size, progress)
        bg_images, bg_names = [b.image for b in backgrounds], [b.name for b in backgrounds]
        bg_files = [{"file": b.name, "file_sha256": b.file_sha256, **extra}
                    for b, extra in zip(backgrounds, depth_files or [{}] * len(backgrounds))]
        ground_tops = [min(size - 1, int(round(inputs.ground_top * size)))] * len(backgrounds)
        bg_source = {"kind": "folder", "files": len(backgrounds), "fit": "shorter side scaled to size, centre crop",
                     "ground_top": inputs.ground_top}
    else:
        rendered = render(plan_backgrounds(n_backgrounds or DEFAULT_PROCEDURAL_BACKGROUNDS, len(foregrounds)))
        bg_images, depths = [b.image for b in rendered], [b.depth for b in rendered]
        bg_names = [f"procedural-bg-{i:04d}" for i in range(len(rendered))]
        ground_tops, bg_source = [b.ground_top for b in rendered], procedural_source(seed)
        depth_info = {**PROCEDURAL_DEPTH, "far_m": float(scenes.FAR_M)}
        bg_files, hashes = None, [b.sha256 for b in rendered]
        if inputs.per_sample_depth:
            depths, hashes = _model_depths(inputs.depth_model, bg_images, progress), None
    if inputs.per_sample_depth:
        depth_info = _per_sample_depth_info(inputs.depth_model)
    if fg_listing is None and bg_listing is None and not inputs.per_sample_depth:
        source = bg_source  # the embedded default: one procedural source
    else:
        source = {"backgrounds": bg_source, "foregrounds": fg_source}
    if inputs.depth_model is not None:  # a changed model file is a changed asset
        source["depth_model"] = inputs.depth_model.describe()
    return AssetSet(backgrounds=bg_images, background_depths=depths, ground_tops=ground_tops, foregrounds=foregrounds,
                    background_names=bg_names, foreground_names=fg_names, source=source, depth=depth_info,
                    background_files=bg_files, foreground_files=fg_files, background_hashes=hashes)


def _background_depths(inputs: UserInputs, backgrounds: list, size: int,
                       progress: bool) -> tuple[list[np.ndarray], list[dict[str, str]] | None, dict[str, Any]]:
    from . import sources

    files = None
    if inputs.bg_depth_dir is not None:
        depths, files = sources.load_depth_maps(inputs.bg_depth_dir, backgrounds, size, inputs.bg_depth)
        kind, far = inputs.bg_depth.kind, inputs.bg_depth.far
        info = {"kind": "relative" if far is None else "scaled", "source": "precomputed maps (--bg-depth)",
                "input": kind}
    else:
        depths = _model_depths(inputs.depth_model, [b.image for b in backgrounds], progress)
        kind, far = inputs.depth_model.output, inputs.depth_model.far
        info = {"kind": "relative" if far is None else "scaled", "source": "depth model, run once per background",
                "input": kind, "model": inputs.depth_model.describe()}
    info.update(_depth_scale_info(kind, far))
    info["exact"] = False
    info["object_rule"] = COMPOSITE_RULE
    return depths, files, info


def _depth_scale_info(kind: str, far: float | None) -> dict[str, Any]:
    inverse = "depth = 1 / value (values <= 0: infinitely far, 1.0); " if kind == "inverse" else ""
    scale = (f"normalised depth = clip(depth / {far:g}, 0, 1)" if far is not None
             else "normalised depth = depth / (the farthest finite depth of that map), per map")
    return {"stored": "uint16 PNG; normalised depth = value / 65535", "normalisation": inverse + scale,
            "far": far}


def _model_depths(spec: DepthModelSpec, images_bgr: list[np.ndarray], progress: bool) -> list[np.ndarray]:
    from tqdm import tqdm

    from .depth_model import load_depth_model

    model = load_depth_model(spec)
    out: list[np.ndarray] = []
    with tqdm(total=len(images_bgr), unit="image", desc="depth model", disable=not progress, mininterval=0.5) as bar:
        for start in range(0, len(images_bgr), spec.batch_size):
            batch = images_bgr[start : start + spec.batch_size]
            out.extend(model.predict(batch))
            bar.update(len(batch))
    return out


def _per_sample_depth_info(spec: DepthModelSpec) -> dict[str, Any]:
    info = {"kind": "relative" if spec.far is None else "scaled",
            "source": "depth model, run on every composite (--depth-mode per-sample)",
            "input": spec.output, "model": spec.describe(), "exact": False,
            "object_rule": "whatever the model predicts on the composite"}
    info.update(_depth_scale_info(spec.output, spec.far))
    return info

"""dm-predict: a trained network on the user's own (bg, fg_bg) pairs.

- `load_predictor`: a dm-train checkpoint, or an ONNX / TorchScript file written by dm-export-model, behind one
  interface (`Predictor`: RGB uint8 squares in, normalised depth and mask logits out).
- `predict_pair`: one pair of any size -> (depth [0, 1], mask probability) at the pair's own size. The pair is
  scaled by the pipeline's fit rule (pipeline.images: the shorter side to the network's size), then covered by
  square windows of that size along the longer side: the fit rule's centre square, and squares overlapping it by
  half out to both ends, blended with triangular weights. Every input pixel is predicted by the network at the
  scale it was trained at; a square image is exactly the fit rule. The result is resized back to the input size.
- `list_pairs` / `predict_folder`: pairs from two files, two folders (matched by relative name without extension,
  docs/inputs.md) or a CSV/text list; every input is read and checked before the first output is written; outputs
  are written under temporary names and renamed, and existing files are kept unless `overwrite`.
The file layout and value ranges are documented in docs/usage.md.
"""
from __future__ import annotations

import csv
import json
import os
import warnings
import zipfile
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from pipeline import DepthmaskError, __version__
from pipeline import images as image_rules
from pipeline import sources
from pipeline.compose import depth_to_uint16
from pipeline.depth_model import EXPORT_METADATA_FILE, EXPORT_METADATA_KEY, onnx_session

EXPORT_FORMAT = "depthmask-exported-model"
SUMMARY_NAME = "predictions.json"
PREVIEW_TILE = 256
MASK_THRESHOLD = 0.5  # on the probability: the same as logits > 0, dm-train's metric


# ---- models ----------------------------------------------------------------------------------------
@dataclass
class Predictor:
    """A loaded network. ``predictor(bg, fg_bg)``: (N, S, S, 3) uint8 RGB squares at ``input_size`` ->
    (depth (N, S, S) float32 on [0, 1], mask logits (N, S, S) float32)."""

    kind: str  # "checkpoint", "onnx" or "torchscript"
    path: Path
    input_size: int
    normalization: dict[str, Any]
    dataset: dict[str, Any] | None
    device: str
    precision: str  # "bf16" or "float32"
    run: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] = field(repr=False)

    def __call__(self, bg: np.ndarray, fg_bg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = self.input_size
        if bg.shape != fg_bg.shape or bg.ndim != 4 or bg.shape[1:] != (s, s, 3):
            raise ValueError(f"expected two (N, {s}, {s}, 3) batches, got {bg.shape} and {fg_bg.shape}")
        depth, logits = self.run(bg, fg_bg)
        return np.asarray(depth, np.float32).reshape(len(bg), s, s), np.asarray(logits, np.float32).reshape(len(bg), s, s)

    @property
    def far_m(self) -> float:
        """The far plane in metres when the training depth was metric (0: relative depth)."""
        depth = (self.dataset or {}).get("depth") or {}
        return float(depth.get("far_m") or 0.0)

    def describe(self) -> dict[str, Any]:
        return {"file": str(self.path), "format": self.kind, "input_size": self.input_size, "device": self.device,
                "precision": self.precision, "dataset": (self.dataset or {}).get("name"),
                "depth": (self.dataset or {}).get("depth")}


def model_format(path: Path) -> str:
    """"onnx", "checkpoint" or "torchscript" from the file's content; anything else is a one-line error."""
    if not path.is_file():
        raise DepthmaskError(f"{path}: model file does not exist")
    with open(path, "rb") as handle:
        head = handle.read(4)
    if path.suffix.lower() == ".onnx":
        return "onnx"
    if head == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            names = []
        if any("/code/" in n for n in names) or any(n.endswith("/constants.pkl") for n in names):
            return "torchscript"
        if any(n.endswith("/data.pkl") for n in names):
            return "checkpoint"
    raise DepthmaskError(f"{path}: unknown model format (expected a dm-train checkpoint, or an .onnx or TorchScript "
                         "file written by dm-export-model)")


def resolve_device(device: str) -> str:
    from .distributed import pick_device

    return str(pick_device(device))


def stats_normalization(data: Path | str) -> dict[str, Any]:
    """`--stats DATA`: the train-split statistics of a dataset folder, in the checkpoint's form."""
    from pipeline import DatasetReader

    from .checkpoint import normalization_from_stats

    try:
        return normalization_from_stats(DatasetReader(data).stats("train"))
    except DepthmaskError as exc:
        raise DepthmaskError(f"--stats: {exc}") from None


def load_predictor(path: Path | str, *, device: str = "auto", amp: bool | None = None,
                   stats: Path | str | None = None, threads: int | None = None) -> Predictor:
    """The network in `path` ready to run. A checkpoint's normalisation is its own; `stats` (a dataset folder)
    gives one to a checkpoint that has none. bf16 autocast for checkpoints where dm-train would use it
    (`amp` None), float32 for exported files (their graphs are float32)."""
    path = Path(path)
    kind = model_format(path)
    dev = resolve_device(device)
    if kind == "checkpoint":
        return _checkpoint_predictor(path, dev, amp, stats)
    if stats is not None:
        raise DepthmaskError(f"--stats: {path.name} is an exported model; its normalisation is in the file")
    metadata = read_export_metadata(path, kind)
    common = dict(kind=kind, path=path, input_size=int(metadata["input_size"]),
                  normalization=metadata["normalization"], dataset=metadata.get("dataset"), device=dev,
                  precision="float32")
    runner = _onnx_runner(path, dev, threads) if kind == "onnx" else _torchscript_runner(path, dev)
    return Predictor(run=runner, **common)


def _checkpoint_predictor(path: Path, device: str, amp: bool | None, stats: Path | str | None) -> Predictor:
    import torch

    from .checkpoint import dataset_info_of, input_size_of, load_checkpoint, model_from_checkpoint, normalization_of
    from .inputs import BatchNormalizer
    from .inputs import network_inputs
    from .precision import fast_path_default

    state = load_checkpoint(path)
    normalization = stats_normalization(stats) if stats is not None else normalization_of(state, path)
    model, config, _ = model_from_checkpoint(path)
    dev = torch.device(device)
    model = model.to(dev).eval()
    use_bf16 = fast_path_default(dev) if amp is None else amp
    normalizer = BatchNormalizer(normalization, dev)

    def run(bg: np.ndarray, fg_bg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x_bg, x_fg = network_inputs(bg, fg_bg, normalizer)
        autocast = torch.autocast(dev.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()
        with torch.inference_mode(), autocast:
            depth, logits = model(x_bg, x_fg)
        return depth.float().cpu().numpy(), logits.float().cpu().numpy()

    return Predictor("checkpoint", path, input_size_of(config), normalization, dataset_info_of(state), device,
                     "bf16" if use_bf16 else "float32", run)


def _unit_float(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 on [0, 1]: the exported graphs' input."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) * np.float32(1.0 / 255.0)


def _onnx_runner(path: Path, device: str, threads: int | None) -> Callable:
    session = _onnx_session(path, device, threads)

    def run(bg: np.ndarray, fg_bg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        depth, mask = session.run(["depth", "mask"], {"bg": _unit_float(bg), "fg_bg": _unit_float(fg_bg)})
        return depth, mask

    return run


def _onnx_session(path: Path, device: str, threads: int | None) -> Any:
    return onnx_session(path, device, threads,
                        missing=f"{path}: running ONNX models needs onnxruntime: pip install 'depthmask[onnx]'",
                        failure=lambda exc: DepthmaskError(f"{path}: not a loadable ONNX model: {_first_line(exc)}"))


def _torchscript_runner(path: Path, device: str) -> Callable:
    import torch

    module = _load_torchscript(path, device)

    def run(bg: np.ndarray, fg_bg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            depth, mask = module(torch.from_numpy(_unit_float(bg)).to(device),
                                 torch.from_numpy(_unit_float(fg_bg)).to(device))
        return depth.float().cpu().numpy(), mask.float().cpu().numpy()

    return run


def _load_torchscript(path: Path, device: str, extra: dict[str, Any] | None = None) -> Any:
    import torch

    try:
        with warnings.catch_warnings():  # torch.jit.load warns that TorchScript is deprecated
            warnings.simplefilter("ignore")
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra if extra is not None else {})
    except Exception as exc:  # noqa: BLE001
        raise DepthmaskError(f"{path}: not a loadable TorchScript model: {_first_line(exc)}") from None
    return module.eval()


def read_export_metadata(path: Path | str, kind: str | None = None) -> dict[str, Any]:
    """The metadata dm-export-model stores in an exported file (ONNX metadata_props / TorchScript extra file)."""
    path = Path(path)
    kind = kind or model_format(path)
    text = None
    if kind == "onnx":
        session = _onnx_session(path, "cpu", 1)
        text = session.get_modelmeta().custom_metadata_map.get(EXPORT_METADATA_KEY)
    elif kind == "torchscript":
        extra = {EXPORT_METADATA_FILE: ""}
        _load_torchscript(path, "cpu", extra)
        text = extra[EXPORT_METADATA_FILE] or None
    try:
        metadata = json.loads(text) if text else None
    except (TypeError, ValueError):
        metadata = None
    if not isinstance(metadata, dict) or metadata.get("format") != EXPORT_FORMAT:
        raise DepthmaskError(f"{path}: a {kind} model without depthmask metadata (not written by dm-export-model)")
    return metadata


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


# ---- one pair --------------------------------------------------------------------------------------
def window_offsets(length: int, size: int) -> list[int]:
    """Start offsets of `size`-long windows covering [0, length): the fit rule's centre window
    ((length - size) // 2), then windows overlapping by half out to both ends."""
    if length <= size:
        return [0]
    centre, step, last = (length - size) // 2, max(1, size // 2), length - size
    offsets = {centre}
    o = centre
    while o > 0:
        o = max(0, o - step)
        offsets.add(o)
    o = centre
    while o < last:
        o = min(last, o + step)
        offsets.add(o)
    return sorted(offsets)


def _tent(size: int) -> np.ndarray:
    """Blending weights along a window: 1 at its ends, size / 2 in its middle."""
    i = np.arange(size, dtype=np.float32)
    return np.minimum(i + 1, size - i)


@dataclass(frozen=True)
class PairLayout:
    """Where the windows of a pair lie in its scaled image (the fit rule's scale)."""

    height: int  # the input's size
    width: int
    scaled_h: int
    scaled_w: int
    offsets: tuple[int, ...]  # along the longer side
    vertical: bool  # windows run down (portrait) rather than across

    @classmethod
    def of(cls, height: int, width: int, size: int) -> "PairLayout":
        scaled_h, scaled_w, _, _ = image_rules.fit_square_geometry(height, width, size)
        vertical = scaled_h > scaled_w
        return cls(height, width, scaled_h, scaled_w, tuple(window_offsets(max(scaled_h, scaled_w), size)), vertical)

    def windows(self, image: np.ndarray, size: int) -> list[np.ndarray]:
        """The windows of an image at the input size, scaled as the fit rule does (area averaging when
        shrinking, bicubic when enlarging)."""
        scaled = image_rules.resize(image, self.scaled_h, self.scaled_w, enlarge=cv2.INTER_CUBIC)
        if self.vertical:
            return [np.ascontiguousarray(scaled[o : o + size]) for o in self.offsets]
        return [np.ascontiguousarray(scaled[:, o : o + size]) for o in self.offsets]

    def blend(self, tiles: np.ndarray, size: int) -> np.ndarray:
        """(windows, S, S) float outputs -> one (scaled_h, scaled_w) map, overlaps weighted by `_tent`."""
        total = np.zeros((self.scaled_h, self.scaled_w), np.float64)
        weight = np.zeros_like(total)
        tent = _tent(size)
        w = tent[:, None] if self.vertical else tent[None, :]
        for o, tile in zip(self.offsets, tiles):
            region = (slice(o, o + size), slice(None)) if self.vertical else (slice(None), slice(o, o + size))
            total[region] += tile * w
            weight[region] += w
        return (total / weight).astype(np.float32)

    def to_input_size(self, values: np.ndarray) -> np.ndarray:
        return image_rules.resize(values, self.height, self.width)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))).astype(np.float32)


def predict_pairs(predictor: Predictor, pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(bg, fg_bg) RGB uint8 pairs, each of one size (any) -> per pair (depth [0, 1], mask probability), float32
    at the pair's own size. All windows of the given pairs go through the network in one batch."""
    s = predictor.input_size
    layouts, bg_windows, fg_windows = [], [], []
    for bg, fg_bg in pairs:
        if bg.shape != fg_bg.shape:
            raise ValueError(f"bg is {bg.shape} but fg_bg is {fg_bg.shape}")
        layout = PairLayout.of(bg.shape[0], bg.shape[1], s)
        layouts.append(layout)
        bg_windows += layout.windows(bg, s)
        fg_windows += layout.windows(fg_bg, s)
    depth, logits = predictor(np.stack(bg_windows), np.stack(fg_windows))
    out, start = [], 0
    for layout in layouts:
        n = len(layout.offsets)
        d = layout.blend(depth[start : start + n], s)
        p = layout.blend(_sigmoid(logits[start : start + n]), s)
        start += n
        out.append((np.clip(layout.to_input_size(d), 0.0, 1.0), np.clip(layout.to_input_size(p), 0.0, 1.0)))
    return out


# ---- inputs ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pair:
    name: str  # relative POSIX path without extension: the outputs' stem
    bg: Path
    fg_bg: Path


def list_pairs(bg: Path | None, fg_bg: Path | None, pairs_file: Path | None,
               log: Callable[[str], None] = lambda m: None) -> list[Pair]:
    """The pairs named by --bg/--fg-bg (two files or two folders) or by --pairs (a CSV / text list)."""
    if pairs_file is not None:
        if bg is not None or fg_bg is not None:
            raise DepthmaskError("--pairs: give either --pairs LIST or --bg and --fg-bg, not both")
        return _pairs_from_list(pairs_file)
    if bg is None or fg_bg is None:
        raise DepthmaskError("--bg/--fg-bg: give both (two images or two folders), or --pairs LIST")
    for option, path in (("--bg", bg), ("--fg-bg", fg_bg)):
        if not path.exists():
            raise DepthmaskError(f"{option}: {path} does not exist")
    if bg.is_file() and fg_bg.is_file():
        return [Pair(fg_bg.stem, bg, fg_bg)]
    if bg.is_dir() and fg_bg.is_dir():
        return _pairs_from_folders(bg, fg_bg, log)
    raise DepthmaskError(f"--bg/--fg-bg: {bg} and {fg_bg} must be two image files or two folders")


def _pairs_from_folders(bg: Path, fg_bg: Path, log: Callable[[str], None]) -> list[Pair]:
    listings = [sources.list_folder(option, root, sources.IMAGE_EXTENSIONS) for option, root in
                (("--bg", bg), ("--fg-bg", fg_bg))]
    for listing in listings:
        if listing.skipped:
            log(f"warning: {listing.option} {listing.root}: skipped {len(listing.skipped)} file(s) that are not "
                f"images: {', '.join(listing.skipped[:5])}{' ...' if len(listing.skipped) > 5 else ''}")
    bgs, fgs = ({listing.key(p): p for p in listing.files} for listing in listings)
    for listing, mine, other, other_option in ((listings[1], fgs, bgs, "--bg"), (listings[0], bgs, fgs, "--fg-bg")):
        missing = [listing.name(p) for k, p in mine.items() if k not in other]
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise DepthmaskError(f"{other_option}: no image in {listings[0 if other is bgs else 1].root} for "
                                 f"{listing.option} image(s) {', '.join(missing[:3])}{more} (pairs are matched by "
                                 "relative name without extension)")
    return [Pair(key, bgs[key], path) for key, path in fgs.items()]


def _pairs_from_list(pairs_file: Path) -> list[Pair]:
    """Rows "bg,fg_bg" (CSV; a tab or whitespace also separates), an optional header row "bg,fg_bg", blank lines
    and '#' comments skipped; relative paths are relative to the list's folder."""
    try:
        text = pairs_file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DepthmaskError(f"--pairs: cannot read {pairs_file}: {getattr(exc, 'strerror', None) or exc}") from None
    root = pairs_file.parent
    pairs, seen = [], {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if "," in stripped:
            fields = [f.strip() for f in next(csv.reader([stripped]))]
        else:
            fields = stripped.split("\t") if "\t" in stripped else stripped.split()
        if [f.lower() for f in fields] == ["bg", "fg_bg"] and not pairs:
            continue
        if len(fields) != 2 or not all(fields):
            raise DepthmaskError(f"--pairs: {pairs_file} line {number}: expected two paths (bg, fg_bg), got {stripped!r}")
        bg, fg = (Path(f) if Path(f).is_absolute() else root / f for f in fields)
        for what, path in (("bg", bg), ("fg_bg", fg)):
            if not path.is_file():
                raise DepthmaskError(f"--pairs: {pairs_file} line {number}: {what} image {path} does not exist")
        name = _list_name(fg, root)
        if name in seen:
            raise DepthmaskError(f"--pairs: {pairs_file} lines {seen[name]} and {number} both write outputs named "
                                 f"{name!r}; give the fg_bg images different names")
        seen[name] = number
        pairs.append(Pair(name, bg, fg))
    if not pairs:
        raise DepthmaskError(f"--pairs: {pairs_file} lists no pairs")
    return pairs


def _list_name(path: Path, root: Path) -> str:
    """Outputs are named after the fg_bg image: its path relative to the list's folder, or its file name when it
    lies elsewhere (outputs never land outside the output folder)."""
    try:
        relative = Path(os.path.normpath(path)).relative_to(os.path.normpath(root))
    except ValueError:
        relative = Path(path.name)
    return relative.with_suffix("").as_posix()


def read_rgb(path: Path) -> np.ndarray:
    """An image file as the pipeline reads a background (EXIF orientation, 8-bit, alpha ignored), in RGB."""
    raw, _ = sources.read_image(path)
    try:
        colour, _ = image_rules.split_colour_alpha(raw)
    except ValueError as exc:
        raise DepthmaskError(f"{path}: {exc}") from None
    return np.ascontiguousarray(colour[:, :, ::-1])


def read_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    bg, fg = read_rgb(pair.bg), read_rgb(pair.fg_bg)
    if bg.shape != fg.shape:
        raise DepthmaskError(f"pair {pair.name}: bg {pair.bg} is {bg.shape[1]}x{bg.shape[0]} but fg_bg {pair.fg_bg} is "
                             f"{fg.shape[1]}x{fg.shape[0]}; both images of a pair must be the same size")
    return bg, fg


# ---- outputs ----------------------------------------------------------------------------------------
def output_files(name: str, npy: bool) -> dict[str, str]:
    files = {"mask": f"{name}_mask.png", "depth": f"{name}_depth.png", "preview": f"{name}_preview.png"}
    if npy:
        files["depth_npy"] = f"{name}_depth.npy"
    return files


def _write_atomic(path: Path, write: Callable[[Path], bool]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        if not write(tmp):
            raise OSError("the encoder refused it")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DepthmaskError(f"--output: could not write {path}: {getattr(exc, 'strerror', None) or exc}") from None


def _save_npy(values: np.ndarray) -> Callable[[Path], bool]:
    def write(tmp: Path) -> bool:
        with open(tmp, "wb") as handle:
            np.save(handle, values)
        return True
    return write


def preview_image(bg: np.ndarray, fg_bg: np.ndarray, mask: np.ndarray, depth: np.ndarray, far_m: float,
                  tile: int = PREVIEW_TILE) -> np.ndarray:
    """bg | fg_bg | mask overlay | colourised depth (BGR), each letterboxed into a square tile, with the depth
    legend of dm-export-samples (metres when `far_m`)."""
    from .export import colorize_depth, compose_grid

    bg_bgr, fg_bgr = bg[:, :, ::-1], fg_bg[:, :, ::-1]
    overlay = fg_bgr.astype(np.float32)
    overlay[mask] = overlay[mask] * 0.45 + np.array([40, 40, 255], np.float32) * 0.55
    edge = mask & ~cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    overlay[edge] = (0, 255, 0)
    tiles = [_letterbox(a, tile, nearest) for a, nearest in
             ((bg_bgr, False), (fg_bgr, False), (overlay.astype(np.uint8), False), (colorize_depth(depth), False))]
    return compose_grid([tiles], ["bg", "fg_bg", "mask", "depth"], tile, far_m)


def _letterbox(image: np.ndarray, tile: int, nearest: bool) -> np.ndarray:
    h, w = image.shape[:2]
    scale = tile / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_NEAREST if nearest else
                       (cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR))
    canvas = np.full((tile, tile, 3), 255, np.uint8)
    top, left = (tile - nh) // 2, (tile - nw) // 2
    canvas[top : top + nh, left : left + nw] = small
    return canvas


def write_outputs(output: Path, pair: Pair, bg: np.ndarray, fg_bg: np.ndarray, depth: np.ndarray, prob: np.ndarray,
                  far_m: float, npy: bool) -> dict[str, Any]:
    """The files of one pair (each written under a temporary name, then renamed) and its summary entry."""
    files = output_files(pair.name, npy)
    mask = prob > MASK_THRESHOLD
    mask_png = mask.astype(np.uint8) * 255
    depth_png = depth_to_uint16(depth, 1.0)
    _write_atomic(output / files["mask"], lambda tmp: cv2.imwrite(str(tmp), mask_png))
    _write_atomic(output / files["depth"], lambda tmp: cv2.imwrite(str(tmp), depth_png))
    if npy:
        _write_atomic(output / files["depth_npy"], _save_npy(depth.astype(np.float32)))
    preview = preview_image(bg, fg_bg, mask, depth, far_m)
    _write_atomic(output / files["preview"], lambda tmp: cv2.imwrite(str(tmp), preview))
    entry = {"name": pair.name, "bg": str(pair.bg), "fg_bg": str(pair.fg_bg), "width": int(bg.shape[1]),
             "height": int(bg.shape[0]), "files": files, "mask_fraction": float(mask.mean()),
             "depth_min": float(depth.min()), "depth_max": float(depth.max())}
    if far_m:
        entry["depth_min_m"], entry["depth_max_m"] = entry["depth_min"] * far_m, entry["depth_max"] * far_m
    return entry


def _refuse_existing(output: Path, pairs: list[Pair], npy: bool) -> None:
    targets = [output / SUMMARY_NAME] + [output / f for p in pairs for f in output_files(p.name, npy).values()]
    existing = [t for t in targets if t.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise DepthmaskError(f"--output: {existing[0]} exists{more}; pass --overwrite to replace outputs")


@dataclass(frozen=True)
class PredictOptions:
    output: Path
    batch_size: int = 8
    npy: bool = False
    overwrite: bool = False
    progress: bool = True


def predict_folder(predictor: Predictor, pairs: list[Pair], options: PredictOptions,
                   log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Predict every pair and write its files and the summary (predictions.json, written last)."""
    from tqdm import tqdm

    if options.batch_size < 1:
        raise DepthmaskError(f"--batch-size: expected a whole number >= 1, got {options.batch_size}")
    output = Path(options.output)
    if output.exists() and not output.is_dir():
        raise DepthmaskError(f"--output: {output} is not a folder")
    if not options.overwrite:
        _refuse_existing(output, pairs, options.npy)
    for pair in pairs:  # every input is read and checked before anything is written
        read_pair(pair)
    output.mkdir(parents=True, exist_ok=True)
    entries = []
    with tqdm(total=len(pairs), unit="pair", desc="predict", disable=not options.progress, mininterval=0.5) as bar:
        for start in range(0, len(pairs), options.batch_size):
            chunk = pairs[start : start + options.batch_size]
            arrays = [read_pair(p) for p in chunk]
            for pair, (bg, fg), (depth, prob) in zip(chunk, arrays, predict_pairs(predictor, arrays)):
                entries.append(write_outputs(output, pair, bg, fg, depth, prob, predictor.far_m, options.npy))
            bar.update(len(chunk))
    summary = {"created_with": f"depthmask {__version__}", "model": predictor.describe(), "outputs": OUTPUT_SEMANTICS,
               "far_m": predictor.far_m or None, "pairs": entries}
    _write_atomic(output / SUMMARY_NAME, lambda tmp: tmp.write_text(json.dumps(summary, indent=1)) > 0)
    return summary


OUTPUT_SEMANTICS = {
    "mask": "8-bit PNG, 255 = object (probability > 0.5), 0 = background",
    "depth": "16-bit PNG, value / 65535 = normalised depth on [0, 1], the training data's semantics (1 = far plane; "
             "metres = value / 65535 * far_m when far_m is set)",
    "depth_npy": "float32 normalised depth on [0, 1] (with --npy)",
    "preview": "bg | fg_bg | mask overlay | colourised depth with its legend",
}

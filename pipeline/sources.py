"""The user's folders: finding, reading and checking images, masks and depth maps.

Side effects (files) live here; the pixel rules are in pipeline.images. Every problem with a file
is a DepthmaskError naming the file and what is wrong. The rules are documented in docs/inputs.md.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from . import images
from .errors import DepthmaskError

# What OpenCV reads in every build; anything else in the folders is skipped with a warning.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm")
DEPTH_EXTENSIONS = (".png", ".tif", ".tiff", ".npy")


@dataclass
class FolderListing:
    """Files of one folder, recursively, in sorted order of their relative POSIX path."""

    option: str  # the option that named the folder, for messages
    root: Path
    files: list[Path]
    skipped: list[str] = field(default_factory=list)  # relative paths that are not of an accepted type

    def key(self, path: Path) -> str:
        """Relative path without its extension: how a mask or depth map is matched to its image."""
        return path.relative_to(self.root).with_suffix("").as_posix()

    def name(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


def list_folder(option: str, root: Path | str, extensions: tuple[str, ...]) -> FolderListing:
    """Every file under `root` (recursively; hidden files and folders, named '.*', are ignored) whose
    extension (any case) is accepted, sorted by relative path. Two files that differ only in
    extension (a.png, a.jpg) are an error: masks and depth maps could not be matched to one of them."""
    root = Path(root)
    if not root.exists():
        raise DepthmaskError(f"{option}: folder {root} does not exist")
    if not root.is_dir():
        raise DepthmaskError(f"{option}: {root} is not a folder")
    files, skipped = [], []
    for folder, subfolders, names in os.walk(root, onerror=_raise_walk_error(option)):
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        for name in names:
            if name.startswith("."):
                continue
            path = Path(folder) / name
            if path.suffix.lower() in extensions:
                files.append(path)
            else:
                skipped.append(path.relative_to(root).as_posix())
    files.sort(key=lambda p: p.relative_to(root).as_posix())
    listing = FolderListing(option, root, files, sorted(skipped))
    _refuse_ambiguous_stems(listing)
    if not files:
        extra = f" ({len(skipped)} other file(s) skipped)" if skipped else ""
        raise DepthmaskError(f"{option}: no {'/'.join(e[1:] for e in extensions)} files in {root}{extra}")
    return listing


def _raise_walk_error(option: str) -> Callable[[OSError], None]:
    def raise_error(exc: OSError) -> None:
        raise DepthmaskError(f"{option}: cannot read folder {exc.filename}: {exc.strerror or exc}")
    return raise_error


def _refuse_ambiguous_stems(listing: FolderListing) -> None:
    seen: dict[str, Path] = {}
    for path in listing.files:
        key = listing.key(path)
        if key in seen:
            raise DepthmaskError(f"{listing.option}: {seen[key]} and {path} have the same name but for the "
                                 "extension; keep one (masks and depth maps are matched by name)")
        seen[key] = path


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DepthmaskError(f"{path}: cannot read: {exc.strerror or exc}") from None


def decode_image(path: Path, data: bytes) -> np.ndarray:
    """Decoded pixels as stored (any depth, any channels, alpha kept), turned as EXIF says."""
    if _looks_truncated(data):
        raise DepthmaskError(f"{path}: image file is truncated (it ends before the image does)")
    image = decode_quietly(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DepthmaskError(f"{path}: not a readable image (corrupt, truncated or not an image)")
    return images.apply_orientation(image, exif_orientation(data))


PNG_END = b"IEND\xaeB`\x82"


def _looks_truncated(data: bytes) -> bool:
    """A PNG without its end chunk, or a JPEG without its end marker that Pillow cannot finish either
    (a phone's "motion photo" keeps a video after the marker: that one is fine). Some decoders fill a
    cut-off image with grey and only print a warning, so this is checked first."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return PNG_END not in data[-64:]
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-4096:]:
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
        except (OSError, ValueError, SyntaxError):
            return True
    return False


def decode_quietly(data: bytes, flags: int) -> np.ndarray | None:
    """cv2.imdecode with the C libraries' own messages ("libpng error: ...", "Corrupt JPEG data")
    kept off stderr: a bad file gets one line from us, not a decoder's chatter before it."""
    if not data:
        return None
    with _stderr_silenced():
        return cv2.imdecode(np.frombuffer(data, np.uint8), flags)


@contextlib.contextmanager
def _stderr_silenced():
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 (embedded interpreters): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def exif_orientation(data: bytes) -> int:
    """EXIF orientation tag (1 when absent or unreadable). Pillow reads only the header here, never
    the pixels: OpenCV applies orientation on its own only when it also drops alpha and 16 bits."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return int(image.getexif().get(images.EXIF_ORIENTATION_TAG, 1))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return 1


def read_image(path: Path) -> tuple[np.ndarray, str]:
    """(decoded image, sha256 of the file's bytes)."""
    data = read_bytes(path)
    return decode_image(path, data), hashlib.sha256(data).hexdigest()


# ---- backgrounds ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoadedBackground:
    name: str  # relative path
    key: str  # relative path without extension
    image: np.ndarray  # (size, size, 3) uint8 BGR, fitted
    source_shape: tuple[int, int]  # (height, width) as displayed, before the fit
    file_sha256: str


def load_backgrounds(listing: FolderListing, size: int, limit: int | None) -> list[LoadedBackground]:
    out = []
    for path in _first(listing, limit):
        raw, digest = read_image(path)
        try:
            colour, _ = images.split_colour_alpha(raw)  # a background's alpha is ignored
        except ValueError as exc:
            raise DepthmaskError(f"{path}: {exc}") from None
        out.append(LoadedBackground(listing.name(path), listing.key(path), images.fit_square(colour, size),
                                    colour.shape[:2], digest))
    return out


def _first(listing: FolderListing, limit: int | None) -> list[Path]:
    if limit is not None and limit > len(listing.files):
        raise DepthmaskError(f"{'--backgrounds' if listing.option == '--bg' else '--foregrounds'}: asked for "
                             f"{limit}, but {listing.option} {listing.root} holds only {len(listing.files)} image(s)")
    return listing.files if limit is None else listing.files[:limit]


# ---- depth maps of backgrounds -------------------------------------------------------------------
def read_depth_map(path: Path) -> tuple[np.ndarray, str]:
    """(A depth map as float64 (H, W), sha256 of the file): 8/16-bit or float PNG/TIFF (one channel,
    or three equal ones) or .npy."""
    data = read_bytes(path)
    digest = hashlib.sha256(data).hexdigest()
    if path.suffix.lower() == ".npy":
        try:
            values = np.load(io.BytesIO(data), allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise DepthmaskError(f"{path}: not a readable .npy array: {exc}") from None
        values = np.squeeze(values) if values.ndim == 3 and 1 in (values.shape[0], values.shape[-1]) else values
        if values.ndim != 2 or not (np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.integer)):
            raise DepthmaskError(f"{path}: expected a 2-D numeric depth array, got shape {values.shape} {values.dtype}")
        return values.astype(np.float64), digest
    if _looks_truncated(data):
        raise DepthmaskError(f"{path}: depth map file is truncated (it ends before the image does)")
    image = decode_quietly(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DepthmaskError(f"{path}: not a readable depth image (corrupt, truncated or not an image)")
    if image.ndim == 3:
        if image.shape[2] >= 3 and (image[:, :, 0] == image[:, :, 1]).all() and (image[:, :, 1] == image[:, :, 2]).all():
            image = image[:, :, 0]
        else:
            raise DepthmaskError(f"{path}: depth maps must have one channel; this one has {image.shape[2]} "
                                 "different channels (a colour-mapped picture of depth cannot be inverted)")
    return image.astype(np.float64), digest


@dataclass(frozen=True)
class DepthMapOptions:
    kind: str = "depth"  # or "inverse"
    far: float | None = None  # None: per-map scale (the farthest pixel is 1.0)


def load_depth_maps(folder: Path | str, backgrounds: list[LoadedBackground], size: int,
                    options: DepthMapOptions) -> tuple[list[np.ndarray], list[dict[str, str]]]:
    """One uint16 depth map per background, matched by relative name without extension, fitted to
    size x size like its image, and each map's file name and sha256. A background without a map is
    an error naming it."""
    listing = list_folder("--bg-depth", folder, DEPTH_EXTENSIONS)
    by_key = {listing.key(p): p for p in listing.files}
    missing = [bg.name for bg in backgrounds if bg.key not in by_key]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise DepthmaskError(f"--bg-depth: no depth map in {listing.root} for background(s) "
                             f"{', '.join(missing[:3])}{more} (expected the same name, extension "
                             f"{'/'.join(e[1:] for e in DEPTH_EXTENSIONS)})")
    out, files = [], []
    for bg in backgrounds:
        path = by_key[bg.key]
        values, digest = read_depth_map(path)
        files.append({"depth_file": listing.name(path), "depth_sha256": digest})
        if values.shape != bg.source_shape and not images.same_aspect(values.shape, bg.source_shape):
            raise DepthmaskError(f"{path}: depth map is {values.shape[1]}x{values.shape[0]} but its background "
                                 f"{bg.name} is {bg.source_shape[1]}x{bg.source_shape[0]} (as displayed); expected the "
                                 "same size or the same aspect ratio")
        try:
            normalised_input = images.normalise_depth(values, options.kind, options.far)  # checks NaN/inf/sign
        except ValueError as exc:
            raise DepthmaskError(f"{path}: {exc}") from None
        fitted = images.fit_depth_square(normalised_input.astype(np.float32), bg.source_shape, size)
        out.append(images.depth_map_to_uint16(fitted, "depth", 1.0))
    return out, files


# ---- foregrounds ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoadedForeground:
    name: str
    cutout: np.ndarray  # (h, w, 4) uint8 BGRA: cropped to its alpha, at most max_side
    files: dict[str, str]  # file (and mask file) names and sha256


def load_foregrounds(listing: FolderListing, masks: FolderListing | None, max_side: int,
                     limit: int | None) -> list[LoadedForeground]:
    """RGBA cut-outs, or RGB images whose mask (same relative name) is in `masks`; a mask replaces
    an image's own alpha. The mask is alpha: >= 128 (of 255) is object."""
    mask_by_key = {masks.key(p): p for p in masks.files} if masks is not None else {}
    out = []
    for path in _first(listing, limit):
        raw, digest = read_image(path)
        files = {"file": listing.name(path), "file_sha256": digest}
        try:
            colour, alpha = images.split_colour_alpha(raw)
        except ValueError as exc:
            raise DepthmaskError(f"{path}: {exc}") from None
        mask_path = mask_by_key.get(listing.key(path))
        if mask_path is not None:
            alpha, files["mask_sha256"] = _read_mask(mask_path, colour.shape[:2], path)
            files["mask_file"] = masks.name(mask_path)
        elif alpha is None:
            hint = (f"no mask named {listing.key(path)}.* in --fg-masks {masks.root}" if masks is not None
                    else "give it an alpha channel (RGBA PNG) or pass --fg-masks DIR")
            raise DepthmaskError(f"{path}: foreground has no alpha channel and no mask ({hint})")
        try:
            cutout = images.prepare_cutout(np.dstack([colour, alpha]), max_side)
        except ValueError as exc:
            raise DepthmaskError(f"{mask_path or path}: {exc}") from None
        out.append(LoadedForeground(listing.name(path), cutout, files))
    return out


def _read_mask(path: Path, shape: tuple[int, int], image_path: Path) -> tuple[np.ndarray, str]:
    raw, digest = read_image(path)
    try:
        colour, alpha = images.split_colour_alpha(raw)
    except ValueError as exc:
        raise DepthmaskError(f"{path}: {exc}") from None
    if colour.shape[:2] != shape:
        raise DepthmaskError(f"{path}: mask is {colour.shape[1]}x{colour.shape[0]} but its foreground {image_path.name} "
                             f"is {shape[1]}x{shape[0]}; they must be the same size")
    # a mask with a real alpha channel uses it; otherwise its brightest channel (grey, white or coloured masks)
    if alpha is not None and (alpha != 255).any():
        return alpha, digest
    return colour.max(axis=2), digest

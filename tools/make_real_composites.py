"""Write user-style folders of REAL photographs, for measuring a network on real images offline.

The photographs are the ones scikit-image and scikit-learn ship inside their wheels (no download at
run time): skimage.data's astronaut, coffee, chelsea, rocket, camera, motorcycle (stereo left and
right), brick, grass, gravel, hubble_deep_field, and sklearn's china and flower.

- bg/: square crops of those photos (several per photo, at several scales), JPEG q95.
- bg_depth/: a constant depth map per background (16-bit PNG millimetres, 10 m). The photos have no
  depth, and the build needs a depth source: **depth is not evaluated on this set**, only masks.
- fg/: RGBA cut-outs of real photo content with real silhouettes:
  * the 24 coins of skimage.data.coins(), segmented from their plain background (Otsu threshold,
    holes filled, one connected component each): real texture, real outline;
  * the cameraman of skimage.data.camera() (the dark figure, camera and tripod against the sky);
  * the horse silhouette of skimage.data.horse() (a real photo's outline) filled with crops of
    real photos (the cat's fur, the coffee table's wood, brick, grass, gravel, the astronaut's suit).

    pip install -e ".[bench]"     # scikit-image, scikit-learn
    python tools/make_real_composites.py out/realphotos
    dm-build-lmdb out/real_composites --bg out/realphotos/bg --bg-depth out/realphotos/bg_depth \\
        --fg out/realphotos/fg --positions 4
    dm-eval out/real_composites --checkpoint RUN/best.pt --split all     # mask IoU beside the floor

Everything is deterministic (crops from --seed); the folders are written fresh (an existing OUT is
refused unless --overwrite).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

DEPTH_MM = 10_000  # the constant depth written for every background (not evaluated)


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.dtype != np.uint8:
        image = np.clip(np.rint(image * (255.0 if image.max() <= 1.0 else 1.0)), 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def photos() -> dict[str, np.ndarray]:
    """The bundled photographs (RGB uint8), by name."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    out = {name: _rgb(getattr(data, name)()) for name in
           ("astronaut", "coffee", "chelsea", "rocket", "camera", "brick", "grass", "gravel", "hubble_deep_field")}
    left, right, _ = data.stereo_motorcycle()
    out["motorcycle_left"], out["motorcycle_right"] = _rgb(left), _rgb(right)
    sample = load_sample_images()
    for name, image in zip(sample.filenames, sample.images):
        out[Path(name).stem] = _rgb(image)
    return out


def background_crops(images: dict[str, np.ndarray], per_photo: int, rng: np.random.Generator):
    """(name, square RGB crop) pairs: side 45-100 % of the photo's shorter side, anywhere in it."""
    for name, image in sorted(images.items()):
        h, w = image.shape[:2]
        for k in range(per_photo):
            side = int(min(h, w) * rng.uniform(0.45, 1.0))
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            yield f"{name}_{k:02d}", image[y : y + side, x : x + side]


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.binary_fill_holes(mask)


def _cutout(rgb: np.ndarray, mask: np.ndarray, pad: int = 2) -> np.ndarray:
    """RGBA cut-out of `rgb` where `mask`, cropped to the mask's box; the outline softened over one
    pixel (area-averaged from 4x) like a careful manual cut-out."""
    ys, xs = np.nonzero(mask)
    y0, y1 = max(0, ys.min() - pad), min(mask.shape[0], ys.max() + 1 + pad)
    x0, x1 = max(0, xs.min() - pad), min(mask.shape[1], xs.max() + 1 + pad)
    m = mask[y0:y1, x0:x1].astype(np.uint8) * 255
    big = cv2.resize(m, None, fx=4, fy=4, interpolation=cv2.INTER_LINEAR)
    alpha = cv2.resize(big, (m.shape[1], m.shape[0]), interpolation=cv2.INTER_AREA)
    colour = rgb[y0:y1, x0:x1]
    return np.dstack([colour, alpha])


def coins() -> list[np.ndarray]:
    """The coins of skimage.data.coins(), one cut-out each (real texture, real outline)."""
    from scipy import ndimage
    from skimage import data, filters, morphology

    gray = data.coins()
    smooth = filters.gaussian(gray, sigma=1.0, preserve_range=True)
    mask = smooth > filters.threshold_otsu(smooth)
    mask = morphology.opening(mask, morphology.disk(2))
    mask = _fill_holes(morphology.closing(mask, morphology.disk(3)))
    labels, n = ndimage.label(mask)
    rgb = _rgb(gray)
    out = []
    for k in range(1, n + 1):
        component = labels == k
        ys, xs = np.nonzero(component)
        box_h, box_w = int(np.ptp(ys)) + 1, int(np.ptp(xs)) + 1
        extent = len(ys) / (box_h * box_w)  # a disc fills ~0.79 of its box
        if len(ys) < 400 or not 0.6 <= extent <= 0.9 or max(box_h, box_w) > 1.5 * min(box_h, box_w):
            continue  # specks and the lit strip along the photo's edge, not coins
        out.append(_cutout(rgb, component))
    return out


def cameraman() -> np.ndarray:
    """The cameraman, camera and tripod of skimage.data.camera(): dark against the sky, above the grass."""
    from scipy import ndimage
    from skimage import data, filters, morphology

    gray = data.camera()
    smooth = filters.gaussian(gray, sigma=1.0, preserve_range=True)
    dark = smooth < filters.threshold_otsu(smooth) * 0.75
    dark = morphology.opening(dark, morphology.disk(1))
    labels, _ = ndimage.label(dark)
    seed = labels[200, 200] or np.bincount(labels[150:250, 150:250].ravel())[1:].argmax() + 1
    figure = _fill_holes(morphology.closing(labels == seed, morphology.disk(6)))  # the lit face and hands too
    return _cutout(_rgb(gray), figure)


def textured_horses(images: dict[str, np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The horse silhouette filled with crops of real photos (fur, wood, brick, grass, gravel, cloth)."""
    from skimage import data

    silhouette = ~data.horse()  # True on the horse
    h, w = silhouette.shape
    out = []
    for name in ("chelsea", "coffee", "brick", "grass", "gravel", "astronaut", "china", "flower"):
        photo = images[name]
        scale = max(h / photo.shape[0], w / photo.shape[1]) * rng.uniform(1.0, 1.6)
        big = cv2.resize(photo, (int(np.ceil(photo.shape[1] * scale)), int(np.ceil(photo.shape[0] * scale))),
                         interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        y, x = int(rng.integers(0, big.shape[0] - h + 1)), int(rng.integers(0, big.shape[1] - w + 1))
        out.append(_cutout(big[y : y + h, x : x + w], silhouette))
    return out


def write(out: Path, *, per_photo: int, seed: int) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    images = photos()
    for sub in ("bg", "bg_depth", "fg"):
        (out / sub).mkdir(parents=True)
    n_bg = 0
    for name, crop in background_crops(images, per_photo, rng):
        cv2.imwrite(str(out / "bg" / f"{name}.jpg"), crop[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(str(out / "bg_depth" / f"{name}.png"), np.full(crop.shape[:2], DEPTH_MM, np.uint16))
        n_bg += 1
    cutouts = [("coin", c) for c in coins()] + [("cameraman", cameraman())] + \
              [("horse", c) for c in textured_horses(images, rng)]
    for k, (kind, rgba) in enumerate(cutouts):
        bgra = np.dstack([rgba[:, :, 2::-1], rgba[:, :, 3]])
        cv2.imwrite(str(out / "fg" / f"{k:03d}_{kind}.png"), bgra)
    return {"backgrounds": n_bg, "foregrounds": len(cutouts)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path)
    parser.add_argument("--per-photo", type=int, default=4, help="background crops per photograph")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = parser.parse_args(argv)
    if args.per_photo < 1:
        parser.error("--per-photo: expected a whole number >= 1")
    try:
        import scipy  # noqa: F401  (the segmentation's morphology)
        import skimage  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as exc:
        print(f"error: {exc.name} is not installed: pip install -e \".[bench]\" (scikit-image, scikit-learn)",
              file=sys.stderr)
        return 1
    if args.output.exists():
        if not args.overwrite:
            print(f"error: {args.output}: exists; pass --overwrite to replace it", file=sys.stderr)
            return 1
        shutil.rmtree(args.output)
    counts = write(args.output, per_photo=args.per_photo, seed=args.seed)
    print(f"wrote {counts['backgrounds']} backgrounds (constant depth {DEPTH_MM} mm, not evaluated) and "
          f"{counts['foregrounds']} real cut-outs under {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

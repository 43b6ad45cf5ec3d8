"""Write folders shaped like a user's real data, for benchmarks and for trying --bg/--fg by hand.

No photos can be downloaded here, so the "photos" are procedural scenes rendered at camera-like
sizes and written the way users bring them: backgrounds as 4:3 JPEGs,
their depth as 16-bit PNG millimetres (and inverse-depth .npy), foregrounds as RGBA PNGs larger than
the dataset allows (so they are scaled down), and a second set of foregrounds as RGB JPEGs with
separate masks.

    python tools/make_photo_folders.py out/photos --backgrounds 102 --foregrounds 104
    dm-build-lmdb out/real --bg out/photos/bg --bg-depth out/photos/bg_depth --fg out/photos/fg
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.scenes import FAR_M, render_background, render_foreground  # noqa: E402


def write_backgrounds(out: Path, count: int, seed: int, height: int) -> None:
    """4:3 landscape JPEGs at `height` rows, with depth in millimetres (uint16 PNG) and as inverse
    depth in 1/m (.npy). The scene is rendered square at the photo's width and the middle 3/4 kept."""
    width = height * 4 // 3
    for sub in ("bg", "bg_depth", "bg_inverse"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        scene = render_background(i, seed=seed, size=width)
        top = (width - height) // 2
        image = scene.image[top : top + height]
        depth_m = np.minimum(scene.depth_m[top : top + height], FAR_M)
        name = f"street_{i:04d}"
        cv2.imwrite(str(out / "bg" / f"{name}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(str(out / "bg_depth" / f"{name}.png"), np.rint(depth_m * 1000).astype(np.uint16))
        np.save(out / "bg_inverse" / f"{name}.npy", (1.0 / depth_m).astype(np.float32))


def write_foregrounds(out: Path, count: int, seed: int, scale: float) -> None:
    """RGBA PNGs enlarged by `scale` (cameras give big cut-outs), plus the same objects as RGB JPEG +
    grey mask PNG, the other layout users bring."""
    for sub in ("fg", "fg_rgb", "fg_masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        bgra = render_foreground(i, seed=seed)
        big = cv2.resize(bgra, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        name = f"car_{i:04d}"
        cv2.imwrite(str(out / "fg" / f"{name}.png"), big)
        cv2.imwrite(str(out / "fg_rgb" / f"{name}.jpg"), big[:, :, :3], [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(str(out / "fg_masks" / f"{name}.png"), big[:, :, 3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path)
    parser.add_argument("--backgrounds", type=int, default=102)
    parser.add_argument("--foregrounds", type=int, default=104)
    parser.add_argument("--height", type=int, default=480, help="Background photo height (width = 4/3 of it).")
    parser.add_argument("--fg-scale", type=float, default=2.0, help="Enlargement of the procedural cut-outs.")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    write_backgrounds(args.output, args.backgrounds, args.seed, args.height)
    write_foregrounds(args.output, args.foregrounds, args.seed, args.fg_scale)
    print(f"wrote {args.backgrounds} backgrounds and {args.foregrounds} foregrounds under {args.output}")


if __name__ == "__main__":
    main()

"""Contact sheet of the procedural scene kit: backgrounds, their depth, and foregrounds.

    python tools/preview_scenes.py [out/scenes_preview.png] [--seed 0] [--backgrounds 16] [--foregrounds 32]
        [--composites 16]

Each background is shown next to its depth (turbo colour map on log depth: near = red, far/sky =
dark blue); foregrounds are composited over a checkerboard so their alpha edges are visible.
With --composites N, also N samples of the build (background i with foreground i) composed with the
fixed and the depth-scaled placement side by side, each labelled with its level and object depth.
Also prints render times, JPEG q90 sizes and depth statistics.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import placement as pl  # noqa: E402
from pipeline.assets import procedural_background  # noqa: E402
from pipeline.compose import composite, object_depth, prepare_foreground  # noqa: E402
from pipeline.options import DEFAULT_SIZE  # noqa: E402
from pipeline.scenes import FAR_M, foreground_width_m, nominal_focal_px, render_background, render_foreground  # noqa: E402

GAP = 4
LABEL_H = 14


def depth_colour(depth_m: np.ndarray) -> np.ndarray:
    """log-depth colour map: 1 m .. FAR_M spread over the turbo map (near red, far blue)."""
    t = np.log(np.clip(depth_m, 1.0, FAR_M)) / np.log(FAR_M)
    img = cv2.applyColorMap(np.round(255 * (1.0 - t)).astype(np.uint8), cv2.COLORMAP_TURBO)
    img[depth_m >= FAR_M] = (60, 20, 20)
    return img


def checkerboard(h: int, w: int, cell: int = 8) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    v = np.where((yy // cell + xx // cell) % 2 == 0, 205, 160).astype(np.uint8)
    return np.repeat(v[..., None], 3, axis=2)


def over_checker(bgra: np.ndarray) -> np.ndarray:
    a = bgra[..., 3:4].astype(np.float32) / 255.0
    bg = checkerboard(*bgra.shape[:2]).astype(np.float32)
    return np.round(bgra[..., :3] * a + bg * (1.0 - a)).astype(np.uint8)


def labelled(img: np.ndarray, text: str, w: int, h: int) -> np.ndarray:
    tile = np.full((h + LABEL_H, w, 3), 255, np.uint8)
    tile[LABEL_H : LABEL_H + img.shape[0], : img.shape[1]] = img[:h, :w]
    cv2.putText(tile, text, (2, LABEL_H - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (0, 0, 0), 1, cv2.LINE_AA)
    return tile


def grid(tiles: list[np.ndarray], cols: int) -> np.ndarray:
    h, w = tiles[0].shape[:2]
    rows = []
    for i in range(0, len(tiles), cols):
        row = tiles[i : i + cols] + [np.full((h, w, 3), 255, np.uint8)] * (cols - len(tiles[i : i + cols]))
        rows.append(np.concatenate([np.pad(t, ((0, GAP), (0, GAP), (0, 0)), constant_values=255) for t in row], 1))
    return np.concatenate(rows, 0)


def composite_tiles(seed: int, first: int, count: int, size: int) -> list[np.ndarray]:
    """Sample i = background i with foreground i (twice: fixed, depth-scaled), as the build places them."""
    tiles = []
    for i in range(first, first + count):
        bg = procedural_background(i, seed=seed, size=size)
        fg = render_foreground(i, seed=seed)
        key, fgi, bgi = np.array([i]), np.array([0]), np.array([0])
        w, h = np.array([fg.shape[1]]), np.array([fg.shape[0]])
        scale = pl.DepthScale(np.array([foreground_width_m(i, seed=seed)]), FAR_M / 65535, nominal_focal_px(size))
        for name, (x, y, level) in (
                ("fixed", pl.fixed_placements(seed, key, w, h, np.array([bg.ground_top]), size)),
                ("depth", pl.depth_scaled_placements(seed, key, fgi, w, h, bgi, [bg.depth], np.array([bg.ground_top]),
                                                     size, scale))):
            prepared = prepare_foreground(pl.scale_foreground(fg, int(level[0])))
            image = composite(bg.image, prepared, int(x[0]), int(y[0]))
            z = object_depth(bg.depth, prepared, int(x[0]), int(y[0])) * FAR_M / 65535
            tiles.append(labelled(image, f"{i} {name} k={int(level[0])} {z:.1f} m", size, size))
    return tiles


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("output", nargs="?", default="out/scenes_preview.png")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backgrounds", type=int, default=16)
    p.add_argument("--foregrounds", type=int, default=32)
    p.add_argument("--first", type=int, default=0, help="index of the first asset shown")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE)
    p.add_argument("--composites", type=int, default=0, help="samples shown with both placements")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    bgs = [render_background(args.first + i, seed=args.seed, size=args.size) for i in range(args.backgrounds)]
    t1 = time.perf_counter()
    fgs = [render_foreground(args.first + i, seed=args.seed) for i in range(args.foregrounds)]
    t2 = time.perf_counter()

    if not bgs:
        p.error("--backgrounds must be at least 1")
    jpeg = [len(cv2.imencode(".jpg", b.image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1]) for b in bgs]
    depth = np.stack([b.depth_m for b in bgs])
    print(f"backgrounds: {len(bgs)} in {t1 - t0:.2f} s ({1000 * (t1 - t0) / max(len(bgs), 1):.1f} ms each); "
          f"JPEG q90 mean {np.mean(jpeg) / 1024:.2f} KiB, max {max(jpeg) / 1024:.2f} KiB")
    print(f"depth: min {depth.min():.2f} m, median {np.median(depth):.2f} m, sky/far share "
          f"{(depth >= FAR_M).mean():.1%}")
    if fgs:
        print(f"foregrounds: {len(fgs)} in {t2 - t1:.2f} s; widths {min(f.shape[1] for f in fgs)}.."
              f"{max(f.shape[1] for f in fgs)}, heights {min(f.shape[0] for f in fgs)}.."
              f"{max(f.shape[0] for f in fgs)}")

    s = args.size
    bg_tiles = []
    for i, b in enumerate(bgs):
        idx = args.first + i
        bg_tiles.append(labelled(b.image, f"bg {idx} h={b.horizon_row}", s, s))
        bg_tiles.append(labelled(depth_colour(b.depth_m), f"depth {b.depth_m.min():.1f}-{b.depth_m.max():.0f} m", s, s))
    sheet_bg = grid(bg_tiles, 8)

    cell_w, cell_h = 170, 150
    fg_tiles = [labelled(over_checker(f), f"fg {args.first + i} {f.shape[1]}x{f.shape[0]}", cell_w, cell_h)
                for i, f in enumerate(fgs)]
    sheet_fg = grid(fg_tiles, max(1, sheet_bg.shape[1] // (cell_w + GAP))) if fg_tiles else None

    sheets = [sheet_bg]
    if sheet_fg is not None:
        w = max(sheet_bg.shape[1], sheet_fg.shape[1])
        sheets = [np.pad(x, ((0, GAP * 2), (0, w - x.shape[1]), (0, 0)), constant_values=255)
                  for x in (sheet_bg, sheet_fg)]
    if args.composites:
        sheet_c = grid(composite_tiles(args.seed, args.first, args.composites, s), 8)
        w = max(x.shape[1] for x in sheets + [sheet_c])
        sheets = [np.pad(x, ((0, GAP * 2), (0, w - x.shape[1]), (0, 0)), constant_values=255)
                  for x in sheets + [sheet_c]]
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), np.concatenate(sheets, 0))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

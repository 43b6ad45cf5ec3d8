"""Grid images of samples: bg | fg_bg | true mask | true depth [| predicted mask | predicted depth].

Depth tiles share one colour scale (normalised depth 0 -> 1, i.e. 0 m -> far plane), drawn as a
legend under the grid, so tiles can be compared with each other and across grids.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from pipeline import DatasetReader, DepthmaskError
from pipeline import images as image_rules
from pipeline.codecs import DEPTH_MAX

from .inputs import BatchNormalizer, sample_inputs
from .recipe_source import open_reader

TITLE_H = 22
LEGEND_H = 44
GAP = 2
COLORMAP = cv2.COLORMAP_TURBO


def colorize_depth(depth01: np.ndarray) -> np.ndarray:
    """[0, 1] depth -> BGR uint8 with the fixed colour map (near = blue, far = red)."""
    return cv2.applyColorMap(np.clip(depth01 * 255.0 + 0.5, 0, 255).astype(np.uint8), COLORMAP)


def mask_tile(mask01: np.ndarray) -> np.ndarray:
    return cv2.cvtColor((np.clip(mask01, 0, 1) * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)


def _fit(image: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    """A tile: the shared resize rule (area when shrinking), or nearest for coloured maps (no blended colours)."""
    if not nearest:
        return image_rules.resize(image, size, size)
    return image if image.shape[:2] == (size, size) else cv2.resize(image, (size, size),
                                                                      interpolation=cv2.INTER_NEAREST)


def compose_grid(rows: list[list[np.ndarray]], titles: list[str], tile: int, far_m: float) -> np.ndarray:
    """Tiles (BGR, tile x tile) in rows under column titles, with the depth colour legend below."""
    cols = len(titles)
    width = cols * tile + (cols - 1) * GAP
    height = TITLE_H + len(rows) * (tile + GAP) + LEGEND_H
    canvas = np.full((height, width, 3), 255, np.uint8)
    for c, title in enumerate(titles):
        cv2.putText(canvas, title, (c * (tile + GAP) + 4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
    for r, row in enumerate(rows):
        y = TITLE_H + r * (tile + GAP)
        for c, image in enumerate(row):
            x = c * (tile + GAP)
            canvas[y : y + tile, x : x + tile] = image
    _draw_legend(canvas, TITLE_H + len(rows) * (tile + GAP), width, far_m)
    return canvas


def _draw_legend(canvas: np.ndarray, top: int, width: int, far_m: float) -> None:
    bar_w = min(width - 20, 400)
    ramp = colorize_depth(np.tile(np.linspace(0, 1, bar_w)[None, :], (12, 1)))
    x0 = 10
    canvas[top + 6 : top + 18, x0 : x0 + bar_w] = ramp
    font = cv2.FONT_HERSHEY_SIMPLEX
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = x0 + int(frac * (bar_w - 1))
        cv2.line(canvas, (x, top + 18), (x, top + 22), (0, 0, 0), 1)
        label = f"{frac * far_m:g} m" if far_m else f"{frac:g}"
        (text_w, _), _ = cv2.getTextSize(label, font, 0.4, 1)
        left = min(max(2, x - text_w // 2), canvas.shape[1] - text_w - 2)  # centred on its tick, never clipped
        cv2.putText(canvas, label, (left, top + 36), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(canvas, "depth", (x0 + bar_w + 8, top + 17), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)


def choose_samples(reader: DatasetReader, split: str, count: int, seed: int) -> np.ndarray:
    if count < 1:
        raise DepthmaskError(f"--count: expected a whole number >= 1, got {count}")
    indices = reader.split_indices(split)
    if len(indices) == 0:
        raise DepthmaskError(f"{reader.root}: split {split!r} has no samples")
    if count > len(indices):
        raise DepthmaskError(f"--count {count}: the {split} split has only {len(indices)} samples")
    chosen = np.random.default_rng([seed, 0xE4]).choice(len(indices), size=count, replace=False)
    return np.sort(indices[chosen])


def predict(model: torch.nn.Module, normalizer: Any, samples: list[dict[str, Any]], size: int,
            device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Predicted (depth [0, 1], mask probability) per sample at the model's input size."""
    bg, fg_bg = sample_inputs(samples, size, normalizer)
    model.eval()
    with torch.no_grad():
        depth, logits = model(bg, fg_bg)
    return depth[:, 0].float().cpu().numpy(), torch.sigmoid(logits[:, 0]).float().cpu().numpy()


def export_samples(data: str | Path, output: str | Path, *, checkpoint: str | Path | None = None, split: str = "val",
                   count: int = 8, seed: int = 0, size: int | None = None, device: str = "auto",
                   overwrite: bool = False) -> Path:
    output = Path(output)
    if output.suffix.lower() != ".png":
        raise DepthmaskError(f"--output: {output} must end in .png")
    if output.exists() and not overwrite:
        raise DepthmaskError(f"--output: {output} exists; pass --overwrite to replace it")
    if not output.parent.is_dir():
        raise DepthmaskError(f"--output: folder {output.parent} does not exist")
    reader = open_reader(data)
    indices = choose_samples(reader, split, count, seed)
    samples = [reader.decode(int(i)) for i in indices]
    tile = int(size or reader.size[0])
    if not 16 <= tile <= 1024:
        raise DepthmaskError(f"--size: expected 16 to 1024 pixels, got {tile}")
    titles = ["bg", "fg_bg", "mask", "depth"]
    predictions = None
    if checkpoint is not None:
        from .checkpoint import input_size_of, model_from_checkpoint, normalization_of
        from .distributed import pick_device

        model, config, state = model_from_checkpoint(checkpoint)
        dev = pick_device(device)
        model = model.to(dev)
        model_size = input_size_of(config)
        # the normalisation the network was trained with, not this dataset's (they differ on other data)
        normalizer = BatchNormalizer(normalization_of(state, checkpoint), dev)
        predictions = predict(model, normalizer, samples, model_size, dev)
        titles += ["pred mask", "pred depth"]
    rows = []
    for j, s in enumerate(samples):
        row = [_fit(s["bg"], tile), _fit(s["fg_bg"], tile), _fit(mask_tile(s["mask"] / 255.0), tile, nearest=True),
               _fit(colorize_depth(s["depth"] / DEPTH_MAX), tile, nearest=True)]
        if predictions is not None:
            row += [_fit(mask_tile(predictions[1][j]), tile), _fit(colorize_depth(predictions[0][j]), tile)]
        rows.append(row)
    grid = compose_grid(rows, titles, tile, float(reader.manifest["depth"].get("far_m", 0.0)))
    tmp = output.with_name(f".{output.name}.tmp.png")
    if not cv2.imwrite(str(tmp), grid):
        raise DepthmaskError(f"--output: could not write {output}")
    tmp.replace(output)
    return output

"""Training curves as a picture anyone can open: `curves.png` in the run folder, redrawn from
metrics.jsonl after every epoch (no plotting library needed; TensorBoard is an optional extra).

Four panels: the train and val loss, the val depth RMSE, the val mask IoU and the val depth delta1,
each against the epoch, with the constant-prediction floor of metrics.jsonl's first line as a dashed line.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

PANEL_W, PANEL_H = 420, 260
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 58, 14, 28, 34
FONT = cv2.FONT_HERSHEY_SIMPLEX
TRAIN_COLOUR = (200, 110, 30)  # BGR: blue-ish
VAL_COLOUR = (40, 40, 210)  # red-ish
FLOOR_COLOUR = (120, 120, 120)
PANELS = (  # title, [(key, label, colour)], floor key
    ("loss", [("train_loss", "train", TRAIN_COLOUR), ("val_loss", "val", VAL_COLOUR)], None),
    ("val depth RMSE [0, 1] (lower is better)", [("depth_rmse", "val", VAL_COLOUR)], "depth_rmse"),
    ("val mask IoU (higher is better)", [("mask_iou", "val", VAL_COLOUR)], "mask_iou"),
    ("val depth delta1 (higher is better)", [("depth_delta1", "val", VAL_COLOUR)], "depth_delta1"),
)


def read_rows(metrics_path: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(floor row or None, one row per epoch: the last line written for it)."""
    floor, epochs = None, {}
    for line in Path(metrics_path).read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if "baseline" in row:
            floor = row
        elif "epoch" in row:
            epochs[int(row["epoch"])] = row
    return floor, [epochs[k] for k in sorted(epochs)]


def curves_image(floor: dict[str, Any] | None, rows: list[dict[str, Any]]) -> np.ndarray:
    """The four panels side by side in two rows, BGR uint8."""
    panels = [_panel(title, series, floor.get(floor_key) if floor and floor_key else None, rows)
              for title, series, floor_key in PANELS]
    return np.vstack([np.hstack(panels[:2]), np.hstack(panels[2:])])


def write_curves(metrics_path: Path, png_path: Path) -> None:
    """Redraw curves.png from metrics.jsonl, atomically (a viewer never sees half a file)."""
    floor, rows = read_rows(metrics_path)
    png_path = Path(png_path)
    tmp = png_path.with_name(f".{png_path.name}.tmp-{os.getpid()}.png")
    if cv2.imwrite(str(tmp), curves_image(floor, rows)):
        os.replace(tmp, png_path)
    else:
        tmp.unlink(missing_ok=True)


def _finite(values: list[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def _nice_range(values: list[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        pad = max(abs(hi) * 0.1, 1e-3)
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.08
    return lo - pad, hi + pad


def _panel(title: str, series: list[tuple[str, str, tuple[int, int, int]]], floor: float | None,
           rows: list[dict[str, Any]]) -> np.ndarray:
    img = np.full((PANEL_H, PANEL_W, 3), 255, np.uint8)
    cv2.putText(img, title, (MARGIN_L - 40, 18), FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    x0, x1, y0, y1 = MARGIN_L, PANEL_W - MARGIN_R, MARGIN_T, PANEL_H - MARGIN_B
    cv2.rectangle(img, (x0, y0), (x1, y1), (0, 0, 0), 1)
    epochs = [int(r["epoch"]) for r in rows]
    values = _finite([r.get(key) for r in rows for key, _, _ in series] + ([floor] if floor is not None else []))
    if not epochs or not values:
        cv2.putText(img, "no epochs yet" if not epochs else "no validation", (x0 + 10, (y0 + y1) // 2), FONT, 0.45,
                    (90, 90, 90), 1, cv2.LINE_AA)
        return img
    lo, hi = _nice_range(values)
    e_lo, e_hi = (min(epochs) - 0.5, max(epochs) + 0.5)

    def px(epoch: float, value: float) -> tuple[int, int]:
        return (int(round(x0 + (epoch - e_lo) / (e_hi - e_lo) * (x1 - x0))),
                int(round(y1 - (value - lo) / (hi - lo) * (y1 - y0))))

    for k in range(5):  # value ticks and grid
        value = lo + (hi - lo) * k / 4
        _, y = px(e_lo, value)
        cv2.line(img, (x0, y), (x1, y), (230, 230, 230), 1)
        cv2.putText(img, f"{value:.3g}", (4, y + 4), FONT, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    step = max(1, math.ceil(len(epochs) / 10))
    for epoch in epochs[::step]:  # epoch ticks
        x, _ = px(epoch, lo)
        cv2.line(img, (x, y1), (x, y1 + 4), (0, 0, 0), 1)
        cv2.putText(img, str(epoch), (x - 4, y1 + 16), FONT, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "epoch", (x1 - 40, PANEL_H - 4), FONT, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    if floor is not None and math.isfinite(floor):
        _dashed(img, px(e_lo, floor), px(e_hi, floor), FLOOR_COLOUR)
    legend_x = x0 + 8
    for key, label, colour in series:
        points = [px(e, float(r[key])) for e, r in zip(epochs, rows)
                  if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
        if not points:
            continue
        cv2.polylines(img, [np.array(points, np.int32)], False, colour, 2, cv2.LINE_AA)
        for p in points:
            cv2.circle(img, p, 3, colour, -1, cv2.LINE_AA)
        cv2.putText(img, label, (legend_x, y0 + 16), FONT, 0.4, colour, 1, cv2.LINE_AA)
        legend_x += 60
    if floor is not None:
        cv2.putText(img, "constant floor", (legend_x, y0 + 16), FONT, 0.4, FLOOR_COLOUR, 1, cv2.LINE_AA)
    return img


def _dashed(img: np.ndarray, a: tuple[int, int], b: tuple[int, int], colour: tuple[int, int, int]) -> None:
    length = max(1, int(math.hypot(b[0] - a[0], b[1] - a[1])))
    for start in range(0, length, 12):
        t0, t1 = start / length, min(start + 6, length) / length
        p0 = (int(a[0] + (b[0] - a[0]) * t0), int(a[1] + (b[1] - a[1]) * t0))
        p1 = (int(a[0] + (b[0] - a[0]) * t1), int(a[1] + (b[1] - a[1]) * t1))
        cv2.line(img, p0, p1, colour, 1, cv2.LINE_AA)

"""Folders of user data the tests make themselves: photos of several sizes and kinds, depth maps,
cut-outs with alpha or separate masks, and small depth-model files in every supported format."""
from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn


def background_image(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth BGR picture with a sky band and a textured ground, different per seed."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0, 1, height)[:, None, None]
    top, bottom = rng.integers(60, 220, 3), rng.integers(20, 160, 3)
    image = top * (1 - rows) + bottom * rows + rng.normal(0, 6, (height, width, 3))
    image[height // 2 :, : width // 3] += 30  # a wall, so there is structure to crop
    return np.clip(image, 0, 255).astype(np.uint8)


def background_depth(height: int, width: int) -> np.ndarray:
    """Metres: far at the top, near at the bottom (a ground plane seen from above the horizon)."""
    rows = np.linspace(0, 1, height)[:, None]
    return np.repeat(50.0 - 45.0 * rows, width, axis=1)


def cutout(height: int, width: int, seed: int) -> np.ndarray:
    """BGRA: a coloured ellipse with soft edges on transparent black."""
    rng = np.random.default_rng(seed)
    bgra = np.zeros((height, width, 4), np.uint8)
    colour = tuple(int(c) for c in rng.integers(30, 255, 3))
    cv2.ellipse(bgra, (width // 2, height // 2), (width // 2 - 2, height // 2 - 2), 0, 0, 360, (*colour, 255), -1,
                cv2.LINE_AA)
    return bgra


def write_user_folders(root: Path, n_backgrounds: int = 4, n_foregrounds: int = 4) -> dict[str, Path]:
    """bg/ (JPEG 4:3, a portrait PNG, a grey PNG, a 16-bit PNG, in a sub-folder for the rest),
    bg_depth/ (16-bit mm PNG, 8-bit PNG, and .npy at half resolution), bg_inverse/ (1 / metres, .npy), fg/ (RGBA PNGs, one larger than the
    dataset allows), fg_rgb/ + fg_masks/ (the same objects as RGB PNG + grey mask)."""
    paths = {name: root / name for name in ("bg", "bg_depth", "bg_inverse", "fg", "fg_rgb", "fg_masks")}
    for p in paths.values():
        p.mkdir(parents=True, exist_ok=True)
    shapes = [(240, 320), (300, 200), (200, 200), (180, 240), (260, 390), (210, 280)]
    for i in range(n_backgrounds):
        h, w = shapes[i % len(shapes)]
        image = background_image(h, w, i)
        depth_mm = np.rint(background_depth(h, w) * 1000).astype(np.uint16)
        inverse = paths["bg_inverse"] / ("more" if i >= 3 else "")
        inverse.mkdir(exist_ok=True)
        np.save(inverse / f"b{i}.npy", (1.0 / background_depth(h, w)).astype(np.float32))
        if i == 0:
            cv2.imwrite(str(paths["bg"] / "b0.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
            cv2.imwrite(str(paths["bg_depth"] / "b0.png"), depth_mm)
        elif i == 1:
            cv2.imwrite(str(paths["bg"] / "b1.png"), image)
            np.save(paths["bg_depth"] / "b1.npy", background_depth(h // 2, w // 2).astype(np.float32))
        elif i == 2:
            cv2.imwrite(str(paths["bg"] / "b2.png"), cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
            depth_8bit = np.rint(background_depth(h, w) / 50.0 * 255).astype(np.uint8)
            cv2.imwrite(str(paths["bg_depth"] / "b2.png"), depth_8bit)
        else:
            sub = paths["bg"] / "more"
            sub.mkdir(exist_ok=True)
            (paths["bg_depth"] / "more").mkdir(exist_ok=True)
            cv2.imwrite(str(sub / f"b{i}.png"), image.astype(np.uint16) * 257)  # 16-bit photo
            cv2.imwrite(str(paths["bg_depth"] / "more" / f"b{i}.png"), depth_mm)
    for i in range(n_foregrounds):
        h, w = (60 + 10 * i, 90 + 12 * i) if i else (300, 420)  # the first is larger than any dataset allows
        bgra = cutout(h, w, 100 + i)
        padded = np.zeros((h + 20, w + 30, 4), np.uint8)  # transparent margins: cropped away
        padded[10 : 10 + h, 15 : 15 + w] = bgra
        cv2.imwrite(str(paths["fg"] / f"f{i}.png"), padded)
        cv2.imwrite(str(paths["fg_rgb"] / f"f{i}.png"), padded[:, :, :3])
        cv2.imwrite(str(paths["fg_masks"] / f"f{i}.png"), padded[:, :, 3])
    return paths


# ---- depth models --------------------------------------------------------------------------------
class TinyDepth(nn.Module):
    """Inverse-depth-like output: positive, one channel, at the input's size."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(self.conv(x)) + 0.1


class HalfResolution(TinyDepth):
    """Output at half the input size, without the channel axis: (N, H/2, W/2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.avg_pool2d(super().forward(x), 2)[:, 0]


class TwoChannels(TinyDepth):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return torch.cat([y, y], dim=1)


class NotANumber(TinyDepth):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * float("nan")


def save_torchscript(module: nn.Module, path: Path, size: int = 32) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(module.eval(), torch.zeros(1, 3, size, size)), str(path))
    return path


def save_torch_export(module: nn.Module, path: Path, size: int = 32) -> Path:
    program = torch.export.export(module.eval(), (torch.zeros(2, 3, size, size),),
                                  dynamic_shapes={"x": {0: torch.export.Dim("batch", max=4096)}})
    torch.export.save(program, str(path))
    return path


def save_onnx(module: nn.Module, path: Path, size: int = 32) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.zeros(1, 3, size, size),), str(path), dynamo=False,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    return path

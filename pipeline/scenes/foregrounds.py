"""Procedural foreground cut-outs: the kit's mix of object kinds, drawn on a 4x canvas (canvas.py),
then lit, textured, shadowed and sometimes defocused (effects.py). Each is a pure function of
(index, seed).
"""
from __future__ import annotations

import numpy as np

from .vehicles import CAR_TYPE_WEIGHTS, CAR_TYPES, bicycle, bin_, car

KIND_FG = 0x6667  # rng stream tag of foregrounds ('fg')
MIN_WIDTH, MAX_WIDTH = 90, 160

# nominal real-world length (metres spanned by the cut-out's full width) of each kind of object
NOMINAL_WIDTH_M = {"sedan": 4.7, "hatchback": 4.1, "suv": 4.7, "van": 5.0, "pickup": 5.4, "coupe": 4.4,
                   "wagon": 4.8, "bicycle": 1.75, "bin": 0.58}


def _draw_kind(rng) -> tuple[str, int]:
    """The first draws of a foreground: its kind and drawn width in pixels."""
    k = rng.random()
    if k < 0.86:
        width = int(rng.integers(MIN_WIDTH + 2, MAX_WIDTH - 1))
        return str(rng.choice(CAR_TYPES, p=CAR_TYPE_WEIGHTS)), width
    if k < 0.93:
        return "bicycle", int(rng.integers(MIN_WIDTH + 2, 140))
    return "bin", int(rng.integers(MIN_WIDTH + 2, 108))


def foreground_kind(index: int, *, seed: int) -> str:
    """What foreground ``index`` of the set drawn from ``seed`` is (a key of NOMINAL_WIDTH_M)."""
    return _draw_kind(np.random.default_rng([seed, KIND_FG, index]))[0]


def foreground_width_m(index: int, *, seed: int) -> float:
    """The real-world width in metres that foreground ``index`` spans (depth-scaled placement)."""
    return NOMINAL_WIDTH_M[foreground_kind(index, seed=seed)]


def render_foreground(index: int, *, seed: int) -> np.ndarray:
    """Foreground ``index`` of the set drawn from ``seed``: (h, w, 4) uint8 BGRA, tightly cropped."""
    rng = np.random.default_rng([seed, KIND_FG, index])
    kind, width = _draw_kind(rng)
    if kind == "bicycle":
        return bicycle(rng, width)
    if kind == "bin":
        return bin_(rng, width)
    return car(rng, width, kind)


def render_foregrounds(count: int, *, seed: int) -> list[np.ndarray]:
    return [render_foreground(i, seed=seed) for i in range(count)]


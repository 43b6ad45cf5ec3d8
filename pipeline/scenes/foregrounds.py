"""Procedural foreground cut-outs: the kit's mix of object kinds (vehicles.py, figures.py), drawn on
a 4x canvas (canvas.py), then lit, grained, sometimes defocused and given a contact shadow
(effects.py). Each is a pure function of (index, seed).

The first draws of a foreground's rng are its kind, drawn width in pixels and real width in metres
(`_draw_kind`), so `foreground_width_m` knows an object's real size without drawing it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import effects, figures
from .vehicles import CAR_TYPE_WEIGHTS, CAR_TYPES, bicycle, bin_, car

KIND_FG = 0x6667  # rng stream tag of foregrounds ('fg')
MAX_SIDE = 160  # no cut-out is wider or taller (the smallest --size is 192)


@dataclass(frozen=True)
class Kind:
    name: str
    share: float  # of the kit's objects
    width_px: tuple[int, int]  # drawn width range (the height follows from the kind's proportions)
    width_m: tuple[float, float]  # real width range (equal ends: one nominal size)


# Cars stay the largest group (the original's subject); people, street furniture, animals, boxes and
# free-form objects teach the mask network outlines other than a car's.
KINDS = (
    Kind("car", 0.45, (92, 150), (0.0, 0.0)),  # real width by car type, CAR_WIDTH_M
    Kind("bicycle", 0.05, (92, 139), (1.75, 1.75)),
    Kind("bin", 0.04, (60, 107), (0.58, 0.58)),
    Kind("person", 0.12, (34, 44), (0.5, 0.6)),
    Kind("pole_sign", 0.05, (24, 32), (0.6, 0.6)),
    Kind("bollard", 0.03, (20, 30), (0.25, 0.25)),
    Kind("animal", 0.06, (92, 150), (0.7, 1.3)),
    Kind("box", 0.05, (50, 108), (0.4, 1.2)),
    Kind("bench", 0.025, (100, 150), (1.6, 1.6)),
    Kind("table", 0.012, (70, 130), (1.0, 1.0)),
    Kind("chair", 0.013, (40, 74), (0.5, 0.5)),
    Kind("cone", 0.02, (30, 70), (0.35, 0.35)),
    Kind("bush", 0.04, (70, 145), (0.6, 1.5)),
    Kind("blob", 0.04, (60, 108), (0.4, 2.0)),
)
CAR_WIDTH_M = {"sedan": 4.7, "hatchback": 4.1, "suv": 4.7, "van": 5.0, "pickup": 5.4, "coupe": 4.4, "wagon": 4.8}
_SHARES = np.cumsum([k.share for k in KINDS])
DEFOCUS_SHARE = 0.25
SHADOW_SHARE = 0.7


@dataclass(frozen=True)
class DrawnKind:
    kind: str  # a KINDS name, or the car type for cars
    width_px: int
    width_m: float


def _draw_kind(rng) -> DrawnKind:
    """The first draws of a foreground: what it is, how wide it is drawn, how wide it really is."""
    kind = KINDS[min(int(np.searchsorted(_SHARES, rng.random() * _SHARES[-1], side="right")), len(KINDS) - 1)]
    width = int(rng.integers(kind.width_px[0], kind.width_px[1] + 1))
    if kind.name == "car":
        car_type = str(rng.choice(CAR_TYPES, p=CAR_TYPE_WEIGHTS))
        return DrawnKind(car_type, width, CAR_WIDTH_M[car_type])
    lo, hi = kind.width_m
    return DrawnKind(kind.name, width, float(lo if lo == hi else rng.uniform(lo, hi)))


def foreground_kind(index: int, *, seed: int) -> str:
    """What foreground ``index`` of the set drawn from ``seed`` is (a KINDS name or a car type)."""
    return _draw_kind(np.random.default_rng([seed, KIND_FG, index])).kind


def foreground_width_m(index: int, *, seed: int) -> float:
    """The real-world width in metres that foreground ``index`` spans (depth-scaled placement)."""
    return _draw_kind(np.random.default_rng([seed, KIND_FG, index])).width_m


_DRAW = {"bicycle": bicycle, "bin": bin_, "person": figures.person, "pole_sign": figures.pole_sign,
         "bollard": figures.bollard, "animal": figures.animal, "box": figures.box, "cone": figures.cone,
         "bush": figures.bush, "blob": figures.blob}


def render_foreground(index: int, *, seed: int) -> np.ndarray:
    """Foreground ``index`` of the set drawn from ``seed``: (h, w, 4) uint8 BGRA, tightly cropped."""
    rng = np.random.default_rng([seed, KIND_FG, index])
    drawn = _draw_kind(rng)
    if drawn.kind in CAR_WIDTH_M:
        bgra = car(rng, drawn.width_px, drawn.kind)
    elif drawn.kind in ("bench", "table", "chair"):
        bgra = figures.furniture(rng, drawn.width_px, drawn.kind)
    else:
        bgra = _DRAW[drawn.kind](rng, drawn.width_px)
    bgra = effects.light(rng, bgra)
    if rng.random() < DEFOCUS_SHARE:
        bgra = effects.defocus(rng, bgra)
    if rng.random() < SHADOW_SHARE:
        bgra = effects.contact_shadow(rng, bgra)
    return bgra


def render_foregrounds(count: int, *, seed: int) -> list[np.ndarray]:
    return [render_foreground(i, seed=seed) for i in range(count)]

"""Loading local encoder weights (no downloads, ``weights_only=True``)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import Tensor, nn

_WRAPPER_KEYS = ("state_dict", "model", "encoder")
_STRIP_PREFIXES = ("module.", "_orig_mod.", "encoder.")
_DROP_PREFIXES = ("fc.",)  # classifier of a torchvision resnet


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state_dict with ``torch.load(path, map_location="cpu", weights_only=True)``.

    A missing file raises ``FileNotFoundError``; an unreadable/corrupt file or one that holds no mapping of names to
    tensors raises ``ValueError``. A ``{"state_dict": {...}}`` (or ``"model"``/``"encoder"``) wrapper is unwrapped.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"encoder weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, zip errors, EOF, weights_only refusals ...
        raise ValueError(f"cannot read encoder weights from {path}: {type(exc).__name__}: {exc}") from exc
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    ):
        raise ValueError(f"{path} does not hold a state_dict (a non-empty mapping of names to tensors)")
    return dict(obj)


def _normalise_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in _STRIP_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        if key.startswith(_DROP_PREFIXES):
            continue
        out[key] = value
    return out


def adapt_state_dict(encoder: nn.Module, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Map ``state`` onto ``encoder``'s keys, or raise ``ValueError`` saying what does not fit.

    Prefixes ``module.``/``_orig_mod.``/``encoder.`` are stripped and a torchvision ``fc.*`` classifier is
    dropped. A first conv with 3 input channels where the encoder has 6 (a torchvision ImageNet-style resnet) is
    copied into both halves, scaled by 0.5, so that ``bg == fg_bg`` gives the original response.
    """
    target = encoder.state_dict()
    state = _normalise_keys(dict(state))
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    if missing or unexpected:
        raise ValueError(
            f"encoder weights do not match {type(encoder).__name__}"
            f"{'(' + encoder.resnet_name + ')' if hasattr(encoder, 'resnet_name') else ''}: "
            f"{len(missing)} missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
            f"{len(unexpected)} unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    adapted: dict[str, Tensor] = {}
    bad: list[str] = []
    for key, want in target.items():
        got = state[key]
        if (
            got.ndim == 4
            and want.ndim == 4
            and got.shape[1] == 3
            and want.shape[1] == 6
            and got.shape[0] == want.shape[0]
            and got.shape[2:] == want.shape[2:]
        ):
            got = torch.cat([got, got], dim=1) * 0.5
        if got.shape != want.shape:
            bad.append(f"{key}: file {tuple(got.shape)} vs model {tuple(want.shape)}")
            continue
        adapted[key] = got.to(dtype=want.dtype)
    if bad:
        raise ValueError(
            f"encoder weights have mismatching shapes for {type(encoder).__name__}: "
            + "; ".join(bad[:5])
            + (f"; ... ({len(bad)} in all)" if len(bad) > 5 else "")
        )
    return adapted


def load_encoder_state(encoder: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Copy ``state`` (see :func:`adapt_state_dict`) into ``encoder``; ``ValueError`` if it does not fit."""
    encoder.load_state_dict(adapt_state_dict(encoder, state), strict=True)

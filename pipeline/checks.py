"""The "table of checks" that option and config classes validate themselves with.

Each check is (option name, value, ok, what was expected); the first that fails is one line:
"--size: expected a whole number from 192 to 1024, got 100". The predicates are the few that every
table needs, so no module keeps a twin of them.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

from .errors import DepthmaskError

Check = tuple[str, Any, bool, str]


def count(value: Any) -> bool:
    """A whole number >= 1 (True and False are not numbers here)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def number(value: Any) -> bool:
    """A finite int or float (inf and nan are mistakes in every option that takes a number)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fraction(value: Any, low: float = 0.0, high: float = 1.0) -> bool:
    """A finite number in [low, high)."""
    return number(value) and low <= value < high


def run_checks(checks: Iterable[Check]) -> None:
    """Raise the first failed check as one line naming the option, what was expected and the value."""
    for name, value, ok, expected in checks:
        if not ok:
            raise DepthmaskError(f"{name}: expected {expected}, got {value!r}")

"""Whether a device gets the bf16-autocast + channels_last fast path when the user does not say.

On CUDA it is always on. On CPU it pays only where the processor multiplies bf16 natively (AVX512-BF16 or
AMX-BF16, which oneDNN uses for convolutions): there the default U-Net pair trains about 2x faster
(docs/benchmarks.md); elsewhere bf16 is emulated and slower than float32, so it stays off.
"""
from __future__ import annotations

import platform
from pathlib import Path

import torch

NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo_text: str) -> frozenset[str]:
    """The feature flags of the first processor listed in a Linux ``/proc/cpuinfo`` text."""
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """True if the CPU computes in bf16 natively (read from /proc/cpuinfo; False where it cannot be read)."""
    if flags is None:
        if platform.system() != "Linux" or platform.machine().lower() not in ("x86_64", "amd64"):
            return False
        try:
            flags = cpu_flags(CPUINFO.read_text())
        except OSError:
            return False
    return bool(NATIVE_BF16_FLAGS & flags)


def fast_path_default(device: torch.device) -> bool:
    """Default of ``--amp`` and ``--channels-last`` on ``device``."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and cpu_has_native_bf16()

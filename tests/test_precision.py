"""training.precision: when --amp / --channels-last are on by default."""
from __future__ import annotations

import platform

import pytest
import torch

from training import precision

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu sse sse2 avx2 avx512f avx512bw {extra}
bogomips\t: 4792.79

processor\t: 1
flags\t\t: fpu sse avx512_bf16 amx_bf16
"""


def test_flags_are_read_from_the_first_processor():
    flags = precision.cpu_flags(CPUINFO.format(extra="avx512_vnni"))
    assert {"avx2", "avx512f", "avx512_vnni"} <= flags and "avx512_bf16" not in flags
    assert precision.cpu_flags("processor : 0\nmodel name : something\n") == frozenset()


@pytest.mark.parametrize("extra, native", [("avx512_bf16", True), ("amx_bf16 amx_tile", True),
                                           ("avx512_vnni", False), ("", False)])
def test_native_bf16_needs_avx512_bf16_or_amx(extra, native):
    assert precision.cpu_has_native_bf16(precision.cpu_flags(CPUINFO.format(extra=extra))) is native


def test_cpu_default_follows_proc_cpuinfo(tmp_path, monkeypatch):
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    info = tmp_path / "cpuinfo"
    monkeypatch.setattr(precision, "CPUINFO", info)
    assert precision.fast_path_default(torch.device("cpu")) is False  # unreadable: off
    info.write_text(CPUINFO.format(extra="avx512_bf16"))
    assert precision.fast_path_default(torch.device("cpu")) is True
    info.write_text(CPUINFO.format(extra="avx512_vnni"))
    assert precision.fast_path_default(torch.device("cpu")) is False
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    info.write_text(CPUINFO.format(extra="avx512_bf16"))
    assert precision.fast_path_default(torch.device("cpu")) is False  # flags of another architecture


def test_cuda_is_always_fast():
    assert precision.fast_path_default(torch.device("cuda", 0)) is True

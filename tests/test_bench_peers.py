"""tools/bench_peers.py: the source every peer writes is depthmask's decode, depthmask's own loader reads back
equal to it, the equality check catches a changed pixel, and (where a peer library is installed) that peer's
writer and dataset class deliver the same values."""
from __future__ import annotations

import importlib
import multiprocessing
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import DatasetReader

TOOL = Path(__file__).resolve().parents[1] / "tools" / "bench_peers.py"


@pytest.fixture(scope="module")
def bench():
    # importable by name: litdata's writer pickles the item function for its worker process
    if str(TOOL.parent) not in sys.path:
        sys.path.insert(0, str(TOOL.parent))
    return importlib.import_module("bench_peers")


@pytest.fixture(scope="module")
def source(bench, tiny_dataset, tmp_path_factory):
    cache = tmp_path_factory.mktemp("peers") / "source-24"
    bench.build_cache(tiny_dataset, 24, cache)
    return bench.Source(cache)


def fresh_tally() -> dict[str, int]:
    return {k: 0 for k in ("samples", "mask_equal", "depth_equal", "bg_equal", "fg_bg_equal", "bg_max_diff",
                           "fg_bg_max_diff")}


def test_source_is_the_readers_decode(source, tiny_dataset):
    import cv2

    reader = DatasetReader(tiny_dataset)
    assert source.count == 24 and source.size == reader.size[0]
    for i in (0, 7, 23):
        s = reader.decode(i)
        assert np.array_equal(source.mask[i], (s["mask"] >= 128).astype(np.uint8))
        assert np.array_equal(source.depth[i], s["depth"])
        assert source.fg_jpeg(i) == reader.record(i)["fg_bg"]
        bg = cv2.imdecode(np.frombuffer(source.bg_jpeg(i), np.uint8), cv2.IMREAD_COLOR)
        assert np.array_equal(bg, s["bg"])


def test_depthmask_loader_reads_back_equal(bench, source, tiny_dataset, one_thread):
    loader = bench.loader_depthmask(tiny_dataset, 8, 0, source.count)
    tally = fresh_tally()
    seen = []
    for batch in loader:
        assert batch["depth"].dtype == torch.uint16 and batch["mask"].dtype == torch.uint8
        bench.check_batch(batch, source, tally)
        seen.extend(batch["index"].tolist())
    assert sorted(seen) == list(range(source.count))  # the N samples the peers hold, each once
    assert tally["samples"] == tally["mask_equal"] == tally["depth_equal"] == tally["bg_equal"] == source.count
    assert tally["fg_bg_equal"] == source.count and tally["bg_max_diff"] == tally["fg_bg_max_diff"] == 0


def test_check_catches_one_changed_value(bench, source, tiny_dataset, one_thread):
    batch = next(iter(bench.loader_depthmask(tiny_dataset, 4, 0, source.count)))
    batch["depth"].numpy()[1, 0, 5, 5] ^= 1  # one bit of one depth value (torch has no arithmetic on uint16)
    batch["mask"].numpy()[2, 0, 0, 0] ^= 1
    batch["fg_bg"].numpy()[3, 0, 9, 9] ^= 4
    tally = fresh_tally()
    bench.check_batch(batch, source, tally)
    assert tally["samples"] == 4 and tally["depth_equal"] == 3 and tally["mask_equal"] == 3
    assert tally["fg_bg_equal"] == 3 and tally["fg_bg_max_diff"] == 4


def test_png_encodings_are_lossless(bench, source):
    for i in range(4):
        assert np.array_equal(bench.pil_gray(bench.png_mask(source.mask[i]), np.uint8), source.mask[i])
        assert np.array_equal(bench.pil_gray(bench.png_depth(source.depth[i]), np.uint16), source.depth[i])


@pytest.mark.parametrize("system", ["webdataset", "litdata", "hf", "mds"])
def test_peer_reads_back_what_it_was_given(bench, source, tmp_path, system, one_thread):
    modules = {"webdataset": "webdataset", "litdata": "litdata", "hf": "datasets", "mds": "streaming"}
    pytest.importorskip(modules[system])
    out = tmp_path / system
    if system != "litdata":
        out.mkdir()
    cache = Path(source.mask.filename).parent
    writers = {"webdataset": lambda: bench.write_webdataset(source, out),
               "mds": lambda: bench.write_mds(source, out),
               "litdata": lambda: bench.write_litdata(source, out, cache),
               "hf": lambda: bench.write_hf(source, out, cache)}
    method = multiprocessing.get_start_method(allow_none=True)
    writers[system]()
    # a writer leaves the process's start method as it was (litdata.optimize forces spawn: every later
    # DataLoader of the process, the rest of this test suite included, would spawn its workers)
    assert multiprocessing.get_start_method(allow_none=True) == method
    tally = fresh_tally()
    for batch in getattr(bench, f"loader_{system}")(out, 8, 0):
        bench.check_batch(batch, source, tally)
    assert tally["samples"] == tally["mask_equal"] == tally["depth_equal"] == source.count

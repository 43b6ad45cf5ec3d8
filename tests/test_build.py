"""End-to-end build of the tiny dataset: manifest contract, record layout, content, determinism,
statistics, and the reader (pickling, spawn pool)."""
from __future__ import annotations

import hashlib
import multiprocessing as mp
import pickle
import struct
from pathlib import Path

import cv2
import msgpack
import numpy as np
import pytest

from conftest import TINY, TINY_COUNT, TINY_SHARDS, build_tiny, read_manifest_json, shard_hashes
from pipeline import DatasetReader, FORMAT_NAME, FORMAT_VERSION
from pipeline.assets import array_hash
from pipeline.build import BuildOptions, assets_for_build, build_dataset
from pipeline.compose import composite, paste_depth, paste_mask, prepare_foreground
from pipeline.format import RECORD_FIELDS, payload_crc32
from pipeline.plan import SPLIT_NAMES, SamplePlan, make_split, placements
from pipeline.shards import ShardHasher, open_readonly

HEX64 = set("0123456789abcdef")


def _lmdb_items(path: Path) -> list[tuple[bytes, bytes]]:
    # through the per-process cache: py-lmdb opens a path once per process, and other tests' readers
    # may hold the session's dataset open already
    with open_readonly(path).begin() as txn:
        return [(bytes(k), bytes(v)) for k, v in txn.cursor()]


def _is_sha256(value: str) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= HEX64


@pytest.fixture(scope="module")
def assets():
    return assets_for_build(BuildOptions(output=Path("unused"), seed=0, **{k: v for k, v in TINY.items()
                                                                       if k != "shard_size"}))


def test_manifest_has_every_documented_field(tiny_dataset, tiny_manifest, assets):
    m = tiny_manifest
    assert m["format"] == FORMAT_NAME == "depthmask-lmdb"
    assert m["format_version"] == FORMAT_VERSION == 1
    assert m["created_by"].startswith("depthmask ")
    assert m["sample_count"] == TINY_COUNT
    assert m["image_size"] == [192, 192]
    # codecs of every field
    assert m["fields"]["fg_bg"]["codec"] == "jpeg" and m["fields"]["fg_bg"]["quality"] == 90
    assert m["fields"]["bg"]["codec"] == "jpeg"
    assert m["fields"]["mask"] == {"codec": "png", "bit_depth": 1, "channels": 1, "dtype": "uint8", "values": [0, 255]}
    assert m["fields"]["depth"]["codec"] == "png" and m["fields"]["depth"]["bit_depth"] == 16
    assert m["fields"]["depth"]["transform"] == "background_relative_box"  # the default --depth-storage delta
    assert m["fields"]["depth"]["reconstruct"]
    assert m["fields"]["bg_depth"]["bit_depth"] == 16 and "transform" not in m["fields"]["bg_depth"]
    # depth semantics
    depth = m["depth"]
    assert depth["kind"] == "z-depth" and depth["units_of_far"] == "metres"
    assert depth["far_m"] > depth["near_m"] >= 0 and depth["sky"] == 1.0
    assert "65535" in depth["stored"] and "object_rule" in depth
    # plan
    assert m["plan"] == {**m["plan"], "backgrounds": 4, "foregrounds": 4, "positions": 2, "flip": True, "limit": None}
    # split
    split = m["split"]
    assert len(split["val_backgrounds"]) == 1 and len(split["val_foregrounds"]) == 1
    assert sum(split["counts"][name] for name in SPLIT_NAMES) == TINY_COUNT
    assert split["counts"] == {"train": 3 * 3 * 4, "val": 1 * 1 * 4, "unseen_bg": 1 * 3 * 4, "unseen_fg": 3 * 1 * 4,
                               "mixed": (3 + 3) * 4}  # 'mixed': version 1's name, kept as unseen_bg + unseen_fg
    assert "unseen_bg" in split["rule"] and "unseen_fg" in split["rule"]
    # build options and seed
    assert m["build"]["seed"] == 0 and m["build"]["shard_size"] == 16
    assert m["build"]["content"] == {"seed": 0, "backgrounds": 4, "foregrounds": 4, "positions": 2, "flip": True,
                                     "limit": None, "size": 192, "shard_size": 16, "val_fraction": 0.1,
                                     "jpeg_quality": 90, "depth_storage": "delta"}
    # assets, each with its content hash (equal to the assets rendered again)
    a = m["assets"]
    assert a["source"]["kind"] == "procedural" and a["source"]["seed"] == 0
    assert [b["sha256"] for b in a["backgrounds"]] == [array_hash(i, d) for i, d in
                                                       zip(assets.backgrounds, assets.background_depths)]
    assert [f["sha256"] for f in a["foregrounds"]] == [array_hash(f) for f in assets.foregrounds]
    assert [(f["width"], f["height"]) for f in a["foregrounds"]] == [(f.shape[1], f.shape[0]) for f in assets.foregrounds]
    assert len({b["name"] for b in a["backgrounds"]}) == 4
    # backgrounds file
    bgf = m["backgrounds"]
    assert bgf["path"] == "backgrounds.lmdb" and bgf["records"] == 4 and _is_sha256(bgf["sha256"])
    assert bgf["bytes"] == (tiny_dataset / bgf["path"]).stat().st_size
    # shards: contiguous, complete, sizes and hashes recorded
    shards = m["shards"]
    assert len(shards) == TINY_SHARDS
    assert [(s["start"], s["stop"]) for s in shards] == [(0, 16), (16, 32), (32, 48), (48, 64)]
    for i, s in enumerate(shards):
        assert set(s) == {"path", "start", "stop", "records", "sha256", "bytes"}
        assert s["path"] == f"shards/shard-{i:05d}.lmdb"
        assert s["records"] == s["stop"] - s["start"]
        assert _is_sha256(s["sha256"])
        assert s["bytes"] == (tiny_dataset / s["path"]).stat().st_size
    # statistics: all and each split; mean/std per channel in RGB order
    assert set(m["stats"]) == {"all", "train", "val", "unseen_bg", "unseen_fg"}
    for split_name, fields in m["stats"].items():
        assert set(fields) == {"bg", "fg_bg", "mask", "depth"}
        for name, st in fields.items():
            n = 3 if name in ("bg", "fg_bg") else 1
            assert len(st["mean"]) == n and len(st["std"]) == n
            assert st["channel_order"] == ("RGB" if n == 3 else "L")
            assert all(0 <= v <= 1 for v in st["mean"] + st["std"])
    # sizes add up
    sizes = m["sizes"]
    assert sizes["shards"] == sum(s["bytes"] for s in shards)
    assert sizes["total_on_disk"] == sizes["shards"] + sizes["backgrounds_file"]
    assert sizes["fg_bg"] > 0 and sizes["mask"] > 0 and sizes["depth"] > 0
    # nothing of the build's working state is left
    assert sorted(p.name for p in tiny_dataset.iterdir()) == ["backgrounds.lmdb", "manifest.json", "shards"]


def test_shard_hashes_match_content(tiny_dataset, tiny_manifest):
    for entry in tiny_manifest["shards"] + [tiny_manifest["backgrounds"]]:
        hasher = ShardHasher()
        for key, value in _lmdb_items(tiny_dataset / entry["path"]):
            hasher.update(key, value)
        assert hasher.records == entry["records"]
        assert hasher.hexdigest() == entry["sha256"]
    # the sha256 is the documented one: key, u64be(len(value)), value for each record
    items = _lmdb_items(tiny_dataset / tiny_manifest["shards"][0]["path"])
    h = hashlib.sha256()
    for key, value in items:
        h.update(key + struct.pack(">Q", len(value)) + value)
    assert h.hexdigest() == tiny_manifest["shards"][0]["sha256"]


def test_records_are_plain_msgpack_with_8_byte_keys(tiny_dataset, tiny_manifest):
    plan = SamplePlan(4, 4, 2, True)
    seen = []
    for entry in tiny_manifest["shards"]:
        items = _lmdb_items(tiny_dataset / entry["path"])
        assert len(items) == entry["stop"] - entry["start"]
        for key, value in items:
            assert len(key) == 8
            index = struct.unpack(">Q", key)[0]
            assert entry["start"] <= index < entry["stop"]
            seen.append(index)
            record = msgpack.unpackb(value, raw=False, strict_map_key=True)
            assert isinstance(record, dict)
            assert set(record) == set(RECORD_FIELDS)
            for name in ("fg_bg", "mask", "depth"):
                assert type(record[name]) is bytes
            for name in ("bg", "fg", "x", "y", "crc32"):
                assert type(record[name]) is int
            assert type(record["flip"]) is bool
            assert record["crc32"] == payload_crc32(record["fg_bg"], record["mask"], record["depth"])
            bg, fg, _, flip = (int(v) for v in plan.locate(index))
            assert (record["bg"], record["fg"], record["flip"]) == (bg, fg, bool(flip))
            assert record["fg_bg"][:2] == b"\xff\xd8" and record["mask"][:4] == b"\x89PNG"
            # delta depth: a 16-bit PNG of just the foreground's box
            fg_asset = tiny_manifest["assets"]["foregrounds"][fg]
            assert record["depth"][:4] == b"\x89PNG"
            assert struct.unpack(">IIB", record["depth"][16:25]) == (fg_asset["width"], fg_asset["height"], 16)
            assert struct.unpack(">II", record["mask"][16:24]) == (192, 192)
    assert seen == list(range(TINY_COUNT))  # key order is index order


def test_backgrounds_stored_once(tiny_dataset, tiny_manifest, assets):
    items = _lmdb_items(tiny_dataset / "backgrounds.lmdb")
    assert [struct.unpack(">Q", k)[0] for k, _ in items] == [0, 1, 2, 3]
    bg_jpegs = set()
    for i, (_, value) in enumerate(items):
        record = msgpack.unpackb(value, raw=False)
        assert set(record) == {"image", "depth", "name", "ground_top"}
        image = cv2.imdecode(np.frombuffer(record["image"], np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (192, 192, 3)
        assert np.abs(image.astype(int) - assets.backgrounds[i].astype(int)).mean() < 3
        depth = cv2.imdecode(np.frombuffer(record["depth"], np.uint8), cv2.IMREAD_UNCHANGED)
        assert depth.dtype == np.uint16 and np.array_equal(depth, assets.background_depths[i])
        assert record["ground_top"] == assets.ground_tops[i]
        assert record["name"] == f"procedural-bg-{i:04d}"
        bg_jpegs.add(record["image"])
    # samples refer to their background by index: a record holds only its own three payloads plus
    # a few small integers (no copy of the background), so its size is the payloads' plus < 64 bytes
    payload = overhead = 0
    for entry in tiny_manifest["shards"]:
        for _, value in _lmdb_items(tiny_dataset / entry["path"]):
            record = msgpack.unpackb(value, raw=False)
            own = len(record["fg_bg"]) + len(record["mask"]) + len(record["depth"])
            assert len(value) - own < 64
            assert record["fg_bg"] not in bg_jpegs
            payload += own
            overhead += len(value) - own
    sizes = tiny_manifest["sizes"]
    assert payload == sizes["fg_bg"] + sizes["mask"] + sizes["depth"]


def test_decoded_samples_equal_the_plan(tiny_dataset, tiny_manifest, assets):
    reader = DatasetReader(tiny_dataset)
    assert len(reader) == TINY_COUNT and reader.size == (192, 192)
    plan = SamplePlan(4, 4, 2, True)
    index = np.arange(TINY_COUNT)
    bg_i, fg_i, _, flips = plan.locate(index)
    widths = np.array([f.shape[1] for f in assets.foregrounds])
    heights = np.array([f.shape[0] for f in assets.foregrounds])
    xs, ys = placements(0, plan.placement_key(index), widths[fg_i], heights[fg_i],
                        np.array(assets.ground_tops)[bg_i], 192)
    samples = {}
    for i in range(TINY_COUNT):
        s = reader.decode(i)
        samples[i] = s
        assert (s["bg_index"], s["fg_index"], s["flip"], s["x"], s["y"]) == (
            bg_i[i], fg_i[i], bool(flips[i]), xs[i], ys[i])
        assert s["fg_bg"].shape == (192, 192, 3) and s["fg_bg"].dtype == np.uint8
        assert s["mask"].dtype == np.uint8 and set(np.unique(s["mask"]).tolist()) == {0, 255}
        assert s["depth"].dtype == np.uint16 and s["depth"].max() > 255
        prepared = prepare_foreground(assets.foregrounds[s["fg_index"]], flip=s["flip"])
        bg = assets.backgrounds[s["bg_index"]]
        bg_depth = assets.background_depths[s["bg_index"]]
        # lossless fields: exact
        assert np.array_equal(s["mask"], paste_mask((192, 192), prepared, s["x"], s["y"]))
        assert np.array_equal(s["depth"], paste_depth(bg_depth, prepared, s["x"], s["y"]))
        # the object is never behind the background it covers
        on = s["mask"] == 255
        assert np.all(s["depth"][on] <= bg_depth[on]) and len(np.unique(s["depth"][on])) == 1
        # JPEG fields: close to the exact composite
        exact = composite(bg, prepared, s["x"], s["y"])
        assert np.abs(s["fg_bg"].astype(int) - exact.astype(int)).mean() < 3
        assert np.array_equal(s["bg"], reader.background(s["bg_index"])[0])
    # flipped twins: same placement, mirrored mask inside the box
    for i in range(0, TINY_COUNT, 2):
        a, b = samples[i], samples[i + 1]
        assert not a["flip"] and b["flip"] and (a["x"], a["y"]) == (b["x"], b["y"])
        h, w = assets.foregrounds[a["fg_index"]].shape[:2]
        box = np.s_[a["y"]:a["y"] + h, a["x"]:a["x"] + w]
        assert np.array_equal(b["mask"][box], a["mask"][box][:, ::-1])
    with pytest.raises(IndexError):
        reader.decode(TINY_COUNT)


def test_split_indices_follow_the_manifest(tiny_dataset, tiny_manifest):
    reader = DatasetReader(tiny_dataset)
    counts = tiny_manifest["split"]["counts"]
    parts = {name: reader.split_indices(name) for name in SPLIT_NAMES}
    for name in SPLIT_NAMES:
        assert len(parts[name]) == counts[name]
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(TINY_COUNT))
    val_bg = set(tiny_manifest["split"]["val_backgrounds"])
    val_fg = set(tiny_manifest["split"]["val_foregrounds"])
    assert (tuple(sorted(val_bg)), tuple(sorted(val_fg))) == (make_split(4, 4, 0.1, 0).val_backgrounds,
                                                               make_split(4, 4, 0.1, 0).val_foregrounds)
    for i in parts["train"]:
        r = reader.record(int(i))
        assert r["bg"] not in val_bg and r["fg"] not in val_fg
    for i in parts["val"]:
        r = reader.record(int(i))
        assert r["bg"] in val_bg and r["fg"] in val_fg
    for i in parts["unseen_bg"]:
        r = reader.record(int(i))
        assert r["bg"] in val_bg and r["fg"] not in val_fg
    for i in parts["unseen_fg"]:
        r = reader.record(int(i))
        assert r["bg"] not in val_bg and r["fg"] in val_fg


def test_manifest_stats_equal_numpy_over_decoded_dataset(tiny_dataset, tiny_manifest):
    reader = DatasetReader(tiny_dataset)
    by_split: dict[str, dict[str, list[np.ndarray]]] = {}
    for name in SPLIT_NAMES:
        for i in reader.split_indices(name):
            s = reader.decode(int(i))
            fields = by_split.setdefault(name, {"bg": [], "fg_bg": [], "mask": [], "depth": []})
            fields["bg"].append(s["bg"].reshape(-1, 3)[:, ::-1] / 255.0)  # RGB order
            fields["fg_bg"].append(s["fg_bg"].reshape(-1, 3)[:, ::-1] / 255.0)
            fields["mask"].append(s["mask"].reshape(-1, 1) / 255.0)
            fields["depth"].append(s["depth"].reshape(-1, 1) / 65535.0)
    for split, names in (("all", SPLIT_NAMES), *((name, (name,)) for name in SPLIT_NAMES)):
        for field in ("bg", "fg_bg", "mask", "depth"):
            values = np.concatenate([a for n in names for a in by_split[n][field]]).astype(np.float64)
            stored = tiny_manifest["stats"][split][field]
            np.testing.assert_allclose(stored["mean"], values.mean(axis=0), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(stored["std"], values.std(axis=0), rtol=1e-10, atol=1e-12)
    assert reader.stats("train") == tiny_manifest["stats"]["train"]
    assert reader.stats("unseen_fg") == tiny_manifest["stats"]["unseen_fg"]
    assert reader.stats("no such split") == tiny_manifest["stats"]["all"]


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory):
    """The tiny dataset built again: once more with one worker, once with two."""
    root = tmp_path_factory.mktemp("rebuilt")
    return {"workers1": build_tiny(root / "w1", workers=1), "workers2": build_tiny(root / "w2", workers=2)}


def test_same_options_give_identical_shards(tiny_manifest, rebuilt):
    again = read_manifest_json(rebuilt["workers1"])
    assert shard_hashes(again) == shard_hashes(tiny_manifest)
    assert again["backgrounds"]["sha256"] == tiny_manifest["backgrounds"]["sha256"]
    assert again["stats"] == tiny_manifest["stats"]
    assert again["assets"] == tiny_manifest["assets"]


def test_one_and_two_workers_give_identical_shards(tiny_manifest, rebuilt):
    two = read_manifest_json(rebuilt["workers2"])
    assert shard_hashes(two) == shard_hashes(tiny_manifest)
    assert two["stats"] == tiny_manifest["stats"]
    assert two["split"] == tiny_manifest["split"]
    assert two["sizes"]["fg_bg"] == tiny_manifest["sizes"]["fg_bg"]


def test_other_seed_gives_other_content(tmp_path, tiny_manifest):
    other = read_manifest_json(build_tiny(tmp_path / "seed1", seed=1, backgrounds=2, foregrounds=2, positions=1))
    assert other["build"]["seed"] == 1 and other["sample_count"] == 8
    assert other["assets"]["backgrounds"][0]["sha256"] != tiny_manifest["assets"]["backgrounds"][0]["sha256"]


def test_limit_and_no_flip(tmp_path):
    root = build_tiny(tmp_path / "lim", limit=20, shard_size=8, flip=False)
    m = read_manifest_json(root)
    assert m["sample_count"] == 20
    assert [(s["start"], s["stop"], s["records"]) for s in m["shards"]] == [(0, 8, 8), (8, 16, 8), (16, 20, 4)]
    assert m["plan"]["flip"] is False and m["plan"]["limit"] == 20
    reader = DatasetReader(root)
    plan = SamplePlan(4, 4, 2, False)
    for i in range(20):
        r = reader.record(i)
        assert r["flip"] is False
        assert (r["bg"], r["fg"]) == tuple(int(v) for v in plan.locate(i)[:2])
    assert sum(m["split"]["counts"][name] for name in SPLIT_NAMES) == 20


def test_full_depth_storage_decodes_alone_and_equals_delta(tmp_path, tiny_dataset):
    root = build_tiny(tmp_path / "full", limit=16, depth_storage="full")
    m = read_manifest_json(root)
    assert m["build"]["content"]["depth_storage"] == "full"
    assert "transform" not in m["fields"]["depth"]
    full, delta = DatasetReader(root), DatasetReader(tiny_dataset)
    for i in range(16):
        record = full.record(i)
        alone = cv2.imdecode(np.frombuffer(record["depth"], np.uint8), cv2.IMREAD_UNCHANGED)
        assert alone.shape == (192, 192) and alone.dtype == np.uint16
        assert np.array_equal(alone, delta.decode(i)["depth"])
        assert np.array_equal(full.decode(i)["depth"], alone)
        other = delta.record(i)
        assert (record["fg_bg"], record["mask"]) == (other["fg_bg"], other["mask"])
        assert len(record["depth"]) > 4 * len(other["depth"])
    assert m["stats"]["all"]["depth"] != read_manifest_json(tiny_dataset)["stats"]["all"]["depth"]  # 16 vs 64
    assert m["sizes"]["depth"] / 16 > 4 * read_manifest_json(tiny_dataset)["sizes"]["depth"] / 64  # per sample


def test_build_summary(tmp_path):
    summary = build_dataset(BuildOptions(output=tmp_path / "s", backgrounds=2, foregrounds=2, positions=1,
                                         size=192, shard_size=3, workers=1), progress=False, log=lambda m: None)
    assert summary.complete and summary.samples == 8 and summary.shards == 3 and summary.built_samples == 8
    assert summary.bytes_on_disk == read_manifest_json(tmp_path / "s")["sizes"]["total_on_disk"]
    again = build_dataset(BuildOptions(output=tmp_path / "s", backgrounds=2, foregrounds=2, positions=1,
                                       size=192, shard_size=3, workers=1), progress=False, log=lambda m: None)
    assert again.complete and again.built_samples == 0 and any("nothing to do" in n for n in again.notes)


# ---- the reader across processes -----------------------------------------------------------------
def _decode_in_child(args):
    reader, index = args
    import sys

    s = reader.decode(index)
    return index, s["mask"].sum(dtype=np.int64), s["depth"].sum(dtype=np.int64), s["fg_bg"].shape, \
        "torch" in sys.modules


def test_reader_survives_pickling(tiny_dataset):
    reader = DatasetReader(tiny_dataset)
    before = reader.decode(5)  # opens the shard and decodes the backgrounds in this process
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._backgrounds is None
    after = clone.decode(5)
    for key in ("fg_bg", "mask", "depth", "bg"):
        assert np.array_equal(before[key], after[key])
    assert len(clone) == TINY_COUNT and clone.raw(63) == reader.raw(63)


def test_reader_in_a_spawn_pool(tiny_dataset):
    reader = DatasetReader(tiny_dataset)
    reader.decode(0)  # an open handle in the parent must not break the children
    want = {}
    for i in range(0, TINY_COUNT, 3):
        s = reader.decode(i)
        want[i] = (int(s["mask"].sum(dtype=np.int64)), int(s["depth"].sum(dtype=np.int64)))
    with mp.get_context("spawn").Pool(2) as pool:
        got = pool.map(_decode_in_child, [(reader, i) for i in want])
    assert {i: (int(m), int(d)) for i, m, d, _, _ in got} == want
    assert all(shape == (192, 192, 3) for _, _, _, shape, _ in got)
    assert not any(torch for *_, torch in got)  # reading needs no torch

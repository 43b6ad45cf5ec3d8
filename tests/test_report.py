"""dm-stats: the table, --json, --verify, and damaged datasets."""
from __future__ import annotations

import json
from pathlib import Path

import lmdb
import msgpack

from conftest import TINY_COUNT, assert_one_line_error, copy_dataset, run_cli
from pipeline.report import describe_dataset, format_table, human_bytes, verify_dataset


def test_table_lists_items_and_sizes(tiny_dataset, tiny_manifest):
    result = run_cli("dm-stats", tiny_dataset)
    assert result.rc == 0, str(result)
    out = result.stdout
    lines = out.splitlines()
    assert lines[0].split() == ["item", "type", "count", "image", "size", "size", "on", "disk", "mean", "std"]
    rows = {line.split()[0]: line for line in lines[2:6]}
    assert set(rows) == {"bg", "fg_bg", "mask", "depth"}
    sizes = tiny_manifest["sizes"]
    stats = tiny_manifest["stats"]["all"]
    for item, kind, count, shape, nbytes in (
        ("bg", "JPEG q90", 4, "192x192x3", tiny_manifest["backgrounds"]["bytes"]),
        ("fg_bg", "JPEG q90", TINY_COUNT, "192x192x3", sizes["fg_bg"]),
        ("mask", "PNG 1-bit", TINY_COUNT, "192x192x1", sizes["mask"]),
        ("depth", "PNG 16-bit", TINY_COUNT, "192x192x1", sizes["depth"]),
    ):
        row = rows[item]
        assert kind in row and f" {count} " in row and shape in row and human_bytes(nbytes) in row, row
        assert f"{stats[item]['mean'][0]:.4f}" in row and f"{stats[item]['std'][0]:.4f}" in row, row
    counts = tiny_manifest["split"]["counts"]
    assert (f"train {counts['train']}  val {counts['val']}  unseen_bg {counts['unseen_bg']}  unseen_fg "
            f"{counts['unseen_fg']}; ") in out
    assert "64 in 4 shard(s)" in out
    assert "depthmask-lmdb v1" in out and "seed 0" in out
    assert human_bytes(sizes["total_on_disk"]) in out
    assert result.stderr == ""


def test_json_output(tiny_dataset, tiny_manifest):
    result = run_cli("dm-stats", tiny_dataset, "--json")
    assert result.rc == 0, str(result)
    info = json.loads(result.stdout)
    assert info["samples"] == TINY_COUNT and info["shards"] == 4
    assert info["split_counts"] == tiny_manifest["split"]["counts"]
    counts = info["split_counts"]  # 'mixed' (version 1's name) is kept as unseen_bg + unseen_fg
    assert counts["train"] + counts["val"] + counts["unseen_bg"] + counts["unseen_fg"] == TINY_COUNT
    assert counts["mixed"] == counts["unseen_bg"] + counts["unseen_fg"]
    assert info["bytes_on_disk"] == tiny_manifest["sizes"]["total_on_disk"]
    assert [it["item"] for it in info["items"]] == ["bg", "fg_bg", "mask", "depth"]
    assert set(info["stats_by_split"]) == {"all", "train", "val", "unseen_bg", "unseen_fg"}
    assert info["stats_by_split"]["val"]["fg_bg"]["mean"] == tiny_manifest["stats"]["val"]["fg_bg"]["mean"]
    assert "verify" not in info
    # the library call gives the same facts, and the table is made of them
    assert describe_dataset(tiny_dataset) == info
    assert "fg_bg" in format_table(info)


def test_verify_ok(tiny_dataset):
    result = run_cli("dm-stats", tiny_dataset, "--verify", "--workers", "2")
    assert result.rc == 0, str(result)
    assert f"verify       OK: {TINY_COUNT} records in 4 shards" in result.stdout
    report = verify_dataset(tiny_dataset, workers=2)
    assert report.ok and report.records == TINY_COUNT and report.shards == 4


def _payload_spans(path: Path) -> list[tuple[int, int, int]]:
    """(key, start offset, end offset) in the file of each record's fg_bg JPEG bytes."""
    data = path.read_bytes()
    env = lmdb.open(str(path), subdir=False, readonly=True, lock=False)
    spans = []
    try:
        with env.begin() as txn:
            for key, value in txn.cursor():
                jpeg = msgpack.unpackb(value, raw=False)["fg_bg"]
                at = data.find(jpeg)
                assert at >= 0  # large values lie contiguous in LMDB overflow pages
                spans.append((int.from_bytes(key, "big"), at, at + len(jpeg)))
    finally:
        env.close()
    return spans


def test_flipped_byte_found_by_verify(tiny_dataset, tmp_path):
    root = copy_dataset(tiny_dataset, tmp_path / "data")
    shard = root / "shards" / "shard-00001.lmdb"
    size = shard.stat().st_size
    spans = _payload_spans(shard)
    # the record whose payload is nearest the middle of the file; flip the byte there
    key, start, end = min(spans, key=lambda s: 0 if s[1] <= size // 2 < s[2] else min(abs(s[1] - size // 2),
                                                                                      abs(s[2] - size // 2)))
    offset = size // 2 if start <= size // 2 < end else (start + end) // 2
    data = bytearray(shard.read_bytes())
    data[offset] ^= 0x40
    shard.write_bytes(bytes(data))
    # the cheap check (sizes, record counts) cannot see it ...
    assert run_cli("dm-stats", root).rc == 0
    # ... --verify does, and names the shard and the key
    result = run_cli("dm-stats", root, "--verify", "--workers", "2")
    assert result.rc == 1, str(result)
    assert "Traceback" not in result.stdout + result.stderr
    assert "verify       FAILED" in result.stdout
    problems = [line.strip() for line in result.stdout.splitlines() if line.startswith("  ")]
    assert f"shards/shard-00001.lmdb key {key}: payload checksum mismatch (damaged bytes)" in problems
    assert "shards/shard-00001.lmdb: content hash differs from the manifest" in problems
    assert not [p for p in problems if "shard-00000" in p or "shard-00002" in p or "shard-00003" in p]
    # the library call reports the same
    report = verify_dataset(root, workers=2)
    assert not report.ok and report.records == TINY_COUNT
    assert sorted(report.problems) == sorted(problems)


def test_damaged_page_structure_is_reported_not_crashed(tiny_dataset, tmp_path):
    root = copy_dataset(tiny_dataset, tmp_path / "data")
    shard = root / "shards" / "shard-00002.lmdb"
    data = bytearray(shard.read_bytes())
    page = 4096
    for i in range(2 * page, 3 * page):  # the first page after the two meta pages
        data[i] ^= 0xFF
    shard.write_bytes(bytes(data))
    result = run_cli("dm-stats", root, "--verify", "--workers", "2")
    assert result.rc != 0, str(result)
    assert "Traceback" not in result.stdout + result.stderr
    assert "shard-00002" in result.stdout + result.stderr


def test_damaged_backgrounds_file(tiny_dataset, tmp_path):
    root = copy_dataset(tiny_dataset, tmp_path / "data")
    path = root / "backgrounds.lmdb"
    env = lmdb.open(str(path), subdir=False, readonly=True, lock=False)
    with env.begin() as txn:
        image = msgpack.unpackb(txn.get((2).to_bytes(8, "big")), raw=False)["image"]
    env.close()
    data = bytearray(path.read_bytes())
    at = data.find(image)
    assert at >= 0
    data[at + len(image) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    result = run_cli("dm-stats", root, "--verify", "--workers", "2")
    assert result.rc == 1, str(result)
    assert "backgrounds.lmdb" in result.stdout


def test_truncated_shard(tiny_dataset, tmp_path):
    root = copy_dataset(tiny_dataset, tmp_path / "data")
    shard = root / "shards" / "shard-00002.lmdb"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    line = assert_one_line_error(run_cli("dm-stats", root), "shard-00002.lmdb", "truncated")
    assert f"{len(data) // 2:,}" in line and f"{len(data):,}" in line
    assert_one_line_error(run_cli("dm-stats", root, "--verify"), "shard-00002.lmdb")


def test_deleted_shard(tiny_dataset, tmp_path):
    root = copy_dataset(tiny_dataset, tmp_path / "data")
    (root / "shards" / "shard-00003.lmdb").unlink()
    assert_one_line_error(run_cli("dm-stats", root), "shard-00003.lmdb", "missing")
    (root / "backgrounds.lmdb").unlink()
    assert_one_line_error(run_cli("dm-stats", root), "missing")


def test_unsupported_format_version(tiny_dataset, tmp_path):
    root = copy_dataset(tiny_dataset, tmp_path / "data")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["format_version"] = 999
    (root / "manifest.json").write_text(json.dumps(manifest))
    line = assert_one_line_error(run_cli("dm-stats", root), "999", "format version")
    assert "manifest.json" in line
    # the reader library refuses it the same way
    from pipeline import DatasetReader, DepthmaskError
    import pytest

    with pytest.raises(DepthmaskError, match="999"):
        DatasetReader(root)


def test_manifest_not_json_or_not_ours(tiny_dataset, tmp_path):
    root = copy_dataset(tiny_dataset, tmp_path / "data")
    (root / "manifest.json").write_text("{ not json")
    assert_one_line_error(run_cli("dm-stats", root), "manifest.json", "not valid JSON")
    (root / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    assert_one_line_error(run_cli("dm-stats", root), "not a depthmask-lmdb manifest")

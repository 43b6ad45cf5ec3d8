"""The manifest of a materialised dataset: merged from the shards' sidecars when a build ends, and
the facts any reader or checker derives from a manifest (its plan, its split, its statistics per
split, an LMDB file's entry), so that they are computed in one place."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .format import BACKGROUNDS_NAME, FORMAT_NAME, FORMAT_VERSION, encode_key, read_json, shard_sidecar_path
from .plan import SPLIT_NAMES, SPLIT_RULE, SamplePlan, Split, manifest_counts
from .shards import ShardHasher, close_readonly, iterate_records
from .stats import StatsAccumulator, summarise
from .version import __version__

if TYPE_CHECKING:  # (readers import this module: it must not pull in the build's modules)
    from .assets import AssetSet
    from .codecs import FieldCodecs
    from .options import BuildOptions

FIELD_BYTES = ("fg_bg", "mask", "depth")  # the per-sample payloads whose bytes a manifest's sizes count


def manifest_plan(manifest: dict[str, Any]) -> SamplePlan:
    p = manifest["plan"]
    return SamplePlan(p["backgrounds"], p["foregrounds"], p["positions"], p["flip"], p["limit"])


def manifest_split(manifest: dict[str, Any]) -> Split:
    return Split(tuple(manifest["split"]["val_backgrounds"]), tuple(manifest["split"]["val_foregrounds"]))


def split_stats(acc: StatsAccumulator, splits: Any) -> dict[str, Any]:
    """A manifest's "stats": every field's over all samples, and over each split of `splits` (the
    splits that hold samples)."""
    stats = {"all": summarise(acc.total())}
    for name in SPLIT_NAMES:
        if name in splits:
            stats[name] = summarise(acc.total((name,)))
    return stats


def stats_problems(manifest: dict[str, Any], acc: StatsAccumulator) -> list[str]:
    """The statistics recomputed from the samples (`acc`) against the manifest's: sums and the mean/std
    derived from them, for every split the manifest records."""
    problems = []
    for split, fields in split_stats(acc, manifest["stats"]).items():
        for name, values in fields.items():
            stored = manifest["stats"].get(split, {}).get(name, {})
            if any(stored.get(k) != values[k] for k in ("exact_sums_stored_order", "mean", "std")):
                problems.append(f"statistics of {name} ({split}) differ from the manifest")
    return problems


class ShardTotals:
    """The totals of shards' results (a shard's sidecar, or --verify's re-reading of a shard): exact
    sums per split and field, payload bytes per field, samples per split."""

    def __init__(self) -> None:
        self.acc = StatsAccumulator()
        self.field_bytes = {name: 0 for name in FIELD_BYTES}
        self.split_counts = {name: 0 for name in SPLIT_NAMES}

    def add(self, result: dict[str, Any]) -> None:
        self.acc.merge(StatsAccumulator.from_json(result["stats"]))
        for k in self.field_bytes:
            self.field_bytes[k] += result["field_bytes"][k]
        for k in self.split_counts:
            self.split_counts[k] += result["split_counts"][k]

    def sizes(self, shards: list[dict[str, Any]], backgrounds_bytes: int) -> dict[str, int]:
        """A manifest's "sizes" of these payloads in `shards` (their manifest entries) and the backgrounds file."""
        shard_bytes = sum(s["bytes"] for s in shards)
        return {**self.field_bytes, "backgrounds_file": backgrounds_bytes, "shards": shard_bytes,
                "total_on_disk": shard_bytes + backgrounds_bytes}


def file_entry(root: Path, name: str) -> dict[str, Any]:
    """The manifest's entry of an LMDB file of the dataset: its records, content hash and size."""
    hasher = ShardHasher()
    for index, value in iterate_records(root / name):
        hasher.update(encode_key(index), value)
    close_readonly(root / name)
    return {"path": name, "records": hasher.records, "sha256": hasher.hexdigest(), "bytes": (root / name).stat().st_size}


def merge_manifest(root: Path, options: BuildOptions, plan: SamplePlan, split: Split, codecs: FieldCodecs,
                   assets: AssetSet, asset_description: dict[str, Any],
                   ranges: list[tuple[int, int]]) -> dict[str, Any]:
    """Gather every shard's sidecar (exact sums, hashes, counts) into the one manifest."""
    totals, shards = ShardTotals(), []
    for shard_id, _ in enumerate(ranges):
        entry = read_json(shard_sidecar_path(root, shard_id), "shard sidecar")
        totals.add(entry)
        shards.append({k: entry[k] for k in ("path", "start", "stop", "records", "sha256", "bytes")})
    backgrounds = file_entry(root, BACKGROUNDS_NAME)
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "created_by": f"depthmask {__version__}",
        "sample_count": plan.count,
        "image_size": [options.size, options.size],
        "fields": codecs.describe(),
        "depth": assets.depth,
        "plan": {"backgrounds": plan.n_backgrounds, "foregrounds": plan.n_foregrounds,
                 "positions": plan.positions, "flip": plan.flip, "limit": plan.limit,
                 "index_order": "index = ((bg * foregrounds + fg) * positions + position) * variants + flip; "
                                "variants = 2 with flip, else 1",
                 "placement": "x, y from SplitMix64(seed, index // variants); flipped twins share the placement"},
        "split": {"val_backgrounds": list(split.val_backgrounds), "val_foregrounds": list(split.val_foregrounds),
                  "counts": manifest_counts(totals.split_counts),
                  "rule": SPLIT_RULE},
        "build": {"content": options.content(), "seed": options.seed, "shard_size": options.shard_size},
        "assets": asset_description,
        "backgrounds": backgrounds,
        "shards": shards,
        "stats": split_stats(totals.acc, [name for name in SPLIT_NAMES if totals.split_counts[name]]),
        "sizes": totals.sizes(shards, backgrounds["bytes"]),
    }

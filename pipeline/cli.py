"""`dm-build-lmdb` and `dm-stats`: thin click wrappers over pipeline.build_dataset and pipeline.report."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from .build import DEFAULT_SHARD_SIZE, BuildOptions, build_dataset
from .cli_support import OneLineCommand, user_errors
from .codecs import DEFAULT_JPEG_QUALITY
from .errors import DepthmaskError
from .report import describe_dataset, format_table, human_bytes, verify_dataset
from .shards import DEFAULT_MAP_SIZE


def parse_part(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        k, n = (int(v) for v in value.split("/"))
    except ValueError:
        raise DepthmaskError(f"--part: expected K/N such as 1/4, got {value!r}") from None
    return k, n


@click.command(cls=OneLineCommand, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--seed", type=int, default=0, help="Seed of everything random: scenes, placements, split.")
@click.option("--backgrounds", type=int, default=102, help="Number of procedural backgrounds.")
@click.option("--foregrounds", type=int, default=104, help="Number of procedural foregrounds.")
@click.option("--positions", type=int, default=20, help="Placements per background x foreground pair.")
@click.option("--flip/--no-flip", default=True, help="Also store every placement with the foreground mirrored.")
@click.option("--limit", type=int, default=None, help="Keep only the first N samples of the plan (index order).  [default: all]")
@click.option("--size", type=int, default=224, help="Width and height of every image, in pixels.")
@click.option("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, help="Samples per LMDB shard (the unit of resume).")
@click.option("--val-fraction", type=float, default=0.1,
              help="Fraction of backgrounds and of foregrounds held out for validation.")
@click.option("--jpeg-quality", type=int, default=DEFAULT_JPEG_QUALITY, help="JPEG quality of fg_bg and bg images.")
@click.option("--depth-storage", type=click.Choice(["delta", "full"]), default="delta",
              help="delta: each depth PNG covers the object's box and holds only what differs from its "
                   "background's depth (stored once), ~0.2 KB; full: a complete depth PNG per sample, ~7 KB more.")
@click.option("--workers", type=int, default=0, help="Worker processes; 0 uses every core.  [default: 0 = all cores]")
@click.option("--part", "part", default=None, metavar="K/N",
              help="Build only part K of N of the shards (N machines share one output folder); then --merge.")
@click.option("--merge", "merge_only", is_flag=True, help="Only write the manifest from parts already built.")
@click.option("--overwrite", is_flag=True, help="Replace a complete or interrupted dataset in OUTPUT.")
@click.option("--max-shard-size-mb", type=int, default=DEFAULT_MAP_SIZE >> 20,
              help="Largest size one LMDB shard may reach (its map size).")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar on stderr.")
@user_errors
def build_lmdb_command(output: Path, part: str | None, progress: bool, **options) -> None:
    """Build the dataset of (bg, fg_bg, mask, depth) quadruplets into sharded LMDB in OUTPUT.

    The default is the full embedded dataset: 102 procedural backgrounds x 104 foregrounds x 20
    placements x 2 (flip) = 424,320 samples. Killed at any point, the same command resumes and
    produces byte-identical shards.
    """
    summary = build_dataset(BuildOptions(output=output, part=parse_part(part), **options), progress=progress)
    for note in summary.notes:
        click.echo(note, err=True)
    if summary.built_samples:
        click.echo(f"{'built' if summary.complete else 'built part'}: {summary.built_samples:,} samples in "
                   f"{summary.seconds:.1f} s ({summary.samples_per_second:,.0f} samples/s)")
    click.echo(f"dataset: {summary.output}  samples {summary.samples:,}  shards {summary.shards}  "
               f"size {human_bytes(summary.bytes_on_disk)}  {summary.kb_per_sample:.2f} KB/sample"
               + ("" if summary.complete else "  (incomplete: no manifest yet)"))


@click.command(cls=OneLineCommand, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of the table.")
@click.option("--verify", is_flag=True,
              help="Re-read every record: checksums, shard hashes, decodability and exact statistics.")
@click.option("--workers", type=int, default=0, help="Processes for --verify; 0 uses every core.")
@user_errors
def stats_command(dataset: Path, as_json: bool, verify: bool, workers: int) -> None:
    """Print a dataset's items, sizes, mean/std per channel, shards and splits."""
    info = describe_dataset(dataset)
    report = None
    if verify:
        if workers < 0:
            raise DepthmaskError(f"--workers: expected a whole number >= 0, got {workers}")
        report = verify_dataset(dataset, workers=workers or (os.cpu_count() or 1))
        info["verify"] = {"ok": report.ok, "records": report.records, "problems": report.problems}
    if as_json:
        click.echo(json.dumps(info, indent=1))
    else:
        click.echo(format_table(info))
        if report is not None:
            if report.ok:
                click.echo(f"verify       OK: {report.records:,} records in {report.shards} shards re-read; "
                           "hashes, checksums and statistics match")
            else:
                click.echo(f"verify       FAILED: {len(report.problems)} problem(s)")
                for problem in report.problems[:50]:
                    click.echo(f"  {problem}")
                if len(report.problems) > 50:
                    click.echo(f"  ... and {len(report.problems) - 50} more")
    if report is not None and not report.ok:
        sys.exit(1)

"""`dm-build-lmdb` and `dm-stats`: thin click wrappers over pipeline.build_dataset (recipe_build.build_recipes,
materialise.materialise_recipes) and pipeline.report."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from .assets import DEPTH_MODES, UserInputs
from .build import build_dataset
from .options import DEFAULT_SHARD_SIZE, DEFAULT_SIZE, BuildOptions
from .depth_model import DEVICES, IMAGENET_MEAN, IMAGENET_STD, DepthModelSpec
from .cli_support import OneLineCommand, user_errors
from .codecs import DEFAULT_JPEG_QUALITY, DEPTH_STORAGE
from .errors import DepthmaskError
from .format import MANIFEST_NAME
from .images import DEPTH_KINDS
from .materialise import materialise_recipes
from .placement import PLACEMENTS
from .recipe_build import STORES, build_recipes
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


def parse_triple(option: str, value: str) -> tuple[float, float, float]:
    try:
        numbers = tuple(float(v) for v in value.split(","))
    except ValueError:
        numbers = ()
    if len(numbers) != 3:
        raise DepthmaskError(f"{option}: expected three numbers R,G,B such as 0.5,0.5,0.5, got {value!r}")
    return numbers


def user_inputs(bg: Path | None, fg: Path | None, fg_masks: Path | None, fg_max_size: int | None, ground_top: float,
                bg_depth: Path | None, bg_depth_kind: str, depth_far: float | None, depth_model: Path | None,
                depth_mode: str, depth_model_input_size: int, depth_model_mean: str, depth_model_std: str,
                depth_model_output: str, depth_batch_size: int, depth_device: str) -> UserInputs:
    from .sources import DepthMapOptions

    model = None
    if depth_model is not None:
        model = DepthModelSpec(path=depth_model, input_size=depth_model_input_size,
                               mean=parse_triple("--depth-model-mean", depth_model_mean),
                               std=parse_triple("--depth-model-std", depth_model_std), output=depth_model_output,
                               far=depth_far, batch_size=depth_batch_size, device=depth_device)
    return UserInputs(bg_dir=bg, fg_dir=fg, fg_masks_dir=fg_masks, bg_depth_dir=bg_depth,
                      bg_depth=DepthMapOptions(kind=bg_depth_kind, far=depth_far if bg_depth else None),
                      depth_model=model, depth_mode=depth_mode, fg_max_size=fg_max_size, ground_top=ground_top)


def _triple(values: tuple[float, ...]) -> str:
    return ",".join(f"{v:g}" for v in values)


@click.command(cls=OneLineCommand, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--seed", type=int, default=0, help="Seed of everything random: scenes, placements, split.")
@click.option("--backgrounds", type=int, default=None,
              help="Number of backgrounds: procedural ones, or the first N files of --bg.  [default: 1020 / all files]")
@click.option("--foregrounds", type=int, default=None,
              help="Number of foregrounds: procedural ones, or the first N files of --fg.  [default: 104 / all files]")
@click.option("--bg", type=click.Path(path_type=Path), default=None,
              help="Folder of background photos (recursive, sorted; fitted: shorter side to --size, centre crop). "
                   "Needs --bg-depth or --depth-model.  [default: procedural backgrounds]")
@click.option("--fg", type=click.Path(path_type=Path), default=None,
              help="Folder of foreground cut-outs: RGBA images whose alpha is the mask, or RGB with --fg-masks.  "
                   "[default: procedural foregrounds]")
@click.option("--fg-masks", type=click.Path(path_type=Path), default=None,
              help="Folder of masks for --fg images, matched by relative name without extension.")
@click.option("--fg-max-size", type=int, default=None,
              help="Longest side of a foreground after its tight crop; larger ones are scaled down.  "
                   "[default: 5/7 of --size]")
@click.option("--ground-top", type=float, default=0.0,
              help="With --bg: objects stand with their lowest pixel at or below this fraction of the image "
                   "height (e.g. 0.5 keeps cars out of the sky of street photos); 0 places them anywhere.")
@click.option("--bg-depth", type=click.Path(path_type=Path), default=None,
              help="Folder of precomputed depth maps, one per --bg image (same relative name): 8/16-bit or float "
                   "PNG/TIFF, or .npy.")
@click.option("--bg-depth-kind", type=click.Choice(list(DEPTH_KINDS)), default="depth",
              help="What --bg-depth maps hold: depth (grows with distance) or inverse depth (disparity, MiDaS).")
@click.option("--depth-far", type=float, default=None,
              help="Depth (after inverting inverse maps) that becomes 1.0; nearer is scaled linearly.  "
                   "[default: per map, its farthest pixel]")
@click.option("--depth-model", type=click.Path(path_type=Path), default=None,
              help="Depth network file: TorchScript, torch.export (.pt2) or ONNX (.onnx, needs depthmask[onnx]).")
@click.option("--depth-mode", type=click.Choice(list(DEPTH_MODES)), default="composite",
              help="composite: the model runs once per background and objects are composited into its depth; "
                   "per-sample: the model runs on every composite.")
@click.option("--depth-model-input-size", type=int, default=256, help="Side of the square image the model is fed.")
@click.option("--depth-model-mean", default=_triple(IMAGENET_MEAN), help="Model input normalisation: mean R,G,B on [0, 1].")
@click.option("--depth-model-std", default=_triple(IMAGENET_STD), help="Model input normalisation: std R,G,B on [0, 1].")
@click.option("--depth-model-output", type=click.Choice(list(reversed(DEPTH_KINDS))), default="inverse",  # (listed inverse first)
              help="What the model returns: inverse depth (MiDaS-like) or depth.")
@click.option("--depth-batch-size", type=int, default=16, help="Images per depth-model batch.")
@click.option("--depth-device", type=click.Choice(list(DEVICES)), default="auto",
              help="Where the depth model runs; auto: a CUDA GPU when there is one.")
@click.option("--placement", type=click.Choice(list(PLACEMENTS)), default=None,
              help="fixed: every cut-out at its own size, anywhere on the ground; depth-scaled: its size follows "
                   "the depth where it stands (real object sizes, the kit's focal length; the embedded scenes and "
                   "objects only).  [default: fixed]")
@click.option("--positions", type=int, default=None,
              help="Placements per background x foreground pair.  [default: 2 on procedural backgrounds, 20 with --bg]")
@click.option("--flip/--no-flip", default=True, help="Also store every placement with the foreground mirrored.")
@click.option("--limit", type=int, default=None, help="Keep only the first N samples of the plan (index order).  [default: all]")
@click.option("--size", type=int, default=DEFAULT_SIZE, help="Width and height of every image, in pixels.")
@click.option("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, help="Samples per LMDB shard (the unit of resume).")
@click.option("--val-fraction", type=float, default=0.1,
              help="Fraction of backgrounds and of foregrounds held out for validation.")
@click.option("--jpeg-quality", type=int, default=DEFAULT_JPEG_QUALITY, help="JPEG quality of fg_bg and bg images.")
@click.option("--depth-storage", type=click.Choice(list(DEPTH_STORAGE)), default=None,
              help="delta: each depth PNG covers the object's box and holds only what differs from its "
                   "background's depth (stored once), ~0.2 KB; full: a complete depth PNG per sample, ~7 KB more.  "
                   "[default: delta; full with --depth-mode per-sample]")
@click.option("--workers", type=int, default=0, help="Worker processes; 0 uses every core.  [default: 0 = all cores]")
@click.option("--part", "part", default=None, metavar="K/N",
              help="Build only part K of N of the shards (N machines share one output folder); then --merge.")
@click.option("--merge", "merge_only", is_flag=True, help="Only write the manifest from parts already built.")
@click.option("--overwrite", is_flag=True, help="Replace a complete or interrupted dataset in OUTPUT.")
@click.option("--max-shard-size-mb", type=int, default=DEFAULT_MAP_SIZE >> 20,
              help="Largest size one LMDB shard may reach (its map size).")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar on stderr.")
@click.option("--store", type=click.Choice(list(STORES)), default="samples",
              help="samples: every sample's composite, mask and depth stored in shards (any reader reads it); "
                   "recipes: only the assets, plan, split and exact statistics (tens of MB), every sample "
                   "rebuilt by the loader (dm-train, dm-eval; docs/format.md). Not with --depth-mode per-sample, "
                   "--part, --merge or --max-shard-size-mb.")
@click.option("--from-recipes", "from_recipes", type=click.Path(path_type=Path), default=None, metavar="RECIPES",
              help="Materialise the recipe dataset RECIPES into OUTPUT: the same shards and manifest as a direct "
                   "build of the options it was built with (read from its manifest); only --workers, --part, "
                   "--merge, --overwrite, --max-shard-size-mb and --progress may be given with it.")
@user_errors
def build_lmdb_command(output: Path, part: str | None, progress: bool, bg, fg, fg_masks, fg_max_size, ground_top, bg_depth,
                       bg_depth_kind, depth_far, depth_model, depth_mode, depth_model_input_size, depth_model_mean,
                       depth_model_std, depth_model_output, depth_batch_size, depth_device, store: str,
                       from_recipes: Path | None, **options) -> None:
    """Build the dataset of (bg, fg_bg, mask, depth) quadruplets into sharded LMDB in OUTPUT.

    The default is the full embedded dataset: 1,020 procedural backgrounds x 104 foregrounds x 2
    placements x 2 (flip) = 424,320 samples, the original's count (its 102 photos x 20 placements
    is --backgrounds 102 --positions 20). --bg / --fg take your own folders instead (see
    docs/inputs.md). Killed at any point, the same command resumes and produces byte-identical shards.
    --store recipes keeps only the assets and the plan; --from-recipes materialises such a dataset.
    """
    if from_recipes is not None:
        refuse_given_options(click.get_current_context(), "--from-recipes", MATERIALISE_RUN_OPTIONS,
                             f"the recipe dataset's options are read from {from_recipes / MANIFEST_NAME}")
        summary = materialise_recipes(from_recipes, output, part=parse_part(part), progress=progress,
                                      **{k: options[k] for k in ("workers", "merge_only", "overwrite",
                                                                 "max_shard_size_mb")})
    else:
        inputs = user_inputs(bg, fg, fg_masks, fg_max_size, ground_top, bg_depth, bg_depth_kind, depth_far, depth_model,
                             depth_mode, depth_model_input_size, depth_model_mean, depth_model_std, depth_model_output,
                             depth_batch_size, depth_device)
        build = build_recipes if store == "recipes" else build_dataset
        summary = build(BuildOptions(output=output, part=parse_part(part), inputs=inputs, **options), progress=progress)
    for note in summary.notes:
        click.echo(note, err=True)
    if summary.built_samples:
        click.echo(f"{'built' if summary.complete else 'built part'}: {summary.built_samples:,} samples in "
                   f"{summary.seconds:.1f} s ({summary.samples_per_second:,.0f} samples/s)")
    layout = "recipes" if store == "recipes" and from_recipes is None else f"shards {summary.shards}"
    click.echo(f"dataset: {summary.output}  samples {summary.samples:,}  {layout}  "
               f"size {human_bytes(summary.bytes_on_disk)}  {summary.kb_per_sample:.2f} KB/sample"
               + ("" if summary.complete else "  (incomplete: no manifest yet)"))


# what --from-recipes may be given: how the build runs, not what it holds (that is the recipe's)
MATERIALISE_RUN_OPTIONS = ("output", "from_recipes", "workers", "part", "merge_only", "overwrite", "max_shard_size_mb",
                           "progress")


def refuse_given_options(ctx: click.Context, option: str, allowed: tuple[str, ...], why: str) -> None:
    """One line naming the first option given on the command line that `option` does not allow."""
    for param in ctx.command.params:
        if param.name in allowed or ctx.get_parameter_source(param.name) in (None, ParameterSource.DEFAULT):
            continue
        names = "/".join(param.opts + param.secondary_opts)
        allowed_names = ", ".join("/".join(p.opts + p.secondary_opts) for p in ctx.command.params
                                  if p.name in allowed and isinstance(p, click.Option) and p.name != "from_recipes")
        raise DepthmaskError(f"{option}: {names} cannot be given with it ({why}); only {allowed_names} may be")


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

"""`dm-predict`, `dm-export-model`, `dm-eval`: thin click wrappers over training.predict, training.export_model and
training.evaluate. torch is imported inside the commands, so `--help` answers at once."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from pipeline.cli_support import OneLineCommand, user_errors
from pipeline.plan import SPLIT_NAMES

_CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}
_SPLITS = (*SPLIT_NAMES, "all")


def _log(message: str) -> None:
    click.echo(message, err=True)


@click.command(cls=OneLineCommand, context_settings=_CONTEXT)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--bg", type=click.Path(path_type=Path), default=None,
              help="Background image, or a folder of them (matched to --fg-bg by relative name without extension).")
@click.option("--fg-bg", type=click.Path(path_type=Path), default=None,
              help="The same scene with the object in it: an image, or a folder.")
@click.option("--pairs", "pairs_file", type=click.Path(path_type=Path), default=None,
              help="A CSV/text list of pairs, one 'bg,fg_bg' per line (paths relative to the list's folder).")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=Path("out/predict"), help="Output folder.")
@click.option("--batch-size", type=int, default=8, help="Pairs per network batch.")
@click.option("--npy", is_flag=True, help="Also write the depth as float32 .npy.")
@click.option("--device", default="auto", help="auto, cpu, cuda or cuda:N.")
@click.option("--amp/--no-amp", default=None,
              help="bf16 autocast for checkpoints.  [default: where dm-train uses it: CUDA, CPUs with native bf16]")
@click.option("--stats", type=click.Path(path_type=Path), default=None,
              help="Dataset folder whose train-split statistics normalise the inputs, for a checkpoint saved "
                   "without them.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--progress/--no-progress", default=True, help="Progress bar on stderr.")
@user_errors
def predict_command(model: Path, bg: Path | None, fg_bg: Path | None, pairs_file: Path | None, output: Path,
                    batch_size: int, npy: bool, device: str, amp: bool | None, stats: Path | None, overwrite: bool,
                    progress: bool) -> None:
    """Predict the object's mask and the scene's depth for (bg, fg_bg) pairs with MODEL: a dm-train checkpoint
    (best.pt, last.pt) or an ONNX / TorchScript file written by dm-export-model.

    Writes NAME_mask.png (0/255), NAME_depth.png (16-bit, value / 65535 = normalised depth), NAME_preview.png
    (and NAME_depth.npy with --npy) per pair at the pair's own size, and predictions.json (docs/usage.md)."""
    from .predict import PredictOptions, list_pairs, load_predictor, predict_folder

    pairs = list_pairs(bg, fg_bg, pairs_file, log=_log)
    predictor = load_predictor(model, device=device, amp=amp, stats=stats)
    summary = predict_folder(predictor, pairs, PredictOptions(output=output, batch_size=batch_size, npy=npy,
                                                              overwrite=overwrite, progress=progress), log=_log)
    click.echo(f"wrote {len(summary['pairs'])} pair(s) to {output} ({predictor.kind} at {predictor.input_size} px, "
               f"{predictor.precision} on {predictor.device}; predictions.json)")


@click.command(cls=OneLineCommand, context_settings=_CONTEXT)
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["onnx", "torchscript"]), required=True, help="Graph format.")
@click.option("--output", "-o", type=click.Path(path_type=Path), required=True, help="File to write.")
@click.option("--stats", type=click.Path(path_type=Path), default=None,
              help="Dataset folder whose train-split statistics to bake in, for a checkpoint saved without them.")
@click.option("--overwrite", is_flag=True, help="Replace an existing file.")
@user_errors
def export_model_command(checkpoint: Path, fmt: str, output: Path, stats: Path | None, overwrite: bool) -> None:
    """Export CHECKPOINT (dm-train's best.pt or last.pt) as one ONNX or TorchScript graph: inputs bg, fg_bg
    (float32 RGB on [0, 1], N x 3 x S x S), outputs depth (normalised, [0, 1]) and mask (logits), with its
    metadata. The file is reloaded and checked against the PyTorch model before it is kept."""
    from .export_model import export_model

    result = export_model(checkpoint, output, fmt, stats=stats, overwrite=overwrite, log=_log)
    click.echo(f"wrote {result.path} ({fmt}, input {result.metadata['input_size']} px; max |diff| depth "
               f"{result.max_abs_diff['depth']:.2e}, mask logits {result.max_abs_diff['mask']:.2e})")


@click.command(cls=OneLineCommand, context_settings=_CONTEXT)
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--checkpoint", type=click.Path(path_type=Path), required=True, help="A dm-train checkpoint.")
@click.option("--split", type=click.Choice(_SPLITS), default="val", help="Split to evaluate.")
@click.option("--samples", type=int, default=None, help="Evaluate the first N samples of the split.  [default: all]")
@click.option("--batch-size", type=int, default=32, help="Samples per batch.")
@click.option("--device", default="auto", help="auto, cpu, cuda or cuda:N.")
@click.option("--amp/--no-amp", default=None,
              help="bf16 autocast.  [default: where dm-train uses it: CUDA, CPUs with native bf16]")
@click.option("--stats", type=click.Path(path_type=Path), default=None,
              help="Dataset folder whose train-split statistics normalise the inputs, for a checkpoint saved "
                   "without them.")
@click.option("--boundary-tolerance", type=int, default=3, help="Band of the boundary F-score, in pixels.")
@click.option("--threshold-samples", type=int, default=512,
              help="Train samples on which the |fg_bg - bg| threshold floor is chosen.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--progress/--no-progress", default=True, help="Progress bar on stderr.")
@user_errors
def eval_command(data: Path, checkpoint: Path, split: str, samples: int | None, batch_size: int, device: str,
                 amp: bool | None, stats: Path | None, boundary_tolerance: int, threshold_samples: int,
                 as_json: bool, progress: bool) -> None:
    """Metrics of CHECKPOINT on a split of the dataset in DATA (any dm-build-lmdb dataset, also one built from
    your photos), beside the floors on the same samples: a constant prediction, the mask |fg_bg - bg| > t
    (t chosen on the train split), the background's own depth pasted unchanged."""
    from pipeline import DepthmaskError

    from .evaluate import EvalOptions, evaluate, format_report

    if threshold_samples < 1:
        raise DepthmaskError(f"--threshold-samples: expected a whole number >= 1, got {threshold_samples}")
    options = EvalOptions(split=split, samples=samples, batch_size=batch_size, device=device, amp=amp,
                          stats=str(stats) if stats else None, boundary_tolerance=boundary_tolerance,
                          threshold_samples=threshold_samples)
    result = evaluate(data, checkpoint, options, progress=progress and not as_json and sys.stderr.isatty())
    click.echo(json.dumps(result, indent=1) if as_json else format_report(result))

"""`dm-train` and `dm-export-samples`: thin click wrappers over training.train and training.export.

Only torch-free modules are imported here (the configs, their defaults and choices), so `--help`,
`--version` and option errors answer at once; torch is imported when a command runs.
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import click
from click.core import ParameterSource

from pipeline import DepthmaskError, __version__
from pipeline.cli_support import OneLineCommand, user_errors
from pipeline.plan import SPLIT_NAMES

from .augment import AugmentConfig
from .camera_effects import CameraEffects, parse_jpeg_quality
from .config import BEST_METRICS, LR_SCHEDULES, OPTIMIZERS, PLACEMENT_MODES, TrainConfig, parse_schedule
from .config_errors import ConfigValueError
from .loss_config import DEPTH_LOSSES, LossConfig
from .model_config import ARCHITECTURE_NAMES, ModelConfig
from .recipe_source import COMPOSITE_ON

_DEFAULT_ARCH = ModelConfig().depth_arch
_DEFAULT_MASK_ARCH = ModelConfig().mask_arch
_LOSS = LossConfig()
_AUGMENT = AugmentConfig()
# config fields whose option is not --field-name (see option_of)
_OPTION_OF_FIELD = {"min_scale": "--augment-scale", "max_rotation_deg": "--augment-rotation",
                    "jpeg_quality": "--jpeg-roundtrip", "noise_std": "--sensor-noise", "blur_sigma": "--blur"}
_CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
# dm-train option -> the TrainConfig field it sets (checked against the run's on --resume)
_CONFIG_FIELD_OF = {
    **{name: "model" for name in ("depth_arch", "mask_arch", "shared_encoder", "encoder_weights", "width", "mask_width")},
    **{name: "loss" for name in ("depth_loss", "w_depth", "w_mask", "w_l1", "w_ssim", "w_grad", "w_l2", "w_bce",
                                 "w_dice")},
    **{name: "augment" for name in ("augment", "augment_scale", "augment_rotation")},
    "no_val": "validate",
    **{name: "camera" for name in ("jpeg_roundtrip", "sensor_noise", "blur")},
    **{name: name for name in ("schedule", "batch_size", "epoch_samples", "val_samples", "optimizer", "lr",
                               "weight_decay", "lr_schedule", "seed", "best_metric", "placements")},
}


def _device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not _DEVICE.match(value):
        raise click.BadParameter(f"expected auto, cpu, cuda or cuda:N, got {value!r}")
    return value


def option_of(field: str) -> str:
    """The dm-train option that sets a config field (ModelConfig, LossConfig, AugmentConfig, CameraEffects): the
    one place where a config's error about its field is worded for the command line."""
    return _OPTION_OF_FIELD.get(field, "--" + field.replace("_", "-"))


@contextmanager
def _options_named() -> Iterator[None]:
    """A config's ConfigValueError as dm-train's one-line error, naming the option instead of the field."""
    try:
        yield
    except ConfigValueError as exc:  # "width must be ..." -> "--width: must be ..."
        raise DepthmaskError(exc.worded(option_of)) from None


def _given_config_fields(ctx: click.Context) -> tuple[str, ...]:
    """The TrainConfig fields the user set on the command line (not left at their defaults)."""
    given = {_CONFIG_FIELD_OF[name] for name in _CONFIG_FIELD_OF
             if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
    return tuple(sorted(given))


@click.command(cls=OneLineCommand, context_settings=_CONTEXT)
@click.version_option(__version__, "--version", prog_name="depthmask")
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--output", "-o", type=click.Path(path_type=Path), default=Path("runs/default"),
              help="Run folder (created with its parents). One run at a time; a folder holding anything else is "
                   "refused unless --overwrite, which removes only dm-train's own files.")
@click.option("--depth-arch", type=click.Choice(ARCHITECTURE_NAMES), default=_DEFAULT_ARCH, help="Depth network.")
@click.option("--mask-arch", type=click.Choice(ARCHITECTURE_NAMES), default=_DEFAULT_MASK_ARCH, help="Mask network.")
@click.option("--shared-encoder", is_flag=True, help="One encoder with a depth head and a mask head.")
@click.option("--encoder-weights", type=click.Path(path_type=Path), default=None,
              help="Local state_dict file for the encoder(s) (e.g. torchvision ResNet weights).")
@click.option("--width", type=float, default=1.0, help="Channel width multiplier of the networks.")
@click.option("--mask-width", type=float, default=None,
              help="Channel width multiplier of the mask network alone (separate networks).  [default: --width]")
@click.option("--schedule", default="32:10,64:10",
              help="Progressive resizing: SIZE:EPOCHS stages, in order (the original: 32:10,64:10).")
@click.option("--batch-size", type=int, default=32, help="Samples per batch (per process under torchrun).")
@click.option("--epoch-samples", type=int, default=None,
              help="Samples per epoch, a fresh random subset each epoch.  [default: the whole train split]")
@click.option("--val-samples", type=int, default=None, help="Validate on the first N val samples.  [default: all]")
@click.option("--no-val", is_flag=True,
              help="Train without validation (e.g. a dataset too small for a val split); best.pt is then the "
                   "last epoch's weights.")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adamw", help="Optimizer.")
@click.option("--lr", type=float, default=1e-3, help="Peak learning rate.")
@click.option("--weight-decay", type=float, default=1e-4, help="Weight decay.")
@click.option("--lr-schedule", type=click.Choice(LR_SCHEDULES), default="onecycle", help="Learning-rate schedule.")
@click.option("--depth-loss", type=click.Choice(DEPTH_LOSSES), default="dense",
              help="dense: L1 + SSIM + gradients (DenseDepth); cosine: the original's cosine-similarity loss.")
@click.option("--w-depth", type=float, default=_LOSS.w_depth, help="Weight of the depth loss.")
@click.option("--w-mask", type=float, default=_LOSS.w_mask, help="Weight of the mask loss.")
@click.option("--w-l1", type=float, default=_LOSS.w_l1, help="Depth: weight of L1.")
@click.option("--w-ssim", type=float, default=_LOSS.w_ssim, help="Depth: weight of (1 - SSIM) / 2.")
@click.option("--w-grad", type=float, default=_LOSS.w_grad, help="Depth: weight of the image-gradient term.")
@click.option("--w-l2", type=float, default=_LOSS.w_l2, help="Depth: weight of the squared error (MSE).")
@click.option("--w-bce", type=float, default=_LOSS.w_bce, help="Mask: weight of BCE.")
@click.option("--w-dice", type=float, default=_LOSS.w_dice, help="Mask: weight of 1 - Dice.")
@click.option("--augment/--no-augment", default=True,
              help="Augment the train split: mirror, brightness/contrast/saturation, and the options below.")
@click.option("--augment-scale", type=float, default=_AUGMENT.min_scale,
              help="Smallest random crop side as a fraction of the image (1: no crop/zoom; crop and rotation "
                   "move the horizon, which costs depth accuracy: docs/benchmarks.md).")
@click.option("--augment-rotation", type=float, default=_AUGMENT.max_rotation_deg,
              help="Largest random rotation in degrees (0: none).")
@click.option("--placements", type=click.Choice(PLACEMENT_MODES), default="fixed",
              help="Recipe datasets (dm-build-lmdb --store recipes): per-epoch draws fresh placements and flips of "
                   "the training samples every epoch from (seed, epoch, index); validation never changes.")
@click.option("--jpeg-roundtrip", default=None, metavar="Q|LOW-HIGH",
              help="JPEG-encode and decode fg_bg of every training sample at quality Q (or one drawn from LOW-HIGH): "
                   "recipe composites are never JPEG, materialised and real ones are.  [default: off]")
@click.option("--sensor-noise", type=float, default=0.0,
              help="Gaussian sensor noise on bg and fg_bg, std drawn up to this (0-255 scale; 0: off).")
@click.option("--blur", type=float, default=0.0, help="Mild Gaussian blur of both images, sigma drawn up to this "
                                                       "(pixels; 0: off).")
@click.option("--seed", type=int, default=0, help="Seed of initialisation, data order and augmentation.")
@click.option("--best-metric", type=click.Choice(list(BEST_METRICS)), default="val_loss",
              help="Validation metric that picks best.pt.")
@click.option("--time-limit-min", type=float, default=None,
              help="Stop after this many minutes of training, with a checkpoint (resumable). It counts the run's "
                   "total training time over all its sessions: a run resumed after 20 of --time-limit-min 30 "
                   "trains 10 more.")
@click.option("--workers", type=int, default=2, help="DataLoader worker processes.")
@click.option("--composite-on", type=click.Choice(COMPOSITE_ON), default="workers",
              help="Recipe datasets: where training samples are composited. device: the workers send only the "
                   "placements and the batch is composited on --device (assets held there), resized there (area "
                   "resampling, within a grey level of the workers' cv2 resize) and mirrored / photometrically "
                   "augmented there; refused on a materialised dataset and with --augment-scale < 1, "
                   "--augment-rotation > 0, --jpeg-roundtrip, --sensor-noise or --blur.")
@click.option("--device", default="auto", callback=_device, help="auto, cpu, cuda or cuda:N.")
@click.option("--compile", "use_compile", is_flag=True, help="torch.compile the model.")
@click.option("--amp/--no-amp", default=None,
              help="bf16 autocast.  [default: on with CUDA, and on a CPU with native bf16 (AVX512-BF16, AMX)]")
@click.option("--channels-last/--no-channels-last", default=None,
              help="channels_last memory.  [default: as --amp]")
@click.option("--checkpoint-every-min", type=float, default=10.0,
              help="Also checkpoint within epochs this often (0: after every step).")
@click.option("--resume", is_flag=True,
              help="Continue the run in --output where its last checkpoint left it, with the configuration saved "
                   "in it (an option asking for another value is refused).")
@click.option("--overwrite", is_flag=True,
              help="Start over in an --output that holds a run or other files: removes dm-train's own files there "
                   "(checkpoints, metrics, curves, config, TensorBoard events) and nothing else.")
@click.option("--init-from", type=click.Path(path_type=Path), default=None,
              help="Start from the weights of another run's checkpoint (same architecture).")
@click.option("--progress/--no-progress", default=True, help="Progress bar on stderr.")
@user_errors
@click.pass_context
def train_command(ctx: click.Context, data: Path, output: Path, depth_arch: str, mask_arch: str, shared_encoder: bool,
                  encoder_weights: Path | None, width: float, mask_width: float | None, schedule: str,
                  depth_loss: str, workers: int, device: str, use_compile: bool, amp: bool | None,
                  channels_last: bool | None, checkpoint_every_min: float, resume: bool, overwrite: bool,
                  init_from: Path | None, progress: bool, augment: bool, augment_scale: float,
                  augment_rotation: float, no_val: bool, jpeg_roundtrip: str | None, sensor_noise: float,
                  blur: float, composite_on: str, **options) -> None:
    """Train the depth and mask networks on the dataset in DATA (built by dm-build-lmdb).

    Under torchrun (e.g. torchrun --nproc-per-node 8 -m training.cli ...), every process trains on
    its share of each epoch with DistributedDataParallel; rank 0 logs and writes checkpoints.
    """
    loss_keys = ("w_depth", "w_mask", "w_l1", "w_ssim", "w_grad", "w_l2", "w_bce", "w_dice")
    with _options_named():
        model = ModelConfig.for_new_run(depth_arch=depth_arch, mask_arch=mask_arch, shared_encoder=shared_encoder,
                                        encoder_weights=str(encoder_weights) if encoder_weights else None,
                                        width=width, mask_width=mask_width)
        loss = LossConfig(depth_loss=depth_loss, **{k: options.pop(k) for k in loss_keys})
        # checked also with --no-augment: a nonsense value is a mistake either way
        geometry = AugmentConfig(min_scale=augment_scale, max_rotation_deg=augment_rotation)
        camera = CameraEffects(jpeg_quality=parse_jpeg_quality(jpeg_roundtrip), noise_std=sensor_noise,
                               blur_sigma=blur)
    options["camera"] = camera if camera.active else None
    config = TrainConfig(data=str(data), output=str(output), model=model, loss=loss,
                         augment=geometry if augment else None,
                         schedule=parse_schedule(schedule), validate=not no_val, **options)
    from .train import RuntimeOptions, train  # torch: only now that the options are known to be sound

    runtime = RuntimeOptions(workers=workers, device=device, compile=use_compile, amp=amp, channels_last=channels_last,
                             checkpoint_every_min=checkpoint_every_min, progress=progress, resume=resume,
                             overwrite=overwrite, init_from=str(init_from) if init_from else None,
                             resume_checks=_given_config_fields(ctx), composite_on=composite_on)
    metrics = train(config, runtime)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, one report (rank 0's)
        return
    files = "(best.pt, last.pt, metrics.jsonl, curves.png)"
    if "depth_rmse" in metrics:
        click.echo(f"done: {output}  depth RMSE {metrics['depth_rmse']:.4f}  mask IoU {metrics['mask_iou']:.4f}  {files}")
    elif "train_loss" in metrics:  # --no-val
        click.echo(f"done: {output}  train loss {metrics['train_loss']:.4f} (no validation)  {files}")


@click.command(cls=OneLineCommand, context_settings=_CONTEXT)
@click.version_option(__version__, "--version", prog_name="depthmask")
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--output", "-o", type=click.Path(path_type=Path), default=Path("out/samples.png"),
              help="PNG file to write.")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="A dm-train checkpoint: adds predicted mask and depth columns.")
@click.option("--split", type=click.Choice(("all", *SPLIT_NAMES, "mixed")), default="val",
              help="Split to draw from (mixed: unseen_bg and unseen_fg together, format version 1's name).")
@click.option("--count", "-n", type=int, default=8, help="Number of samples (rows).")
@click.option("--seed", type=int, default=0, help="Seed of the sample choice.")
@click.option("--size", type=click.IntRange(16, 1024), default=None,
              help="Tile size in pixels, 16 to 1024.  [default: the stored image size]")
@click.option("--device", default="auto", callback=_device, help="auto, cpu, cuda or cuda:N (for predictions).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@user_errors
def export_samples_command(data: Path, output: Path, checkpoint: Path | None, split: str, count: int, seed: int,
                           size: int | None, device: str, overwrite: bool) -> None:
    """Write a grid image of samples from DATA: bg | fg_bg | mask | depth [| predicted mask | predicted depth]."""
    from .export import export_samples

    path = export_samples(data, output, checkpoint=checkpoint, split=split, count=count, seed=seed, size=size,
                          device=device, overwrite=overwrite)
    click.echo(f"wrote {path}")


if __name__ == "__main__":  # torchrun -m training.cli ... runs dm-train
    train_command()

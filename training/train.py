"""`train`: the depth and mask networks on a depthmask dataset, resumable, on CPU, one GPU or many
(`torchrun`, DistributedDataParallel; rank 0 logs and checkpoints).

Run folder (training.run_folder): last.pt (every epoch and every N minutes: what resume needs), best.pt
(the weights of the best validation metric, with the input normalisation: what a user ships),
metrics.jsonl (one line per epoch, the constant-prediction floor first), curves.png (rewritten every
epoch), config.json, and TensorBoard scalars under tb/ when tensorboard is installed
(`depthmask[tensorboard]`). One run at a time holds the folder's lock.

The loop reads as torchvision's references do: `_Trainer.__init__` sets the run up (the configuration, resumed
or new, the data, the model, the optimizer and schedule), then per epoch `train_one_epoch` (`train_step` per
batch; `inputs` is where a loader batch becomes device tensors), `validate` (the module's `validation_metrics`,
torchvision's `evaluate`) and `end_epoch` (the epoch's row through `_RunLog`, then best.pt and last.pt).
"""
from __future__ import annotations

import gc
import json
import math
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch.nn.parallel import DistributedDataParallel

from pipeline import DepthmaskError, __version__
from pipeline.checks import number, run_checks
from pipeline.codecs import DEPTH_MAX
from pipeline.format import write_json_atomic

from . import distributed as dist_utils
from .checkpoint import (BEST_NAME, KIND_RESUME, LAST_NAME, config_of, describe_arch, load_checkpoint,
                         load_model_state, normalization_from_stats, save_checkpoint, shipped_state)
from .config import BEST_METRICS, TrainConfig
from .curves import write_curves
from .data import DepthMaskDataset, make_loader
from .inputs import BatchNormalizer
from .loss_config import LossConfig
from .losses import total_loss
from .metrics import SegDepthMetrics, constant_results, constant_sums
from .models import build_model, count_parameters
from .precision import fast_path_default
from .device_batches import device_compositor
from .recipe_source import COMPOSITE_ON, open_reader, training_data_info
from .run_folder import CONFIG_NAME, CURVES_NAME, METRICS_NAME, TENSORBOARD_DIR, open_run_folder, \
    remove_if_only_ours, remove_stale_temporaries



@dataclass(frozen=True)
class RuntimeOptions:
    """How to run; free to change when resuming (unlike TrainConfig)."""

    workers: int = 2
    device: str = "auto"
    compile: bool = False
    amp: bool | None = None  # bf16 autocast; None: precision.fast_path_default (CUDA, CPUs with native bf16)
    channels_last: bool | None = None  # None: as amp
    checkpoint_every_min: float = 10.0  # 0: after every step
    progress: bool = True
    resume: bool = False
    overwrite: bool = False
    init_from: str | None = None  # weights of another run (same architecture) to start from
    multiprocessing_context: str | None = None
    composite_on: str = "workers"  # recipe datasets: "device" composites the training batches there (device_batches)
    # with resume: the TrainConfig fields the user set, checked against the run's (None: every field but
    # data, output and time_limit_min); a resumed run always continues with its checkpoint's configuration
    resume_checks: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        checks = [
            ("--workers", self.workers, isinstance(self.workers, int) and not isinstance(self.workers, bool)
             and self.workers >= 0, "a whole number >= 0"),
            ("--checkpoint-every-min", self.checkpoint_every_min, number(self.checkpoint_every_min)
             and self.checkpoint_every_min >= 0, "a number of minutes >= 0"),
            ("--composite-on", self.composite_on, self.composite_on in COMPOSITE_ON, " or ".join(COMPOSITE_ON)),
        ]
        run_checks(checks)
        if self.resume and self.overwrite:
            raise DepthmaskError("--resume and --overwrite: choose one (continue the run, or start it over)")
        if self.init_from is not None and not Path(self.init_from).is_file():
            raise DepthmaskError(f"--init-from: {self.init_from} does not exist")


@dataclass
class TrainState:
    epoch: int = 0  # epoch in progress (or next to start)
    epoch_step: int = 0  # batches of `epoch` already trained
    step: int = 0  # optimizer steps overall
    best: float | None = None
    epoch_loss_sum: float = 0.0
    epoch_samples: int = 0
    elapsed_s: float = 0.0


def train(config: TrainConfig, runtime: RuntimeOptions = RuntimeOptions(),
          log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> dict[str, Any]:
    """Train (or resume) the run in config.output; return the last validation metrics ({} when a resumed
    run was already complete)."""
    dist = dist_utils.setup(runtime.device)
    trainer = None
    lock, created = None, False
    try:
        if dist.is_main:  # rank 0 owns the folder; the others only read last.pt when resuming
            lock, created = open_run_folder(Path(config.output), resume=runtime.resume, overwrite=runtime.overwrite)
        try:
            trainer = _Trainer(config, runtime, dist, log)
        except BaseException:
            if created:  # a failed start leaves no folder that looks like a run
                lock.release()
                lock = None
                remove_if_only_ours(Path(config.output))
            raise
        result = trainer.run()
        dist_utils.barrier(dist)  # every rank leaves together
        return result
    finally:
        # the DDP model (its reducer holds the process group) must be gone before the group is: left to
        # the interpreter's exit, a rank could abort ("terminate called without an active exception")
        trainer = None
        gc.collect()
        if lock is not None:
            lock.release()
        dist_utils.teardown(dist)


def lr_factor(shape: str, progress: float) -> float:
    """The learning rate as a share of the peak, a pure function of the run's progress on [0, 1]."""
    if shape == "onecycle":  # linear warm-up from lr/25 over 15%, then cosine down to lr/1e4
        if progress < 0.15:
            return 0.04 + 0.96 * progress / 0.15
        return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * (progress - 0.15) / 0.85))
    if shape == "cosine":
        return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


Batch = dict[str, torch.Tensor]


def validation_metrics(model: torch.nn.Module, loader: Any, inputs: Callable[[Batch], Batch],
                       autocast: Callable[[], Any], loss_config: LossConfig,
                       dist: dist_utils.DistInfo) -> dict[str, Any]:
    """Validation metrics of `model` over `loader` (this rank's share of the samples), summed over every rank:
    SegDepthMetrics' figures and the mean loss (val_loss). `inputs` turns a loader batch into device tensors."""
    model.eval()
    metrics = SegDepthMetrics()
    loss_sum = torch.zeros(2, dtype=torch.float64)
    with torch.no_grad():
        for batch in loader:
            b = inputs(batch)
            with autocast():
                depth, logits = model(b["bg"], b["fg_bg"])
            _, parts = total_loss(depth, logits, b["depth"], b["mask"], loss_config)
            n = b["bg"].shape[0]
            loss_sum += torch.tensor([parts["loss"] * n, n], dtype=torch.float64)
            metrics.update(depth, b["depth"], logits, b["mask"])
    metrics.load_state_tensor(dist_utils.all_reduce_sum(metrics.state_tensor().cpu(), dist))
    loss_sum = dist_utils.all_reduce_sum(loss_sum, dist)
    out = metrics.compute()
    out["val_loss"] = float(loss_sum[0] / loss_sum[1]) if loss_sum[1] > 0 else math.nan
    return out


class _Trainer:
    """One session of a run. Set-up (__init__), then `run`: per epoch `train_one_epoch` (batch by batch,
    `train_step`), `validate` and `end_epoch` (the epoch's row, best.pt, last.pt)."""

    # ---- set-up ------------------------------------------------------------------------------
    def __init__(self, config: TrainConfig, runtime: RuntimeOptions, dist: dist_utils.DistInfo,
                 log: Callable[[str], None]):
        self.runtime, self.dist = runtime, dist
        self.log = log if dist.is_main else (lambda m: None)
        self.out = Path(config.output)
        self.config, resume_state = _run_config(config, runtime, dist, self.log)
        fast = fast_path_default(dist.device)
        self.amp = fast if runtime.amp is None else runtime.amp
        self.channels_last = fast if runtime.channels_last is None else runtime.channels_last
        _set_up_backends(dist.device)
        random.seed(self.config.seed)
        torch.manual_seed(self.config.seed)
        _check_schedule(self.config)
        self.train_set = DepthMaskDataset(self.config.data, "train", size=self.config.size_at(0),
                                          augment=self.config.augment, placements=self.config.placements,
                                          camera=self.config.camera, seed=self.config.seed,
                                          composite_on=runtime.composite_on)
        self.val_set = _val_set(self.config, self.train_set) if self.config.validate else None
        self._check_batch_size()
        self.normalizer = BatchNormalizer(self.train_set.stats(), dist.device, self.channels_last)
        self.finish_batch = device_compositor(self.train_set, dist.device)  # identity unless --composite-on device
        self.model = build_model(self.config.model).to(dist.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if runtime.init_from and resume_state is None:
            load_model_state(self.model, load_checkpoint(runtime.init_from), runtime.init_from)
        self.optimizer = _make_optimizer(self.config, self.model)
        self.total_steps = max(1, self.steps_in_epoch(rank=0) * self.config.epochs)
        # a learning-rate factor driven by the run's progress (steps done, or the time limit spent when that
        # comes first, so a time-limited run still warms up and anneals); step 0 is the scheduler's own first
        # call, made here before any training (progress 0)
        shape = self.config.lr_schedule
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(shape, self.progress() if step else 0.0))
        self.state = TrainState()
        if resume_state is not None:
            self._restore(resume_state)
        self.net = self.model
        if dist.enabled:
            self.net = DistributedDataParallel(self.model, device_ids=[dist.device.index]
                                               if dist.device.type == "cuda" else None)
        if runtime.compile:
            self.net = torch.compile(self.net)
        self.loaders: dict[tuple[str, int], Any] = {}
        self.run_log = _RunLog(self.out, dist.is_main, self.log)
        if dist.is_main and resume_state is None:  # set-up succeeded: now the folder holds a run
            write_json_atomic(self.out / CONFIG_NAME, self.config.to_dict())
        self.last_checkpoint = time.monotonic()
        self.started = time.monotonic()  # training time starts now: the set-up above is not counted
        self.autocast = (lambda: torch.autocast(dist.device.type, dtype=torch.bfloat16)) if self.amp else nullcontext

    def _check_batch_size(self) -> None:
        per_rank = math.ceil(len(self.train_set) / self.dist.world_size)
        if self.config.batch_size > per_rank:
            ranks = f" over {self.dist.world_size} ranks" if self.dist.enabled else ""
            raise DepthmaskError(f"--batch-size {self.config.batch_size}: larger than the training split "
                                 f"({len(self.train_set)} samples{ranks})")

    def _restore(self, state: dict[str, Any]) -> None:
        load_model_state(self.model, state, self.out / LAST_NAME)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.state = TrainState(**state["train_state"])
            torch.set_rng_state(state["rng"]["torch"])
            random.setstate((3, tuple(state["rng"]["python"]), None))
            if state["rng"]["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise DepthmaskError(f"{self.out / LAST_NAME}: checkpoint state does not fit this run ({exc})") from None

    # ---- where the run stands ------------------------------------------------------------------
    def steps_in_epoch(self, rank: int | None = None) -> int:
        """Batches of one epoch on `rank` (default: this process); every epoch has the same length."""
        n = self.epoch_length()
        share = len(range(self.dist.rank if rank is None else rank, n, self.dist.world_size))
        return math.ceil(share / self.config.batch_size)

    def epoch_length(self) -> int:
        n = len(self.train_set)
        return min(n, self.config.epoch_samples) if self.config.epoch_samples else n

    def training_time(self) -> float:
        """Seconds of training over all the run's sessions (set-up not counted)."""
        return self.state.elapsed_s + time.monotonic() - self.started

    def progress(self) -> float:
        """Share of the run done, identical on every rank: steps are counted as rank 0 counts them
        (the largest share), and the time share is used only in a single process, since each rank's
        clock differs and agreeing on it would need a collective every step."""
        done = (self.steps_in_epoch(rank=0) * self.state.epoch + self.state.epoch_step) / self.total_steps
        if self.config.time_limit_min and not self.dist.enabled:
            done = max(done, self.training_time() / (self.config.time_limit_min * 60))
        return min(1.0, done)

    def _time_up(self) -> bool:
        return self.config.time_limit_min is not None and self.training_time() >= self.config.time_limit_min * 60

    def val_count(self) -> int:
        if self.val_set is None:
            return 0
        return min(len(self.val_set), self.config.val_samples or len(self.val_set))

    # ---- the loop ------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        params = count_parameters(self.model)
        self.log(f"training {describe_arch(self.config.model)} ({params / 1e6:.2f}M parameters) on "
                 f"{self.dist.device}{' x' + str(self.dist.world_size) if self.dist.enabled else ''}: "
                 f"{len(self.train_set):,} train / {self.val_count():,} val samples, schedule "
                 + ", ".join(f"{e} epoch(s) at {s} px" for s, e in self.config.schedule))
        if self.state.epoch == 0 and self.state.epoch_step == 0 and self.val_set is not None:
            self._log_baseline()
        metrics: dict[str, Any] = {}
        while self.state.epoch < self.config.epochs:
            stopped = self.train_one_epoch()
            metrics = self.end_epoch(self.validate(), finished=not stopped)
            if stopped:
                self.log(f"time limit of {self.config.time_limit_min:g} min reached; to continue, run again with "
                         "--resume and a larger --time-limit-min (or none)")
                break
        self.run_log.close()
        return metrics

    def loader(self, split: str, size: int) -> Any:
        key = (split, size)
        if key not in self.loaders:
            self.loaders.clear()  # one stage at a time: free the previous stage's workers
            for s, dataset in (("train", self.train_set), ("val", self.val_set)):
                if dataset is None:  # --no-val
                    continue
                dataset.set_size(size)
                self.loaders[(s, size)] = make_loader(
                    dataset, batch_size=self.config.batch_size, shuffle=s == "train", workers=self.runtime.workers,
                    seed=self.config.seed, rank=self.dist.rank, world_size=self.dist.world_size,
                    pin_memory=self.dist.device.type == "cuda",
                    multiprocessing_context=self.runtime.multiprocessing_context)
        return self.loaders[key]

    def inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A loader batch as the network's inputs and targets: the one place where a batch becomes device
        tensors (normalised floats; training and validation both take it from here)."""
        return self.normalizer(batch)

    def train_one_epoch(self) -> bool:
        """Train the rest of the current epoch; True if the time limit stopped it early."""
        from tqdm import tqdm

        epoch, size = self.state.epoch, self.config.size_at(self.state.epoch)
        loader = self.loader("train", size)
        loader.sampler.limit = self.epoch_length()
        loader.sampler.set_epoch(epoch, start=self.state.epoch_step * self.config.batch_size)
        self.model.train()
        total_steps = self.steps_in_epoch()
        bar = tqdm(total=total_steps, initial=self.state.epoch_step,
                   disable=not (self.runtime.progress and self.dist.is_main),
                   desc=f"epoch {epoch + 1}/{self.config.epochs} @{size}px", unit="batch", dynamic_ncols=True,
                   mininterval=1.0)
        stopped = False
        tick, tick_samples = time.monotonic(), 0
        with self.net.join() if self.dist.enabled else nullcontext():
            for batch in loader:
                loss_value, n = self.train_step(batch)
                self.state.epoch_step += 1
                self.state.step += 1
                self.state.epoch_loss_sum += loss_value * n
                self.state.epoch_samples += n
                tick_samples += n
                bar.update(1)
                now = time.monotonic()
                if now - tick > 2.0:
                    bar.set_postfix(loss=f"{loss_value:.4f}", samples_s=f"{tick_samples / (now - tick):.0f}")
                    tick, tick_samples = now, 0
                if self._time_up():
                    stopped = True
                    break
                if now - self.last_checkpoint >= self.runtime.checkpoint_every_min * 60 and \
                        self.state.epoch_step < total_steps:
                    self.save()
        bar.close()
        return dist_utils.broadcast_flag(stopped, self.dist)

    def train_step(self, batch: dict[str, torch.Tensor]) -> tuple[float, int]:
        b = self.inputs(self.finish_batch(batch))  # placements composited here with --composite-on device
        with self.autocast():
            depth, logits = self.net(b["bg"], b["fg_bg"])
        loss, parts = total_loss(depth, logits, b["depth"], b["mask"], self.config.loss)
        if not math.isfinite(parts["loss"]):
            raise DepthmaskError(f"loss became {parts['loss']} at epoch {self.state.epoch + 1}, step "
                                 f"{self.state.step + 1} (depth {parts['depth']:.4g}, mask {parts['mask']:.4g}); "
                                 "lower --lr, or check the data with dm-stats --verify")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return parts["loss"], int(b["bg"].shape[0])

    def validate(self) -> dict[str, Any]:
        """The validation metrics at the current stage's size ({} with --no-val)."""
        if self.val_set is None:
            return {}
        size = self.config.size_at(min(self.state.epoch, self.config.epochs - 1))
        loader = self._val_loader(size)
        out = validation_metrics(self.model, loader, self.inputs, self.autocast, self.config.loss, self.dist)
        out["size"] = size
        return out

    def _val_loader(self, size: int) -> Any:
        """The val loader at `size`, over the first val_count() samples, in order."""
        loader = self.loader("val", size)
        loader.sampler.limit = self.val_count()
        loader.sampler.set_epoch(0)
        return loader

    def end_epoch(self, metrics: dict[str, Any], finished: bool) -> dict[str, Any]:
        """Log the epoch, move on when it is finished, write best.pt (when these weights are the best) and
        last.pt; return the epoch's figures (its mean train loss without validation)."""
        train_loss = self.state.epoch_loss_sum / max(self.state.epoch_samples, 1)
        if self.dist.is_main:
            self.run_log.epoch({"epoch": self.state.epoch + 1, "complete": finished, "step": self.state.step,
                                "train_loss": train_loss, "lr": self.optimizer.param_groups[0]["lr"],
                                "elapsed_s": round(self.training_time(), 1), **metrics})
        metrics = metrics or {"train_loss": train_loss}  # without validation, the run's figure is its loss
        if finished:
            self.state.epoch += 1
            self.state.epoch_step = 0
            self.state.epoch_loss_sum, self.state.epoch_samples = 0.0, 0
        if self._update_best(metrics):  # best.pt first: last.pt must never name a best that is not on disk
            self.save(BEST_NAME)
        self.save()
        return metrics

    def _update_best(self, metrics: dict[str, Any]) -> bool:
        """True when these weights become best.pt: the best validation metric so far, or without validation
        (--no-val) every epoch's."""
        if self.val_set is None:
            return True
        value = metrics.get(self.config.best_metric)
        if value is None or not math.isfinite(value):
            return False
        lower_is_better = BEST_METRICS[self.config.best_metric] == "min"
        if self.state.best is None or (value < self.state.best if lower_is_better else value > self.state.best):
            self.state.best = value
            return True
        return False

    def _log_baseline(self) -> None:
        """The constant-prediction floor over the whole val split: under torchrun every rank adds the sums of
        its share (rank 0 alone would see only 1/world_size of the split)."""
        size = self.config.size_at(0)
        loader = self._val_loader(size)
        depth_mean = float(self.train_set.stats()["depth"]["mean"][0])
        sums = constant_sums(((b["depth"].float() / DEPTH_MAX, b["mask"].float()) for b in loader), depth_mean)
        for m in sums:
            m.load_state_tensor(dist_utils.all_reduce_sum(m.state_tensor().cpu(), self.dist))
        baseline = constant_results(*sums, depth_mean)["best_constant"]
        if not self.dist.is_main:
            return
        from .evaluate import log_floors  # the floors dm-eval reports beside every figure, on the same val samples

        floors = log_floors(self.config.data, "val", size, self.log, samples=self.val_count())
        self.run_log.append({"baseline": "constant prediction (train mean depth, best constant mask)",
                             "size": size, **baseline,
                             "floors": {k: v for k, v in floors.items() if k != "constant"}})
        self.log(f"constant-prediction floor on val: depth RMSE {baseline['depth_rmse']:.4f}, "
                 f"mask IoU {baseline['mask_iou']:.4f}")

    # ---- checkpoints ---------------------------------------------------------------------------
    def save(self, name: str = LAST_NAME) -> None:
        if self.dist.is_main:
            self.state.elapsed_s += time.monotonic() - self.started
            self.started = time.monotonic()
            state = self._checkpoint_state()
            save_checkpoint(self.out / name, shipped_state(state) if name == BEST_NAME else state)
        self.last_checkpoint = time.monotonic()

    def _checkpoint_state(self) -> dict[str, Any]:
        return {
            "kind": KIND_RESUME,
            "created_by": f"depthmask {__version__}",
            "normalization": normalization_from_stats(self.train_set.stats()),
            "dataset": training_data_info(self.train_set.reader),
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "train_state": vars(self.state).copy(),
            "rng": {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        }


class _RunLog:
    """What rank 0 writes as the run goes: metrics.jsonl, curves.png, TensorBoard scalars (when tensorboard
    is installed) and the console line of each epoch. On the other ranks it writes nothing."""

    def __init__(self, out: Path, is_main: bool, log: Callable[[str], None]):
        self.out, self.log = out, log
        self.tb = _tensorboard(out) if is_main else None

    def append(self, row: dict[str, Any]) -> None:
        with open(self.out / METRICS_NAME, "a") as handle:
            handle.write(json.dumps(row) + "\n")

    def epoch(self, row: dict[str, Any]) -> None:
        """An epoch's row (its validation figures in it, if any): metrics.jsonl, the console, curves.png and
        TensorBoard at the row's step."""
        self.append(row)
        head = f"epoch {row['epoch']}{'' if row['complete'] else ' (partial)'}: train loss {row['train_loss']:.4f}"
        if "val_loss" in row:
            head += (f" | val loss {row['val_loss']:.4f}, depth RMSE {row['depth_rmse']:.4f}, delta1 "
                     f"{row['depth_delta1']:.3f}, mask IoU {row['mask_iou']:.4f}, Dice {row['mask_dice']:.4f}")
        self.log(head)
        write_curves(self.out / METRICS_NAME, self.out / CURVES_NAME)
        if self.tb is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key not in ("epoch", "complete"):
                    self.tb.add_scalar(key, value, row["step"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# ---- set-up helpers ------------------------------------------------------------------------------
def _run_config(config: TrainConfig, runtime: RuntimeOptions, dist: dist_utils.DistInfo,
                log: Callable[[str], None]) -> tuple[TrainConfig, dict[str, Any] | None]:
    """The configuration to run with, and the checkpoint state when resuming (the folder itself was
    checked and locked by open_run_folder)."""
    if not runtime.resume:
        return config, None
    out = Path(config.output)
    last = out / LAST_NAME
    if not last.is_file():
        raise DepthmaskError(f"{out}: nothing to resume (no {LAST_NAME}); run without --resume to start")
    state = load_checkpoint(last)
    saved = config_of(state, last)
    _refuse_changed_options(saved, config, runtime.resume_checks, last)
    if dist.is_main:
        remove_stale_temporaries(out)
    if saved.data != config.data:
        log(f"note: resuming with data {config.data} (the run started on {saved.data})")
    if saved.time_limit_min != config.time_limit_min:
        log("note: using the new --time-limit-min for the resumed run (it counts the run's training "
            "time over all its sessions)")
    train_state = state["train_state"]
    if train_state["epoch"] >= saved.epochs:
        log(f"{out}: the run is already complete ({saved.epochs} epoch(s), {train_state['step']} "
            "steps); nothing to do (to train longer, start a new run with --init-from "
            f"{out / BEST_NAME})")
    else:
        log(f"resuming {out} at epoch {train_state['epoch'] + 1}, batch {train_state['epoch_step']} "
            f"({describe_arch(saved.model)}, configuration from the checkpoint)")
    return replace(saved, data=config.data, output=config.output, time_limit_min=config.time_limit_min), state


def _set_up_backends(device: torch.device) -> None:
    if device.type != "cuda":
        # denormal floats appear as weights settle and make CPU kernels many times slower
        torch.set_flush_denormal(True)
    else:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def _check_schedule(config: TrainConfig) -> None:
    """Every stage's size must fit the stored images: found now, not after the earlier stages trained."""
    stored = open_reader(config.data).size[0]
    for size, _ in config.schedule:
        if size > stored:
            raise DepthmaskError(f"--schedule: stage size {size} is larger than the dataset's stored image size "
                                 f"{stored}; use sizes up to {stored}")


def _val_set(config: TrainConfig, train_set: DepthMaskDataset) -> DepthMaskDataset:
    if len(train_set.reader.split_indices("val")) == 0:
        raise DepthmaskError(f"{config.data}: the dataset's val split has no samples (a build too small to "
                             "hold out whole backgrounds and foregrounds?); build more samples, or train "
                             "without validation with --no-val (best.pt is then the last epoch's weights)")
    return DepthMaskDataset(config.data, "val", size=config.size_at(0))


def _make_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = model.parameters()
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay, nesterov=True)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def _tensorboard(out: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / TENSORBOARD_DIR))


_FREE_ON_RESUME = ("data", "output", "time_limit_min")


def _refuse_changed_options(saved: TrainConfig, given: TrainConfig, fields: tuple[str, ...] | None,
                            path: Path) -> None:
    """A resumed run continues with its checkpoint's configuration: an option that asks for another value is
    refused rather than silently ignored."""
    saved_values, given_values = saved.to_dict(), given.to_dict()
    names = fields if fields is not None else tuple(saved_values)
    changed = [n for n in names if n not in _FREE_ON_RESUME and n in saved_values
               and saved_values[n] != given_values.get(n)]
    if changed:
        shown = ", ".join(f"{n} (run: {_short(saved_values[n])}, given: {_short(given_values.get(n))})"
                          for n in changed[:3])
        raise DepthmaskError(f"{path}: --resume continues the run with the configuration saved in its checkpoint, "
                             f"but other values were given for {shown}; drop those options to resume, or start "
                             "a new run (--init-from takes its weights)")


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."

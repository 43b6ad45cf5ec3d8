"""`train`: the depth and mask networks on a depthmask dataset, resumable, on CPU, one GPU or many
(`torchrun`, DistributedDataParallel; rank 0 logs and checkpoints).

Run folder: last.pt (every epoch and every N minutes), best.pt (best validation metric),
metrics.jsonl (one line per epoch, the constant-prediction baseline first), config.json, and
TensorBoard scalars under tb/ when tensorboard is installed.
"""
from __future__ import annotations

import gc
import json
import math
import random
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch.nn.parallel import DistributedDataParallel

from pipeline import DatasetReader, DepthmaskError, __version__
from pipeline.format import write_json_atomic

from . import distributed as dist_utils
from .checkpoint import (BEST_NAME, KIND_RESUME, LAST_NAME, config_of, dataset_info, describe_arch, load_checkpoint,
                         load_model_state, normalization_from_stats, save_checkpoint, shipped_state)
from .config import BEST_METRICS, TrainConfig
from .data import BatchNormalizer, DepthMaskDataset, make_loader
from .losses import total_loss
from .metrics import SegDepthMetrics
from .models import build_model, count_parameters
from .precision import fast_path_default

METRICS_NAME = "metrics.jsonl"
CONFIG_NAME = "config.json"


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
    """Train (or resume) the run in config.output; return the last validation metrics."""
    dist = dist_utils.setup(runtime.device)
    trainer = None
    try:
        trainer = _Trainer(config, runtime, dist, log)
        result = trainer.run()
        dist_utils.barrier(dist)  # every rank leaves together
        return result
    finally:
        # the DDP model (its reducer holds the process group) must be gone before the group is: left to
        # the interpreter's exit, a rank could abort ("terminate called without an active exception")
        trainer = None
        gc.collect()
        dist_utils.teardown(dist)


class _Trainer:
    def __init__(self, config: TrainConfig, runtime: RuntimeOptions, dist: dist_utils.DistInfo,
                 log: Callable[[str], None]):
        self.runtime, self.dist = runtime, dist
        self.log = log if dist.is_main else (lambda m: None)
        self.out = Path(config.output)
        self.config, resume_state = self._prepare_run_folder(config)
        cuda = dist.device.type == "cuda"
        fast = fast_path_default(dist.device)
        self.amp = fast if runtime.amp is None else runtime.amp
        self.channels_last = fast if runtime.channels_last is None else runtime.channels_last
        if not cuda:
            # denormal floats appear as weights settle and make CPU kernels many times slower
            torch.set_flush_denormal(True)
        if cuda:
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self._seed_everything(self.config.seed)
        self._check_schedule()
        self.train_set = DepthMaskDataset(self.config.data, "train", size=self.config.size_at(0),
                                          augment=self.config.augment,
                                          seed=self.config.seed)
        self.val_set = DepthMaskDataset(self.config.data, "val", size=self.config.size_at(0))
        self._check_batch_size()
        self.normalizer = BatchNormalizer(self.train_set.stats(), dist.device, self.channels_last)
        self.model = build_model(self.config.model).to(dist.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if runtime.init_from and resume_state is None:
            load_model_state(self.model, load_checkpoint(runtime.init_from), runtime.init_from)
        self.optimizer = self._make_optimizer()
        self.started = time.monotonic()
        self.scheduler = self._make_scheduler()
        self.state = TrainState()
        if resume_state is not None:
            self._restore(resume_state)
        self.net = self.model
        if dist.enabled:
            self.net = DistributedDataParallel(self.model, device_ids=[dist.device.index] if cuda else None)
        if runtime.compile:
            self.net = torch.compile(self.net)
        self.loaders: dict[tuple[str, int], Any] = {}
        self.tb = self._tensorboard()
        self.last_checkpoint = time.monotonic()
        self.started = time.monotonic()

    # ---- set-up ------------------------------------------------------------------------------
    def _prepare_run_folder(self, config: TrainConfig) -> tuple[TrainConfig, dict[str, Any] | None]:
        last = self.out / LAST_NAME
        if self.runtime.resume:
            if not last.exists():
                raise DepthmaskError(f"{self.out}: nothing to resume (no {LAST_NAME}); run without --resume to start")
            state = load_checkpoint(last)
            saved = config_of(state, last)
            if self.dist.is_main:
                _remove_stale_temporaries(self.out)
            if saved.data != config.data:
                self.log(f"note: resuming with data {config.data} (the run started on {saved.data})")
            if saved.time_limit_min != config.time_limit_min:
                self.log("note: using the new --time-limit-min for the resumed run")
            self.log(f"resuming {self.out} at epoch {state['train_state']['epoch'] + 1}, "
                     f"batch {state['train_state']['epoch_step']} ({describe_arch(saved.model)}, "
                     "configuration from the checkpoint)")
            return replace(saved, data=config.data, output=config.output, time_limit_min=config.time_limit_min), state
        if last.exists() and not self.runtime.overwrite:
            raise DepthmaskError(f"{self.out}: holds a run already ({LAST_NAME}); pass --resume to continue it or "
                                 "--overwrite to start over")
        if self.out.exists() and not self.out.is_dir():
            raise DepthmaskError(f"{self.out}: output path is a file, expected a folder")
        if self.dist.is_main:
            if not self.out.parent.is_dir():
                raise DepthmaskError(f"{self.out}: parent folder {self.out.parent} does not exist")
            self.out.mkdir(exist_ok=True)
            for name in (LAST_NAME, BEST_NAME, METRICS_NAME):
                (self.out / name).unlink(missing_ok=True)
            shutil.rmtree(self.out / "tb", ignore_errors=True)
            _remove_stale_temporaries(self.out)
            write_json_atomic(self.out / CONFIG_NAME, config.to_dict())
        return config, None

    def _check_schedule(self) -> None:
        """Every stage's size must fit the stored images: found now, not after the earlier stages trained."""
        stored = DatasetReader(self.config.data).size[0]
        for size, _ in self.config.schedule:
            if size > stored:
                raise DepthmaskError(f"--schedule: stage size {size} is larger than the dataset's stored image size "
                                     f"{stored}; use sizes up to {stored}")

    def _check_batch_size(self) -> None:
        per_rank = math.ceil(len(self.train_set) / self.dist.world_size)
        if self.config.batch_size > per_rank:
            raise DepthmaskError(f"--batch-size {self.config.batch_size}: larger than the training split "
                                 f"({len(self.train_set)} samples{' over ' + str(self.dist.world_size) + ' ranks' if self.dist.enabled else ''})")

    def _seed_everything(self, seed: int) -> None:
        random.seed(seed)
        torch.manual_seed(seed)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        params = self.model.parameters()
        if self.config.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.config.lr, momentum=0.9, weight_decay=self.config.weight_decay,
                                   nesterov=True)
        return torch.optim.AdamW(params, lr=self.config.lr, weight_decay=self.config.weight_decay)

    def steps_in_epoch(self, epoch: int, rank: int | None = None) -> int:
        n = self.epoch_length()
        share = len(range(self.dist.rank if rank is None else rank, n, self.dist.world_size))
        return math.ceil(share / self.config.batch_size)

    def epoch_length(self) -> int:
        n = len(self.train_set)
        return min(n, self.config.epoch_samples) if self.config.epoch_samples else n

    def _make_scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        """A learning-rate factor driven by the run's progress: the share of steps done, or of the
        time limit spent when that comes first, so a time-limited run still warms up and anneals."""
        self.total_steps = max(1, sum(self.steps_in_epoch(e, rank=0) for e in range(self.config.epochs)))
        shape = self.config.lr_schedule

        def factor(_: int) -> float:
            p = self.progress()
            if shape == "onecycle":  # linear warm-up from lr/25 over 15%, then cosine down to lr/1e4
                if p < 0.15:
                    return 0.04 + 0.96 * p / 0.15
                return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * (p - 0.15) / 0.85))
            if shape == "cosine":
                return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * p))
            return 1.0

        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)

    def progress(self) -> float:
        """Share of the run done, identical on every rank: steps are counted as rank 0 counts them
        (the largest share), and the time share is used only in a single process, since each rank's
        clock differs and agreeing on it would need a collective every step."""
        if not hasattr(self, "state"):
            return 0.0
        done = (self._steps_before(self.state.epoch) + self.state.epoch_step) / self.total_steps
        if self.config.time_limit_min and not self.dist.enabled:
            spent = self.state.elapsed_s + time.monotonic() - self.started
            done = max(done, spent / (self.config.time_limit_min * 60))
        return min(1.0, done)

    def _steps_before(self, epoch: int) -> int:
        return sum(self.steps_in_epoch(e, rank=0) for e in range(epoch))

    def _tensorboard(self) -> Any:
        if not self.dist.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return SummaryWriter(str(self.out / "tb"))

    # ---- checkpoints -------------------------------------------------------------------------
    def _checkpoint_state(self) -> dict[str, Any]:
        return {
            "kind": KIND_RESUME,
            "created_by": f"depthmask {__version__}",
            "normalization": normalization_from_stats(self.train_set.stats()),
            "dataset": dataset_info(self.train_set.reader),
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "train_state": vars(self.state).copy(),
            "rng": {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        }

    def save(self, name: str = LAST_NAME) -> None:
        if self.dist.is_main:
            self.state.elapsed_s += time.monotonic() - self.started
            self.started = time.monotonic()
            state = self._checkpoint_state()
            save_checkpoint(self.out / name, shipped_state(state) if name == BEST_NAME else state)
        self.last_checkpoint = time.monotonic()

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

    # ---- loop --------------------------------------------------------------------------------
    def loader(self, split: str, size: int) -> Any:
        key = (split, size)
        if key not in self.loaders:
            self.loaders.clear()  # one stage at a time: free the previous stage's workers
            for s in ("train", "val"):
                dataset = self.train_set if s == "train" else self.val_set
                dataset.set_size(size)
                self.loaders[(s, size)] = make_loader(
                    dataset, batch_size=self.config.batch_size, shuffle=s == "train", workers=self.runtime.workers,
                    seed=self.config.seed, rank=self.dist.rank, world_size=self.dist.world_size,
                    pin_memory=self.dist.device.type == "cuda",
                    multiprocessing_context=self.runtime.multiprocessing_context)
        return self.loaders[key]

    def run(self) -> dict[str, Any]:
        params = count_parameters(self.model)
        self.log(f"training {describe_arch(self.config.model)} ({params / 1e6:.2f}M parameters) on "
                 f"{self.dist.device}{' x' + str(self.dist.world_size) if self.dist.enabled else ''}: "
                 f"{len(self.train_set):,} train / {self.val_count():,} val samples, schedule "
                 + ", ".join(f"{e} epoch(s) at {s} px" for s, e in self.config.schedule))
        if self.state.epoch == 0 and self.state.epoch_step == 0:
            self._log_baseline()
        metrics: dict[str, Any] = {}
        while self.state.epoch < self.config.epochs:
            stopped = self.train_epoch()
            metrics = self.validate()
            finished = not stopped
            self._record_epoch(metrics, finished)
            if finished:
                self.state.epoch += 1
                self.state.epoch_step = 0
                self.state.epoch_loss_sum, self.state.epoch_samples = 0.0, 0
            improved = self._update_best(metrics)
            self.save()
            if improved:
                self.save(BEST_NAME)
            if stopped:
                self.log(f"time limit of {self.config.time_limit_min:g} min reached; to continue, run again with "
                         "--resume and a larger --time-limit-min (or none)")
                break
        if self.tb is not None:
            self.tb.close()
        return metrics

    def val_count(self) -> int:
        return min(len(self.val_set), self.config.val_samples or len(self.val_set))

    def train_epoch(self) -> bool:
        """Train the rest of the current epoch; True if the time limit stopped it early."""
        from tqdm import tqdm

        epoch, size = self.state.epoch, self.config.size_at(self.state.epoch)
        loader = self.loader("train", size)
        sampler = loader.sampler
        sampler.limit = self.epoch_length()
        sampler.set_epoch(epoch, start=self.state.epoch_step * self.config.batch_size)
        self.model.train()
        total_steps = self.steps_in_epoch(epoch)
        bar = tqdm(total=total_steps, initial=self.state.epoch_step, disable=not (self.runtime.progress and self.dist.is_main),
                   desc=f"epoch {epoch + 1}/{self.config.epochs} @{size}px", unit="batch", dynamic_ncols=True,
                   mininterval=1.0)
        stopped = False
        tick, tick_samples = time.monotonic(), 0
        join = self.net.join() if self.dist.enabled else nullcontext()
        with join:
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
        b = self.normalizer(batch)
        autocast = torch.autocast(self.dist.device.type, dtype=torch.bfloat16) if self.amp else nullcontext()
        with autocast:
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

    def _time_up(self) -> bool:
        if self.config.time_limit_min is None:
            return False
        spent = self.state.elapsed_s + time.monotonic() - self.started
        return spent >= self.config.time_limit_min * 60

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        size = self.config.size_at(min(self.state.epoch, self.config.epochs - 1))
        loader = self.loader("val", size)
        loader.sampler.limit = self.val_count()
        loader.sampler.set_epoch(0)
        self.model.eval()
        metrics = SegDepthMetrics()
        loss_sum = torch.zeros(2, dtype=torch.float64)
        autocast = torch.autocast(self.dist.device.type, dtype=torch.bfloat16) if self.amp else nullcontext()
        for batch in loader:
            b = self.normalizer(batch)
            with autocast:
                depth, logits = self.model(b["bg"], b["fg_bg"])
            _, parts = total_loss(depth, logits, b["depth"], b["mask"], self.config.loss)
            n = b["bg"].shape[0]
            loss_sum += torch.tensor([parts["loss"] * n, n], dtype=torch.float64)
            metrics.update(depth, b["depth"], logits, b["mask"])
        metrics.load_state_tensor(dist_utils.all_reduce_sum(metrics.state_tensor().cpu(), self.dist))
        loss_sum = dist_utils.all_reduce_sum(loss_sum, self.dist)
        out = metrics.compute()
        out["val_loss"] = float(loss_sum[0] / loss_sum[1]) if loss_sum[1] > 0 else math.nan
        out["size"] = size
        return out

    def _log_baseline(self) -> None:
        """The constant-prediction floor over the whole val split: under torchrun every rank adds the sums of
        its share (rank 0 alone would see only 1/world_size of the split)."""
        loader = self.loader("val", self.config.size_at(0))
        loader.sampler.limit = self.val_count()
        loader.sampler.set_epoch(0)
        depth_mean = float(self.train_set.stats()["depth"]["mean"][0])
        floors = {0.0: SegDepthMetrics(), 1.0: SegDepthMetrics()}  # all background, all foreground
        for b in loader:  # as constant_baseline, with sums that can be all-reduced
            depth, mask = b["depth"].float() / 65535.0, b["mask"].float()
            pred = torch.full_like(depth, depth_mean, dtype=torch.float64)
            for constant, m in floors.items():
                m.update(pred, depth, torch.full_like(pred, 1.0 if constant else -1.0), mask)
        results = []
        for constant, m in floors.items():
            m.load_state_tensor(dist_utils.all_reduce_sum(m.state_tensor().cpu(), self.dist))
            results.append({**m.compute(), "depth_constant": depth_mean, "mask_constant": constant})
        baseline = max(results, key=lambda r: r["mask_iou"])
        if not self.dist.is_main:
            return
        self._append_metrics({"baseline": "constant prediction (train mean depth, best constant mask)",
                              "size": self.config.size_at(0), **baseline})
        self.log(f"constant-prediction floor on val: depth RMSE {baseline['depth_rmse']:.4f}, "
                 f"mask IoU {baseline['mask_iou']:.4f}")

    def _record_epoch(self, metrics: dict[str, Any], finished: bool) -> None:
        if not self.dist.is_main:
            return
        elapsed = self.state.elapsed_s + time.monotonic() - self.started
        row = {"epoch": self.state.epoch + 1, "complete": finished, "step": self.state.step,
               "train_loss": self.state.epoch_loss_sum / max(self.state.epoch_samples, 1),
               "lr": self.optimizer.param_groups[0]["lr"], "elapsed_s": round(elapsed, 1), **metrics}
        self._append_metrics(row)
        self.log(f"epoch {row['epoch']}{'' if finished else ' (partial)'}: train loss {row['train_loss']:.4f} | val "
                 f"loss {metrics['val_loss']:.4f}, depth RMSE {metrics['depth_rmse']:.4f}, delta1 "
                 f"{metrics['depth_delta1']:.3f}, mask IoU {metrics['mask_iou']:.4f}, Dice {metrics['mask_dice']:.4f}")
        if self.tb is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key not in ("epoch", "complete"):
                    self.tb.add_scalar(key, value, self.state.step)
            self.tb.flush()

    def _append_metrics(self, row: dict[str, Any]) -> None:
        with open(self.out / METRICS_NAME, "a") as handle:
            handle.write(json.dumps(row) + "\n")

    def _update_best(self, metrics: dict[str, Any]) -> bool:
        value = metrics.get(self.config.best_metric)
        if value is None or not math.isfinite(value):
            return False
        lower_is_better = BEST_METRICS[self.config.best_metric] == "min"
        if self.state.best is None or (value < self.state.best if lower_is_better else value > self.state.best):
            self.state.best = value
            return True
        return False


def _remove_stale_temporaries(folder: Path) -> None:
    """Checkpoint temporaries of a run killed while saving (the rename never happened)."""
    for stale in folder.glob(".*.pt.tmp-*"):
        stale.unlink(missing_ok=True)

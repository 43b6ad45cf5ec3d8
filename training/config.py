"""The run configuration: one frozen dataclass, saved whole in every checkpoint and taken back from
it on resume (the architecture of a resumed run is the checkpoint's, never the command line's)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from pipeline import DepthmaskError
from pipeline.checks import count, number, run_checks

from .augment import AugmentConfig
from .camera_effects import CameraEffects
from .loss_config import LossConfig
from .model_config import ARCHITECTURE_NAMES, ModelConfig

OPTIMIZERS = ("adamw", "sgd")
LR_SCHEDULES = ("onecycle", "cosine", "constant")
BEST_METRICS = {"val_loss": "min", "depth_rmse": "min", "mask_iou": "max"}


def parse_schedule(text: str) -> tuple[tuple[int, int], ...]:
    """'32:10,64:10' -> ((32, 10), (64, 10)): image size and epochs of each stage, in order."""
    stages = []
    for part in str(text).split(","):
        try:
            size, epochs = (int(v) for v in part.strip().split(":"))
        except ValueError:
            raise DepthmaskError(f"--schedule: expected SIZE:EPOCHS[,SIZE:EPOCHS...] such as 32:10,64:10, "
                                 f"got {text!r}") from None
        if size < 32 or size % 32 or epochs < 1:
            raise DepthmaskError(f"--schedule: stage {part.strip()!r}: size must be a multiple of 32 (>= 32) "
                                 "and epochs >= 1")
        stages.append((size, epochs))
    return tuple(stages)


PLACEMENT_MODES = ("fixed", "per-epoch")  # per-epoch: recipe datasets only (training.data)


@dataclass(frozen=True)
class TrainConfig:
    data: str
    output: str
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    schedule: tuple[tuple[int, int], ...] = ((32, 10), (64, 10))
    batch_size: int = 32
    epoch_samples: int | None = None  # samples per epoch (a fresh subset each epoch); None = whole split
    val_samples: int | None = None  # first N of the val split; None = all
    validate: bool = True  # False (--no-val): no validation; best.pt is then the last epoch's weights
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    lr_schedule: str = "onecycle"
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)  # None: no augmentation; True/False
    # are accepted and become AugmentConfig() / None
    camera: CameraEffects | None = None  # JPEG round trip, sensor noise, blur of the training split (off: None)
    placements: str = "fixed"  # recipe datasets: "per-epoch" draws fresh training placements every epoch
    seed: int = 0
    best_metric: str = "val_loss"
    time_limit_min: float | None = None  # stop (with a checkpoint and a validation) after this long;
    # the learning-rate schedule then runs on whichever comes first, steps or time

    def __post_init__(self) -> None:
        if isinstance(self.augment, bool):
            object.__setattr__(self, "augment", AugmentConfig() if self.augment else None)
        checks = [
            ("--batch-size", self.batch_size, count(self.batch_size), "a whole number >= 1"),
            ("--epoch-samples", self.epoch_samples, self.epoch_samples is None or count(self.epoch_samples),
             "a whole number >= 1"),
            ("--val-samples", self.val_samples, self.val_samples is None or count(self.val_samples),
             "a whole number >= 1"),
            ("--lr", self.lr, number(self.lr) and 0 < self.lr < 10, "a number in (0, 10)"),
            ("--weight-decay", self.weight_decay, number(self.weight_decay) and 0 <= self.weight_decay < 10,
             "a number in [0, 10)"),
            ("--optimizer", self.optimizer, self.optimizer in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
            ("--lr-schedule", self.lr_schedule, self.lr_schedule in LR_SCHEDULES, f"one of {', '.join(LR_SCHEDULES)}"),
            ("--best-metric", self.best_metric, self.best_metric in BEST_METRICS, f"one of {', '.join(BEST_METRICS)}"),
            ("--time-limit-min", self.time_limit_min, self.time_limit_min is None
             or (number(self.time_limit_min) and self.time_limit_min > 0), "a finite number of minutes > 0"),
            ("--placements", self.placements, self.placements in PLACEMENT_MODES,
             f"one of {', '.join(PLACEMENT_MODES)}"),
            ("--seed", self.seed, isinstance(self.seed, int) and not isinstance(self.seed, bool)
             and 0 <= self.seed < 2**32, "a whole number in [0, 2**32)"),
        ]
        run_checks(checks)
        if not self.schedule:
            raise DepthmaskError("--schedule: needs at least one SIZE:EPOCHS stage")

    @property
    def epochs(self) -> int:
        return sum(e for _, e in self.schedule)

    def size_at(self, epoch: int) -> int:
        for size, epochs in self.schedule:
            if epoch < epochs:
                return size
            epoch -= epochs
        return self.schedule[-1][0]

    def to_dict(self) -> dict[str, Any]:
        """Plain types only: it travels inside checkpoints loaded with weights_only=True."""
        out = dataclasses.asdict(self)
        out["schedule"] = [list(s) for s in self.schedule]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        data = dict(data)
        data["model"] = ModelConfig(**data["model"])
        data["loss"] = LossConfig(**data["loss"])
        if isinstance(data.get("augment"), dict):
            data["augment"] = AugmentConfig(**data["augment"])
        elif data.get("augment") is True:  # a run from before augmentation was configurable: its geometry then
            data["augment"] = AugmentConfig(min_scale=0.8, max_rotation_deg=5.0)
        if isinstance(data.get("camera"), dict):
            data["camera"] = CameraEffects(**data["camera"])
        data["schedule"] = tuple(tuple(s) for s in data["schedule"])
        return cls(**data)


def check_architecture(name: str, option: str) -> str:
    if name not in ARCHITECTURE_NAMES:
        raise DepthmaskError(f"{option}: unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURE_NAMES)}")
    return name

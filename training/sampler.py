"""The order of samples: one permutation per (seed, epoch), shared across ranks, resumable mid-epoch."""
from __future__ import annotations

from typing import Iterator

import numpy as np
from torch.utils.data import Sampler


class EpochSampler(Sampler):
    """Each epoch: a permutation drawn from (seed, epoch), split across ranks so every sample is seen
    exactly once per epoch over all ranks (no padding, no duplicates; ranks may differ by one
    sample). Yields (epoch, position) so workers know the epoch. `start` skips samples already
    consumed, for resuming mid-epoch."""

    def __init__(self, length: int, *, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1,
                 limit: int | None = None):
        self.length, self.shuffle, self.seed = length, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.limit = limit  # use only the first `limit` of each epoch's order (a fresh subset per epoch)
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def positions(self) -> np.ndarray:
        if self.shuffle:
            order = np.random.default_rng([self.seed, 0xE90C, self.epoch]).permutation(self.length)
        else:
            order = np.arange(self.length)
        return order[: self.epoch_length][self.rank :: self.world_size]

    @property
    def epoch_length(self) -> int:
        return self.length if self.limit is None else min(self.limit, self.length)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for position in self.positions()[self.start :]:
            yield self.epoch, int(position)

    def __len__(self) -> int:
        return max(0, len(range(self.rank, self.epoch_length, self.world_size)) - self.start)

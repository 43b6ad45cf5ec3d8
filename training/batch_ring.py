"""Batches sent from DataLoader workers through a few reused shared-memory slots (`BatchRing`).

torch sends every batch a worker makes in a new shared-memory file, and the kernel faults in and zeroes
each of its 4 KiB pages when the worker first writes it: ~4-5 µs a page on the 2-core machines the
benchmarks run on, ~0.5 ms for one 224 px sample (bg, fg_bg, mask, depth: 110 pages), as long as compositing
a recipe sample takes. Here a worker keeps `slots` shared buffers and writes batch after batch into them
in place; the process that receives a batch copies it out into ordinary memory (`RingBatch.take`, which
malloc reuses from batch to batch: ~30 µs a sample) and hands the slot back. So the batches the user gets
are their own, as torch's are: keeping one does not pin a slot, and nothing is ever overwritten under them.

Ownership of a slot: the worker's while its state is FREE; SENT from when the worker returns a batch in it
until the receiver has copied the batch out, or dropped it without taking it (torch discards the
batches in flight when an epoch is cut short: `RingBatch.__del__` frees their slots). The DataLoader has at
most `prefetch_factor` batches of a worker in flight, and the receiver frees a slot before it asks the
worker for more than one further batch, so `prefetch_factor + 2` slots never make a worker wait; a worker
that finds no free slot for `WAIT_LIMIT_S` says so instead of waiting for ever.

Only loaders made by training.data.make_loader use a ring (their worker_init turns it on): a plain
torch DataLoader over a DepthMaskDataset gets torch's ordinary batches.
"""
from __future__ import annotations

import math
import os
import time
from collections import OrderedDict
from typing import Any, Callable, Hashable

import numpy as np
import torch

from pipeline import DepthmaskError

ALIGN = 64  # bytes: the slot's state word, then each field, start on a cache line
FREE, SENT = 0, 1
WAIT_LIMIT_S = 300.0

# (name, shape, numpy dtype) of each field of a batch, in slot order
Layout = tuple[tuple[str, tuple[int, ...], Any], ...]


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _offsets(layout: Layout) -> tuple[list[int], int]:
    """Byte offset of each field in a slot (the state word first), and the slot's size."""
    offsets, at = [], ALIGN
    for _, shape, dtype in layout:
        offsets.append(at)
        at += _aligned(math.prod(shape) * np.dtype(dtype).itemsize)
    return offsets, at


def _view(storage: torch.UntypedStorage, offset: int, shape: tuple[int, ...], dtype: Any) -> torch.Tensor:
    """A tensor of `shape` and numpy `dtype` on `storage` from byte `offset` (a multiple of the item size)."""
    dt = torch.from_numpy(np.empty(0, dtype)).dtype
    return torch.empty(0, dtype=dt).set_(storage, offset // dt.itemsize, shape)


class RingBatch:
    """A batch in a ring slot, as it crosses from the worker to the receiver: the slot's storage, the
    layout, and `arrange` (a picklable function that makes the batch's tensors into what the dataset
    returns). `take()` gives that, copied out, and frees the slot."""

    def __init__(self, storage: torch.UntypedStorage, layout: Layout, arrange: Callable[[dict], Any],
                 key: Hashable = None):
        self.storage, self.layout, self.arrange, self.key = storage, layout, arrange, key
        self._received = False  # the worker's own object never frees the slot

    def __getstate__(self) -> dict[str, Any]:
        return {"storage": self.storage, "layout": self.layout, "arrange": self.arrange, "key": self.key}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._received = True

    def take(self, pin: bool = False) -> Any:
        """The batch copied out of the slot into new tensors (page-locked with `pin`), then the slot freed."""
        if not self._received:
            raise RuntimeError("RingBatch.take: only the process that received the batch takes it")
        offsets, _ = _offsets(self.layout)
        out = {}
        for (name, shape, dtype), offset in zip(self.layout, offsets):
            source = _view(self.storage, offset, shape, dtype)
            out[name] = torch.empty(shape, dtype=source.dtype, pin_memory=pin).copy_(source)
        self._free()
        return self.arrange(out)

    def pin_memory(self) -> Any:
        """torch's pin-memory thread calls this: the batch taken into page-locked memory."""
        return self.take(pin=True)

    def _free(self) -> None:
        if self._received and self.storage is not None:
            _view(self.storage, 0, (1,), np.int64).fill_(FREE)
            self.storage = None

    def __del__(self) -> None:
        try:
            self._free()
        except Exception:  # interpreter shutdown: the slot's memory goes with the worker
            pass


class ReceivedSlots:
    """The receiving side's memory of the slots it has mapped: the storages of the last `capacity` slots (a
    loader's workers x slots) stay referenced, so when a slot arrives again torch's sharing cache returns the
    same mapping, instead of mapping the slot anew and faulting its pages in for every batch (~70 us a 224 px
    sample here). Owned by the loader: the mappings go with it."""

    def __init__(self, capacity: int):
        self.capacity = max(1, capacity)
        self._storages: OrderedDict[Hashable, torch.UntypedStorage] = OrderedDict()

    def take(self, batch: Any) -> Any:
        """What the loader yields: a RingBatch taken (its slot remembered), anything else as it is."""
        if not isinstance(batch, RingBatch):
            return batch
        self._storages[batch.key] = batch.storage
        self._storages.move_to_end(batch.key)
        while len(self._storages) > self.capacity:
            self._storages.popitem(last=False)
        return batch.take()


class BatchRing:
    """A worker's slots. `slot(layout)` gives numpy arrays to fill in a free slot (made, or made again
    larger, when the layout needs more room), and `send(arrange)` the RingBatch of the slot filled last."""

    def __init__(self, slots: int):
        if slots < 1:
            raise ValueError(f"BatchRing: slots must be >= 1, got {slots}")
        self.slots = slots
        self._storages: list[torch.UntypedStorage] = []
        self._states: list[np.ndarray] = []
        self._next = 0
        self._generation = 0  # a slot's key: (worker pid, generation, slot)
        self._filling: tuple[torch.UntypedStorage, np.ndarray, Layout, tuple] | None = None

    def _make(self, nbytes: int) -> None:
        self._storages = [torch.UntypedStorage._new_shared(nbytes) for _ in range(self.slots)]
        self._states = [_view(s, 0, (1,), np.int64).numpy() for s in self._storages]
        for state in self._states:
            state[0] = FREE
        self._next = 0
        self._generation += 1

    def _free_slot(self) -> int:
        deadline = None
        while True:
            for _ in range(self.slots):
                k, self._next = self._next, (self._next + 1) % self.slots
                if self._states[k][0] == FREE:
                    return k
            deadline = deadline or time.monotonic() + WAIT_LIMIT_S
            if time.monotonic() > deadline:
                raise DepthmaskError(f"DataLoader worker: none of its {self.slots} batch slots was handed back in "
                                     f"{WAIT_LIMIT_S:.0f} s; batches must be taken through the loader's iterator "
                                     "(training.batch_ring.ReceivedSlots.take)")
            time.sleep(0.001)

    def slot(self, layout: Layout) -> dict[str, np.ndarray]:
        offsets, nbytes = _offsets(layout)
        if not self._storages or self._storages[0].nbytes() < nbytes:
            self._make(nbytes)
        k = self._free_slot()
        storage = self._storages[k]
        self._filling = (storage, self._states[k], layout, (os.getpid(), self._generation, k))
        return {name: _view(storage, offset, shape, dtype).numpy()
                for (name, shape, dtype), offset in zip(layout, offsets)}

    def send(self, arrange: Callable[[dict], Any]) -> RingBatch:
        """The slot filled last as a RingBatch, marked SENT (a slot whose filling failed stays FREE)."""
        storage, state, layout, key = self._filling
        self._filling = None
        state[0] = SENT
        return RingBatch(storage, layout, arrange, key)

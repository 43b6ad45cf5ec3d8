"""Batches sent from DataLoader workers through a few reused shared-memory slots (`BatchRing`).

torch sends every batch a worker makes in a new shared-memory file, and the kernel faults in and zeroes
each of its 4 KiB pages when the worker first writes it: ~4-5 µs a page on the 2-core machines the
benchmarks run on, ~0.5 ms for one 224 px sample (bg, fg_bg, mask, depth: 110 pages), as long as compositing
a recipe sample takes. Here a worker keeps `slots` shared buffers and writes batch after batch into them
in place. The receiver's tensors are views of the slot (`RingBatch.take`): nothing is copied, and the slot
goes back to its worker when the last tensor that views it is gone (`_SlotLease`, numpy's base of every
field, is what the tensors keep alive: slices and views included). A batch the user keeps keeps its slot;
a worker that finds none of its slots free sends its batch in new shared memory instead, as torch does, so
keeping batches never makes a worker wait and nothing is ever written under a live tensor. With pinned
memory (`RingBatch.pin_memory`, torch's pin-memory thread) the batch is copied into page-locked memory and
the slot freed at once.

Ownership of a slot: the worker's while its state is FREE; SENT from when the worker returns a batch in it
until the receiver's last view of it is gone, or the receiver dropped it without taking it (torch discards
the batches in flight when an epoch is cut short: `RingBatch.__del__` frees their slots). The DataLoader has
at most `prefetch_factor` batches of a worker in flight, so with `prefetch_factor + 2` slots a training loop
that holds a batch or two at a time has its batches in the ring.

Only loaders made by training.data.make_loader use a ring (their worker_init turns it on): a plain
torch DataLoader over a DepthMaskDataset gets torch's ordinary batches.
"""
from __future__ import annotations

import math
import os
from collections import OrderedDict
from typing import Any, Callable, Hashable

import numpy as np
import torch

ALIGN = 64  # bytes: the slot's state word, then each field, start on a cache line
FREE, SENT = 0, 1

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


def _slot_bytes(storage: torch.UntypedStorage) -> np.ndarray:
    """A slot's bytes as a uint8 numpy array (its state word is the first 8)."""
    return torch.empty(0, dtype=torch.uint8).set_(storage, 0, (storage.nbytes(),)).numpy()


def _state(storage: torch.UntypedStorage) -> np.ndarray:
    """The slot's state word (FREE / SENT), a 1-element int64 view."""
    return _slot_bytes(storage)[:8].view(np.int64)


def _fields(slot: np.ndarray, layout: Layout) -> dict[str, np.ndarray]:
    """Each field of `layout` as a numpy view of the slot's bytes `slot`: the one place a slot is laid out."""
    offsets, _ = _offsets(layout)
    return {name: slot[offset:offset + math.prod(shape) * np.dtype(dtype).itemsize].view(dtype).reshape(shape)
            for (name, shape, dtype), offset in zip(layout, offsets)}


class _SlotLease:
    """A received slot's bytes as numpy sees them (`np.asarray(lease)`): every field of a taken batch is a view
    of that array, so the lease lives as long as any tensor on the slot does, and its end frees the slot (in
    the process that took it: a forked child's copy of the lease frees nothing)."""

    def __init__(self, storage: torch.UntypedStorage):
        self.storage, self.pid = storage, os.getpid()
        self.__array_interface__ = {"version": 3, "shape": (storage.nbytes(),), "typestr": "|u1",
                                    "data": (storage.data_ptr(), False)}

    def __del__(self) -> None:
        try:
            if os.getpid() == self.pid:
                _state(self.storage)[0] = FREE
        except Exception:  # interpreter shutdown: the slot's memory goes with the worker
            pass


class RingBatch:
    """A batch in a ring slot, as it crosses from the worker to the receiver: the slot's storage, the
    layout, and `arrange` (a picklable function that makes the batch's tensors into what the dataset
    returns). `take()` gives that, as views of the slot; `key` names a ring slot (None: a one-off slot)."""

    def __init__(self, storage: torch.UntypedStorage, layout: Layout, arrange: Callable[[dict], Any],
                 key: Hashable = None):
        self.storage, self.layout, self.arrange, self.key = storage, layout, arrange, key
        self._receiver: int | None = None  # pid of the process that received it: only it frees the slot

    def __getstate__(self) -> dict[str, Any]:
        return {"storage": self.storage, "layout": self.layout, "arrange": self.arrange, "key": self.key}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._receiver = os.getpid()  # not the worker's own object, nor a child forked later

    def take(self, pin: bool = False) -> Any:
        """The batch's tensors: views of the slot, which goes back to the worker when the last of them is gone;
        with `pin`, copied into new page-locked tensors and the slot freed at once."""
        if self._receiver != os.getpid():
            raise RuntimeError("RingBatch.take: only the process that received the batch takes it")
        if self.storage is None:
            raise RuntimeError("RingBatch.take: the batch was taken already")
        if pin:
            sources = {name: torch.from_numpy(a) for name, a in _fields(_slot_bytes(self.storage), self.layout).items()}
            out = {name: torch.empty_like(t, pin_memory=True).copy_(t) for name, t in sources.items()}
            self._free()
        else:
            fields = _fields(np.asarray(_SlotLease(self.storage)), self.layout)
            self.storage = None  # the lease frees the slot now
            out = {name: torch.from_numpy(a) for name, a in fields.items()}
        return self.arrange(out)

    def pin_memory(self) -> Any:
        """torch's pin-memory thread calls this: the batch taken into page-locked memory."""
        return self.take(pin=True)

    def _free(self) -> None:
        if self._receiver == os.getpid() and self.storage is not None:
            _state(self.storage)[0] = FREE
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
        self.one_off = 0  # batches that came in a one-off slot (their worker's ring was all in use)

    def take(self, batch: Any) -> Any:
        """What the loader yields: a RingBatch taken (its ring slot remembered), anything else as it is."""
        if not isinstance(batch, RingBatch):
            return batch
        if batch.key is None:
            self.one_off += 1
        else:
            self._storages[batch.key] = batch.storage
            self._storages.move_to_end(batch.key)
            while len(self._storages) > self.capacity:
                self._storages.popitem(last=False)
        return batch.take()


class BatchRing:
    """A worker's slots. `slot(layout)` gives numpy arrays to fill in a free slot (made, or made again
    larger, when the layout needs more room; a one-off slot when all are in use), and `send(arrange)` the
    RingBatch of the slot filled last."""

    def __init__(self, slots: int):
        if slots < 1:
            raise ValueError(f"BatchRing: slots must be >= 1, got {slots}")
        self.slots = slots
        self._storages: list[torch.UntypedStorage] = []
        self._states: list[np.ndarray] = []
        self._next = 0
        self._generation = 0  # a slot's key: (worker pid, generation, slot)
        self._filling: tuple[torch.UntypedStorage, np.ndarray, Layout, Hashable] | None = None

    def _make(self, nbytes: int) -> None:
        self._storages = [torch.UntypedStorage._new_shared(nbytes) for _ in range(self.slots)]
        self._states = [_state(s) for s in self._storages]
        for state in self._states:
            state[0] = FREE
        self._next = 0
        self._generation += 1

    def _free_slot(self) -> int | None:
        for _ in range(self.slots):
            k, self._next = self._next, (self._next + 1) % self.slots
            if self._states[k][0] == FREE:
                return k
        return None

    def slot(self, layout: Layout) -> dict[str, np.ndarray]:
        _, nbytes = _offsets(layout)
        if not self._storages or self._storages[0].nbytes() < nbytes:
            self._make(nbytes)
        k = self._free_slot()
        if k is None:  # the receiver holds every slot: new shared memory for this batch, as torch would
            storage = torch.UntypedStorage._new_shared(nbytes)
            self._filling = (storage, _state(storage), layout, None)
        else:
            storage = self._storages[k]
            self._filling = (storage, self._states[k], layout, (os.getpid(), self._generation, k))
        return _fields(_slot_bytes(storage), layout)

    def send(self, arrange: Callable[[dict], Any]) -> RingBatch:
        """The slot filled last as a RingBatch, marked SENT (a slot whose filling failed stays FREE)."""
        storage, state, layout, key = self._filling
        self._filling = None
        state[0] = SENT
        return RingBatch(storage, layout, arrange, key)

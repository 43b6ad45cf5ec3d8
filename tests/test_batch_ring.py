"""training.batch_ring through the real DataLoader: workers write batches into a few reused shared-memory
slots and the loader yields tensors on the slot, which goes back to its worker when the last of them is
gone. The batches equal the in-process ones and stay as they were however long the consumer keeps them
(or any view of them): a worker whose slots are all held sends a one-off batch instead of waiting. An
epoch cut short hands its discarded slots back."""
from __future__ import annotations

import gc
import os

import pytest
import torch

from training import batch_ring
from training.augment import AugmentConfig
from training.batch_ring import BatchRing, ReceivedSlots, RingBatch
from training.data import DepthMaskDataset, collate_batches, make_loader

pytestmark = pytest.mark.usefixtures("one_thread")


def _reference(ds: DepthMaskDataset, epoch: int, batch: dict) -> dict:
    position = {int(i): p for p, i in enumerate(ds.indices)}
    return ds.__getitems__([(epoch, position[int(i)]) for i in batch["index"]])


def test_kept_batches_stay_equal_to_the_in_process_ones(tiny_dataset):
    """Every batch of two epochs is kept (many more than the 6 slots a worker has): none changes when its
    slot is written again, and each equals what this process makes for the same (epoch, sample)."""
    ds = DepthMaskDataset(tiny_dataset, "train", size=48, augment=AugmentConfig(), seed=5)
    loader = make_loader(ds, batch_size=4, shuffle=True, workers=2, seed=1)
    kept = []
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        kept += [(epoch, batch) for batch in loader]
    mapped = loader.received_slots._storages
    assert len({key[:2] for key in mapped}) == 2 and len(mapped) == 2 * 6  # each worker's slots, mapped once
    assert loader.received_slots.one_off == len(kept) - 2 * 6  # the rest came in one-off slots
    del loader
    assert len(kept) > 2 * 6  # more batches than the two workers' slots
    for epoch, batch in kept:
        assert isinstance(batch, dict)
        assert batch["bg"].is_contiguous(memory_format=torch.channels_last)
        for key, value in _reference(ds, epoch, batch).items():
            assert torch.equal(batch[key], value), (epoch, key)


def test_the_ring_and_torchs_batches_are_the_same(tiny_dataset):
    ds = DepthMaskDataset(tiny_dataset, "train", size=32, augment=AugmentConfig(), seed=2)
    runs = []
    for ring in (True, False):
        loader = make_loader(ds, batch_size=8, shuffle=True, workers=2, seed=3, batch_ring=ring)
        runs.append(list(loader))
        del loader
    assert len(runs[0]) == len(runs[1])
    for a, b in zip(*runs):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_epochs_cut_short_hand_their_slots_back(tiny_dataset):
    """Breaking out of an epoch leaves batches in flight that torch discards: their slots come back when
    they are dropped, so the next epochs' batches all come through the ring (lost slots would make the
    workers send one-off batches)."""
    ds = DepthMaskDataset(tiny_dataset, "train", size=32)
    loader = make_loader(ds, batch_size=2, shuffle=True, workers=2, multiprocessing_context="fork")
    for epoch in range(4):
        loader.sampler.set_epoch(epoch)
        for _ in zip(range(1), loader):
            pass
    loader.sampler.set_epoch(4)
    seen = []
    for batch in loader:  # one batch held at a time
        seen += [int(i) for i in batch["index"]]
        del batch
    assert sorted(seen) == sorted(int(i) for i in ds.indices)
    assert loader.received_slots.one_off == 0
    del loader


def _received(sent: RingBatch) -> RingBatch:
    """`sent` as the receiving process gets it (unpickled)."""
    batch = RingBatch.__new__(RingBatch)
    batch.__setstate__(sent.__getstate__())
    return batch


def test_a_slot_comes_back_when_its_last_view_is_gone():
    """The batch's tensors, and a slice of one kept after they are dropped, hold the slot; then it is free."""
    ring = BatchRing(1)
    arrays = ring.slot((("x", (4,), "uint8"), ("y", (2,), "float32")))
    arrays["x"][:], arrays["y"][:] = [1, 2, 3, 4], [0.5, 2.5]
    batch = _received(ring.send(lambda t: t))
    taken = batch.take()
    with pytest.raises(RuntimeError, match="taken already"):
        batch.take()
    del batch
    part = taken["y"][1:]
    assert taken["x"].tolist() == [1, 2, 3, 4]
    del taken
    assert ring._states[0][0] == batch_ring.SENT  # the slice still views the slot
    one_off = ring.slot((("x", (4,), "uint8"),))  # all in use: a one-off slot, not written under the slice
    one_off["x"][:] = 9
    assert ring.send(lambda t: t).key is None
    assert part.tolist() == [2.5]
    del part
    assert ring._states[0][0] == batch_ring.FREE
    ring.slot((("x", (4,), "uint8"),))
    assert ring.send(lambda t: t).key is not None


def test_a_forked_child_dropping_its_copy_of_a_batch_frees_nothing():
    """A process forked while the batch is alive (a new DataLoader's workers) inherits its lease; the child
    dropping it must not hand the slot back under the parent's tensors."""
    ring = BatchRing(1)
    ring.slot((("x", (2,), "uint8"),))
    taken = _received(ring.send(lambda t: t)).take()
    pid = os.fork()
    if pid == 0:  # the child: drop the batch, report the slot's state
        del taken
        gc.collect()
        os._exit(0 if ring._states[0][0] == batch_ring.SENT else 1)
    assert os.waitpid(pid, 0)[1] == 0
    assert ring._states[0][0] == batch_ring.SENT
    del taken
    assert ring._states[0][0] == batch_ring.FREE


def test_pinned_batches_are_copies_and_free_the_slot_at_once():
    if not torch.cuda.is_available():  # page-locked memory needs a CUDA driver
        pytest.skip("pin_memory needs CUDA")
    ring = BatchRing(1)
    ring.slot((("x", (3,), "uint8"),))["x"][:] = [7, 8, 9]
    pinned = _received(ring.send(lambda t: t)).pin_memory()
    assert pinned["x"].is_pinned() and pinned["x"].tolist() == [7, 8, 9]
    assert ring._states[0][0] == batch_ring.FREE


def test_a_consumer_that_keeps_raw_batches_gets_one_off_slots(tiny_dataset):
    """torch's own iterator yields RingBatch objects; holding them all never makes the worker wait."""
    ds = DepthMaskDataset(tiny_dataset, "train", size=32)
    loader = make_loader(ds, batch_size=1, shuffle=False, workers=1, multiprocessing_context="fork")
    raw = torch.utils.data.DataLoader.__iter__(loader)
    held = list(raw)
    assert len(held) == len(ds) and all(isinstance(batch, RingBatch) for batch in held)
    assert sum(batch.key is None for batch in held) == len(ds) - 6  # the worker's 6 slots, then one-offs
    received = ReceivedSlots(6)
    assert [int(received.take(batch)["index"]) for batch in held] == [int(i) for i in ds.indices]
    del raw, loader, held


def test_a_plain_torch_loader_gets_ordinary_batches(tiny_dataset):
    """Only make_loader's workers use a ring: the dataset in anybody's DataLoader returns plain tensors."""
    ds = DepthMaskDataset(tiny_dataset, "val", size=32)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=1, collate_fn=collate_batches)
    batch = next(iter(loader))  # the dataset's __getitems__ makes the whole batch
    assert isinstance(batch, dict) and isinstance(batch["bg"], torch.Tensor)
    assert all(torch.equal(v, ds.__getitems__([0, 1, 2, 3])[k]) for k, v in batch.items())


def test_only_the_receiver_takes_a_batch_and_slots_must_exist():
    ring = BatchRing(2)
    arrays = ring.slot((("x", (3,), "uint8"),))
    arrays["x"][:] = [1, 2, 3]
    batch = ring.send(lambda t: t)
    with pytest.raises(RuntimeError, match="only the process that received"):
        batch.take()
    taken = _received(batch).take()
    assert taken["x"].tolist() == [1, 2, 3]
    del taken
    assert ring._states[0][0] == batch_ring.FREE  # the slot came back
    with pytest.raises(ValueError, match="slots must be >= 1"):
        BatchRing(0)


def test_the_receiver_remembers_the_last_slots_it_mapped():
    ring = BatchRing(3)
    received = ReceivedSlots(capacity=2)
    keys = []
    for value in range(5):
        ring.slot((("x", (1,), "uint8"),))["x"][0] = value
        batch = _received(ring.send(lambda t: t))
        keys.append(batch.key)
        assert received.take(batch)["x"].item() == value
    assert [k[2] for k in keys] == [0, 1, 2, 0, 1]  # slots reused in turn, each freed by its take
    assert list(received._storages) == keys[3:]  # the two most recent slots
    assert received.take({"x": 1}) == {"x": 1}  # anything else passes through

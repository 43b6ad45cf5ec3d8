"""A sample decoded the straightforward way, through the reader's codecs (BGR): the reference that
DepthMaskDataset's batch path (RGB, decoded straight into the batch) is tested against."""
from __future__ import annotations

import cv2
import numpy as np

from pipeline import DepthmaskError
from training.data import DepthMaskDataset, decode_reduction
from training.transforms import (augment_matrix, augment_uniforms, colour_matrices, photometric, resize_sample,
                                warp_sample)


def load_sample(dataset: DepthMaskDataset, position: int, epoch: int = 0) -> tuple[np.ndarray, ...]:
    """One sample as HWC numpy arrays (bg, fg_bg BGR uint8; mask 0/1 uint8; depth uint16) at the dataset's size,
    augmented as the dataset augments it."""
    reader, size = dataset.reader, dataset.size
    index = int(dataset.indices[position])
    record = reader.record(index)
    codecs = reader.codecs
    try:
        fg_bg = codecs.fg_bg.decode(record["fg_bg"], decode_reduction(reader.size[0], size))
        mask = codecs.mask.decode(record["mask"])
        depth = codecs.depth.decode(record["depth"], reader.background(int(record["bg"]))[1],
                                    (int(record["x"]), int(record["y"])))
    except ValueError as exc:  # DecodeError: the record's fields are checked by the reader
        raise DepthmaskError(f"{reader.where(index)}: {exc}") from None
    mask = (mask >= 128).astype(np.uint8)
    bg = reader.background(int(record["bg"]))[0]
    if bg.shape[0] != size:
        bg = cv2.resize(bg, (size, size), interpolation=cv2.INTER_AREA)
    if dataset.augment is None:
        return resize_sample(bg, fg_bg, mask, depth, size)
    u = augment_uniforms(dataset.seed, [epoch], [index])
    if mask.shape[0] != size:
        _, fg_bg, mask, depth = resize_sample(bg, fg_bg, mask, depth, size)
    elif fg_bg.shape[0] != size:
        fg_bg = cv2.resize(fg_bg, (size, size), interpolation=cv2.INTER_AREA)
    m = augment_matrix(u[0], size, dataset.augment)
    bg, fg_bg, mask, depth = warp_sample(m, bg, fg_bg, mask, depth, size)
    bg, fg_bg = photometric(colour_matrices(u, dataset.augment, rgb=False)[0], bg, fg_bg)
    return bg, fg_bg, mask, depth

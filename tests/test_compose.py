"""pipeline.compose: integer alpha compositing, mask from alpha, composited depth, flips."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.compose import (
    ALPHA_MASK_THRESHOLD,
    MASK_ON,
    composite,
    depth_to_uint16,
    divide_by_255_rounded,
    object_depth,
    paste_depth,
    paste_mask,
    pasted_depth_sums,
    prepare_foreground,
)


def _random_fg(rng: np.random.Generator, h: int = 23, w: int = 31) -> np.ndarray:
    fg = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    fg[h // 2, w // 2, 3] = 255  # at least one opaque pixel
    return fg


def test_divide_by_255_rounded_exact_over_whole_range():
    v = np.arange(0, 65026, dtype=np.int64)
    got = divide_by_255_rounded(v.astype(np.uint16))
    want = (2 * v + 255) // 510  # floor(v / 255 + 1/2): round half up, in exact integers
    assert got.dtype == np.uint8
    assert np.array_equal(got.astype(np.int64), want)
    assert int(got[0]) == 0 and int(got[-1]) == 255
    # the halfway points really round up (v / 255 = k + 0.5 happens only for odd multiples of 127.5)
    assert int(divide_by_255_rounded(np.array([127], np.uint16))[0]) == 0  # 0.498
    assert int(divide_by_255_rounded(np.array([128], np.uint16))[0]) == 1  # 0.502


def test_composite_matches_float_reference_and_keeps_bg_outside_box():
    rng = np.random.default_rng(1)
    bg = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    bgra = _random_fg(rng)
    x, y = 17, 29
    out = composite(bg, prepare_foreground(bgra), x, y)
    assert out.dtype == np.uint8 and out.shape == bg.shape
    h, w = bgra.shape[:2]
    a = bgra[:, :, 3:4].astype(np.float64) / 255.0
    ref = bgra[:, :, :3].astype(np.float64) * a + bg[y:y + h, x:x + w].astype(np.float64) * (1 - a)
    diff = np.abs(out[y:y + h, x:x + w].astype(np.float64) - ref)
    assert diff.max() <= 1.0
    # exactly round(ref) (half up), computed in integers, is what the integer path promises
    num = bgra[:, :, :3].astype(np.int64) * bgra[:, :, 3:4] + bg[y:y + h, x:x + w].astype(np.int64) * (
        255 - bgra[:, :, 3:4].astype(np.int64))
    assert np.array_equal(out[y:y + h, x:x + w].astype(np.int64), (2 * num + 255) // 510)
    outside = np.ones(bg.shape[:2], bool)
    outside[y:y + h, x:x + w] = False
    assert np.array_equal(out[outside], bg[outside])
    # the input background is not modified
    assert not np.shares_memory(out, bg)


def test_composite_alpha_extremes():
    bg = np.full((10, 10, 3), 200, np.uint8)
    fg = np.zeros((2, 2, 4), np.uint8)
    fg[0, 0] = (10, 20, 30, 255)  # opaque: fg colour exactly
    fg[0, 1] = (10, 20, 30, 0)  # transparent: bg exactly
    fg[1, 0] = (0, 0, 0, 255)
    fg[1, 1] = (100, 100, 100, 128)
    out = composite(bg, prepare_foreground(fg), 3, 4)
    assert out[4, 3].tolist() == [10, 20, 30]
    assert out[4, 4].tolist() == [200, 200, 200]
    assert out[5, 3].tolist() == [0, 0, 0]
    assert out[5, 4].tolist() == [round((100 * 128 + 200 * 127) / 255)] * 3


def test_composite_at_image_corners():
    rng = np.random.default_rng(2)
    bg = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    bgra = _random_fg(rng, 8, 12)
    fg = prepare_foreground(bgra)
    for x, y in ((0, 0), (40 - 12, 40 - 8)):
        out = composite(bg, fg, x, y)
        mask = paste_mask((40, 40), fg, x, y)
        assert mask[y:y + 8, x:x + 12].astype(bool).tolist() == (bgra[:, :, 3] >= 128).tolist()


def test_mask_comes_from_alpha_not_colour():
    fg = np.zeros((3, 4, 4), np.uint8)
    fg[0, 0] = (0, 0, 0, 255)  # black and opaque: object
    fg[0, 1] = (255, 255, 255, 0)  # coloured but transparent: not object
    fg[1, 1] = (0, 255, 0, ALPHA_MASK_THRESHOLD)  # threshold is inclusive
    fg[1, 2] = (0, 255, 0, ALPHA_MASK_THRESHOLD - 1)
    fg[2, 3] = (7, 7, 7, 200)
    prepared = prepare_foreground(fg)
    mask = paste_mask((10, 12), prepared, 5, 6)
    assert mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) == {0, MASK_ON}
    assert mask[6, 5] == MASK_ON  # black opaque pixel
    assert mask[6, 6] == 0  # transparent white pixel
    assert mask[7, 6] == MASK_ON
    assert mask[7, 7] == 0
    assert mask[8, 8] == MASK_ON
    assert int((mask == MASK_ON).sum()) == 3
    # contact row = lowest mask row; contact column = middle of the mask on that row
    assert prepared.contact_row == 2 and prepared.contact_col == 3


def test_prepare_foreground_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        prepare_foreground(np.full((4, 4, 4), 127, np.uint8))  # alpha below threshold everywhere
    with pytest.raises(ValueError):
        prepare_foreground(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError):
        prepare_foreground(np.zeros((4, 4, 4), np.uint16))


def test_object_depth_is_contact_depth_on_open_ground():
    # depth decreases downwards (ground nearer at the bottom): the contact row is the nearest
    bg_depth = np.repeat(np.arange(1000, 0, -10, dtype=np.uint16)[:, None], 50, axis=1)  # (100, 50)
    fg = np.zeros((10, 6, 4), np.uint8)
    fg[2:10, 1:5, 3] = 255
    prepared = prepare_foreground(fg)
    x, y = 20, 40
    contact = int(bg_depth[y + prepared.contact_row, x + prepared.contact_col])
    assert object_depth(bg_depth, prepared, x, y) == contact
    depth = paste_depth(bg_depth, prepared, x, y)
    mask = paste_mask(bg_depth.shape, prepared, x, y).astype(bool)
    assert np.all(depth[mask] == contact)
    assert np.array_equal(depth[~mask], bg_depth[~mask])
    assert depth.dtype == np.uint16


def test_object_depth_is_never_behind_a_covered_pixel():
    rng = np.random.default_rng(3)
    bg_depth = rng.integers(20000, 60000, (60, 60), dtype=np.uint16)
    fg = np.zeros((12, 9, 4), np.uint8)
    fg[1:12, 2:8, 3] = 255
    prepared = prepare_foreground(fg)
    x, y = 11, 33
    covered_mask = paste_mask(bg_depth.shape, prepared, x, y).astype(bool)
    # a near pole (depth 500) covered by the object, away from the contact pixel
    bg_depth[y + 3, x + 4] = 500
    # a nearer pixel inside the box but outside the mask must not count
    bg_depth[y, x] = 7
    assert not covered_mask[y, x]
    contact = int(bg_depth[y + prepared.contact_row, x + prepared.contact_col])
    want = min(contact, int(bg_depth[covered_mask].min()))
    assert want == 500
    assert object_depth(bg_depth, prepared, x, y) == 500
    depth = paste_depth(bg_depth, prepared, x, y)
    assert np.all(depth[covered_mask] <= bg_depth[covered_mask])
    assert np.all(depth[covered_mask] == 500)
    assert depth[y, x] == 7


def test_random_object_depth_rule():
    rng = np.random.default_rng(4)
    for _ in range(50):
        bg_depth = rng.integers(0, 65536, (40, 40), dtype=np.uint16)
        bgra = _random_fg(rng, int(rng.integers(2, 15)), int(rng.integers(2, 15)))
        prepared = prepare_foreground(bgra, flip=bool(rng.integers(0, 2)))
        x = int(rng.integers(0, 40 - prepared.width + 1))
        y = int(rng.integers(0, 40 - prepared.height + 1))
        covered = bg_depth[y:y + prepared.height, x:x + prepared.width][prepared.mask]
        contact = bg_depth[y + prepared.contact_row, x + prepared.contact_col]
        d = object_depth(bg_depth, prepared, x, y)
        assert d == min(int(contact), int(covered.min()))
        assert np.all(d <= covered)


def test_flip_mirrors_foreground():
    rng = np.random.default_rng(5)
    bgra = _random_fg(rng, 9, 14)
    bgra[:, :3, 3] = 0  # asymmetric alpha
    plain, flipped = prepare_foreground(bgra), prepare_foreground(bgra, flip=True)
    assert np.array_equal(flipped.mask, plain.mask[:, ::-1])
    assert np.array_equal(flipped.premultiplied, plain.premultiplied[:, ::-1])
    assert np.array_equal(flipped.inverse_alpha, plain.inverse_alpha[:, ::-1])
    # flipping then compositing equals compositing the mirrored cut-out
    bg = rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)
    mirrored = prepare_foreground(np.ascontiguousarray(bgra[:, ::-1]))
    assert np.array_equal(composite(bg, flipped, 4, 7), composite(bg, mirrored, 4, 7))
    m1 = paste_mask((30, 30), plain, 4, 7)[7:16, 4:18]
    m2 = paste_mask((30, 30), flipped, 4, 7)[7:16, 4:18]
    assert np.array_equal(m2, m1[:, ::-1])
    # a symmetric contact row keeps its contact column under the mirror
    assert flipped.contact_row == plain.contact_row


def test_depth_to_uint16():
    far = 60.0
    d = np.array([0.0, -1.0, 30.0, 60.0, 1000.0, 60.0 / 65535.0], np.float64)
    got = depth_to_uint16(d, far)
    assert got.dtype == np.uint16
    # never 0: the background-relative depth codec reserves 0 for "unchanged"
    assert got.tolist() == [1, 1, 32768, 65535, 65535, 1]
    assert depth_to_uint16(np.array([120.0 / 65535.0 * 3]), 120.0).tolist() == [3]


def test_pasted_depth_sums_equal_full_sums():
    rng = np.random.default_rng(6)
    for _ in range(20):
        bg_depth = rng.integers(1, 65536, (48, 64), dtype=np.uint16)
        bgra = _random_fg(rng, int(rng.integers(2, 20)), int(rng.integers(2, 20)))
        prepared = prepare_foreground(bgra, flip=bool(rng.integers(0, 2)))
        x = int(rng.integers(0, 64 - prepared.width + 1))
        y = int(rng.integers(0, 48 - prepared.height + 1))
        value = object_depth(bg_depth, prepared, x, y)
        flat = bg_depth.astype(np.int64).ravel()
        got = pasted_depth_sums(int(flat.sum()), int((flat * flat).sum()), bg_depth, prepared, x, y, value)
        pasted = paste_depth(bg_depth, prepared, x, y, value).astype(np.int64).ravel()
        assert got == (int(pasted.sum()), int((pasted * pasted).sum()))
        assert np.array_equal(paste_depth(bg_depth, prepared, x, y, value), paste_depth(bg_depth, prepared, x, y))

"""pipeline.plan: index <-> (bg, fg, position, flip), counter-based placements, the split."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from pipeline.errors import DepthmaskError
from pipeline.plan import (SPLIT_NAMES, SamplePlan, Split, empty_val_reason, make_split, mix64, needed_backgrounds,
                           placements, plan_split, uniform01)


def _splitmix64_reference(seed: int, key: int, stream: int) -> int:
    """SplitMix64 finaliser in plain Python integers (the documented generator)."""
    m = (1 << 64) - 1
    z = (key * 0x9E3779B97F4A7C15) & m
    z ^= (seed * 0xD1B54A32D192ED03 + stream * 0x8CB92BA72F3D8DD7) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


@pytest.mark.parametrize("flip", [True, False])
def test_index_round_trip(flip):
    plan = SamplePlan(5, 3, 4, flip)
    variants = 2 if flip else 1
    assert plan.variants == variants
    assert plan.count == plan.full_count == 5 * 3 * 4 * variants
    index = np.arange(plan.count)
    bg, fg, pos, flipped = plan.locate(index)
    rebuilt = ((bg * 3 + fg) * 4 + pos) * variants + flipped.astype(np.int64)
    assert np.array_equal(rebuilt, index)
    tuples = set(zip(bg.tolist(), fg.tolist(), pos.tolist(), flipped.tolist()))
    assert len(tuples) == plan.count  # a bijection
    assert tuples == set(itertools.product(range(5), range(3), range(4), [False, True] if flip else [False]))
    assert bg.max() == 4 and fg.max() == 2 and pos.max() == 3
    # scalar and array agree
    for i in (0, 7, plan.count - 1):
        assert tuple(int(v) for v in plan.locate(i)) == (int(bg[i]), int(fg[i]), int(pos[i]), int(flipped[i]))
    # the index order is bg-major: the first fg x positions x variants samples all use bg 0
    assert np.all(bg[: 3 * 4 * variants] == 0)


def test_limit_and_validation():
    plan = SamplePlan(4, 4, 2, True, limit=10)
    assert plan.full_count == 64 and plan.count == 10
    assert SamplePlan(1, 1, 1, False, limit=1000).count == 1
    for bad in (dict(n_backgrounds=0), dict(n_foregrounds=-1), dict(positions=0), dict(positions=1.5)):
        kwargs = dict(n_backgrounds=2, n_foregrounds=2, positions=2, flip=True) | bad
        with pytest.raises(DepthmaskError, match="must be a whole number >= 1"):
            SamplePlan(**kwargs)
    with pytest.raises(DepthmaskError, match="limit"):
        SamplePlan(2, 2, 2, True, limit=0)


def test_flipped_twins_share_placement():
    plan = SamplePlan(3, 3, 5, True)
    index = np.arange(plan.count)
    keys = plan.placement_key(index)
    assert np.array_equal(keys[0::2], keys[1::2])
    assert len(np.unique(keys)) == plan.count // 2
    widths = np.full(plan.count, 40)
    heights = np.full(plan.count, 30)
    x, y = placements(7, keys, widths, heights, np.full(plan.count, 100), 224)
    assert np.array_equal(x[0::2], x[1::2]) and np.array_equal(y[0::2], y[1::2])
    _, _, _, flipped = plan.locate(index)
    assert not flipped[0::2].any() and flipped[1::2].all()
    # without flip every sample has its own key
    plain = SamplePlan(3, 3, 5, False)
    assert np.array_equal(plain.placement_key(np.arange(plain.count)), np.arange(plain.count))


def test_mix64_matches_python_splitmix64():
    keys = [0, 1, 2, 12345, 2**40 + 17, 2**63 - 1]
    for seed, stream in ((0, 1), (1, 2), (2**62 + 3, 0x5B117)):
        got = mix64(seed, np.array(keys, np.uint64), stream)
        assert got.dtype == np.uint64
        assert [int(v) for v in got] == [_splitmix64_reference(seed, k, stream) for k in keys]
    u = uniform01(3, np.arange(100000), 1)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.01


def test_placements_in_bounds_and_on_the_ground():
    rng = np.random.default_rng(0)
    n, size = 20000, 224
    keys = np.arange(n)
    w = rng.integers(1, 161, n)
    h = rng.integers(1, 161, n)
    ground = rng.integers(0, size, n)
    x, y = placements(11, keys, w, h, ground, size)
    assert x.dtype == np.int64 and y.dtype == np.int64
    assert np.all(x >= 0) and np.all(x + w <= size)
    assert np.all(y >= 0) and np.all(y + h <= size)
    bottom = y + h - 1
    assert np.all(bottom >= ground)
    # every column where the object fits is used: x spans 0 .. size - w
    narrow = placements(11, keys, np.full(n, size - 4), np.full(n, 10), np.zeros(n), size)[0]
    assert set(np.unique(narrow).tolist()) == {0, 1, 2, 3, 4}
    counts = np.bincount(narrow)
    assert counts.min() > n / 5 * 0.9 and counts.max() < n / 5 * 1.1
    # bottom row spans ground_top .. size - 1
    ys = placements(11, keys, np.full(n, 10), np.full(n, 10), np.full(n, size - 3), size)[1]
    assert set((ys + 9).tolist()) == {size - 3, size - 2, size - 1}
    # an object taller than the ground band still fits in the image
    tall_y = placements(11, keys, np.full(n, 10), np.full(n, 200), np.full(n, size - 3), size)[1]
    assert np.all(tall_y >= 0) and np.all(tall_y + 200 <= size)


def test_placements_deterministic_and_independent_of_range():
    rng = np.random.default_rng(1)
    n, size = 5000, 192
    keys = np.arange(n, dtype=np.int64)
    w = rng.integers(20, 160, n)
    h = rng.integers(20, 120, n)
    g = rng.integers(0, size, n)
    x, y = placements(5, keys, w, h, g, size)
    x2, y2 = placements(5, keys, w, h, g, size)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    for i in (0, 1, 999, 2500, n - 1):
        xi, yi = placements(5, np.array([i]), w[i:i + 1], h[i:i + 1], g[i:i + 1], size)
        assert (int(xi[0]), int(yi[0])) == (int(x[i]), int(y[i]))
    # a sub-range computed alone equals the slice of the big array
    xs, ys = placements(5, keys[1234:1300], w[1234:1300], h[1234:1300], g[1234:1300], size)
    assert np.array_equal(xs, x[1234:1300]) and np.array_equal(ys, y[1234:1300])
    # another seed gives other placements
    x3, _ = placements(6, keys, w, h, g, size)
    assert (x3 != x).mean() > 0.9


def _assert_disjoint(split: Split, n_bg: int, n_fg: int) -> tuple[set, set]:
    bg, fg = (a.ravel() for a in np.meshgrid(np.arange(n_bg), np.arange(n_fg), indexing="ij"))
    assign = split.assign(bg, fg)
    train = assign == 0
    val = assign == 1
    assert set(bg[train].tolist()).isdisjoint(bg[val].tolist())
    assert set(fg[train].tolist()).isdisjoint(fg[val].tolist())
    assert set(bg[val].tolist()) == set(split.val_backgrounds)
    assert set(fg[val].tolist()) == set(split.val_foregrounds)
    assert not set(bg[train].tolist()) & set(split.val_backgrounds)
    assert not set(fg[train].tolist()) & set(split.val_foregrounds)
    # the generalisation splits: exactly one held-out asset, of the kind they are named after
    held_bg, held_fg = np.isin(bg, split.val_backgrounds), np.isin(fg, split.val_foregrounds)
    assert np.array_equal(assign == 2, held_bg & ~held_fg)
    assert np.array_equal(assign == 3, held_fg & ~held_bg)
    assert SPLIT_NAMES == ("train", "val", "unseen_bg", "unseen_fg")
    return set(bg[train].tolist()), set(bg[val].tolist())


@pytest.mark.parametrize("n_bg, n_fg, fraction", [(102, 104, 0.1), (4, 4, 0.1), (10, 7, 0.3), (2, 2, 0.49)])
def test_split_no_shared_assets(n_bg, n_fg, fraction):
    split = make_split(n_bg, n_fg, fraction, seed=3)
    assert len(split.val_backgrounds) >= 1 and len(split.val_foregrounds) >= 1
    assert len(split.val_backgrounds) <= n_bg - 1 and len(split.val_foregrounds) <= n_fg - 1
    if n_bg == 102:
        assert len(split.val_backgrounds) == 10 and len(split.val_foregrounds) == 10
    train_bg, val_bg = _assert_disjoint(split, n_bg, n_fg)
    assert train_bg and val_bg


def test_split_reproducible_from_seed():
    a = make_split(102, 104, 0.1, seed=9)
    b = make_split(102, 104, 0.1, seed=9)
    assert a == b
    c = make_split(102, 104, 0.1, seed=10)
    assert c != a
    assert list(a.val_backgrounds) == sorted(a.val_backgrounds)


def test_split_edge_cases():
    empty = make_split(10, 10, 0.0, seed=0)
    assert empty.val_backgrounds == () and empty.val_foregrounds == ()
    assert np.all(empty.assign(np.arange(10), np.arange(10)) == 0)
    single = make_split(1, 5, 0.2, seed=0)
    assert single.val_backgrounds == ()  # one background cannot be held out
    for bad in (-0.1, 1.0, 2.0):
        with pytest.raises(DepthmaskError, match="val-fraction"):
            make_split(10, 10, bad, seed=0)


def test_used_assets_of_a_limited_plan():
    full = SamplePlan(1020, 104, 2, True)
    assert (full.used_backgrounds, full.used_foregrounds) == (1020, 104)
    # 416 samples per background: 2,000 samples use backgrounds 0..4 (the last one in part)
    limited = SamplePlan(1020, 104, 2, True, limit=2000)
    assert (limited.used_backgrounds, limited.used_foregrounds) == (5, 104)
    assert needed_backgrounds(2000, 104, 2, True) == 5 and needed_backgrounds(None, 104, 2, True) is None
    bg, fg, _, _ = limited.locate(np.arange(limited.count))
    assert bg.max() + 1 == limited.used_backgrounds and len(np.unique(fg)) == limited.used_foregrounds
    # within one background, only the first foregrounds are used
    one = SamplePlan(1020, 104, 2, True, limit=100)
    assert (one.used_backgrounds, one.used_foregrounds) == (1, 25)
    assert np.unique(one.locate(np.arange(100))[1]).tolist() == list(range(25))
    # a plan of the used backgrounds only locates every sample the same way
    small = SamplePlan(5, 104, 2, True, limit=2000)
    assert small.count == 2000
    for a, b in zip(small.locate(np.arange(2000)), limited.locate(np.arange(2000))):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("n_bg, n_fg, positions, limit", [(4, 4, 2, None), (5, 104, 2, 2000), (1, 104, 2, 416),
                                                          (3, 1, 5, None), (1, 1, 3, None), (7, 3, 1, 17)])
def test_split_counts_equal_the_per_sample_assignment(n_bg, n_fg, positions, limit):
    plan = SamplePlan(n_bg, n_fg, positions, True, limit)
    split = plan_split(plan, 0.1, seed=0)
    bg, fg, _, _ = plan.locate(np.arange(plan.count))
    per_sample = np.bincount(split.assign(bg, fg), minlength=len(SPLIT_NAMES))
    assert split.counts(plan) == dict(zip(SPLIT_NAMES, per_sample.tolist()))
    assert sum(split.counts(plan).values()) == plan.count


def test_split_of_a_small_build_holds_out_among_the_used_assets():
    # --limit 2000 of the default: 5 backgrounds used; one of them and 10 of the 104 foregrounds held out
    plan = SamplePlan(5, 104, 2, True, limit=2000)
    split = plan_split(plan, 0.1, seed=0)
    assert len(split.val_backgrounds) == 1 and max(split.val_backgrounds) < 5 and len(split.val_foregrounds) == 10
    counts = split.counts(plan)
    assert counts["val"] > 0 and counts["train"] > 0 and empty_val_reason(plan, split, 0.1) is None
    # the full build keeps the split of the whole set (the held-out lists of earlier versions)
    full = SamplePlan(1020, 104, 2, True)
    assert plan_split(full, 0.1, seed=0) == make_split(1020, 104, 0.1, 0)
    assert plan_split(full, 0.1, seed=0).counts(full) == {"train": 345168, "val": 4080, "unseen_bg": 38352,
                                                          "unseen_fg": 36720}


def test_a_kind_with_one_used_asset_is_not_held_out():
    # one foreground (a folder build with a single cut-out): val is the held-out backgrounds
    plan = SamplePlan(20, 1, 2, True)
    split = plan_split(plan, 0.1, seed=0)
    assert split.val_foregrounds == () and len(split.val_backgrounds) == 2
    bg, fg, _, _ = plan.locate(np.arange(plan.count))
    assign = split.assign(bg, fg)
    assert np.array_equal(assign == 1, np.isin(bg, split.val_backgrounds))
    assert np.array_equal(assign == 0, ~np.isin(bg, split.val_backgrounds))
    assert split.counts(plan) == {"train": 18 * 4, "val": 2 * 4, "unseen_bg": 0, "unseen_fg": 0}
    # one background (--limit within the first background): val is the held-out foregrounds
    one_bg = SamplePlan(1, 104, 2, True, limit=416)
    split = plan_split(one_bg, 0.1, seed=0)
    assert split.val_backgrounds == () and len(split.val_foregrounds) == 10
    assert split.counts(one_bg)["val"] == 40
    # one of each: nothing can be held out, and the build is told why
    tiny = SamplePlan(1, 1, 2, True)
    split = plan_split(tiny, 0.1, seed=0)
    assert split.counts(tiny) == {"train": 4, "val": 0, "unseen_bg": 0, "unseen_fg": 0}
    assert "single background and a single foreground" in empty_val_reason(tiny, split, 0.1)
    assert "--val-fraction is 0" in empty_val_reason(plan, plan_split(plan, 0.0, 0), 0.0)


def test_split_counts_of_a_plan_with_huge_counts_and_a_small_limit():
    # 10^18 positions: the pairs after the first would overflow int64 indices, and none has a sample
    plan = SamplePlan(1020, 104, 10**18, True, limit=8)
    split = plan_split(plan, 0.1, seed=0)
    assert (plan.used_backgrounds, plan.used_foregrounds) == (1, 1)
    assert split.counts(plan) == {"train": 8, "val": 0, "unseen_bg": 0, "unseen_fg": 0}

"""Epoch plans without I/O: property tests over counts, bins, ranks, workers, batches."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splitdask.plan import (
    SHUFFLES,
    EpochOrder,
    RankPlan,
    default_window,
    normalise_shuffle,
    shuffle_quality,
)

FULL = lambda n: ((0, n),)  # noqa: E731

counts_st = st.lists(st.integers(0, 60), min_size=1, max_size=12)
mode_st = st.sampled_from(SHUFFLES)


def rank_stream(plan: RankPlan, workers: int, batch: int) -> list[int]:
    """What a DataLoader with ``workers`` workers and ``batch`` yields: worker batches
    taken round robin, a worker dropping out once it has no more."""
    per_worker = []
    for w in range(workers):
        keys = np.concatenate(
            [np.zeros(0, np.int64)]
            + [plan.keys(s) for s in plan.worker_samples(w, workers, batch, chunk=7)]
        ).tolist()
        per_worker.append([keys[i : i + batch] for i in range(0, len(keys), batch)])
    out: list[int] = []
    for t in range(max(map(len, per_worker))):
        for w in range(workers):
            if t < len(per_worker[w]):
                out += per_worker[w][t]
    return out


@settings(max_examples=60, deadline=None)
@given(counts_st, mode_st, st.integers(0, 2**32), st.integers(1, 5))
def test_order_is_a_permutation_and_deterministic(
    counts: list[int], mode: str, seed: int, window: int
) -> None:
    n = sum(counts)
    order = EpochOrder(counts, mode, seed, window)
    keys = order.keys(np.arange(n)).tolist()
    assert sorted(keys) == list(range(n))
    again = EpochOrder(counts, mode, seed, window).keys(np.arange(n)[::-1]).tolist()
    assert again == keys[::-1]  # any positions, any order, same answer


@settings(max_examples=80, deadline=None)
@given(
    counts_st,
    mode_st,
    st.integers(1, 7),
    st.booleans(),
    st.integers(1, 4),
    st.integers(1, 9),
)
def test_ranks_cover_once_with_equal_lengths_for_any_worker_count(
    counts: list[int], mode: str, world: int, drop_last: bool, workers: int, batch: int
) -> None:
    n = sum(counts)
    order = EpochOrder(counts, mode, 11, 3)
    plans = [RankPlan(order, FULL(n), world, r, drop_last) for r in range(world)]
    length = len(plans[0])
    assert {len(p) for p in plans} == {length}
    streams = [rank_stream(p, workers, batch) for p in plans]
    # The DataLoader order does not depend on the worker count.
    assert streams == [p.keys(np.arange(length)).tolist() for p in plans]
    flat = [k for s in streams for k in s]
    assert all(len(s) == length for s in streams)
    if drop_last:
        assert len(set(flat)) == len(flat)
        assert n - len(flat) < world
    else:
        assert set(flat) == set(range(n))
        assert len(flat) - n < world


@settings(max_examples=80, deadline=None)
@given(
    counts_st,
    mode_st,
    st.integers(1, 5),
    st.integers(1, 5),
    st.integers(1, 5),
    st.booleans(),
    st.data(),
)
def test_elastic_resume_loses_and_repeats_nothing(
    counts: list[int], mode: str, w1: int, w2: int, w3: int, drop_last: bool, data: st.DataObject
) -> None:
    n = sum(counts)
    order = EpochOrder(counts, mode, 5, 2)
    remaining = FULL(n)
    seen: list[int] = []
    for world in (w1, w2, w3):  # resume twice, each time with another world size
        plans = [RankPlan(order, remaining, world, r, drop_last) for r in range(world)]
        length = len(plans[0])
        assert {len(p) for p in plans} == {length}
        s = data.draw(st.integers(0, length), label="samples_seen")
        for p in plans:
            full = p.keys(np.arange(length)).tolist()
            seen += full[:s]
            # Resuming the same topology gives exactly the uninterrupted tail.
            left = p.remaining_after(s)
            tail = RankPlan(order, left, world, p.rank, drop_last)
            if not drop_last and world == 1:
                assert tail.keys(np.arange(len(tail))).tolist() == full[s:]
        remaining = plans[0].remaining_after(s)
    rest = RankPlan(order, remaining, 1, 0, False)
    rest_keys = rest.keys(np.arange(len(rest))).tolist()
    everything = set(seen) | set(rest_keys)
    assert not set(rest_keys) & set(seen)  # nothing consumed comes again
    assert len(rest_keys) == len(set(rest_keys))
    if not drop_last:
        assert everything == set(range(n))  # nothing lost


def test_same_topology_resume_is_the_uninterrupted_tail() -> None:
    order = EpochOrder([40, 0, 33, 71], "window", 3, 2)
    for world in (1, 2, 3):
        for r in range(world):
            p = RankPlan(order, FULL(144), world, r)
            full = p.keys(np.arange(len(p))).tolist()
            left = p.remaining_after(17)
            tail = RankPlan(order, left, world, r)
            assert tail.keys(np.arange(len(tail))).tolist() == full[17:]


def test_padding_read_before_its_own_rank_counts_as_read() -> None:
    # 5 samples over 4 ranks: rank 3 holds only padding (the epoch's positions 1 and
    # 2), so after one sample each it has read position 1, which rank 0 has not.
    order = EpochOrder([5], "window", 5, 2)
    plans = [RankPlan(order, FULL(5), 4, r) for r in range(4)]
    seen = {k for p in plans for k in p.keys(np.arange(1)).tolist()}
    rest = RankPlan(order, plans[0].remaining_after(1), 1, 0)
    rest_keys = rest.keys(np.arange(len(rest))).tolist()
    assert not seen & set(rest_keys)
    assert seen | set(rest_keys) == set(range(5))


def test_window_mixes_far_better_than_bins() -> None:
    counts = [2000] * 32
    bin_of = np.repeat(np.arange(32), 2000)  # bin-space keys: bins end to end
    q = {}
    for mode in SHUFFLES:
        keys = EpochOrder(counts, mode, 1, 8).keys(np.arange(64000))
        q[mode] = shuffle_quality(keys, bin_of)
    assert q["bins"].distinct_bins_per_64 == pytest.approx(1, abs=0.05)
    assert q["window"].distinct_bins_per_64 > 7.5
    assert q["global"].distinct_bins_per_64 > 25
    assert q["none"].longest_bin_run == 2000
    assert q["none"].correlation == pytest.approx(1)
    assert q["bins"].longest_bin_run >= 2000
    assert q["window"].longest_bin_run < 10
    assert abs(q["global"].correlation) < 0.02


def test_shuffle_quality_measures() -> None:
    q = shuffle_quality([0, 1, 2, 3], [0, 0, 1, 1])
    assert q.correlation == pytest.approx(1)
    assert q.longest_bin_run == 2
    assert q.distinct_bins_per_64 == 2
    q = shuffle_quality(np.arange(128)[::-1], np.arange(128) % 4)
    assert q.correlation == pytest.approx(-1)
    assert q.distinct_bins_per_64 == 4
    assert q.longest_bin_run == 1


def test_default_window_and_bad_input() -> None:
    assert default_window([10] * 100, 1000) == 100  # small bins: all fit the budget
    assert default_window([10] * 100, 100 << 30) == 8  # huge bins: at least 8
    assert default_window([10] * 3, 100 << 30) == 3
    assert default_window([100_000] * 256, 16 * 25_600_000) == 10  # 2**20 records
    assert normalise_shuffle(None) == "none"
    with pytest.raises(ValueError, match="shuffle must be one of"):
        normalise_shuffle("random")
    order = EpochOrder([5], "window", 0, 1)
    with pytest.raises(ValueError, match="rank"):
        RankPlan(order, FULL(5), 2, 2)
    with pytest.raises(ValueError, match="samples_seen"):
        RankPlan(order, FULL(5), 1, 0).remaining_after(6)


def test_global_permutation_has_no_materialised_state() -> None:
    order = EpochOrder([10**9] * 10, "global", 7)
    keys = order.keys(np.arange(0, 10**10, 10**7))
    assert len(np.unique(keys)) == len(keys)
    assert keys.max() < 10**10
    held = sum(v.nbytes for v in vars(order).values() if isinstance(v, np.ndarray))
    assert held < 1000  # the keys and the bin starts, nothing per record


def test_mpq_shard_splits_by_batches_as_the_plan_does() -> None:
    from splitdask.mpq import WorkerInfo

    plan = RankPlan(EpochOrder([23], "none", 0), FULL(23), 1, 0)
    for workers in (1, 2, 3):
        for batch in (1, 4):
            for w in range(workers):
                info = WorkerInfo(w, workers, 0, "fork")
                mine = np.concatenate(list(plan.worker_samples(w, workers, batch))).tolist()
                assert list(info.shard(range(23), batch)) == mine

"""The seeded orders and the index arithmetic, without any I/O."""

from __future__ import annotations

import numpy as np
import pytest

from splitdask._dataset._index import BinOrder, Locator, TableOrder
from splitdask._dataset._order import bin_order, bin_permutation, iter_records, resolve_seed
from splitdask._format import Segment


def test_resolve_seed() -> None:
    assert resolve_seed(7) == 7
    assert resolve_seed(np.int64(3)) == 3
    drawn = {resolve_seed(None) for _ in range(4)}
    assert len(drawn) == 4
    assert all(s >= 0 for s in drawn)
    for bad in (1.5, True, "3"):
        with pytest.raises(TypeError, match="seed"):
            resolve_seed(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed must be at least 0, got -1"):
        resolve_seed(-1)  # an int of the wrong value (issue 20)


def test_bin_order_is_a_seeded_permutation() -> None:
    a = bin_order(1, 50)
    assert sorted(a) == list(range(50))
    assert a == bin_order(1, 50)
    assert a != bin_order(2, 50)
    assert bin_order(5, 0) == []


def test_bin_permutation_depends_on_seed_and_bin_only() -> None:
    p = bin_permutation(9, 3, 1000)
    assert p.dtype == np.int64
    assert sorted(p.tolist()) == list(range(1000))
    assert np.array_equal(p, bin_permutation(9, 3, 1000))
    assert not np.array_equal(p, bin_permutation(9, 4, 1000))
    assert not np.array_equal(p, bin_permutation(10, 3, 1000))


def _parts(records: list[list[bytes]]) -> tuple[list[bytes], list[np.ndarray], list[np.ndarray]]:
    datas, starts, ends = [], [], []
    for recs in records:
        pad = b"#" * 3  # records sit at file offsets, not at 0
        lens = np.array([len(r) for r in recs], dtype=np.int64)
        e = len(pad) + np.cumsum(lens)
        datas.append(pad + b"".join(recs))
        starts.append(e - lens)
        ends.append(e)
    return datas, starts, ends


def test_iter_records_stored_and_shuffled() -> None:
    parts = [[b"a", b"bb", b""], [b"ccc"], [b"dd", b"e"]]
    flat = [r for p in parts for r in p]
    assert list(iter_records(*_parts(parts), None, 0)) == flat
    shuffled = list(iter_records(*_parts(parts), 4, 2))
    perm = bin_permutation(4, 2, len(flat))
    assert shuffled == [flat[k] for k in perm]
    one = list(iter_records(*_parts([flat]), 4, 2))
    assert one == shuffled  # part boundaries do not change a bin's order
    assert list(iter_records([], [], [], 4, 0)) == []


def test_bin_order_and_locator_over_segments() -> None:
    # 5 records dealt over bins (0, 1), then 3 contiguous records in bin 1.
    segments = [Segment(0, 5, (0, 1), (0, 0)), Segment(5, 3, (1,), (2,))]
    order = BinOrder(segments)
    want = [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2), (1, 3), (1, 4)]
    assert [order.locate(i) for i in range(8)] == want
    b, local = order.locate_many(np.arange(8, dtype=np.int64))
    assert list(zip(b.tolist(), local.tolist(), strict=True)) == want
    # bin 0 in one part of 3; bin 1 in parts of 2 and 3 records
    loc = Locator(order, [[3], [2, 3]])
    assert [loc.locate(i) for i in range(8)] == [
        (0, 0),
        (1, 0),
        (0, 1),
        (1, 1),
        (0, 2),
        (2, 0),
        (2, 1),
        (2, 2),
    ]
    p, j = loc.locate_many(np.array([7, 0, 3], dtype=np.int64))
    assert p.tolist() == [2, 0, 1]
    assert j.tolist() == [2, 0, 1]


def test_table_order() -> None:
    t = TableOrder(np.array([1, 0, 1], dtype=np.int64), np.array([0, 0, 1], dtype=np.int64))
    assert t.locate(2) == (1, 1)
    b, j = t.locate_many(np.array([0, 1], dtype=np.int64))
    assert b.tolist() == [1, 0]
    assert j.tolist() == [0, 0]

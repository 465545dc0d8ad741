"""The mpq shared-memory layer, without processes: slots, the tree walk, copy in and out.

A ``bytearray`` stands in for the pool: the functions only need a writable buffer.
"""

from __future__ import annotations

import pickle
from typing import Any, NamedTuple

import numpy as np
import pytest

from splitdask.mpq import _shm
from splitdask.mpq._shm import ALIGN, MAX_DEPTH, MAX_SCAN, ShmArray, Slots

# ------------------------------------------------------------------ slots


def test_alloc_from_an_empty_slice_starts_at_its_base() -> None:
    slots = Slots(base=4096, size=1000)
    assert slots.alloc(100) == 4096
    assert slots.alloc(100) == 4196
    assert slots.live == 2


def test_whole_slice_and_exhaustion() -> None:
    slots = Slots(base=0, size=256)
    assert slots.alloc(257) is None
    assert slots.live == 0  # a failed alloc records nothing
    assert slots.alloc(256) == 0
    assert slots.alloc(1) is None
    slots.release(1)
    assert slots.alloc(1) == 0


def test_release_frees_the_oldest_first() -> None:
    slots = Slots(base=0, size=300)
    assert [slots.alloc(100) for _ in range(3)] == [0, 100, 200]
    assert slots.alloc(100) is None
    slots.release(1)  # frees [0, 100), the oldest
    assert slots.alloc(101) is None
    assert slots.alloc(100) == 0
    slots.release(2)  # frees [100, 300)
    assert slots.live == 1
    assert slots.alloc(200) == 100


def test_first_fit_takes_the_first_gap_that_is_big_enough() -> None:
    slots = Slots(base=0, size=1000)
    assert [slots.alloc(n) for n in (100, 50, 300, 50)] == [0, 100, 150, 450]
    slots.release(1)  # gap [0, 100)
    assert slots.alloc(60) == 0  # fits the first gap
    assert slots.alloc(60) == 500  # the rest of that gap (40) is too small: after the last
    assert slots.alloc(40) == 60  # but a 40-byte allocation fills it exactly


def test_fragmentation_skips_small_gaps() -> None:
    slots = Slots(base=0, size=400)
    assert [slots.alloc(100) for _ in range(4)] == [0, 100, 200, 300]
    slots.release(1)  # gap [0, 100); [100, 400) live
    assert slots.alloc(150) is None  # 100 free in total at the front, 0 at the end
    slots.release(1)  # gap [0, 200)
    assert slots.alloc(150) == 0
    assert slots.alloc(50) == 150


def test_fifo_stream_of_mixed_sizes_never_overlaps() -> None:
    slots = Slots(base=64, size=4096)
    live: list[tuple[int, int]] = []
    sizes = [64 * (1 + (i * 7) % 13) for i in range(300)]
    for n in sizes:
        start = slots.alloc(n)
        while start is None:
            slots.release(1)
            live.pop(0)
            start = slots.alloc(n)
        assert start >= 64
        assert start + n <= 64 + 4096
        assert all(start + n <= a or b <= start for a, b in live)
        live.append((start, start + n))
    assert slots.live == len(live)


# -------------------------------------------------------------- tree walk


def _mark(x: Any) -> Any:
    """A leaf function that replaces every int by ``("hit", x)``."""
    return ("hit", x) if type(x) is int else None


def _nested(depth: int, inner: Any) -> Any:
    for _ in range(depth):
        inner = [inner]
    return inner


def test_walk_replaces_leaves_in_every_container_kind() -> None:
    class Point(NamedTuple):
        x: Any
        y: Any

    item = {"a": [1, "s", (2, Point(3, "t"))], "b": "keep"}
    assert _shm.walk(item, _mark) == {
        "a": [("hit", 1), "s", (("hit", 2), Point(("hit", 3), "t"))],
        "b": "keep",
    }
    out = _shm.walk(item, _mark)
    assert type(out["a"][2][1]) is Point


def test_walk_keeps_untouched_parts_as_themselves() -> None:
    untouched = ["a", ("b",), {"c": "d"}]
    item = [untouched, 1]
    out = _shm.walk(item, _mark)
    assert out is not item
    assert out[0] is untouched
    assert _shm.walk(untouched, _mark) is untouched


@pytest.mark.parametrize(
    ("depth", "replaced"), [(0, True), (MAX_DEPTH, True), (MAX_DEPTH + 1, False)]
)
def test_walk_depth_limit(depth: int, replaced: bool) -> None:
    item = _nested(depth, 7)
    out = _shm.walk(item, _mark)
    assert (out == _nested(depth, ("hit", 7))) is replaced
    if not replaced:
        assert out is item


@pytest.mark.parametrize(("n", "entered"), [(MAX_SCAN, True), (MAX_SCAN + 1, False)])
def test_walk_scan_limit(n: int, entered: bool) -> None:
    as_list = [0] * n
    as_dict = dict.fromkeys(range(n), 0)
    assert (_shm.walk(as_list, _mark) is as_list) is not entered
    assert (_shm.walk(as_dict, _mark) is as_dict) is not entered


def test_walk_does_not_enter_subclasses() -> None:
    class MyList(list[Any]):
        pass

    class MyDict(dict[str, Any]):
        pass

    item = [MyList([1]), MyDict(a=1)]
    out = _shm.walk(item, _mark)
    assert out is item


# ----------------------------------------------------------------- extract


THRESHOLD = 1024


class _Sub(np.ndarray):
    """An ndarray subclass: would come back as a plain array, so it is pickled."""


def _big(seed: int = 0, shape: tuple[int, ...] = (16, 32), dtype: Any = np.float32) -> Any:
    return np.random.default_rng(seed).random(shape).astype(dtype)


def test_extract_takes_big_arrays_only() -> None:
    big, small = _big(1), np.arange(10)
    assert big.nbytes >= THRESHOLD > small.nbytes
    skeleton, arrays = _shm.extract({"x": big, "y": small, "z": [big, 3]}, THRESHOLD)
    assert [a is big for a in arrays] == [True, True]
    assert skeleton["x"] == ShmArray(0, big.shape, big.dtype, "C")
    assert skeleton["y"] is small
    assert skeleton["z"][0] == ShmArray(1, big.shape, big.dtype, "C")
    assert skeleton["z"][1] == 3


def test_extract_threshold_is_inclusive() -> None:
    exact = np.zeros(THRESHOLD, dtype=np.uint8)
    assert len(_shm.extract(exact, THRESHOLD)[1]) == 1
    assert _shm.extract(exact, THRESHOLD + 1) == (exact, [])


def test_extract_without_big_arrays_returns_the_item_itself() -> None:
    item = ([np.arange(3)], {"k": "v"})
    skeleton, arrays = _shm.extract(item, THRESHOLD)
    assert skeleton is item
    assert arrays == []


@pytest.mark.parametrize(
    "array",
    [
        np.empty(2000, dtype=object),
        np.zeros((64, 64)).view(_Sub),
        np.zeros((64, 64), dtype=[("a", "i4"), ("b", object)]),
    ],
    ids=["object", "subclass", "struct-with-object"],
)
def test_extract_leaves_object_dtypes_and_subclasses_to_pickle(array: Any) -> None:
    assert array.nbytes >= THRESHOLD
    skeleton, arrays = _shm.extract([array], THRESHOLD)
    assert arrays == []
    assert skeleton[0] is array


def test_extract_records_fortran_layout() -> None:
    f = np.asfortranarray(_big(2))
    skeleton, _ = _shm.extract(f, THRESHOLD)
    assert skeleton.order == "F"
    assert _shm.layout(f) == "F"
    assert _shm.layout(np.zeros(5)) == "C"  # 1-d is both: C
    assert _shm.layout(_big(3)[:, ::2]) == "C"  # neither: copied as C


def test_extract_depth_limit_matches_the_walk() -> None:
    big = _big(4)
    assert len(_shm.extract(_nested(MAX_DEPTH, big), THRESHOLD)[1]) == 1
    assert _shm.extract(_nested(MAX_DEPTH + 1, big), THRESHOLD)[1] == []


# -------------------------------------------------------- copy in and out


class Sample(NamedTuple):
    image: Any
    label: int


def _items() -> list[Any]:
    big = _big(5)
    return [
        big,
        (big, np.arange(4)),
        {"img": np.asfortranarray(_big(6)), "meta": {"id": 3, "tags": ["a"]}},
        [Sample(_big(7, (40, 40), np.float64), 1), Sample(np.zeros(2), 0)],
        {"u8": _big(8, (3000,), np.uint8), "rec": np.zeros(200, dtype=[("a", "i4"), ("b", "f8")])},
        _big(9, (64, 64))[::2, 1::3],  # not contiguous
        _nested(MAX_DEPTH - 1, {"deep": _big(10)}),  # the array is MAX_DEPTH deep
    ]


def _assert_same(a: Any, b: Any) -> None:
    assert type(a) is type(b)
    if type(a) is np.ndarray:
        assert a.dtype == b.dtype
        assert a.shape == b.shape
        np.testing.assert_array_equal(a, b)
        return
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
        return
    if isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
        return
    assert a == b


def _through_pool(item: Any, pool: bytearray, slots: Slots) -> tuple[Any, list[int]]:
    """What a worker does: extract, place, write; returns the unpickled frame payload."""
    skeleton, arrays = _shm.extract(item, THRESHOLD)
    start = slots.alloc(sum(_shm.footprint(arrays)))
    assert start is not None
    offsets = _shm.write_arrays(memoryview(pool), start, arrays)
    return pickle.loads(pickle.dumps((skeleton, offsets)))  # type: ignore[no-any-return]


@pytest.mark.parametrize("index", range(len(_items())))
def test_item_round_trip_through_a_pool(index: int) -> None:
    item = _items()[index]
    pool = bytearray(1 << 20)
    skeleton, offsets = _through_pool(item, pool, Slots(base=128, size=(1 << 20) - 128))
    assert offsets
    assert all(off % ALIGN == 0 and off >= 128 for off in offsets)
    out = _shm.rebuild(skeleton, memoryview(pool), offsets)
    _assert_same(out, item)


def test_rebuilt_arrays_are_owned_writable_copies_in_the_original_layout() -> None:
    f = np.asfortranarray(_big(11, (30, 50), np.int16))
    pool = bytearray(1 << 16)
    skeleton, offsets = _through_pool({"f": f}, pool, Slots(0, len(pool)))
    out = _shm.rebuild(skeleton, memoryview(pool), offsets)["f"]
    assert out.flags.f_contiguous
    assert not out.flags.c_contiguous
    assert out.flags.owndata
    assert out.flags.writeable
    pool[:] = bytes(len(pool))  # the pool is reused: the item must not change
    np.testing.assert_array_equal(out, f)


def test_arrays_are_packed_at_aligned_offsets() -> None:
    arrays = [np.full(n, i + 1, dtype=np.uint8) for i, n in enumerate((1, 64, 65, 200))]
    assert _shm.footprint(arrays) == [64, 64, 128, 256]
    pool = bytearray(1024)
    offsets = _shm.write_arrays(memoryview(pool), 64, arrays)
    assert offsets == [64, 128, 192, 320]
    expected = bytearray(1024)
    for off, a in zip(offsets, arrays, strict=True):
        expected[off : off + a.nbytes] = a.tobytes()
    assert pool == expected  # padding and the bytes before start are untouched
    assert pool[64:66] == b"\x01\x00"


def test_write_arrays_leaves_no_view_into_the_buffer() -> None:
    pool = bytearray(4096)
    _shm.write_arrays(memoryview(pool), 0, [_big(12)])
    pool.extend(b"x")  # a bytearray with live exports refuses to resize
    assert len(pool) == 4097


def test_two_items_in_flight_share_the_pool() -> None:
    pool = bytearray(8192)
    slots = Slots(0, len(pool))
    a, b = _big(13, (32, 32)), _big(14, (16, 16), np.float64)
    frame_a = _through_pool([a], pool, slots)
    frame_b = _through_pool({"b": b}, pool, slots)
    assert slots.live == 2
    _assert_same(_shm.rebuild(*_swap(frame_a, pool)), [a])
    slots.release(1)
    frame_c = _through_pool((a,), pool, slots)  # reuses a's space
    assert frame_c[1] == frame_a[1]
    _assert_same(_shm.rebuild(*_swap(frame_b, pool)), {"b": b})
    _assert_same(_shm.rebuild(*_swap(frame_c, pool)), (a,))


def _swap(frame: tuple[Any, list[int]], pool: bytearray) -> tuple[Any, memoryview, list[int]]:
    return frame[0], memoryview(pool), frame[1]

"""RecordBatch: the Arrow layout, views without copies, re-cutting, and its checks."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splitdask import CorruptDatasetError, RecordBatch, SplitDataLoader, write_split_data
from splitdask._dataset._order import iter_records
from splitdask._read._batch import bin_batches, rebatch

records_st = st.lists(st.binary(max_size=40), max_size=60)


@given(records_st)
def test_from_records_roundtrip_and_arrow(records: list[bytes]) -> None:
    batch = RecordBatch.from_records(records)
    assert len(batch) == len(records)
    assert batch.to_pylist() == records == list(batch)
    assert batch.nbytes == sum(map(len, records))
    assert batch.lengths.tolist() == [len(r) for r in records]
    arrow = batch.to_arrow()
    assert arrow.type == pa.large_binary()
    assert arrow.to_pylist() == records
    # Arrow sees the same memory: no copy was made.
    assert arrow.buffers()[2].address == batch.data.ctypes.data or not batch.nbytes


@given(records_st, st.integers(1, 9), st.booleans())
def test_rebatch_keeps_every_record_in_order(
    records: list[bytes], size: int, drop_last: bool
) -> None:
    cuts = sorted({0, len(records), *range(0, len(records), 7)})
    pieces = [RecordBatch.from_records(records[a:b]) for a, b in itertools.pairwise(cuts)]
    out = list(rebatch(pieces, size, drop_last))
    assert all(len(b) == size for b in out[:-1])
    flat = [r for b in out for r in b]
    keep = len(records) // size * size if drop_last else len(records)
    assert flat == records[:keep]


@settings(max_examples=50)
@given(st.lists(st.binary(min_size=0, max_size=12), min_size=1, max_size=40), st.integers(0, 3))
def test_bin_batches_follow_iter_records(records: list[bytes], seed: int) -> None:
    """Stored and shuffled batches of a bin hold iter_records' records, in its order,
    for one part or several, fixed width or not."""
    blob = b"MAGIC___" + b"".join(records)
    ends = np.cumsum([8] + [len(r) for r in records])
    starts, ends = ends[:-1].astype(np.int64), ends[1:].astype(np.int64)
    half = len(records) // 2
    for datas, ss, es in (
        ([blob], [starts], [ends]),
        ([blob, blob], [starts[:half], starts[half:]], [ends[:half], ends[half:]]),
    ):
        for s in (None, seed):
            ref = list(iter_records(datas, ss, es, s, 3))
            got = [r for b in bin_batches(datas, ss, es, s, 3, 5) for r in b]
            assert got == ref


def test_fixed_width_views(tmp_path: Path) -> None:
    tokens = np.arange(64 * 100, dtype=np.int32).reshape(100, 64)
    write_split_data(tmp_path / "t", list(tokens), splits=3)
    loader = SplitDataLoader(tmp_path / "t")
    batch = next(loader.iterate_batches(10))
    rows = batch.as_array(np.int32)
    assert rows.shape == (10, 64)
    assert np.shares_memory(rows, batch.data)  # a view, not a copy
    assert not rows.flags.writeable  # of the read-only mapping
    assert (loader.read_batch([5, 99]).as_array(np.int32) == tokens[[5, 99]]).all()
    with pytest.raises(ValueError, match="whole number of int64"):
        RecordBatch.from_records([b"123", b"456"]).as_array(np.int64)
    with pytest.raises(ValueError, match="records differ in length"):
        RecordBatch.from_records([b"1", b"22"]).as_array()


def test_slices_view_the_same_buffer() -> None:
    batch = RecordBatch.from_records([b"a", b"bb", b"ccc", b""])
    part = batch[1:3]
    assert part.to_pylist() == [b"bb", b"ccc"]
    assert np.shares_memory(part.data, batch.data)
    assert batch[-2] == b"ccc"
    assert len(batch[3:1]) == 0
    with pytest.raises(IndexError, match="out of range for a batch of 4"):
        batch[4]
    with pytest.raises(ValueError, match="step 1"):
        batch[::2]


def test_constructor_checks() -> None:
    data = np.frombuffer(b"abcdef", np.uint8)
    assert RecordBatch(data, np.array([0, 2, 6])).to_pylist() == [b"ab", b"cdef"]
    with pytest.raises(TypeError, match="1-D uint8"):
        RecordBatch(np.zeros(3, np.int8), np.array([0, 3]))
    with pytest.raises(TypeError, match="int64"):
        RecordBatch(data, np.array([0, 3], np.int32))
    with pytest.raises(ValueError, match="rise from 0 to at most len"):
        RecordBatch(data, np.array([0, 7]))
    with pytest.raises(ValueError, match="rise from 0"):
        RecordBatch(data, np.array([0, 4, 2]))


def _flip_byte_of_record(root: Path, loader: SplitDataLoader, i: int) -> None:
    """Flip one byte of record ``i`` in its part file, in place."""
    reader = loader._open()
    pid, j = reader.snapshot.locator.locate(i)
    part = reader.snapshot.parts[pid]
    start = int(reader.part(pid).starts[j])
    loader.close()
    with open(root / part.path, "r+b") as f:
        f.seek(start)
        b = f.read(1)
        f.seek(start)
        f.write(bytes([b[0] ^ 0xFF]))


@pytest.mark.parametrize("size", [256, 8192])  # checked on every read / once per map
def test_every_new_path_checks_records(tmp_path: Path, size: int) -> None:
    records = [os.urandom(size) for _ in range(40)]
    write_split_data(tmp_path / "d", records, splits=2)
    loader = SplitDataLoader(tmp_path / "d")
    _flip_byte_of_record(tmp_path / "d", loader, 7)
    for read in (
        lambda ld: ld.read_batch([3, 7]),
        lambda ld: ld.view(7),
        lambda ld: ld[[7, 1]],
        lambda ld: list(ld.iterate_batches(4)),
        lambda ld: list(ld.iterate_binwise(copy=False)),
        lambda ld: list(ld),
    ):
        with pytest.raises(CorruptDatasetError, match="does not match its checksum|checksum"):
            read(SplitDataLoader(tmp_path / "d"))
    # A record good in this map is not hashed again; one never read is.
    fresh = SplitDataLoader(tmp_path / "d")
    assert fresh[3] == records[3]
    with pytest.raises(CorruptDatasetError, match="record 3 "):
        fresh[7]

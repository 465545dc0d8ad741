"""The chunked deal of ``_binwrite.Batches`` puts every record where a
record-by-record deal puts it: same bins, same order, same part boundaries."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _manifests import log_files

from splitdask import SplitDataLoader, SplitWriter, write_split_data
from splitdask._format import PartInfo, parse_part_name
from splitdask._format._footer import DATA_START, decode_footer_v2
from splitdask._store import LocalStore, open_store
from splitdask._write._binwrite import _BATCH_RECORDS, Batches, BinWriter


def reference(
    records: list[bytes], m: int, flush: int, max_bytes: int, max_records: int
) -> list[list[list[bytes]]]:
    """Parts of each bin as the former record-by-record deal made them."""
    parts: list[list[list[bytes]]] = [[] for _ in range(m)]
    batch: list[list[bytes]] = [[] for _ in range(m)]
    size = [0] * m
    open_: list[list[bytes] | None] = [None] * m
    pos = [0] * m

    def add(j: int, recs: list[bytes]) -> None:
        if open_[j] is None:
            open_[j], pos[j] = [], DATA_START
        part = open_[j]
        assert part is not None
        part.extend(recs)
        pos[j] += sum(map(len, recs))
        if pos[j] >= max_bytes or len(part) + 1 > max_records:
            parts[j].append(part)
            open_[j] = None

    for k, rec in enumerate(records):
        j = k % m
        batch[j].append(rec)
        size[j] += len(rec)
        if size[j] >= flush or len(batch[j]) >= _BATCH_RECORDS:
            add(j, batch[j])
            batch[j], size[j] = [], 0
    for j in range(m):
        if batch[j]:
            add(j, batch[j])
        if open_[j] is not None:
            parts[j].append(open_[j])  # type: ignore[arg-type]
    return parts


def read_part(root: Path, info: PartInfo) -> list[bytes]:
    data = (root / info.path).read_bytes()
    parsed = parse_part_name(info.path)
    assert parsed is not None
    offsets, _ = decode_footer_v2(data, len(data), info.count, parsed[1], info.path)
    return [data[a:b] for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)]


def written(root: Path, writers: list[BinWriter]) -> list[list[list[bytes]]]:
    return [[read_part(root, p) for p in w.parts] for w in writers]


@pytest.mark.parametrize(
    ("m", "n", "flush", "max_bytes", "sizes"),
    [
        (1, 20_001, 4096, 50_000, (0, 40)),  # one bin: shares longer than a batch
        (3, 9_999, 997, 10_000, (0, 300)),  # odd lengths, batches cut by bytes
        (7, 40_003, 1 << 20, 1 << 30, (1, 3)),  # tiny records: batches cut by count
        (256, 5_000, 64, 1_000, (0, 200)),  # more bins than a chunk's records per bin
        (5, 3_000, 0, 1 << 30, (0, 5)),  # every record its own batch
    ],
)
def test_chunked_deal_matches_record_by_record(
    tmp_path: Path, m: int, n: int, flush: int, max_bytes: int, sizes: tuple[int, int]
) -> None:
    rnd = random.Random(n)
    records = [rnd.randbytes(rnd.randint(*sizes)) for _ in range(n)]
    store = open_store(tmp_path)
    store.makedirs("bins")
    max_records = 1500
    writers = [BinWriter(store, j, max_bytes, max_records) for j in range(m)]
    batches = Batches(writers, flush)
    # Dealt over several calls of awkward lengths: each call picks up the rotation.
    cuts = sorted(rnd.sample(range(1, n), 4))
    for lo, hi in zip([0, *cuts], [*cuts, n], strict=True):
        batches.deal(iter(records[lo:hi]))
    batches.flush()
    for w in writers:
        w.finish()
    assert batches.k == n
    assert written(tmp_path, writers) == reference(records, m, flush, max_bytes, max_records)


def test_mixed_record_types_are_stored_as_their_bytes(tmp_path: Path) -> None:
    kinds: list[Any] = [
        b"plain",
        bytearray(b"array"),
        memoryview(b"view"),
        np.arange(3, dtype=np.int16),
        type("Sub", (bytes,), {})(b"subclass"),
    ]
    records = [kinds[i % len(kinds)] for i in range(1_003)]
    write_split_data(tmp_path / "ds", records, splits=3)
    loader = SplitDataLoader(tmp_path / "ds")
    assert list(loader) == [bytes(memoryview(r)) for r in records]


@pytest.mark.parametrize("bad_at", [0, 15, 16, 17, 5_000, 20_000])
def test_type_error_names_the_record_and_keeps_what_came_before(
    tmp_path: Path, bad_at: int
) -> None:
    records: list[Any] = [b"%d" % i for i in range(30_000)]
    records[bad_at] = "not bytes"
    with SplitWriter(tmp_path / "ds", 4) as w:
        w.write_many([b"first"])
        with pytest.raises(TypeError, match=rf"^record {bad_at + 1} is of type str"):
            w.write_many(records)
        # Everything before the bad record was dealt, as one by one would have.
        assert w._batches.k == 1 + bad_at
    assert list(SplitDataLoader(tmp_path / "ds")) == [b"first", *records[:bad_at]]


def test_generator_failing_midway_leaves_the_dataset_as_it_was(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    write_split_data(ds, [b"kept-%d" % i for i in range(100)], splits=8)
    before = (ds / "splitdask.json").read_bytes(), log_files(ds)  # no new version
    parts_before = sorted(p.name for p in (ds / "bins").iterdir())

    def failing() -> Iterator[bytes]:
        for i in range(300_000):
            if i == 123_457:
                raise RuntimeError("source failed")
            yield b"x" * 64

    with pytest.raises(RuntimeError, match="source failed"):
        write_split_data(ds, failing(), splits=8)
    assert ((ds / "splitdask.json").read_bytes(), log_files(ds)) == before
    assert sorted(p.name for p in (ds / "bins").iterdir()) == parts_before
    assert list(SplitDataLoader(ds)) == [b"kept-%d" % i for i in range(100)]


def test_generator_failure_deals_the_records_before_it(tmp_path: Path) -> None:
    def failing() -> Iterator[bytes]:
        yield from (b"%d" % i for i in range(40_001))
        raise RuntimeError("source failed")

    with SplitWriter(tmp_path / "ds", 3) as w:
        with pytest.raises(RuntimeError):
            w.write_many(failing())
        assert w._batches.k == 40_001
        w.write(b"after")
    got = list(SplitDataLoader(tmp_path / "ds"))
    assert got == [b"%d" % i for i in range(40_001)] + [b"after"]


def test_large_records_are_pulled_a_few_at_a_time(tmp_path: Path) -> None:
    """A chunk is sized by bytes: big records are not gathered 16,384 at a time."""
    pulled = 0
    seen_written: list[int] = []
    ds = tmp_path / "ds"

    def big() -> Iterator[bytes]:
        nonlocal pulled
        for i in range(400):
            if i == 300:
                seen_written.append(sum(f.stat().st_size for f in (ds / "bins").iterdir()))
            pulled += 1
            yield bytes([i % 256]) * (256 << 10)

    write_split_data(ds, big(), splits=2)
    assert pulled == 400
    # By record 300 (75 MiB pulled), most of it was already written out.
    assert seen_written[0] >= 32 << 20
    assert len(SplitDataLoader(ds)) == 400


def test_local_store_parts_are_durable_and_complete(tmp_path: Path) -> None:
    """The writeback hints leave parts byte-identical to what was written."""
    store = open_store(tmp_path)
    assert isinstance(store, LocalStore)
    store.makedirs("bins")
    sink = store.create_part("bins/x.bin", buffer_size=1 << 10)
    chunks = [bytes([i]) * random.Random(i).randint(1, 700 << 10) for i in range(12)]
    for c in chunks:
        assert sink.write(c) == len(c)
    sink.commit()
    assert (tmp_path / "bins" / "x.bin").read_bytes() == b"".join(chunks)

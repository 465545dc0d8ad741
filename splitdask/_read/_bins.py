"""Whole bins: a bin's parts loaded at once and sliced into records, in stored or
seeded order. The loader's ``iterate_binwise`` and the Dask reader both go through
:func:`load_parts` and :func:`~splitdask._dataset._order.iter_records`."""

from __future__ import annotations

import contextlib
import mmap
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import chain, islice
from typing import Any, TypeVar

from splitdask._dataset._index import BinOrder
from splitdask._dataset._order import iter_records
from splitdask._dataset._parts import Part
from splitdask._dataset._snapshot import reading_parts
from splitdask._format import Segment
from splitdask._format._compression import Decoded, Decoder, decoded, raw_of
from splitdask._read._records import RecordReader
from splitdask._store import Store

__all__ = [
    "BinData",
    "iter_records_of",
    "iter_views_of",
    "iterate_bins",
    "iterate_write_order",
    "load_parts",
    "release",
]

T = TypeVar("T")

BinData = tuple[list[Any], list[Any], list[Any]]
"""A bin's part buffers, holding records at their file offsets, with their extents."""


def iter_records_of(data: BinData, seed: int | None, bin_index: int) -> Iterator[bytes]:
    """:func:`~splitdask._dataset._order.iter_records` of one bin's data: copies (``bytes``)."""
    return iter_records(*data, seed, bin_index)


def iter_views_of(data: BinData, seed: int | None, bin_index: int) -> Iterator[Any]:
    """One bin's records as memoryviews into its parts' buffers (no copies); records
    of compressed parts are decoded, so those are views of their decoded bytes."""
    if any(isinstance(d, Decoded) for d in data[0]):
        return map(memoryview, iter_records(*data, seed, bin_index))
    return iter_records([memoryview(d) for d in data[0]], data[1], data[2], seed, bin_index)


def load_parts(store: Store, parts: Sequence[Part], generation: int | None) -> BinData:
    """Each part whole (mapped locally, one concurrent GET each remotely), checked
    against its size, footer and whole-part checksum (one pass in C, cheaper than a
    check per record); the footer comes with the part, so no extra request. A
    compressed part's buffer comes back as a ``_codec.Decoded`` (slices decoded)."""
    with reading_parts(store, generation):
        datas = store.read_whole([p.path for p in parts], [p.size for p in parts])
    starts, ends = [], []
    try:
        for k, (part, data) in enumerate(zip(parts, datas, strict=True)):
            s, e, sums = part.footer(data, store.where(part.path))
            part.check_whole(data, store.where(part.path))
            if isinstance(sums, Decoder):
                datas[k] = decoded(data, sums)
            starts.append(s)
            ends.append(e)
    except BaseException:
        release(datas)
        raise
    return datas, starts, ends


def release(datas: Sequence[Any]) -> None:
    """Unmap local parts now if nothing still views them (else garbage collection will).

    A sampling profiler (Dask's worker has one) can briefly hold a frame whose locals
    view a map, which makes ``close`` refuse.
    """
    for data in map(raw_of, datas):
        if isinstance(data, mmap.mmap):
            with contextlib.suppress(BufferError):
                data.close()


def _bin_data(reader: RecordReader, bin_index: int) -> BinData:
    pids = reader.snapshot.bin_parts[bin_index]
    if reader.store.is_local and len(pids) <= reader.max_open // 4:
        # Reuse the loader's maps: iterating again costs no new mmap per part.
        opened = [reader.part(p) for p in pids]
        for pid, o in zip(pids, opened, strict=True):
            if not o.whole:  # once per map: the file under it is immutable
                part = reader.snapshot.parts[pid]
                part.check_whole(o.data, reader.store.where(part.path))
                o.checked_whole()
        datas = [decoded(o.data, o.decode) for o in opened]
        return datas, [o.starts_np for o in opened], [o.ends_np for o in opened]
    snap = reader.snapshot
    datas, starts, ends = load_parts(snap.store, [snap.parts[p] for p in pids], snap.generation)
    for pid, data in zip(pids, datas, strict=True):
        reader.adopt(pid, raw_of(data))  # later random reads of this part need no footer request
    return datas, starts, ends


def iterate_bins(
    reader: RecordReader,
    bins: Sequence[int],
    seed: int | None,
    cut: Callable[[BinData, int | None, int], Iterator[T]] = iter_records_of,  # type: ignore[assignment]
) -> Iterator[T]:
    """Every record of ``bins`` in that order, each bin stored or shuffled by ``seed``,
    as ``cut(bin data, seed, bin)`` hands them out (records by default; batches,
    views).

    Remote bins are fetched one ahead in a thread while the current one is consumed,
    so memory stays at about two bins.
    """
    if reader.store.is_local:
        # chain() pulls the next bin's iterator only when this one is spent, and no
        # Python frame runs per record.
        return chain.from_iterable(cut(_bin_data(reader, b), seed, b) for b in bins)
    return chain.from_iterable(_prefetched(reader, bins, seed, cut))


def _prefetched(
    reader: RecordReader,
    bins: Sequence[int],
    seed: int | None,
    cut: Callable[[BinData, int | None, int], Iterator[T]],
) -> Iterator[Iterator[T]]:
    """Each bin's ``cut``, the next bin fetched in a thread meanwhile."""
    with ThreadPoolExecutor(1) as pool:
        nxt: Future[BinData] | None = pool.submit(_bin_data, reader, bins[0]) if bins else None
        for t, b in enumerate(bins):
            assert nxt is not None
            data = nxt.result()
            nxt = pool.submit(_bin_data, reader, bins[t + 1]) if t + 1 < len(bins) else None
            yield cut(data, seed, b)
            del data  # the consumer holds this bin's data only while it needs it


def iterate_write_order(reader: RecordReader) -> Iterator[bytes] | None:
    """Every record in write order by interleaving whole-bin slicing, or ``None`` when
    that does not apply (remote or legacy datasets, or more parts than the reader
    keeps open).

    Write order deals each segment's records round-robin over its bins, so it is
    the segment's bins read side by side: one iterator of record slices per bin,
    zipped. Each part is checked whole once per map, as in ``iterate_binwise``.
    """
    order = reader.snapshot.locator.order
    if (
        not reader.store.is_local
        or not isinstance(order, BinOrder)
        or len(reader.snapshot.parts) > reader.max_open // 2
    ):
        return None
    return _write_order(reader, order)


def _write_order(reader: RecordReader, order: BinOrder) -> Iterator[bytes]:
    bins: dict[int, BinData] = {}

    def segment(seg: Segment) -> Iterator[bytes]:
        ranges = []
        for j, b in enumerate(seg.bins):
            if b not in bins:
                bins[b] = _bin_data(reader, b)
            ranges.append(_records_between(bins[b], seg.first[j], seg.first[j] + seg.share(j)))
        # Full rounds first (each bin's share cut to them, so zip takes nothing it
        # drops), then one more record from each of the first count % m bins.
        rounds, extra = divmod(seg.count, len(seg.bins))
        full = zip(*(islice(r, rounds) for r in ranges), strict=False)
        return chain(chain.from_iterable(full), map(next, ranges[:extra]))

    return chain.from_iterable(map(segment, order.segments))


def _records_between(data: BinData, lo: int, hi: int) -> Iterator[bytes]:
    """Records ``lo`` to ``hi`` (local indices) of one bin's data, in stored order."""
    runs = []
    pos = 0
    for buf, ss, es in zip(*data, strict=True):
        n = len(ss)
        a, b = max(lo - pos, 0), min(hi - pos, n)
        if a < b:
            runs.append(map(buf.__getitem__, map(slice, ss[a:b].tolist(), es[a:b].tolist())))
        pos += n
        if pos >= hi:
            break
    return chain.from_iterable(runs)

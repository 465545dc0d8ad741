"""Passes over a reader's bins: bin after bin (``iterate_binwise``, ``iterate_batches``,
``read_bin``), and write order rebuilt from whole bins (``iter(loader)``).

Each bin comes from :meth:`RecordReader.bin_data
<splitdask._read._records.RecordReader.bin_data>`, which owns the part cache.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import chain, islice
from typing import Any, TypeVar

import numpy as np

from splitdask._dataset._index import BinOrder
from splitdask._format import Segment
from splitdask._read._bins import BinData
from splitdask._read._records import RecordReader

__all__ = ["NextBin", "iterate_bins", "iterate_gathered", "iterate_write_order"]

T = TypeVar("T")
Cut = Callable[[BinData, int | None, int], Iterator[T]]
"""What a pass hands out of one bin: ``cut(bin data, seed, bin)``, e.g.
:meth:`BinData.records`."""


def iterate_bins(
    reader: RecordReader, bins: Sequence[int], seed: int | None, cut: Cut[T]
) -> Iterator[T]:
    """Every record of ``bins`` in that order, each bin stored or shuffled by ``seed``,
    as ``cut(bin data, seed, bin)`` hands them out (records, batches, views).

    Remote bins are fetched ahead, within the store's in-flight budget, while the
    current one is consumed (:func:`_prefetched`).
    """
    if reader.store.is_local:
        # chain() pulls the next bin's iterator only when this one is spent, and no
        # Python frame runs per record.
        return chain.from_iterable(cut(reader.bin_data(b), seed, b) for b in bins)
    return chain.from_iterable(_prefetched(reader, bins, seed, cut))


def _prefetched(
    reader: RecordReader, bins: Sequence[int], seed: int | None, cut: Cut[T]
) -> Iterator[Iterator[T]]:
    """Each bin's ``cut``, later bins fetched meanwhile.

    Bins are fetched in order, as many ahead as fit the store's in-flight budget
    (``net.inflight_bytes``; the next bin is always fetched, however large), each by
    a thread that waits on the store's concurrent requests (the reader's own
    state is touched here, in the consumer's thread): the link stays busy
    while the caller consumes, and memory stays near the budget plus the bin in
    hand.
    """
    net = reader.store.net
    budget = net.inflight_bytes if net is not None else 0
    parts = reader.snapshot.parts
    sizes = [sum(parts[p].size for p in reader.snapshot.bin_parts[b]) for b in bins]
    ahead: deque[Future[BinData]] = deque()
    held = 0  # bytes of the bins submitted and not yet handed on
    nxt = 0
    with ThreadPoolExecutor(_THREADS) as pool:
        try:
            for t, b in enumerate(bins):
                if nxt == t:  # nothing ahead (the first bin): it goes out alone, so
                    # its requests are not queued behind the read-ahead's
                    ahead.append(pool.submit(reader.fetch_bin, b))
                    held += sizes[t]
                    nxt += 1
                data = reader.adopt(b, ahead.popleft().result())
                while nxt < len(bins) and held + sizes[nxt] <= budget and len(ahead) < _THREADS:
                    ahead.append(pool.submit(reader.fetch_bin, bins[nxt]))
                    held += sizes[nxt]
                    nxt += 1
                yield cut(data, seed, b)
                held -= sizes[t]
                del data  # the consumer holds this bin's data only while it needs it
        finally:
            for f in ahead:  # a consumer that stopped early: fetch no more
                f.cancel()


_THREADS = 16
"""Bins fetched at once at most (each a thread waiting on the store's requests)."""


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
                bins[b] = reader.bin_data(b)
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
    for k, ss in enumerate(data.starts):
        n = len(ss)
        a, b = max(lo - pos, 0), min(hi - pos, n)
        if a < b:
            runs.append(data.take(k, slice(a, b)))
        pos += n
        if pos >= hi:
            break
    return chain.from_iterable(runs)


GATHER_RECORDS = 4096
GATHER_BYTES = 64 << 20


def iterate_gathered(reader: RecordReader) -> Iterator[bytes]:
    """Every record in write order, gathered by index a slice at a time: where
    :func:`iterate_write_order` does not apply. A slice holds about
    :data:`GATHER_BYTES` of records (locally at most :data:`GATHER_RECORDS`); from a
    remote store the next slice is fetched while the caller consumes this one."""
    n = reader.num_records
    average = max(1, reader.snapshot.nbytes // max(1, n))
    # Remotely a slice is one request per part it touches, whatever its count: make
    # it as large as the bytes allow (locally, small slices keep the maps few).
    most = GATHER_RECORDS if reader.store.is_local else GATHER_BYTES
    step = max(1, min(most, GATHER_BYTES // average))
    slices = [np.arange(lo, min(n, lo + step)) for lo in range(0, n, step)]
    if reader.store.is_local:
        return chain.from_iterable(map(reader.records, slices))
    return chain.from_iterable(_gathered_ahead(reader, slices))


def _gathered_ahead(reader: RecordReader, slices: list[Any]) -> Iterator[list[bytes]]:
    with ThreadPoolExecutor(1) as pool:
        nxt = pool.submit(reader.records, slices[0]) if slices else None
        for t in range(len(slices)):
            assert nxt is not None
            got = nxt.result()
            nxt = pool.submit(reader.records, slices[t + 1]) if t + 1 < len(slices) else None
            yield got


class NextBin:
    """``read_bin`` of a remote dataset, for a caller walking bins in order.

    Reading bin ``b`` also fetches the bins after it, in threads, as the operating
    system reads a file ahead: one bin at first, twice as many each time the caller
    does ask for the next bin (up to 16 bins, within the in-flight budget), back to
    one when it asks for another. Bins fetched and not asked for are dropped.
    """

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: dict[int, Future[BinData]] = {}
        self._depth = 1

    def read(self, reader: RecordReader, b: int) -> list[bytes]:
        fut = self._ahead.pop(b, None)
        if fut is not None:
            data = reader.adopt(b, fut.result())
            self._depth = min(2 * self._depth, _THREADS)
        else:
            self._depth = 1
            data = reader.bin_data(b)
        for gone in [k for k in self._ahead if not b < k <= b + self._depth]:
            _drop(self._ahead.pop(gone))
        self._fetch_after(reader, b)
        with data:
            return list(data.records(None, b))

    def _fetch_after(self, reader: RecordReader, b: int) -> None:
        snap = reader.snapshot
        net = reader.store.net
        budget = net.inflight_bytes if net is not None else 0
        held = 0
        for k in range(b + 1, min(b + 1 + self._depth, len(snap.bin_parts))):
            held += sum(snap.parts[p].size for p in snap.bin_parts[k])
            if k > b + 1 and held > budget:
                break
            if k not in self._ahead:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(_THREADS)
                self._ahead[k] = self._pool.submit(reader.fetch_bin, k)

    def close(self) -> None:
        ahead, self._ahead = self._ahead, {}
        for fut in ahead.values():
            _drop(fut)
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)


def _drop(fut: Future[BinData]) -> None:
    """Forget a fetch nobody asked for (its errors too: a read would raise them)."""
    if fut.cancel() or not fut.done() or fut.exception() is not None:
        return
    fut.result().release()

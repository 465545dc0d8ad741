"""Whole bins: a bin's parts loaded at once and sliced into records, in stored or
seeded order. The loader's ``iterate_binwise`` and the Dask reader both go through
:func:`load_parts` and :func:`~splitdask._order.iter_records`."""

from __future__ import annotations

import contextlib
import mmap
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from splitdask._codec import Decoder, decoded, raw_of
from splitdask._order import iter_records
from splitdask._parts import Part
from splitdask._records import RecordReader
from splitdask._snapshot import missing_part
from splitdask._store import Store

__all__ = ["BinData", "iterate_bins", "load_parts", "release"]

BinData = tuple[list[Any], list[Any], list[Any]]
"""A bin's part buffers, holding records at their file offsets, with their extents."""


def load_parts(store: Store, parts: Sequence[Part], generation: int | None) -> BinData:
    """Each part whole (mapped locally, one concurrent GET each remotely), checked
    against its size, footer and whole-part checksum (one pass in C, cheaper than a
    check per record); the footer comes with the part, so no extra request. A
    compressed part's buffer comes back as a ``_codec.Decoded`` (slices decoded)."""
    try:
        datas = store.read_whole([p.path for p in parts], [p.size for p in parts])
    except FileNotFoundError as exc:
        raise missing_part(store, str(exc.filename), generation) from None
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
                o.whole = True
        datas = [decoded(o.data, o.decode) for o in opened]
        return datas, [o.starts_np for o in opened], [o.ends_np for o in opened]
    snap = reader.snapshot
    datas, starts, ends = load_parts(snap.store, [snap.parts[p] for p in pids], snap.generation)
    for pid, data in zip(pids, datas, strict=True):
        reader.adopt(pid, raw_of(data))  # later random reads of this part need no footer request
    return datas, starts, ends


def iterate_bins(reader: RecordReader, bins: Sequence[int], seed: int | None) -> Iterator[bytes]:
    """Every record of ``bins`` in that order, each bin stored or shuffled by ``seed``.

    Remote bins are fetched one ahead in a thread while the current one is consumed,
    so memory stays at about two bins.
    """
    if reader.store.is_local:
        for b in bins:
            yield from iter_records(*_bin_data(reader, b), seed, b)
        return
    with ThreadPoolExecutor(1) as pool:
        nxt: Future[BinData] | None = pool.submit(_bin_data, reader, bins[0]) if bins else None
        for t, b in enumerate(bins):
            assert nxt is not None
            data = nxt.result()
            nxt = pool.submit(_bin_data, reader, bins[t + 1]) if t + 1 < len(bins) else None
            yield from iter_records(*data, seed, b)

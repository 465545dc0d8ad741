"""Concurrent ranged GETs: whole parts in chunks, and byte ranges planned by cost.

One :class:`Fetcher` per filesystem object, running its requests on the
filesystem's event loop (fsspec keeps one loop thread per process, and a store
re-resolves its filesystem after a fork), with at most
:attr:`~splitdask._store._net.NetSettings.connections` requests in flight; the
connection pool is sized to match (:func:`~splitdask._store._resolve.with_s3_defaults`).

Planning is separate from fetching and does no I/O: :func:`plan_ranges` decides
which wanted ranges of one file are fetched as one request, :func:`chunk_spans`
how a whole part is cut into requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from splitdask._store._access import Again
from splitdask._store._net import NetSettings

__all__ = ["Fetcher", "Span", "chunk_spans", "plan_ranges"]

Span = tuple[int, int, list[int]]
"""One request of a plan: ``(lo, hi, indices of the wanted ranges it serves)``."""

_MIN_CHUNK = 1 << 20
_BUSY_MIN_CHUNK = 4 << 20
_WIDTH = 16
"""Requests one whole part is spread over at most: enough to fill a link of a few
hundred MB/s at a few tens of MB/s per connection, few enough to leave
connections to the parts fetched beside it."""


def chunk_spans(size: int, net: NetSettings, busy: bool = False) -> list[tuple[int, int]]:
    """Byte ranges a part of ``size`` bytes is fetched in.

    At most ``chunk_bytes`` each, and smaller for a part that would otherwise keep
    fewer than :data:`_WIDTH` connections busy: a lone 16 MiB part (a Dask task's,
    ``read_bin``'s, the first bin of a pass) arrives in 16 concurrent requests of
    1 MiB, not 2 of 8 MiB. When the link is ``busy`` already (a read-ahead has many
    requests in flight) pieces stay at least 4 MiB: more of them would only cost
    CPU (about 2 ms of botocore per request).
    """
    if size <= 0:
        return []
    least = _BUSY_MIN_CHUNK if busy else _MIN_CHUNK
    chunk = min(net.chunk_bytes, max(least, -(-size // _WIDTH)))
    return [(lo, min(size, lo + chunk)) for lo in range(0, size, chunk)]


def plan_ranges(
    starts: Sequence[int], ends: Sequence[int], net: NetSettings, gap: int | None = None
) -> list[Span]:
    """Wanted ranges of one file grouped into requests, by cost.

    Two neighbouring ranges are fetched as one when the gap between them costs
    less time at one connection's bandwidth than a request's latency
    (``net.gap_bytes``); a merged request is cut again where it would pass
    ``chunk_bytes``. Empty ranges need no request and are served by none. ``gap``
    overrides the largest gap merged (``0``: only ranges that touch or overlap).
    """
    order = sorted((k for k in range(len(starts)) if ends[k] > starts[k]), key=starts.__getitem__)
    spans: list[Span] = []
    most = net.chunk_bytes
    if gap is None:
        gap = net.gap_bytes
    for k in order:
        s, e = starts[k], ends[k]
        if spans:
            lo, hi, items = spans[-1]
            if s - hi <= gap and max(hi, e) - lo <= most:
                spans[-1] = (lo, max(hi, e), items)
                items.append(k)
                continue
        spans.append((s, e, [k]))
    return spans


class Fetcher:
    """Ranged GETs through one async fsspec filesystem, ``connections`` at most at once.

    Results are bytes, or the exception a request ended with (the caller words it:
    :mod:`~splitdask._store._access`).
    """

    def __init__(self, fs: Any, net: NetSettings) -> None:
        self.fs = fs
        self.net = net
        self._sem: asyncio.Semaphore | None = None
        self._active = 0  # requests issued and not answered (read without a lock: a hint)

    async def _get(self, path: str, start: int, end: int, where: str) -> bytes:
        """One ranged GET, read again while its response is damaged in transit (a
        failed transfer checksum, a body cut short: :class:`~._access.Again`);
        failures of the request itself are retried below, by the policy on the
        client (``_resolve.RetryPolicy``)."""
        if self._sem is None:  # made on the loop that runs it
            self._sem = asyncio.Semaphore(self.net.connections)
        again = Again(where)
        self._active += 1
        try:
            while True:
                try:
                    async with self._sem:
                        return bytes(await self.fs._cat_file(path, start=start, end=end))
                except Exception as exc:
                    await asyncio.sleep(again.delay(exc))
        finally:
            self._active -= 1

    def _run(self, coros: list[Any]) -> list[Any]:
        from fsspec.asyn import sync

        async def gather() -> list[Any]:
            return await asyncio.gather(*coros, return_exceptions=True)

        return list(sync(self.fs.loop, gather))

    def spans(
        self,
        paths: Sequence[str],
        los: Sequence[int],
        his: Sequence[int],
        wheres: Sequence[str],
    ) -> list[Any]:
        """Bytes ``[lo, hi)`` of each path, each cut into :func:`chunk_spans` requests,
        all at once; a range fetched in several pieces is joined into one ``bytes``
        (records sliced from it are ``bytes`` too; a short piece shows in the length)."""
        jobs: list[tuple[int, int, int]] = []
        # Busy: a quarter of the connections in flight already, or this call alone
        # fills them with pieces of the larger floor.
        wide = self.net.connections // 4
        busy = self._active >= wide or sum(his) - sum(los) >= wide * _BUSY_MIN_CHUNK
        for k, (lo, hi) in enumerate(zip(los, his, strict=True)):
            jobs += [(k, lo + a, lo + b) for a, b in chunk_spans(hi - lo, self.net, busy)]
        got = self._run([self._get(paths[k], a, b, wheres[k]) for k, a, b in jobs])
        out: list[Any] = [b"" for _ in los]
        pieces: dict[int, list[tuple[int, int, Any]]] = {}
        for (k, a, b), data in zip(jobs, got, strict=True):
            pieces.setdefault(k, []).append((a, b, data))
        for k, parts in pieces.items():
            failed = next((d for _, _, d in parts if isinstance(d, BaseException)), None)
            if failed is not None:
                out[k] = failed
            elif len(parts) == 1:
                out[k] = parts[0][2]
            else:  # in order (gather keeps it); short pieces show in the length
                out[k] = b"".join(d for _, _, d in parts)
        return out

    def wholes(
        self, paths: Sequence[str], sizes: Sequence[int], wheres: Sequence[str]
    ) -> list[Any]:
        """Each file's first ``size`` bytes (:meth:`spans` from 0)."""
        return self.spans(paths, [0] * len(sizes), sizes, wheres)

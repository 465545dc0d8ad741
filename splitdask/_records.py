"""Records out of a snapshot's parts: parts opened on first use, reads one or many.

A :class:`RecordReader` opens a part the first time a record of it is asked for:
locally it maps the file and views the footer in place; remotely it fetches the
footer (one ranged request, several footers at once for a batch) and then fetches
records by range, near ranges merged by the store.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from splitdask._codec import Decoder
from splitdask._format import record_sum
from splitdask._index import IntArray
from splitdask._parts import Part, bad_record
from splitdask._snapshot import Snapshot
from splitdask.errors import CorruptDatasetError

__all__ = ["MAX_OPEN_PARTS", "OpenPart", "RecordReader"]

MAX_OPEN_PARTS = 512
"""Opened parts a reader keeps at most. A local part holds a mapping and its
descriptor, so this bounds both however many parts a dataset has; a reader keeps
fewer when the process may open fewer files (a quarter of ``ulimit -n``)."""


def _max_open() -> int:
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return MAX_OPEN_PARTS
    if soft == resource.RLIM_INFINITY:
        return MAX_OPEN_PARTS
    return max(8, min(MAX_OPEN_PARTS, soft // 4))


class OpenPart:
    """An opened part: the mapped file (local), where each record is in it and, for
    a kind that has them, each record's checksum (``sums`` is ``None`` otherwise).
    A compressed part's footer gives a ``Decoder`` in place of the sums: ``decode``
    then checks and decodes each record, and ``sums`` is ``None``."""

    __slots__ = ("data", "decode", "ends", "ends_np", "starts", "starts_np", "sums", "sums_np",
                 "whole")  # fmt: skip

    def __init__(self, data: Any, starts: Any, ends: Any, sums: Any = None) -> None:
        self.decode = sums if isinstance(sums, Decoder) else None
        if self.decode is not None:
            sums = None
        self.data = data  # the whole part as a buffer, or None when read by range
        self.starts_np = starts
        self.ends_np = ends
        self.sums_np = sums
        self.whole = False  # whether check_whole has passed on ``data``
        # memoryview indexing returns Python ints and is several times faster than
        # indexing a NumPy array, which matters for single-record reads.
        self.starts, self.ends = _fast(starts), _fast(ends)
        self.sums = None if sums is None else _fast(sums)

    def close(self) -> None:
        data, self.data = self.data, None
        self.starts = self.ends = self.starts_np = self.ends_np = self.sums = self.sums_np = None
        if data is not None and hasattr(data, "close"):
            # A caller may still hold a view of the map; GC unmaps it then.
            with contextlib.suppress(BufferError):
                data.close()


def _fast(a: Any) -> Any:
    if a.dtype.isnative:
        # Unaligned arrays export as "=Q", which memoryview cannot index: recast.
        return memoryview(a).cast("B").cast(a.dtype.char)
    return a.tolist()


_sum = record_sum  # a module global: one dict lookup on the hot path


class RecordReader:
    """Random access to the records of one snapshot."""

    def __init__(self, snapshot: Snapshot, max_open: int | None = None) -> None:
        self.snapshot = snapshot
        self.store = snapshot.store
        self.num_records = snapshot.num_records
        self.max_open = _max_open() if max_open is None else max_open
        # Oldest-opened first; past max_open the oldest is dropped, not closed: a
        # bin iteration may still slice it, and the map goes when nothing refers to it.
        self._open: OrderedDict[int, OpenPart] = OrderedDict()
        self._locate = snapshot.locator.locate  # bound once: record() is the hot path

    def close(self) -> None:
        """Release every mapping; parts reopen on next use."""
        opened, self._open = self._open, OrderedDict()
        for part in opened.values():
            part.close()

    # -- parts ------------------------------------------------------------------------

    def part(self, pid: int) -> OpenPart:
        """Part ``pid``, opened if it was not."""
        opened = self._open.get(pid)
        if opened is None:
            opened = self._keep(pid, self._load(self.snapshot.parts[pid]))
        return opened

    def _keep(self, pid: int, opened: OpenPart) -> OpenPart:
        self._open[pid] = opened
        if len(self._open) > self.max_open:
            self._open.popitem(last=False)
        return opened

    def _load(self, part: Part) -> OpenPart:
        try:
            data, tail = self.store.open_tail(part.path, part.size, part.tail_size)
        except FileNotFoundError:
            raise self.snapshot.missing(part.path) from None
        return OpenPart(data, *part.footer(tail, self.store.where(part.path)))

    def adopt(self, pid: int, blob: Any) -> OpenPart:
        """Part ``pid`` with its extents taken from ``blob`` (the whole part, already
        fetched) if it was not open; the extents are copied so the blob can go."""
        opened = self._open.get(pid)
        if opened is None:
            part = self.snapshot.parts[pid]
            starts, ends, sums = part.footer(blob, self.store.where(part.path))
            sums = None if sums is None else sums.copy()
            opened = self._keep(pid, OpenPart(None, starts.copy(), ends.copy(), sums))
        return opened

    def _load_many(self, pids: Sequence[int]) -> None:
        """Open the parts among ``pids`` not open yet (remote tails fetched at once)."""
        todo = [p for p in dict.fromkeys(pids) if p not in self._open]
        # In chunks the cache can hold, so a batch over many parts never holds more
        # mappings at once than the cache allows; the rest open one by one when read.
        todo = todo[: max(1, self.max_open // 2)]
        parts = [self.snapshot.parts[p] for p in todo]
        try:
            opened = self.store.open_tails(
                [p.path for p in parts], [p.size for p in parts], [p.tail_size for p in parts]
            )
        except FileNotFoundError as exc:
            raise self.snapshot.missing(str(exc.filename)) from None
        for pid, part, (data, tail) in zip(todo, parts, opened, strict=True):
            self._keep(pid, OpenPart(data, *part.footer(tail, self.store.where(part.path))))

    # -- records ----------------------------------------------------------------------

    def record(self, i: int) -> Any:
        """Record at valid global index ``i``."""
        pid, j = self._locate(i)
        part = self._open.get(pid) or self.part(pid)
        start = part.starts[j]
        end = part.ends[j]
        data = part.data
        rec = data[start:end] if data is not None else self._fetch(pid, start, end)
        if part.decode is not None:  # a compressed part: checked, then decoded
            return part.decode(rec, j)
        sums = part.sums
        # Every record handed out is checked, each time: a map is only as good as
        # the disk under it, and a range read as the network.
        if sums is not None and _sum(rec) != sums[j]:
            raise self._bad(pid, j, start, end)
        return rec

    def _fetch(self, pid: int, start: int, end: int) -> bytes:
        path = self.snapshot.parts[pid].path
        try:
            return self.store.read_range(path, start, end)
        except FileNotFoundError:
            raise self.snapshot.missing(path) from None

    def _bad(self, pid: int, j: int, start: int, end: int) -> CorruptDatasetError:
        return bad_record(self.store.where(self.snapshot.parts[pid].path), j, start, end)

    def _check(self, pid: int, part: OpenPart, j: Any, got: list[Any]) -> list[Any]:
        """Check records ``j`` of ``part`` (as read, in ``got``) against their sums;
        the records as handed out (decoded, for a compressed part)."""
        if part.decode is not None:
            return part.decode.many(got, j)
        sums = part.sums_np
        if sums is None:
            return got
        for k, (want, rec) in enumerate(zip(sums[j].tolist(), got, strict=True)):
            if _sum(rec) != want:
                jj = int(j[k])
                raise self._bad(pid, jj, part.starts[jj], part.ends[jj])
        return got

    def records(self, idx: IntArray) -> list[Any]:
        """Records at valid indices ``idx``, in that order; one pass per part."""
        if not len(idx):
            return []
        return self.records_at(*self.snapshot.locator.locate_many(idx))

    def records_at(self, pids: IntArray, local: IntArray) -> list[Any]:
        """Records ``local[k]`` of parts ``pids[k]``, in that order; one pass per part."""
        out: list[Any] = [None] * len(pids)
        if not len(pids):
            return out
        self._load_many(np.unique(pids).tolist())
        by_part = np.argsort(pids, kind="stable")
        bounds = np.flatnonzero(np.diff(pids[by_part])) + 1
        paths: list[str] = []
        r_start: list[int] = []
        r_end: list[int] = []
        slots: list[int] = []
        checks: list[tuple[int, OpenPart, Any, int]] = []
        for group in np.split(by_part, bounds):
            pid = int(pids[group[0]])
            part = self.part(pid)
            j = local[group]
            starts, ends = part.starts_np[j].tolist(), part.ends_np[j].tolist()
            if part.data is not None:
                got = list(map(part.data.__getitem__, map(slice, starts, ends)))
                got = self._check(pid, part, j, got)
                for t, rec in zip(group.tolist(), got, strict=True):
                    out[t] = rec
            else:
                paths += [self.snapshot.parts[pid].path] * len(group)
                r_start += starts
                r_end += ends
                slots += group.tolist()
                checks.append((pid, part, j, len(group)))
        if slots:
            try:
                got = self.store.read_ranges(paths, r_start, r_end)
            except FileNotFoundError as exc:
                raise self.snapshot.missing(str(exc.filename)) from None
            pos = 0
            for pid, part, j, n in checks:
                got[pos : pos + n] = self._check(pid, part, j, got[pos : pos + n])
                pos += n
            for t, data in zip(slots, got, strict=True):
                out[t] = data
        return out

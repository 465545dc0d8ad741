"""Records out of a snapshot's parts: parts opened on first use, reads one or many.

A :class:`RecordReader` opens a part the first time a record of it is asked for:
locally it maps the file and views the footer in place; remotely it fetches the
footer (one ranged request, several footers at once for a batch) and then fetches
records by range, near ranges merged by the store. It alone owns its part cache:
whole bins (:meth:`RecordReader.bin_data`) reuse and fill it too.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from operator import attrgetter, getitem
from typing import Any

import numpy as np

from splitdask._dataset._index import IntArray
from splitdask._dataset._parts import Part
from splitdask._dataset._snapshot import Snapshot
from splitdask._format import Footer, record_sum
from splitdask._format._partcodec import bad_record
from splitdask._read._batch import RecordBatch
from splitdask._read._bins import BinData, load_parts
from splitdask._read._entries import open_sparse
from splitdask._read._openpart import OpenPart
from splitdask._read._ranged import read_grouped
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


_sum = record_sum  # a module global: one dict lookup on the hot path


class RecordReader:
    """Random access to the records of one snapshot. ``record(i)`` is a closure built
    for the snapshot's layout: the hottest path makes no method lookups."""

    def __init__(self, snapshot: Snapshot, max_open: int | None = None) -> None:
        self.snapshot = snapshot
        self.store = snapshot.store
        self.num_records = snapshot.num_records
        self.max_open = _max_open() if max_open is None else max_open
        # Opened parts by number (None: not open), and the order they were opened in;
        # past max_open the oldest is dropped, not closed: a bin iteration may still
        # slice it, and the map goes when nothing refers to it.
        nparts = len(snapshot.parts)
        self._slots: list[OpenPart | None] = [None] * nparts
        self._hot: list[tuple[Any, ...] | None] = [None] * nparts  # OpenPart.hot() of each
        self._opened: deque[int] = deque()
        # Per part, for batches to use with one NumPy call each: open, mapped, and
        # stored as is (OpenPart.in_place)? And (facts of the file, kept) its records'
        # shared width (0: none) and start.
        self._in_place = np.zeros(nparts, dtype=bool)
        self._width = np.zeros(nparts, dtype=np.int64)
        self._first = np.zeros(nparts, dtype=np.int64)
        self._plain = np.zeros(nparts, dtype=bool)  # checked on every read: sums, no memo
        self.record: Callable[[int], Any] = self._scalar()
        self.locate_many = snapshot.locator.vector()

    def close(self) -> None:
        """Release every mapping; parts reopen on next use."""
        opened, self._opened = self._opened, deque()
        self._in_place[:] = False
        for pid in opened:
            part, self._slots[pid], self._hot[pid] = self._slots[pid], None, None
            if part is not None:
                part.close()

    # -- parts ------------------------------------------------------------------------

    def part(self, pid: int) -> OpenPart:
        """Part ``pid``, opened if it was not."""
        opened = self._slots[pid]
        if opened is None:
            opened = self._keep(pid, self._load(self.snapshot.parts[pid]))
        return opened

    def open_parts(self) -> list[OpenPart]:
        """The parts open now, oldest first."""
        return [p for p in map(self._slots.__getitem__, self._opened) if p is not None]

    def _keep(self, pid: int, opened: OpenPart) -> OpenPart:
        self._slots[pid] = opened
        self._hot[pid] = opened.hot()
        self._opened.append(pid)
        # Parts not in place (read by range, or decoded) take the grouped path.
        self._in_place[pid] = opened.in_place
        self._width[pid] = opened.width
        self._first[pid] = opened.first
        self._plain[pid] = opened.sums is not None and opened.memo is None
        if len(self._opened) > self.max_open:
            gone = self._opened.popleft()
            self._slots[gone] = self._hot[gone] = None
            self._in_place[gone] = False
        return opened

    def _load(self, part: Part) -> OpenPart:
        sparse = self._sparse(part)
        if sparse is not None:
            return sparse
        with self.snapshot.reading(part.path):
            data, tail = self.store.open_tail(part.path, part.size, part.tail_size)
        return OpenPart(data, part.footer(tail, self.store.where(part.path)))

    def _sparse(self, part: Part) -> OpenPart | None:
        return None if self.store.is_local else open_sparse(self.snapshot, part)

    def bin_data(self, bin_index: int) -> BinData:
        """One bin's parts whole, each checked whole once per map.

        A local bin of few parts is this reader's own maps (iterating again maps
        nothing new; :meth:`BinData.release` leaves them to :meth:`close`). Others
        are read whole, and the extents of parts not open are kept, so later random
        reads of them need no footer request.
        """
        pids = self.snapshot.bin_parts[bin_index]
        if self.store.is_local and len(pids) <= self.max_open // 4:
            opened = [self.part(p) for p in pids]
            for pid, o in zip(pids, opened, strict=True):
                if not o.whole:  # once per map: the file under it is immutable
                    part = self.snapshot.parts[pid]
                    part.check_whole(o.data, self.store.where(part.path))
                    o.checked_whole()
            return BinData(
                [o.data for o in opened],
                [o.starts_np for o in opened],
                [o.ends_np for o in opened],
                [o.codec for o in opened],
                owned=False,
            )
        return self.adopt(bin_index, self.fetch_bin(bin_index))

    def fetch_bin(self, bin_index: int) -> BinData:
        """One bin's parts read whole and checked, touching nothing of this reader's
        (safe from another thread: a read-ahead's)."""
        snap = self.snapshot
        parts = [snap.parts[p] for p in snap.bin_parts[bin_index]]
        return load_parts(self.store, parts, snap.generation)

    def adopt(self, bin_index: int, data: BinData) -> BinData:
        """Keep the extents of ``data``'s parts (from :meth:`fetch_bin`) that are not
        open, so later random reads of them need no footer request."""
        pids = self.snapshot.bin_parts[bin_index]
        for pid, s, e, codec in zip(pids, data.starts, data.ends, data.codecs, strict=True):
            opened = self._slots[pid]
            if opened is None or opened.sparse:  # copies: the whole part can go
                self._keep(pid, OpenPart(None, Footer(s.copy(), e.copy(), codec.detached())))
        return data

    def _load_many(self, pids: Sequence[int]) -> None:
        """Open the parts among ``pids`` not open yet (remote tails fetched at once)."""
        todo = [p for p in pids if self._slots[p] is None]
        # In chunks the cache can hold, so a batch over many parts never holds more
        # mappings at once than the cache allows; the rest open one by one when read.
        todo = todo[: max(1, self.max_open // 2)]
        for pid in todo:
            sparse = self._sparse(self.snapshot.parts[pid])
            if sparse is not None:
                self._keep(pid, sparse)
        todo = [p for p in todo if self._slots[p] is None]
        if not todo:
            return
        parts = [self.snapshot.parts[p] for p in todo]
        with self.snapshot.reading():
            opened = self.store.open_tails(
                [p.path for p in parts], [p.size for p in parts], [p.tail_size for p in parts]
            )
        for pid, part, (data, tail) in zip(todo, parts, opened, strict=True):
            self._keep(pid, OpenPart(data, part.footer(tail, self.store.where(part.path))))

    # -- records ----------------------------------------------------------------------

    def _scalar(self) -> Callable[[int], Any]:
        locator = self.snapshot.locator
        locate, one = locator.scalar(), locator.round_robin
        s0, m, bins, first = one if one is not None else (0, 1, [], [])
        hot, fetch, bad = self._hot, self._fetch, self._bad

        def load(pid: int) -> tuple[Any, ...]:
            self.part(pid)
            return hot[pid]  # type: ignore[return-value]

        def record(i: int) -> Any:
            """Record at valid global index ``i``."""
            if one is not None:  # one segment, one part per bin: inlined locate
                k = i - s0
                r = k % m
                pid, j = bins[r], first[r] + k // m
            else:
                pid, j = locate(i)
            data, w, base, starts, ends, sums, memo, decode = hot[pid] or load(pid)
            if w:
                start = base + j * w
                end = start + w
            else:
                start = starts[j]
                end = ends[j]
            rec = data[start:end] if data is not None else fetch(pid, start, end)
            if decode is not None:  # a compressed part: checked, then decoded
                return decode(rec, j)
            # Every record handed out is checked: a map is only as good as the disk
            # under it, and a range read as the network. Large records are checked
            # once per map (the file under a map is immutable, as for whole parts).
            if sums is not None and (memo is None or memo[j]):
                if _sum(rec) != sums[j]:
                    raise bad(pid, j, start, end)
                if memo is not None:
                    memo[j] = 0
            return rec

        return record

    def view(self, i: int) -> memoryview:
        """Record at valid global index ``i`` as a memoryview into its part's map
        (over the fetched bytes for a part read by range); checked as :attr:`record`."""
        pid, j = self.snapshot.locator.locate(i)
        part = self.part(pid)
        if not part.in_place:  # read by range, or decoded: no map to view
            return memoryview(self.record(i))
        start, end = part.starts[j], part.ends[j]
        rec = part.view_of(start, end)
        if part.sums is not None and (part.memo is None or part.memo[j]):
            if _sum(rec) != part.sums[j]:
                raise self._bad(pid, j, start, end)
            if part.memo is not None:
                part.memo[j] = 0
        return rec

    def batch(self, idx: IntArray) -> RecordBatch:
        """Records at valid indices ``idx`` as one batch, in order; mapped records are
        sliced as views, so joining them is the one copy."""
        return RecordBatch.from_records(self.records_at(*self.locate_many(idx), views=True))

    def _fetch(self, pid: int, start: int, end: int) -> bytes:
        path = self.snapshot.parts[pid].path
        with self.snapshot.reading(path):
            return self.store.read_range(path, start, end)

    def _bad(self, pid: int, j: int, start: int, end: int) -> CorruptDatasetError:
        return bad_record(self.store.where(self.snapshot.parts[pid].path), j, start, end)

    def records(self, idx: IntArray) -> list[Any]:
        """Records at valid indices ``idx``, in that order."""
        if not len(idx):
            return []
        return self.records_at(*self.locate_many(idx))

    def records_at(self, pids: IntArray, local: IntArray, views: bool = False) -> list[Any]:
        """Records ``local[k]`` of parts ``pids[k]``, in that order (memoryviews of
        mapped parts with ``views``, bytes otherwise).

        Mapped parts are sliced in one pass of C loops over the whole batch; parts
        read by range go through the store in one merged, concurrent request set.
        """
        if not len(pids):
            return []
        if self._in_place[pids].all():  # the steady state: one NumPy call to know
            return self._mapped(pids, local, views)
        uniq = np.unique(pids).tolist()
        if len(uniq) <= self.max_open // 2:
            self._load_many(uniq)
            if self._in_place[pids].all():
                return self._mapped(pids, local, views)
        return read_grouped(self.snapshot, self.part, pids, local)

    def extents_at(
        self, parts: list[OpenPart], pids: IntArray, local: IntArray
    ) -> tuple[list[int], list[int]]:
        """Start and end offsets of records ``local[k]`` of open ``parts[k]``."""
        widths = self._width[pids]
        if widths.all():  # fixed-size records: arithmetic, no footer lookups
            starts = self._first[pids] + local * widths
            return starts.tolist(), (starts + widths).tolist()
        js = local.tolist()
        return list(map(getitem, map(_STARTS, parts), js)), list(
            map(getitem, map(_ENDS, parts), js)
        )

    def _mapped(self, pids_np: IntArray, local: IntArray, views: bool = False) -> list[Any]:
        """Records ``local[k]`` of open, mapped parts ``pids[k]`` (memoryviews into
        the maps with ``views``): looking up, slicing and checking each run in C
        loops (``map``), one pass each."""
        pids = pids_np.tolist()
        parts: list[OpenPart] = list(map(self._slots.__getitem__, pids))  # type: ignore[arg-type]
        starts, ends = self.extents_at(parts, pids_np, local)
        bufs = [p.viewed() for p in parts] if views else list(map(_DATA, parts))
        recs = list(map(getitem, bufs, map(slice, starts, ends)))
        self._check(parts, pids_np, local.tolist(), recs)
        return recs

    def _check(self, parts: list[OpenPart], pids: IntArray, js: list[int], recs: list[Any]) -> None:
        """Check records ``recs[k]`` (record ``js[k]`` of ``parts[k]``, part number
        ``pids[k]``) against their sums; parts of large records skip those already
        checked in their map."""
        if self._plain[pids].all():
            sums = list(map(getitem, map(_SUMS, parts), js))
            if list(map(_sum, recs)) == sums:
                return
        for k, part in enumerate(parts):  # mixed kinds, memos, or a bad record
            j, memo = js[k], part.memo
            if part.sums is None or (memo is not None and not memo[j]):
                continue
            if _sum(recs[k]) != part.sums[j]:
                raise self._bad(int(pids[k]), j, part.starts[j], part.ends[j])
            if memo is not None:
                memo[j] = 0


_STARTS = attrgetter("starts")
_ENDS = attrgetter("ends")
_DATA = attrgetter("data")
_SUMS = attrgetter("sums")

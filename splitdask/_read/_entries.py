"""A remote part's footer read by the entry: only the extents and checksums a read needs.

A v2 part of 256-byte records has a footer of 16 bytes a record (258 KB for 16,384
records). Fetched whole on the first random read of a part, footers would dwarf the
records read: 16.5 MB of footers for the first 2,000 random reads of a 64-part
dataset. :class:`FooterEntries` instead fetches, for each record asked for, its two
offsets and its checksum (24 bytes, two ranges), and keeps them; the store plans
the ranges of many records (of many parts) into few requests.

Each record is still checked against its own checksum; the footer's hash and the
part's uid are checked when a part is read whole (bin reads, ``verify``). An entry
that puts its record outside the part's records is refused. The first entries of a
part come with the footer's stored hash (8 bytes), which must be the one the
manifest recorded: a footer rewritten to match swapped records is refused.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

import numpy as np

from splitdask._dataset._parts import Part, V2Part
from splitdask._dataset._snapshot import Snapshot
from splitdask._format import DATA_START, entry_tables, footer_hash_at
from splitdask._format._partcodec import Footer, Summed
from splitdask._read._openpart import OpenPart
from splitdask.errors import CorruptDatasetError

__all__ = ["SPARSE_MIN_FOOTER", "FooterEntries", "fetch_entries", "open_sparse"]

SPARSE_MIN_FOOTER = 64 << 10
"""Footers at least this large are fetched by the entry; smaller ones whole (one
request either way, and a small footer serves every later read of its part)."""

_TWO = struct.Struct("<QQ")
_ONE = struct.Struct("<Q")


class _Column:
    """One table of a :class:`FooterEntries` (starts, ends or sums), indexed as the
    readers index a footer's arrays: by an int, or by an array of ints."""

    __slots__ = ("_dtype", "_values", "owner")

    def __init__(self, owner: FooterEntries, values: Any, dtype: Any = np.int64) -> None:
        self.owner = owner
        self._values = values
        self._dtype = dtype

    def __getitem__(self, j: Any) -> Any:
        if isinstance(j, np.ndarray):
            js = j.tolist()
            self.owner.ensure(js)
            return np.fromiter(map(self._values.__getitem__, js), self._dtype, len(js))
        try:
            return self._values[j]
        except KeyError:
            self.owner.ensure([j])
            return self._values[j]

    def __len__(self) -> int:
        return self.owner.count


class FooterEntries:
    """Extents and checksums of a v2 part's records, fetched by range when first asked.

    ``fetch(starts, ends)`` reads byte ranges of the part (the reader's store call).
    The first record of a part costs its entries only; from the second on, the whole
    footer is read (:meth:`buy`, once): a part read twice is likely read again, and
    then one footer costs less than an entry request per record (ski rental: never
    more than about twice the cheaper choice).
    """

    def __init__(self, part: V2Part, where: str, fetch: Any) -> None:
        self.part = part
        self.count = part.count
        self.where = where
        self._fetch = fetch
        self._offsets, self._sums = entry_tables(part.size, part.count)
        self._data_end = self._offsets  # records end where the footer starts
        self.starts = _Column(self, {})
        self.ends = _Column(self, {})
        self.sums = _Column(self, {}, np.uint64)
        self.whole = False
        # Whether the footer's hash is still to be fetched and compared (once).
        self._hash_due = bool(part.footer_sum)

    @property
    def known(self) -> int:
        """Records whose entries are known (all of them once :attr:`whole`)."""
        return self.count if self.whole else len(self.sums._values)

    def missing(self, js: Iterable[int]) -> list[int]:
        """Those of records ``js`` whose entries are not known yet (each once)."""
        if self.whole:
            return []
        known = self.sums._values
        return sorted({j for j in js if j not in known})

    def should_buy(self, missing: list[int]) -> bool:
        """Whether fetching the entries of ``missing`` should read the whole footer."""
        return bool(missing) and self.known + len(missing) >= 2

    def ranges(self, js: list[int]) -> tuple[list[int], list[int]]:
        """Byte ranges of the part holding the entries of records ``js``: for each,
        its two offsets, then its checksum; first the footer's hash, if it is due."""
        starts, ends = [], []
        if self._hash_due:
            at = footer_hash_at(self.part.size)
            starts.append(at)
            ends.append(at + 8)
        for j in js:
            lo = self._offsets + 8 * j
            starts += [lo, self._sums + 8 * j]
            ends += [lo + 16, self._sums + 8 * j + 8]
        return starts, ends

    def fill(self, js: list[int], got: list[Any]) -> None:
        """Keep the entries of records ``js`` from the ranges :meth:`ranges` gave.

        Raises
        ------
        CorruptDatasetError
            If an entry puts its record outside the part's records, or the footer's
            hash is not the one the manifest recorded.
        """
        if self._hash_due:
            (found,) = _ONE.unpack(got[0])
            self.part.check_footer_sum(found, self.where)
            self._hash_due = False
            got = got[1:]
        starts, ends, sums = self.starts._values, self.ends._values, self.sums._values
        for k, j in enumerate(js):
            start, end = _TWO.unpack(got[2 * k])
            if not DATA_START <= start <= end <= self._data_end:
                raise CorruptDatasetError(
                    f"{self.where}: the footer puts record {j} at bytes {start}-{end}, "
                    f"outside the part's records ({DATA_START}-{self._data_end}): damaged"
                )
            starts[j], ends[j] = start, end
            (sums[j],) = _ONE.unpack(got[2 * k + 1])

    def tail_range(self) -> tuple[int, int]:
        """The byte range of the whole footer."""
        return self.part.size - self.part.tail_size, self.part.size

    def buy(self, tail: Any) -> None:
        """Take the whole footer (checked: its hash, the part's uid, every offset);
        every record's entries are known from now on."""
        starts, ends, codec = self.part.footer(tail, self.where)
        self.starts._values = _ints(starts)
        self.ends._values = _ints(ends)
        self.sums._values = _ints(codec.sums)
        self.whole = True

    def ensure(self, js: Iterable[int]) -> None:
        """Fetch the entries of those of records ``js`` not known yet."""
        todo = self.missing(js)
        if not todo:
            return
        if self.should_buy(todo):
            lo, hi = self.tail_range()
            (tail,) = self._fetch([lo], [hi])
            self.buy(tail)
        else:
            self.fill(todo, self._fetch(*self.ranges(todo)))

    def footer(self) -> Footer:
        """These entries as a footer, for :class:`~splitdask._read._openpart.OpenPart`."""
        return Footer(self.starts, self.ends, Summed(self.sums, self.where))


def _ints(a: Any) -> Any:
    """A footer array indexed fast by Python ints (a memoryview where the layout allows)."""
    if a.dtype.isnative:
        return memoryview(a).cast("B").cast(a.dtype.char)
    return a.tolist()


def open_sparse(snapshot: Snapshot, part: Part) -> OpenPart | None:
    """``part`` of a remote ``snapshot`` opened with its entries fetched as asked (no
    request yet), or ``None`` where its footer is better read whole (other kinds, or
    a footer under :data:`SPARSE_MIN_FOOTER`)."""
    if type(part) is not V2Part or part.tail_size < SPARSE_MIN_FOOTER:
        return None
    store, path = snapshot.store, part.path

    def fetch(starts: list[int], ends: list[int]) -> list[bytes]:
        with snapshot.reading(path):
            return store.read_ranges([path] * len(starts), starts, ends, gap=0)

    return OpenPart(None, FooterEntries(part, store.where(path), fetch).footer())


def fetch_entries(snapshot: Snapshot, wanted: list[tuple[OpenPart, str, Any]]) -> None:
    """For each ``(opened part, its path, records js)``, fetch what a part read by the
    entry lacks for ``js`` (entries, or its whole footer: :meth:`FooterEntries.should_buy`),
    all in one set of concurrent requests."""
    paths: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    todo = []
    for opened, path, js in wanted:
        if not opened.sparse:
            continue
        entries = opened.starts.owner
        missing = entries.missing(js.tolist())
        if not missing:
            continue
        buy = entries.should_buy(missing)
        los, his = ([r] for r in entries.tail_range()) if buy else entries.ranges(missing)
        paths += [path] * len(los)
        starts += los
        ends += his
        todo.append((entries, missing, buy, len(los)))
    if not paths:
        return
    with snapshot.reading():
        got = snapshot.store.read_ranges(paths, starts, ends, gap=0)
    pos = 0
    for entries, missing, buy, n in todo:
        if buy:
            entries.buy(got[pos])
        else:
            entries.fill(missing, got[pos : pos + n])
        pos += n

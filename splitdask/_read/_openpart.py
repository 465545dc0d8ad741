"""An opened part: its buffer, where each record is in it, and how records are checked.

No I/O: a :class:`~splitdask._read._records.RecordReader` opens the file and hands the
buffer and the part's :class:`~splitdask._format._partcodec.Footer` to :class:`OpenPart`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from splitdask._format import Footer
from splitdask._format._partcodec import PLAIN
from splitdask._read._batch import fixed_width

__all__ = ["MEMO_MIN_BYTES", "OpenPart"]

MEMO_MIN_BYTES = 4096
"""Records at least this long on average are checked once per map, not on every
read: hashing them costs about as much as copying them, while a smaller record
costs more to look up in a memo than to hash again."""


class OpenPart:
    """An opened part: the mapped file (local), where each record is in it, its
    codec and, for a kind that has them, each record's checksum (``sums`` is
    ``None`` otherwise).

    ``starts``, ``ends`` and ``sums`` may instead be the columns of a
    :class:`~splitdask._read._entries.FooterEntries` (a remote part whose footer is
    fetched by the entry): indexed the same way, fetching what is not known yet.

    When every record has the same length and they lie back to back, ``width`` is
    that length and record ``j`` starts at ``first + j * width``: no footer lookup.
    ``memo[j]`` is 1 until record ``j`` has been checked in this map; it exists
    only for mapped parts of large records (:data:`MEMO_MIN_BYTES`). A part read by
    range (``data is None``) checks every read, since each is new bytes.

    Where a record is not its stored bytes (a compressed part), ``decode`` is the
    codec, which checks and decodes each record; it is ``None`` otherwise. ``in_place``
    says that records can be sliced out of ``data`` as they are (mapped, and stored as
    they are).
    """

    __slots__ = (
        "codec",
        "data",
        "decode",
        "ends",
        "ends_np",
        "first",
        "in_place",
        "memo",
        "mview",
        "sparse",
        "starts",
        "starts_np",
        "sums",
        "whole",
        "width",
    )

    def __init__(self, data: Any, footer: Footer) -> None:
        starts, ends, codec = footer
        self.codec = codec
        self.decode = None if codec.in_place else codec
        self.data = data  # the whole part as a buffer, or None when read by range
        self.in_place = data is not None and codec.in_place
        self.starts_np = starts
        self.ends_np = ends
        self.whole = False  # whether check_whole has passed on ``data``
        self.mview: memoryview | None = None  # of ``data``, made on the first view()
        sums = codec.sums
        self.sparse = not isinstance(starts, np.ndarray)
        if self.sparse:  # entries fetched as asked (_entries)
            self.starts, self.ends, self.sums = starts, ends, sums
            self.first, self.width, self.memo = 0, 0, None
            return
        # memoryview indexing returns Python ints and is several times faster than
        # indexing a NumPy array, which matters for single-record reads.
        self.starts, self.ends = _fast(starts), _fast(ends)
        self.sums = None if sums is None else _fast(sums)
        n = len(starts)
        self.first = int(starts[0]) if n else 0
        self.width = fixed_width(starts, ends)
        big = n and data is not None and (int(ends[-1]) - self.first) >= MEMO_MIN_BYTES * n
        self.memo = bytearray(b"\x01") * n if sums is not None and big else None

    def checked_whole(self) -> None:
        """:meth:`Part.check_whole` passed on ``data``: no record is hashed again."""
        self.whole = True
        if self.memo is not None:
            self.memo[:] = bytes(len(self.memo))  # in place: readers hold this memo

    def hot(self) -> tuple[Any, ...]:
        """What a single-record read needs, as one tuple (unpacked in one step)."""
        return (
            self.data,
            self.width,
            self.first,
            self.starts,
            self.ends,
            self.sums,
            self.memo,
            None if self.decode is None else self.decode.hot(),
        )

    def viewed(self) -> memoryview:
        """The mapped part as a memoryview, made once (slices of it copy nothing)."""
        if self.mview is None:
            self.mview = memoryview(self.data).cast("B")
        return self.mview

    def view_of(self, start: int, end: int) -> memoryview:
        """Bytes ``start:end`` of the mapped part, as a memoryview (no copy)."""
        return self.viewed()[start:end]

    def close(self) -> None:
        if self.mview is not None:
            # Views handed out keep the buffer (and so the map) until they go.
            self.mview.release()
            self.mview = None
        data, self.data = self.data, None
        self.starts = self.ends = self.starts_np = self.ends_np = self.sums = self.decode = None
        self.codec, self.in_place = PLAIN, False  # the codec may view the map too
        if data is not None and hasattr(data, "close"):
            # A caller may still hold a view of the map; GC unmaps it then.
            with contextlib.suppress(BufferError):
                data.close()


def _fast(a: Any) -> Any:
    if a.dtype.isnative:
        # Unaligned arrays export as "=Q", which memoryview cannot index: recast.
        return memoryview(a).cast("B").cast(a.dtype.char)
    return a.tolist()

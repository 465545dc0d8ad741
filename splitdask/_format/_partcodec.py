"""What a part's footer says, and how each part kind's records are checked: no I/O.

:meth:`Part.footer <splitdask._dataset._parts.Part.footer>` returns a :class:`Footer`:
where each record lies in the part, and the part's :class:`PartCodec`. There is one
small codec class per way of storing records, behind one interface (fsspec's cache
classes are the model): :class:`PartCodec` itself for records stored as they are
with no checksum of their own (format v1, splitdataloader bins), :class:`Summed` for
an XXH3-64 per record (v2), and ``_compression.Decoder`` for zstd frames (v3).
Readers call the codec and never ask which kind a part is.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import xxhash

from splitdask.errors import CorruptDatasetError

__all__ = ["PLAIN", "Footer", "PartCodec", "Summed", "bad_record", "record_sum"]

record_sum = xxhash.xxh3_64_intdigest
"""A record's checksum in a v2 footer (benchmarked cheaper than CRC32C through
Python: docs/decisions.md)."""


class PartCodec:
    """Records stored as they are, with no checksum of their own: format v1 parts
    (the manifest checksums the whole part) and splitdataloader bins.

    The base of every codec; a subclass overrides what its kind does differently.
    """

    __slots__ = ()

    in_place = True
    """Whether a record is its stored bytes. Readers then slice records (or views)
    out of the part and check them against :attr:`sums` inline, because a call per
    record would cost more than the slice; otherwise they call the codec."""
    sums: Any = None
    """Each record's :func:`record_sum`, for readers to compare inline (``None``:
    nothing to compare per record)."""

    def __call__(self, stored: Any, j: int) -> Any:
        """Record ``j`` from its stored bytes, checked and decoded (for a kind in
        place, the bytes themselves: readers check those against :attr:`sums`)."""
        return stored

    def hot(self) -> Any:
        """What single-record reads call instead of the codec itself, if faster
        (a plain function rather than an object's ``__call__``)."""
        return self

    def check(self, stored: list[Any], js: Any, starts: Any, ends: Any) -> list[Any]:
        """Records ``js`` as handed out, from their stored bytes, each checked (and
        decoded). ``starts``/``ends`` are the part's extents, for the error.

        Raises
        ------
        CorruptDatasetError
            Naming the part and the first record that fails its check.
        """
        return stored

    def first_bad(self, data: Any, starts: Any, ends: Any) -> int | None:
        """The first record of the whole part ``data`` that fails its checksum
        (``None``: none does, or the kind has no checksum per record)."""
        return None

    def whole(self, data: Any) -> Any:
        """The whole part ``data`` (already checked at once) as a buffer whose slices
        are records."""
        return data

    def views(self, data: Any) -> Any:
        """As :meth:`whole`, with slices that are memoryviews (into the part, for a
        kind in place)."""
        return memoryview(data)

    def detached(self) -> PartCodec:
        """This codec, holding no view of the buffer its footer was read from."""
        return self

    def record_sizes(self, starts: Any, ends: Any) -> npt.NDArray[np.int64]:
        """Each record's size as readers hand it out, where the footer says it
        without decoding; else its stored extent (``ends - starts``)."""
        return np.asarray(ends, np.int64) - np.asarray(starts, np.int64)


PLAIN = PartCodec()
"""The codec of parts whose records are stored as they are, unchecked."""


class Summed(PartCodec):
    """Records stored as they are, each with its XXH3-64 in the footer (format v2);
    ``where`` names the part in errors."""

    __slots__ = ("sums", "where")

    def __init__(self, sums: Any, where: str) -> None:
        self.sums = sums
        self.where = where

    def check(self, stored: list[Any], js: Any, starts: Any, ends: Any) -> list[Any]:
        for k, (want, rec) in enumerate(zip(self.sums[js].tolist(), stored, strict=True)):
            if record_sum(rec) != want:
                j = int(js[k])
                raise bad_record(self.where, j, starts[j], ends[j])
        return stored

    def first_bad(self, data: Any, starts: Any, ends: Any) -> int | None:
        for j, (s, e) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
            if record_sum(data[s:e]) != int(self.sums[j]):
                return j
        return None

    def detached(self) -> Summed:
        return Summed(self.sums.copy(), self.where)


class Footer(NamedTuple):
    """What a part's footer says: each record's start and end offset in the part,
    and the codec its records are checked (and decoded) with."""

    starts: Any
    ends: Any
    codec: PartCodec


def bad_record(where: str, j: int, start: int, end: int) -> CorruptDatasetError:
    """The error for record ``j`` of a part whose bytes do not match their checksum."""
    return CorruptDatasetError(
        f"{where}: record {j} (bytes {start}-{end}) does not match its checksum "
        "(the file was altered or a read returned wrong bytes)"
    )

"""Columnar batches of records: :class:`RecordBatch`, and re-cutting a stream of them.

A batch is Arrow's ``large_binary`` layout: one contiguous ``uint8`` buffer and
``n + 1`` ``int64`` offsets, record ``k`` being ``data[offsets[k]:offsets[k + 1]]``.
A training step gets its records as two arrays instead of ``n`` Python objects,
and a batch of records that lie back to back in a mapped part is a view of the
map, not a copy. No I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import pairwise
from operator import getitem
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from splitdask._dataset._order import bin_permutation, flat_extents
from splitdask._format import PartCodec
from splitdask._format._partcodec import PLAIN
from splitdask._util._extras import require

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["RecordBatch", "bin_batches", "fixed_width", "rebatch"]

ByteArray = npt.NDArray[np.uint8]
OffsetArray = npt.NDArray[np.int64]


class RecordBatch:
    """Records as one byte buffer and their offsets (Arrow's ``large_binary`` layout).

    Parameters
    ----------
    data
        One-dimensional ``uint8`` array holding the records back to back.
    offsets
        One-dimensional ``int64`` array of ``len(batch) + 1`` non-decreasing offsets
        into ``data``, starting at 0.

    Raises
    ------
    TypeError, ValueError
        If the arrays are of the wrong kind or the offsets do not fit ``data``.

    Notes
    -----
    Batches from a local dataset may be read-only views of its mapped files; they
    stay valid after the loader is closed (the mapping goes when the last view
    does). ``batch.to_arrow()`` hands both buffers to pyarrow without a copy, and
    ``batch.as_array(np.int32)`` views records of one length as a 2-D array (token
    ids, say), also without a copy.
    """

    __slots__ = ("data", "offsets")

    data: ByteArray
    offsets: OffsetArray

    def __init__(self, data: Any, offsets: Any) -> None:
        data, offsets = np.asarray(data), np.asarray(offsets)
        if data.dtype != np.uint8 or data.ndim != 1:
            raise TypeError(f"data must be a 1-D uint8 array, not {data.dtype} of {data.ndim}-D")
        if offsets.dtype != np.int64 or offsets.ndim != 1 or not len(offsets):
            raise TypeError(
                f"offsets must be a non-empty 1-D int64 array, not {offsets.dtype} of "
                f"{offsets.ndim}-D with {len(offsets)} entries"
            )
        if offsets[0] != 0 or offsets[-1] > len(data) or (np.diff(offsets) < 0).any():
            raise ValueError(
                f"offsets must rise from 0 to at most len(data) = {len(data)}; got "
                f"{offsets[0]} ... {offsets[-1]}"
            )
        self.data, self.offsets = data, offsets

    @classmethod
    def _of(cls, data: ByteArray, offsets: OffsetArray) -> RecordBatch:
        """A batch from arrays this package built (already valid): no checks."""
        batch = cls.__new__(cls)
        batch.data, batch.offsets = data, offsets
        return batch

    @classmethod
    def from_records(cls, records: Iterable[Any]) -> RecordBatch:
        """A batch holding a copy of ``records`` (bytes-like objects), in order."""
        recs = records if isinstance(records, list) else list(records)
        lengths = np.fromiter(map(len, recs), np.int64, len(recs))
        offsets = np.zeros(len(recs) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return cls._of(np.frombuffer(b"".join(recs), dtype=np.uint8), offsets)

    @classmethod
    def concat(cls, batches: Iterable[RecordBatch]) -> RecordBatch:
        """One batch of every record of ``batches``, in order (a copy)."""
        parts = list(batches)
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return cls._of(np.zeros(0, np.uint8), np.zeros(1, np.int64))
        data = np.concatenate([b.data[: b.offsets[-1]] for b in parts] + [np.zeros(0, np.uint8)])
        shifts = np.cumsum([0] + [int(b.offsets[-1]) for b in parts[:-1]])
        tails = [b.offsets[1:] + s for b, s in zip(parts, shifts, strict=True)]
        offsets = np.concatenate([np.zeros(1, np.int64), *tails])
        return cls._of(data, offsets)

    # -- shape -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def nbytes(self) -> int:
        """Bytes of record data in the batch."""
        return int(self.offsets[-1])

    @property
    def lengths(self) -> OffsetArray:
        """Length of each record."""
        return np.diff(self.offsets)

    def __repr__(self) -> str:
        return f"RecordBatch({len(self)} records, {self.nbytes} bytes)"

    # -- records -----------------------------------------------------------------------

    def __getitem__(self, key: Any) -> Any:
        """``batch[k]`` -> bytes; ``batch[a:b]`` -> a batch viewing the same buffer."""
        n = len(self)
        if isinstance(key, slice):
            a, b, step = key.indices(n)
            if step != 1:
                raise ValueError("record batches slice with step 1 only")
            b = max(a, b)
            lo = self.offsets[a]
            return RecordBatch._of(self.data[lo : self.offsets[b]], self.offsets[a : b + 1] - lo)
        k = int(key)  # raises TypeError for non-integers
        if not -n <= k < n:
            raise IndexError(f"index {key} is out of range for a batch of {n} records")
        k %= n
        return self.data[self.offsets[k] : self.offsets[k + 1]].tobytes()

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.to_pylist())

    def to_pylist(self) -> list[bytes]:
        """Every record as ``bytes``."""
        view = self.data.data.cast("B")
        return [view[a:b].tobytes() for a, b in pairwise(self.offsets.tolist())]

    def as_array(self, dtype: npt.DTypeLike = np.uint8) -> np.ndarray[Any, Any]:
        """The records as rows of a 2-D array of ``dtype``, without a copy.

        Raises
        ------
        ValueError
            If the records differ in length, or their length is not a multiple of
            ``dtype``'s size.
        """
        dt = np.dtype(dtype)
        n = len(self)
        width = int(self.offsets[1]) if n else 0
        if n and (self.offsets != np.arange(n + 1, dtype=np.int64) * width).any():
            lens = self.lengths
            raise ValueError(
                f"records differ in length ({int(lens.min())} to {int(lens.max())} bytes): "
                "only records of one length view as a 2-D array"
            )
        if width % dt.itemsize:
            raise ValueError(
                f"records of {width} bytes do not hold a whole number of {dt} "
                f"({dt.itemsize} bytes each)"
            )
        return self.data[: n * width].view(dt).reshape(n, width // dt.itemsize)

    def to_arrow(self, large: bool = True) -> pa.Array:
        """A ``pyarrow.LargeBinaryArray`` over the same buffers (no copy).

        ``large=False`` makes a ``BinaryArray`` (32-bit offsets: a copy of the
        offsets, not of the data) and raises ``ValueError`` past 2 GiB of data.
        """
        pa = require("pyarrow", "RecordBatch.to_arrow()")

        offsets, kind = self.offsets, pa.large_binary()
        if not large:
            if self.nbytes >= 1 << 31:
                raise ValueError(f"{self.nbytes} bytes do not fit 32-bit Arrow offsets")
            offsets, kind = offsets.astype(np.int32), pa.binary()
        return pa.Array.from_buffers(
            kind, len(self), [None, pa.py_buffer(offsets), pa.py_buffer(self.data)]
        )


def rebatch(pieces: Iterable[RecordBatch], size: int, drop_last: bool) -> Iterator[RecordBatch]:
    """Re-cut a stream of batches into batches of ``size`` records, in order.

    Where a piece holds a whole batch, the batch is a view of it; only batches that
    straddle two pieces are copied. The last batch may be shorter, unless
    ``drop_last``.
    """
    held: list[RecordBatch] = []
    have = 0
    for piece in pieces:
        n, pos = len(piece), 0
        if held:
            pos = min(size - have, n)
            held.append(piece[:pos])
            have += pos
            if have == size:
                yield RecordBatch.concat(held)
                held, have = [], 0
        while n - pos >= size:
            yield piece[pos : pos + size]
            pos += size
        if pos < n:
            held.append(piece[pos:])
            have += n - pos
    if held and not drop_last:
        yield RecordBatch.concat(held)


def bin_batches(
    datas: Sequence[Any],
    starts: Sequence[Any],
    ends: Sequence[Any],
    seed: int | None,
    bin_index: int,
    size: int,
    codecs: Sequence[PartCodec] | None = None,
) -> Iterator[RecordBatch]:
    """One bin's records as batches, in the order :func:`~splitdask._dataset._order.iter_records`
    gives them (stored, or ``bin_permutation(seed, bin_index, n)``).

    ``datas[k]`` is part ``k`` as stored and ``codecs[k]`` its codec (by default,
    records stored as they are). Stored order yields each part's records as one view
    of its buffer (records lie back to back in a part); a shuffled bin is gathered
    ``size`` records at a time, as rows of one NumPy fancy index when it is one part
    of records of one length.
    """
    kinds = [PLAIN] * len(datas) if codecs is None else codecs
    if seed is None:
        for data, ss, es, codec in zip(datas, starts, ends, kinds, strict=True):
            if not len(ss):
                continue
            if codec.in_place:
                yield _stored(np.frombuffer(data, dtype=np.uint8), ss, es)
            else:  # each record decoded: one copy
                spans = map(slice, ss.tolist(), es.tolist())
                yield RecordBatch.from_records(list(map(codec.whole(data).__getitem__, spans)))
        return
    s_all, e_all, which = flat_extents(starts, ends)
    n = len(s_all)
    perm = bin_permutation(seed, bin_index, n)
    width = fixed_width(s_all, e_all) if len(datas) == 1 and kinds[0].in_place else 0
    if width:
        rows = np.frombuffer(datas[0], np.uint8)[s_all[0] : e_all[-1]].reshape(n, width)
        steps = np.arange(size + 1, dtype=np.int64) * width
        steps.flags.writeable = False  # shared by this bin's batches
        for lo in range(0, n, size):
            chunk = rows[perm[lo : lo + size]]
            yield RecordBatch._of(chunk.reshape(-1), steps[: len(chunk) + 1])
        return
    sources = [c.whole(d) for c, d in zip(kinds, datas, strict=True)]
    for lo in range(0, n, size):
        p = perm[lo : lo + size]
        bufs = map(sources.__getitem__, which[p].tolist())
        spans = map(slice, s_all[p].tolist(), e_all[p].tolist())
        yield RecordBatch.from_records(list(map(getitem, bufs, spans)))


def fixed_width(starts: Any, ends: Any) -> int:
    """The length every record shares, if they all have one and lie back to back
    (then they are the rows of a 2-D array); else 0."""
    n = len(starts)
    if n == 0:
        return 0
    w = int(ends[0]) - int(starts[0])
    if w <= 0 or int(ends[-1]) - int(starts[0]) != w * n:
        return 0
    lengths = np.subtract(ends, starts, dtype=np.int64)
    return w if bool((lengths == w).all()) else 0


def _stored(buf: ByteArray, ss: Any, es: Any) -> RecordBatch:
    """A part's records, in stored order, as a batch over ``buf`` (the part)."""
    ss = np.asarray(ss).astype(np.int64, copy=False)
    es = np.asarray(es).astype(np.int64, copy=False)
    lo = int(ss[0])
    if bool((ss[1:] == es[:-1]).all()):  # back to back: a view, offsets rebased
        offsets = np.concatenate([np.zeros(1, np.int64), es - lo])
        return RecordBatch._of(buf[lo : int(es[-1])], offsets)
    spans = map(slice, ss.tolist(), es.tolist())  # gaps between records: gather
    return RecordBatch.from_records(list(map(buf.data.__getitem__, spans)))

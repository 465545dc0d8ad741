"""A manifest's global order as NumPy columns, so a large one opens without an object per segment.

A :class:`SegmentTable` is what a checkpoint holds: each segment's start and count,
and all segments' bins and first local indices laid end to end. It is a sequence of
:class:`~._manifest.Segment` (made when first asked for), so code written for a
tuple of segments reads it unchanged; :func:`order_arrays` gives any order's columns
without making objects where there are none. No I/O here.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from splitdask._util._lazyseq import LazySequence
from splitdask.errors import CorruptDatasetError

__all__ = [
    "OrderArrays",
    "Segment",
    "SegmentTable",
    "check_order",
    "common_prefix",
    "extend_order",
    "order_arrays",
]

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Segment:
    """A run of consecutive global indices dealt round-robin over some bins.

    Record ``start + k`` lives in bin ``bins[k % m]`` at local index
    ``first[k % m] + k // m`` with ``m = len(bins)``. A single bin (``m == 1``) is a
    contiguous run, which is how a Dask partition written as one part is recorded.
    """

    start: int
    count: int
    bins: tuple[int, ...]
    first: tuple[int, ...]

    def share(self, j: int) -> int:
        """How many of the segment's records go to its ``j``-th bin."""
        m = len(self.bins)
        return (self.count - j + m - 1) // m


class OrderArrays(NamedTuple):
    """An order's columns: per segment its start, count and end (where its bins end in
    ``bins``/``firsts``, which hold every segment's, end to end)."""

    starts: IntArray
    counts: IntArray
    ends: IntArray
    bins: IntArray
    firsts: IntArray

    @property
    def width(self) -> IntArray:
        """Bins of each segment."""
        return np.diff(self.ends, prepend=0)


class SegmentTable(LazySequence[Segment]):
    """Segments as columns (see :class:`OrderArrays`)."""

    _what = "segment"

    def __init__(self, arrays: OrderArrays) -> None:
        super().__init__(len(arrays.starts))
        self.arrays = arrays

    def _make(self, k: int) -> Segment:
        a = self.arrays
        lo = int(a.ends[k - 1]) if k else 0
        hi = int(a.ends[k])
        return Segment(
            int(a.starts[k]),
            int(a.counts[k]),
            tuple(a.bins[lo:hi].tolist()),
            tuple(a.firsts[lo:hi].tolist()),
        )


def order_arrays(order: Sequence[Segment]) -> OrderArrays:
    """The columns of any order (free for a :class:`SegmentTable`)."""
    if isinstance(order, SegmentTable):
        return order.arrays
    n = len(order)
    return OrderArrays(
        np.fromiter((s.start for s in order), np.int64, n),
        np.fromiter((s.count for s in order), np.int64, n),
        np.cumsum(np.fromiter((len(s.bins) for s in order), np.int64, n), dtype=np.int64),
        np.fromiter(itertools.chain.from_iterable(s.bins for s in order), np.int64),
        np.fromiter(itertools.chain.from_iterable(s.first for s in order), np.int64),
    )


def extend_order(order: Sequence[Segment], keep: int, new: Sequence[Segment]) -> Sequence[Segment]:
    """The first ``keep`` segments of ``order``, then ``new``: a table stays a table."""
    if not isinstance(order, SegmentTable):
        return (*order[:keep], *new)
    if keep == len(order) and not new:
        return order
    a, b = order.arrays, order_arrays(new)
    cut = int(a.ends[keep - 1]) if keep else 0
    return SegmentTable(
        OrderArrays(
            np.concatenate([a.starts[:keep], b.starts]),
            np.concatenate([a.counts[:keep], b.counts]),
            np.concatenate([a.ends[:keep], b.ends + cut]),
            np.concatenate([a.bins[:cut], b.bins]),
            np.concatenate([a.firsts[:cut], b.firsts]),
        )
    )


def common_prefix(old: Sequence[Segment], new: Sequence[Segment]) -> int:
    """How many leading segments ``old`` and ``new`` share."""
    if isinstance(old, SegmentTable) and isinstance(new, SegmentTable):
        a, b = old.arrays, new.arrays
        n = min(len(old), len(new))
        same = (a.starts[:n] == b.starts[:n]) & (a.counts[:n] == b.counts[:n])
        same &= a.ends[:n] == b.ends[:n]
        k = n if same.all() else int(np.argmin(same))
        cut = int(a.ends[k - 1]) if k else 0
        if k and not (
            np.array_equal(a.bins[:cut], b.bins[:cut])
            and np.array_equal(a.firsts[:cut], b.firsts[:cut])
        ):
            return next(i for i in range(k) if old[i] != new[i])
        return k
    k = 0
    while k < min(len(old), len(new)) and old[k] == new[k]:
        k += 1
    return k


def check_order(a: OrderArrays, counts: IntArray, where: str) -> None:
    """Refuse an order that is not contiguous or does not tile each bin's ``counts[b]``
    records exactly once (see docs/format.md, "Global order"), in NumPy over the
    segments' bins: no object per segment or bin."""
    n = len(a.starts)
    width = a.width
    if n:
        expected = np.concatenate([[0], np.cumsum(a.counts)[:-1]])
        if np.any(a.starts != expected) or np.any(a.counts < 1):
            raise CorruptDatasetError(f"{where}: order segments are not contiguous")
        if np.any(width < 1) or len(a.firsts) != len(a.bins) or a.ends[-1] != len(a.bins):
            bad = int(a.starts[np.argmin(width >= 1)]) if np.any(width < 1) else 0
            raise CorruptDatasetError(f"{where}: segment at {bad} has no bins")
    if np.any(a.bins >= len(counts)) or np.any(a.bins < 0):
        out = int(a.bins[(a.bins >= len(counts)) | (a.bins < 0)][0])
        raise CorruptDatasetError(f"{where}: segment names bin {out}, out of range")
    if not len(a.bins):
        if counts.any():
            b = int(np.flatnonzero(counts)[0])
            raise CorruptDatasetError(
                f"{where}: the order does not cover bin {b}'s {int(counts[b])} records exactly once"
            )
        return
    seg = np.repeat(np.arange(n), width)
    j = np.arange(len(a.bins)) - np.repeat(a.ends - width, width)
    share = (a.counts[seg] - j + width[seg] - 1) // width[seg]
    # Writers only ever add records after a bin's last: in segment order each bin's
    # ranges follow one another. That is checked first (any other tiling the format
    # allows is checked by sorting on the ranges, below).
    if _in_segment_order(a, share, counts):
        return
    idx = np.lexsort((a.firsts, a.bins))
    sb, lo, hi = a.bins[idx], a.firsts[idx], a.firsts[idx] + share[idx]
    first = np.concatenate([[True], sb[1:] != sb[:-1]])
    last = np.concatenate([sb[1:] != sb[:-1], [True]])
    prev_hi = np.concatenate([[0], hi[:-1]])
    bad = (hi <= lo) | np.where(first, lo != 0, lo != prev_hi)
    bad_bins = set(sb[bad].tolist()) | set(sb[last][hi[last] != counts[sb[last]]].tolist())
    unclaimed = np.ones(len(counts), bool)
    unclaimed[sb] = False
    bad_bins |= set(np.flatnonzero(unclaimed & (counts > 0)).tolist())
    if bad_bins:
        worst = min(bad_bins)
        raise CorruptDatasetError(
            f"{where}: the order does not cover bin {worst}'s {int(counts[worst])} records "
            "exactly once"
        )


def _in_segment_order(a: OrderArrays, share: IntArray, counts: IntArray) -> bool:
    """Whether each bin's ranges, taken in segment order, start where the one before
    ended, and add up to the bin's count. Few wide segments (round-robin appends)
    are walked segment by segment; many (one per Dask partition), bin by bin after a
    stable radix sort (bins fit 16 bits)."""
    if np.any(share < 1):
        return False
    if len(a.starts) <= 1024:
        filled = np.zeros(len(counts), np.int64)
        lo = 0
        for hi in a.ends.tolist():
            bins = a.bins[lo:hi]
            before = filled[bins]
            if not np.array_equal(a.firsts[lo:hi], before):
                return False
            np.add.at(filled, bins, share[lo:hi])
            if not np.array_equal(filled[bins], before + share[lo:hi]):
                return False  # a bin named twice in one segment: its ranges overlap
            lo = hi
        return bool(np.array_equal(filled, counts))
    idx = np.argsort(
        a.bins.astype(np.uint16 if len(counts) <= 1 << 16 else np.int64), kind="stable"
    )
    sb, first, sh = a.bins[idx], a.firsts[idx], share[idx]
    ends = np.cumsum(sh)
    group = np.concatenate([[True], sb[1:] != sb[:-1]])
    last = np.concatenate([sb[1:] != sb[:-1], [True]])
    before = np.maximum.accumulate(np.where(group, ends - sh, 0))  # records of earlier bins
    covered = np.zeros(len(counts), np.int64)
    covered[sb[last]] = (ends - before)[last]
    return bool(np.array_equal(first, ends - sh - before) and np.array_equal(covered, counts))

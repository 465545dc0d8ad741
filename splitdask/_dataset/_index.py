"""Arithmetic from a global record index to (part, record in part).

No I/O and no byte layouts: this turns a manifest's segments and part counts into
lookups that cost O(log segments + log parts), scalar or vectorised with NumPy.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from splitdask._format import Segment
from splitdask._format._segtable import order_arrays

__all__ = [
    "BinOrder",
    "Locator",
    "Order",
    "TableOrder",
]

IntArray = npt.NDArray[np.int64]


class Order(Protocol):
    """Global index -> ``(bin, local index)``, scalar and vectorised."""

    def locate(self, i: int) -> tuple[int, int]: ...

    def locate_many(self, idx: IntArray) -> tuple[IntArray, IntArray]: ...

    def indices_of(self, bin_index: int) -> IntArray:
        """Global indices of bin ``bin_index``'s records, in stored order (the
        inverse of :meth:`locate` for one bin)."""
        ...


class Locator:
    """Maps global indices to ``(part number, record within part)``.

    Parts are numbered bin by bin, in each bin's list order. The mapping is built
    from an order (segments, or a per-record table for legacy datasets) and the
    record count of every part.
    """

    def __init__(self, order: Order, part_counts: Sequence[Sequence[int]]) -> None:
        counts = [c for cs in part_counts for c in cs]
        part_bin = [b for b, cs in enumerate(part_counts) for _ in cs]
        first = np.cumsum([0, *map(len, part_counts)], dtype=np.int64)
        self._init(order, np.asarray(counts, np.int64), np.asarray(part_bin, np.int64), first)

    @classmethod
    def of_arrays(
        cls, order: Order, counts: IntArray, part_bin: IntArray, bin_first: IntArray
    ) -> Locator:
        """From columns: each part's record count and bin (parts bin by bin), and the
        first part of each bin (one more entry than bins)."""
        self = cls.__new__(cls)
        self._init(order, counts, part_bin, bin_first)
        return self

    def _init(
        self, order: Order, counts: IntArray, part_bin: IntArray, bin_first: IntArray
    ) -> None:
        self.order = order
        # Every part gets a start in one "bins laid end to end" space, so a single
        # searchsorted finds the part of any (bin, local index) pair.
        starts = np.concatenate([np.zeros(1, np.int64), np.cumsum(counts, dtype=np.int64)])
        self._part_start_np = starts[:-1]
        self._bin_base_np = starts[bin_first[:-1]]
        self._part_bin_np = part_bin

    # Python lists for the scalar paths (bisect, list indexing), made on first use: a
    # large dataset opens and answers len() without an object per part.
    @functools.cached_property
    def part_start(self) -> list[int]:
        return self._part_start_np.tolist()  # type: ignore[no-any-return]

    @functools.cached_property
    def bin_base(self) -> list[int]:
        return self._bin_base_np.tolist()  # type: ignore[no-any-return]

    @functools.cached_property
    def part_bin(self) -> list[int]:
        return np.asarray(self._part_bin_np, np.int64).tolist()  # type: ignore[no-any-return]

    @property
    def num_parts(self) -> int:
        return len(self._part_start_np)

    def locate(self, i: int) -> tuple[int, int]:
        """``(part, record within part)`` of global index ``0 <= i < len``."""
        b, local = self.order.locate(i)
        key = self.bin_base[b] + local
        p = bisect.bisect_right(self.part_start, key) - 1
        return p, key - self.part_start[p]

    @functools.cached_property
    def round_robin(self) -> tuple[int, int, list[int], list[int]] | None:
        """``(start, m, bins, first)`` of the one segment when every bin has exactly
        one part (record ``start + k`` is record ``first[k % m] + k // m`` of part
        ``bins[k % m]``), else ``None``: the layout of a dataset written in one go,
        where a record's place is two integer operations and two list lookups."""
        order = self.order
        if not (isinstance(order, BinOrder) and order.num_segments == 1):
            return None
        if self.num_parts != len(self._bin_base_np) or not np.array_equal(
            self._part_bin_np, np.arange(self.num_parts)
        ):
            return None
        seg = order.segments[0]
        return seg.start, len(seg.bins), list(seg.bins), list(seg.first)

    def scalar(self) -> Callable[[int], tuple[int, int]]:
        """:meth:`locate` specialised for one segment (bins of several parts): one
        binary search instead of two and no method calls. Callers inline the
        :attr:`round_robin` layout themselves."""
        order = self.order
        if not (isinstance(order, BinOrder) and order.num_segments == 1):
            return self.locate
        seg = order.segments[0]
        s0, m, bins, first = seg.start, len(seg.bins), list(seg.bins), list(seg.first)
        base, starts, right = self.bin_base, self.part_start, bisect.bisect_right

        def one_segment(i: int) -> tuple[int, int]:
            k = i - s0
            r = k % m
            key = base[bins[r]] + first[r] + k // m
            p = right(starts, key) - 1
            return p, key - starts[p]

        return one_segment

    def vector(self) -> Callable[[IntArray], tuple[IntArray, IntArray]]:
        """:meth:`locate_many` for the :attr:`round_robin` layout in two NumPy calls:
        for small batches the fixed cost of each call is what counts."""
        if self.round_robin is None:
            return self.locate_many
        s0, m, bins_list, first_list = self.round_robin
        bins, first = np.asarray(bins_list, np.int64), np.asarray(first_list, np.int64)

        def one_part(idx: IntArray) -> tuple[IntArray, IntArray]:
            q, r = np.divmod(idx - s0 if s0 else idx, m)
            return bins[r], first[r] + q

        return one_part

    def locate_many(self, idx: IntArray) -> tuple[IntArray, IntArray]:
        """Vectorised :meth:`locate` for an array of valid non-negative indices."""
        bins, local = self.order.locate_many(idx)
        return self.locate_keys(self._bin_base_np[bins] + local)

    def locate_keys(self, keys: IntArray) -> tuple[IntArray, IntArray]:
        """``(part, record within part)`` of bin-space keys (the bins laid end to
        end in bin order, each in stored order), as epoch plans name records."""
        p = np.searchsorted(self._part_start_np, keys, side="right") - 1
        return p, keys - self._part_start_np[p]


class BinOrder:
    """Global index -> ``(bin, local index)`` through round-robin segments."""

    def __init__(self, segments: Sequence[Segment]) -> None:
        self._order = segments
        a = order_arrays(segments)
        self._starts_np = a.starts
        self._m_np = a.width
        self._base_np = a.ends - a.width
        self._bins_np = a.bins
        self._first_np = a.firsts

    # Objects for the scalar path, made on first use (a large order opens without them).
    @functools.cached_property
    def segments(self) -> list[Segment]:
        return list(self._order)

    @property
    def num_segments(self) -> int:
        return len(self._starts_np)

    @functools.cached_property
    def starts(self) -> list[int]:
        return self._starts_np.tolist()  # type: ignore[no-any-return]

    def locate(self, i: int) -> tuple[int, int]:
        seg = self.segments[bisect.bisect_right(self.starts, i) - 1]
        k = i - seg.start
        m = len(seg.bins)
        j = k % m
        return seg.bins[j], seg.first[j] + k // m

    def indices_of(self, bin_index: int) -> IntArray:
        runs = [
            seg.start + j + len(seg.bins) * np.arange(seg.share(j), dtype=np.int64)
            for seg in self.segments
            for j, b in enumerate(seg.bins)
            if b == bin_index
        ]
        return np.concatenate([*runs, np.zeros(0, np.int64)])

    def locate_many(self, idx: IntArray) -> tuple[IntArray, IntArray]:
        s = np.searchsorted(self._starts_np, idx, side="right") - 1
        k = idx - self._starts_np[s]
        m = self._m_np[s]
        j = self._base_np[s] + k % m
        return self._bins_np[j], self._first_np[j] + k // m


@dataclass(frozen=True)
class TableOrder:
    """Global index -> ``(bin, local index)`` from one row per record (legacy datasets)."""

    bins: IntArray
    local: IntArray

    def locate(self, i: int) -> tuple[int, int]:
        return int(self.bins[i]), int(self.local[i])

    def locate_many(self, idx: IntArray) -> tuple[IntArray, IntArray]:
        return self.bins[idx], self.local[idx]

    def indices_of(self, bin_index: int) -> IntArray:
        hits = np.flatnonzero(self.bins == bin_index)
        return hits[np.argsort(self.local[hits], kind="stable")].astype(np.int64)

"""Read-only access to datasets written by splitdataloader 0.0.1.

Layout: ``index.dat`` holds one little-endian u32 triplet ``(bin, position, length)``
per record in write order; ``bin%08d.dat`` holds each record as a u32 length then
its bytes, and ``position`` points at the length. The index is the source of truth
here too: bytes in a bin that no index entry names (a torn write) are not records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from splitdask._dataset._index import IntArray, TableOrder
from splitdask._dataset._parts import Part
from splitdask._format import Footer
from splitdask._format._partcodec import PLAIN
from splitdask._store import Store
from splitdask.errors import CorruptDatasetError

__all__ = ["INDEX_NAME", "LegacyPart", "bin_name", "is_legacy", "load", "remove"]

INDEX_NAME = "index.dat"
_PREFIX = 4


def bin_name(bin_index: int) -> str:
    return f"bin{bin_index:08d}.dat"


def is_legacy(store: Store) -> bool:
    """Whether ``store`` holds a splitdataloader 0.0.1 index."""
    return store.exists(INDEX_NAME)


@dataclass(frozen=True, eq=False)
class LegacyPart(Part):
    """A splitdataloader bin file; its records' extents come from ``index.dat``."""

    starts: IntArray
    ends: IntArray

    @property
    def tail_size(self) -> int:
        return 0

    def footer(self, tail: Any, where: str) -> Footer:
        return Footer(self.starts, self.ends, PLAIN)

    @property
    def payload(self) -> int:
        return int(self.ends.sum() - self.starts.sum())

    def check_whole(self, data: Any, where: str) -> None:
        if not check_prefixes(data, self.starts, self.ends):
            raise CorruptDatasetError(f"{where}: record length prefixes disagree with the index")

    def verify(self, store: Store) -> tuple[int, str | None]:
        with store.open_read(self.path) as f:
            data = f.read(self.size + 1)  # bounded: a device or FIFO cannot feed it forever
        where = store.where(self.path)
        if len(data) != self.size:
            return len(data), f"{where}: {len(data)} bytes, expected {self.size} (truncated?)"
        try:
            self.check_whole(data, where)
        except CorruptDatasetError as exc:
            return len(data), str(exc)
        return len(data), None


def _read_index(store: Store) -> tuple[IntArray, IntArray, IntArray]:
    raw = store.read_file(INDEX_NAME)
    # The predecessor's len() ignores a torn last entry; so do we.
    usable = len(raw) - len(raw) % 12
    table = np.frombuffer(raw, dtype="<u4", count=usable // 4).reshape(-1, 3).astype(np.int64)
    return table[:, 0], table[:, 1], table[:, 2]


def load(store: Store) -> tuple[TableOrder, list[LegacyPart]]:
    """Read the index and check it against the bin files' sizes.

    Returns the per-record order and one part per bin, in bin-name order.
    """
    bins, pos, length = _read_index(store)
    ids, inverse = np.unique(bins, return_inverse=True)
    # Within a bin, records are in file order: rank them by position.
    by_bin = np.lexsort((pos, inverse))
    group_start = np.searchsorted(inverse[by_bin], np.arange(len(ids)))
    local = np.empty(len(bins), dtype=np.int64)
    local[by_bin] = np.arange(len(bins)) - group_start[inverse[by_bin]]
    parts = []
    bounds = [*group_start.tolist(), len(bins)]
    for g, b in enumerate(ids.tolist()):
        rows = by_bin[bounds[g] : bounds[g + 1]]
        path = bin_name(b)
        try:
            size = store.size(path)
        except FileNotFoundError:
            raise CorruptDatasetError(
                f"{store.where(path)}: named by {INDEX_NAME} but missing"
            ) from None
        s = pos[rows] + _PREFIX
        e = s + length[rows]
        if len(e) and int(e.max()) > size:
            raise CorruptDatasetError(
                f"{store.where(path)}: {size} bytes, but {INDEX_NAME} points up to byte "
                f"{int(e.max())} (truncated?)"
            )
        parts.append(
            LegacyPart(path, size, len(rows), np.ascontiguousarray(s), np.ascontiguousarray(e))
        )
    return TableOrder(inverse.astype(np.int64), local), parts


def check_prefixes(data: bytes, starts: IntArray, ends: IntArray) -> bool:
    """Whether every record's u32 length prefix in a legacy bin matches the index."""
    buf = np.frombuffer(data, dtype=np.uint8)
    p = starts - _PREFIX
    if len(p) and (int(p.min()) < 0 or int(ends.max()) > len(buf)):
        return False
    value = sum(buf[p + k].astype(np.int64) << (8 * k) for k in range(_PREFIX))
    return bool(np.array_equal(value, ends - starts))


def remove(store: Store) -> None:
    """Delete a legacy dataset's files (after it was replaced by a committed one)."""
    bins, _, _ = _read_index(store)
    store.remove([INDEX_NAME])
    store.remove([bin_name(b) for b in np.unique(bins).tolist()])

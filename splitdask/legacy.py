"""Read-only access to datasets written by splitdataloader 0.0.1.

Layout: ``index.dat`` holds one little-endian u32 triplet ``(bin, position, length)``
per record in write order; ``bin%08d.dat`` holds each record as a u32 length then
its bytes, and ``position`` points at the length. The index is the source of truth
here too: bytes in a bin that no index entry names (a torn write) are not records.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from splitdask.errors import CorruptDatasetError
from splitdask.index import IntArray, TableOrder
from splitdask.storage import Store

__all__ = ["INDEX_NAME", "LegacyLayout", "bin_name", "is_legacy", "load", "remove"]

INDEX_NAME = "index.dat"
_PREFIX = 4


def bin_name(bin_index: int) -> str:
    return f"bin{bin_index:08d}.dat"


def is_legacy(store: Store) -> bool:
    """Whether ``store`` holds a splitdataloader 0.0.1 index."""
    return store.exists(INDEX_NAME)


@dataclass(frozen=True)
class LegacyLayout:
    """A legacy dataset seen as bins of one part each, in bin-name order."""

    order: TableOrder
    paths: list[str]
    sizes: list[int]
    starts: list[IntArray]
    ends: list[IntArray]


def _read_index(store: Store) -> tuple[IntArray, IntArray, IntArray]:
    raw = store.read_file(INDEX_NAME)
    # The predecessor's len() ignores a torn last entry; so do we.
    usable = len(raw) - len(raw) % 12
    table = np.frombuffer(raw, dtype="<u4", count=usable // 4).reshape(-1, 3).astype(np.int64)
    return table[:, 0], table[:, 1], table[:, 2]


def load(store: Store) -> LegacyLayout:
    """Read the index and check it against the bin files' sizes."""
    bins, pos, length = _read_index(store)
    ids, inverse = np.unique(bins, return_inverse=True)
    # Within a bin, records are in file order: rank them by position.
    by_bin = np.lexsort((pos, inverse))
    group_start = np.searchsorted(inverse[by_bin], np.arange(len(ids)))
    local = np.empty(len(bins), dtype=np.int64)
    local[by_bin] = np.arange(len(bins)) - group_start[inverse[by_bin]]
    paths, sizes, starts, ends = [], [], [], []
    bounds = [*group_start.tolist(), len(bins)]
    for g, b in enumerate(ids.tolist()):
        rows = by_bin[bounds[g] : bounds[g + 1]]
        path = bin_name(b)
        try:
            size = store.size(path)
        except FileNotFoundError:
            raise CorruptDatasetError(
                f"{store.urlpath}/{path}: named by {INDEX_NAME} but missing"
            ) from None
        s = pos[rows] + _PREFIX
        e = s + length[rows]
        if len(e) and int(e.max()) > size:
            raise CorruptDatasetError(
                f"{store.urlpath}/{path}: {size} bytes, but {INDEX_NAME} points up to byte "
                f"{int(e.max())} (truncated?)"
            )
        paths.append(path)
        sizes.append(size)
        starts.append(np.ascontiguousarray(s))
        ends.append(np.ascontiguousarray(e))
    return LegacyLayout(TableOrder(inverse.astype(np.int64), local), paths, sizes, starts, ends)


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

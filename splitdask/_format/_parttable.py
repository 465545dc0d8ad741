"""Every part of a manifest as NumPy columns, so a large dataset opens without an object per part.

A :class:`PartTable` is what a checkpoint holds: one row per part, bin by bin, each
field a column. It is also a sequence of bins (``table[b]`` is bin ``b``'s parts as
:class:`~._manifest.PartInfo` objects, made when first asked for), so code written
for a manifest's tuple of tuples reads it unchanged. An :class:`EditedBins` is a
table with a few bins replaced (the commits replayed since the checkpoint): it
answers for those bins from its edits and for the others from the table, and
builds a table of its own only when a column is needed. No I/O here.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from splitdask._format._footer import COMPRESSED_PART_VERSION
from splitdask._format._grouped import MAX_GROUP
from splitdask._format._manifest import PartInfo
from splitdask._util._lazyseq import LazySequence

__all__ = ["COLUMNS", "EditedBins", "PartTable", "as_table", "edit_bins"]

COMPRESSIONS: tuple[str | None, ...] = (None, "zstd")
COLUMNS = (
    ("bin", "<u4"),
    ("count", "<u8"),
    ("size", "<u8"),
    ("checksum", "<u8"),
    ("footer_sum", "<u8"),
    ("footer", "<u8"),
    ("raw", "<u8"),
    ("level", "<i4"),
    ("version", "u1"),
    ("codec", "u1"),
)
"""The per-part columns, in a checkpoint's order, with their stored types."""

Bins = tuple[PartInfo, ...]


class PartTable(LazySequence[Bins]):
    """The parts of ``num_bins`` bins as columns (rows bin by bin, in stored order).

    ``uid_lo``/``uid_hi`` locate each part's uid (its name's hex id) in ``blob``.
    """

    _what = "bin"

    def __init__(
        self, cols: Mapping[str, npt.NDArray[Any]], blob: bytes | memoryview, num_bins: int
    ) -> None:
        super().__init__(num_bins)
        self.cols = cols
        self.blob = blob
        self.num_bins = num_bins
        self._parts: dict[int, PartInfo] = {}

    @property
    def layout(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """``(records of each part, bin of each part, first part of each bin)``."""
        return self.counts, self.cols["bin"].astype(np.int64), self.bin_start

    @functools.cached_property
    def bin_start(self) -> npt.NDArray[np.int64]:
        """Row of each bin's first part (``num_bins + 1`` entries)."""
        bins = self.cols["bin"]
        return np.searchsorted(bins, np.arange(self.num_bins + 1), side="left").astype(np.int64)

    @property
    def num_parts(self) -> int:
        return len(self.cols["bin"])

    @property
    def counts(self) -> npt.NDArray[np.int64]:
        """Records of every part, row by row."""
        return self.cols["count"].astype(np.int64)

    def bin_counts(self) -> list[int]:
        """Records of every bin."""
        ends = np.concatenate([[0], np.cumsum(self.counts, dtype=np.int64)])
        return (ends[self.bin_start[1:]] - ends[self.bin_start[:-1]]).tolist()  # type: ignore[no-any-return]

    def _make(self, b: int) -> Bins:
        lo, hi = int(self.bin_start[b]), int(self.bin_start[b + 1])
        return tuple(self.part(r) for r in range(lo, hi))

    def part(self, row: int) -> PartInfo:
        """The part in row ``row`` (made once)."""
        hit = self._parts.get(row)
        if hit is not None:
            return hit
        c = self.cols
        b = int(c["bin"][row])
        uid = str(self.blob[int(c["uid_lo"][row]) : int(c["uid_hi"][row])], "ascii")
        version = int(c["version"][row])
        v3 = version >= COMPRESSED_PART_VERSION  # the compression fields are a v3 part's
        info = PartInfo(
            f"bins/{b:05d}-{uid}.bin",
            int(c["count"][row]),
            int(c["size"][row]),
            f"xxh3_64:{int(c['checksum'][row]):016x}",
            version,
            COMPRESSIONS[int(c["codec"][row])] if v3 else None,
            int(c["level"][row]) if v3 else 0,
            int(c["footer"][row]) if v3 else 0,
            int(c["raw"][row]) if v3 else 0,
            int(c["footer_sum"][row]),
        )
        self._parts[row] = info
        return info

    @classmethod
    def from_bins(cls, bins: Sequence[Sequence[PartInfo]]) -> PartTable:
        """The table of any sequence of bins (an object per part: made row by row)."""
        rows = [(b, p) for b, parts in enumerate(bins) for p in parts]
        return cls._of_rows(rows, len(bins))

    @classmethod
    def _of_rows(cls, rows: Sequence[tuple[int, PartInfo]], num_bins: int) -> PartTable:
        uids = [p.uid.encode("ascii") for _, p in rows]
        hi = np.cumsum([len(u) for u in uids], dtype=np.int64)
        cols: dict[str, npt.NDArray[Any]] = {
            "bin": np.array([b for b, _ in rows], "<u4"),
            "count": np.array([p.count for _, p in rows], "<u8"),
            "size": np.array([p.size for _, p in rows], "<u8"),
            "checksum": np.array([int(p.checksum[8:], 16) for _, p in rows], "<u8"),
            "footer_sum": np.array([p.footer_sum for _, p in rows], "<u8"),
            "footer": np.array([p.footer for _, p in rows], "<u8"),
            "raw": np.array([p.raw for _, p in rows], "<u8"),
            "level": np.array([p.level for _, p in rows], "<i4"),
            "version": np.array([p.version for _, p in rows], "u1"),
            "codec": np.array([COMPRESSIONS.index(p.compression) for _, p in rows], "u1"),
            "uid_lo": hi - np.array([len(u) for u in uids], np.int64),
            "uid_hi": hi,
        }
        return cls(cols, b"".join(uids), num_bins)

    def splice(self, edits: Mapping[int, Sequence[PartInfo]], num_bins: int) -> PartTable:
        """This table with bins ``edits`` names replaced, grown to ``num_bins`` bins:
        NumPy slices of the rows kept, and rows made only for the edited bins' parts."""
        if not edits:
            if num_bins == self.num_bins:
                return self
            return PartTable(self.cols, self.blob, num_bins)
        added = PartTable._of_rows([(b, p) for b in sorted(edits) for p in edits[b]], num_bins)
        start = self.bin_start
        pieces: list[tuple[PartTable, int, int]] = []
        pos = 0
        for b in sorted(edits):
            cut = int(start[min(b, self.num_bins)])
            pieces.append((self, pos, cut))
            lo, hi = int(added.bin_start[b]), int(added.bin_start[b + 1])
            pieces.append((added, lo, hi))
            pos = int(start[min(b + 1, self.num_bins)])
        pieces.append((self, pos, self.num_parts))
        shift = len(self.blob)
        cols = {
            name: np.concatenate(
                [
                    (t.cols[name][lo:hi] + shift if t is added else t.cols[name][lo:hi])
                    if name in ("uid_lo", "uid_hi")
                    else t.cols[name][lo:hi]
                    for t, lo, hi in pieces
                ]
            )
            for name in self.cols
        }
        return PartTable(cols, bytes(self.blob) + added.blob, num_bins)


class EditedBins(LazySequence[Bins]):
    """A :class:`PartTable` with the bins in ``edits`` replaced (and grown to ``num_bins``)."""

    _what = "bin"

    def __init__(self, base: PartTable, edits: Mapping[int, Bins], num_bins: int) -> None:
        super().__init__(num_bins)
        self.base = base
        self.edits = dict(edits)
        self.num_bins = num_bins

    @functools.cached_property
    def table(self) -> PartTable:
        """The same bins as one table (built on first use)."""
        return self.base.splice(self.edits, self.num_bins)

    @property
    def num_parts(self) -> int:
        return int(self.layout[2][-1])

    @functools.cached_property
    def layout(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """``(records of each part, bin of each part, first part of each bin)`` with parts
        numbered bin by bin, as :attr:`table` would have them, from two columns of the
        base and the edits: no table is built."""
        base = self.base
        start = np.concatenate(
            [base.bin_start, np.full(self.num_bins - base.num_bins, base.num_parts)]
        )
        per_bin = np.diff(start)
        counts, bins, pos = [], [], 0
        for b in sorted(self.edits):
            cut = int(start[b])
            counts.append(base.cols["count"][pos:cut].astype(np.int64))
            bins.append(base.cols["bin"][pos:cut].astype(np.int64))
            edit = self.edits[b]
            counts.append(np.array([p.count for p in edit], np.int64))
            bins.append(np.full(len(edit), b, np.int64))
            per_bin[b] = len(edit)
            pos = int(start[b + 1])
        counts.append(base.cols["count"][pos:].astype(np.int64))
        bins.append(base.cols["bin"][pos:].astype(np.int64))
        first = np.concatenate([[0], np.cumsum(per_bin)]).astype(np.int64)
        return np.concatenate(counts), np.concatenate(bins), first

    def part(self, pid: int) -> PartInfo:
        """Part ``pid`` in the numbering of :attr:`layout`."""
        first = self.layout[2]
        b = int(np.searchsorted(first, pid, side="right")) - 1
        return self[b][pid - int(first[b])]

    def bin_counts(self) -> list[int]:
        counts = self.base.bin_counts() + [0] * (self.num_bins - self.base.num_bins)
        for b, parts in self.edits.items():
            counts[b] = sum(p.count for p in parts)
        return counts

    def _make(self, b: int) -> Bins:
        hit = self.edits.get(b)
        if hit is not None:
            return hit
        return self.base[b] if b < self.base.num_bins else ()

    def check_edits(self, where: str) -> None:
        """Check the edited bins' parts as a manifest checks its parts (the table under
        them was checked when it was read): each in its bin's folder, named once."""
        from splitdask.errors import CorruptDatasetError

        for b, parts in self.edits.items():
            paths = [p.path for p in parts]
            if len(set(paths)) != len(paths) or any(
                not p.startswith(f"bins/{b:05d}-") for p in paths
            ):
                raise CorruptDatasetError(f"{where}: a part of bin {b} misplaced or repeated")

    def changed_since(self, before: Sequence[Bins]) -> list[int] | None:
        """The bins that may differ from ``before`` (``None``: any may)."""
        base = before.base if isinstance(before, EditedBins) else before
        if base is not self.base:
            return None
        grown = range(len(before), self.num_bins)
        return sorted(set(self.edits) | set(grown))


def as_table(bins: Sequence[Sequence[PartInfo]]) -> PartTable:
    """``bins`` as a :class:`PartTable` (free for a table, a splice for edited bins)."""
    if isinstance(bins, PartTable):
        return bins
    if isinstance(bins, EditedBins):
        return bins.table
    return PartTable.from_bins(bins)


def edit_bins(bins: Sequence[Bins], edits: Mapping[int, Bins], num_bins: int) -> Sequence[Bins]:
    """``bins`` with the bins in ``edits`` replaced: a tuple stays a tuple; a table
    (or an edited one) records the edits instead of making every bin's tuple."""
    if isinstance(bins, PartTable):
        return EditedBins(bins, edits, num_bins)
    if isinstance(bins, EditedBins):
        return EditedBins(bins.base, {**bins.edits, **edits}, num_bins)
    out = list(bins) + [()] * (num_bins - len(bins))
    for b, parts in edits.items():
        out[b] = parts
    return tuple(out)


def check_table(table: PartTable, where: str) -> None:
    """Refuse a table whose rows a manifest could not hold (as ``_manifest`` checks each
    part entry), with NumPy over the columns: bins in order and in range, uids of
    8 to 64 hex digits inside the blob, known versions and codecs, sizes that can
    hold their records and footers. Raises :class:`CorruptDatasetError`."""
    from splitdask._format._footer import PART_VERSIONS
    from splitdask.errors import CorruptDatasetError

    c = table.cols
    n = table.num_parts
    problems = []
    if any(len(col) != n for col in c.values()):
        problems.append("columns of different lengths")
    bins = c["bin"]
    if n and (np.any(bins[1:] < bins[:-1]) or int(bins[-1]) >= table.num_bins):
        problems.append("parts not bin by bin, or of a bin out of range")
    lo, hi = c["uid_lo"], c["uid_hi"]
    length = hi - lo
    if n and (lo.min() < 0 or hi.max() > len(table.blob) or length.min() < 8):
        problems.append("a part uid out of its blob, or too short")
    elif n and length.max() > 64:
        problems.append("a part uid longer than 64 digits")
    if bytes(table.blob).translate(None, b"0123456789abcdef"):
        problems.append("a part uid that is not lowercase hex")
    version, count = c["version"], c["count"].astype(np.int64)
    if n and (version.min() < min(PART_VERSIONS) or version.max() > max(PART_VERSIONS)):
        problems.append("an unknown part format version")
    if np.any((version < 2) & (c["footer_sum"] != 0)):
        problems.append("a footer hash for a part whose footer has none")
    v3 = version >= COMPRESSED_PART_VERSION
    if np.any(c["codec"] != v3):
        problems.append("an unknown compression")
    footer = np.where(version >= 2, 16 * count + 104, 8 * count + 32)
    if v3.any():
        # The fewest frames a part holds: one per record (v3), per MAX_GROUP (v4).
        frames = np.where(version == 3, count, -(-count // MAX_GROUP))
        least = np.where(version == 3, 4 * count + 136, 4 * frames + 152)
        footer = np.where(v3, np.maximum(c["footer"].astype(np.int64), least), footer)
    if n and (count.min() < 1 or np.any(c["size"].astype(np.int64) < 8 + footer)):
        problems.append("a part whose size cannot hold its records")
    if problems:
        raise CorruptDatasetError(f"{where}: malformed part table ({'; '.join(problems)})")

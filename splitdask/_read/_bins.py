"""Whole bins: a bin's parts read at once, checked whole, and cut into records,
memoryviews or batches in stored or seeded order.

Every bin-wise reader (``iterate_binwise``, the Dask and Ray readers, torch's key
reader, compaction) holds a :class:`BinData`; records come out through
:func:`~splitdask._dataset._order.iter_records`, so a bin's shuffled order is the same
on every path.
"""

from __future__ import annotations

import contextlib
import mmap
from collections.abc import Iterator, Sequence
from typing import Any

from splitdask._dataset._order import iter_records
from splitdask._dataset._parts import Part
from splitdask._dataset._snapshot import reading_parts
from splitdask._format import PartCodec
from splitdask._read._batch import RecordBatch, bin_batches
from splitdask._store import Store
from splitdask._util._closing import Closing
from splitdask.errors import CorruptDatasetError

__all__ = ["BinData", "load_parts"]


class BinData(Closing):
    """One bin's parts (or some of them) whole and checked, with their records' extents.

    Parameters
    ----------
    buffers
        Each part as stored (a map or bytes), records at their file offsets.
    starts, ends
        Each part's record extents.
    codecs
        Each part's codec (from its footer).
    owned
        Whether :meth:`release` may unmap the buffers; ``False`` when a reader's
        part cache holds them and unmaps them itself.

    Notes
    -----
    Used as a context manager, it releases the buffers on exit.
    """

    __slots__ = ("buffers", "codecs", "ends", "owned", "starts")

    def __init__(
        self,
        buffers: list[Any],
        starts: list[Any],
        ends: list[Any],
        codecs: list[PartCodec],
        owned: bool = True,
    ) -> None:
        self.buffers = buffers
        self.starts = starts
        self.ends = ends
        self.codecs = codecs
        self.owned = owned

    def __len__(self) -> int:
        return sum(map(len, self.starts))

    def records(self, seed: int | None, bin_index: int) -> Iterator[bytes]:
        """The records, stored or in ``bin_permutation(seed, bin_index)`` order
        (:func:`~splitdask._dataset._order.iter_records`)."""
        sources = [c.whole(d) for c, d in zip(self.codecs, self.buffers, strict=True)]
        return iter_records(sources, self.starts, self.ends, seed, bin_index)

    def views(self, seed: int | None, bin_index: int) -> Iterator[Any]:
        """As :meth:`records`, each a memoryview into its part's buffer (no copy), or
        of its decoded bytes for a part whose records are not stored as they are."""
        sources = [c.views(d) for c, d in zip(self.codecs, self.buffers, strict=True)]
        return iter_records(sources, self.starts, self.ends, seed, bin_index)

    def batches(self, seed: int | None, bin_index: int, size: int) -> Iterator[RecordBatch]:
        """As :meth:`records`, in batches of ``size`` (:func:`bin_batches`)."""
        return bin_batches(self.buffers, self.starts, self.ends, seed, bin_index, size, self.codecs)

    def take(self, k: int, js: Any) -> Iterator[Any]:
        """Records ``js`` (an index array) of part ``k``, in that order."""
        source = self.codecs[k].whole(self.buffers[k])
        spans = map(slice, self.starts[k][js].tolist(), self.ends[k][js].tolist())
        return map(source.__getitem__, spans)

    def split(self) -> list[BinData]:
        """Each part as a :class:`BinData` of its own, to be released on its own."""
        parts = zip(self.buffers, self.starts, self.ends, self.codecs, strict=True)
        return [BinData([b], [s], [e], [c], self.owned) for b, s, e, c in parts]

    def release(self) -> None:
        """Unmap the parts now if nothing still views them (else garbage collection
        will); buffers a reader's cache holds are left to it.

        A sampling profiler (Dask's worker has one) can briefly hold a frame whose
        locals view a map, which makes ``close`` refuse.
        """
        if not self.owned:
            return
        for data in self.buffers:
            if isinstance(data, mmap.mmap):
                with contextlib.suppress(BufferError):
                    data.close()

    close = release  # the end of a ``with`` block


def load_parts(store: Store, parts: Sequence[Part], generation: int | None) -> BinData:
    """Each part whole (mapped locally, one concurrent GET each remotely), checked
    against its size, footer and whole-part checksum (one pass in C, cheaper than a
    check per record); the footer comes with the part, so no extra request.

    Raises
    ------
    CorruptDatasetError, SnapshotExpiredError
        If a part is damaged, or missing (``missing_part``'s words).
    """
    with reading_parts(store, generation):
        datas = store.read_whole([p.path for p in parts], [p.size for p in parts])
    data = BinData(datas, [], [], [])
    try:
        for k, part in enumerate(parts):
            where = store.where(part.path)
            try:
                starts, ends, codec = part.footer(datas[k], where)
                part.check_whole(datas[k], where)
            except CorruptDatasetError:
                # A damaged copy in the local cache is not a damaged dataset: drop
                # it and check the part as stored (an error then is the dataset's).
                if not store.forget_cached(part.path):
                    raise
                BinData([datas[k]], [], [], []).release()
                with reading_parts(store, generation):
                    datas[k] = store.read_whole([part.path], [part.size])[0]
                starts, ends, codec = part.footer(datas[k], where)
                part.check_whole(datas[k], where)
            data.starts.append(starts)
            data.ends.append(ends)
            data.codecs.append(codec)
    except BaseException:
        data.release()
        raise
    return data

"""Writing datasets: the round-robin :class:`SplitWriter` and ``write_split_data``.

A write never touches what is committed: records go to new, uniquely named parts
(``_binwrite``), and only the commit (``_commit``, one atomic manifest
replacement) makes them part of the dataset.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sized
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any

import numpy as np

from splitdask._dataset._order import resolve_seed
from splitdask._format import BINS_DIR, MAX_BINS, Manifest
from splitdask._format._codec import DEFAULT_CODEC, Codec, encode_records, type_hint
from splitdask._format._compression import SAMPLE_BYTES, check_compression
from splitdask._store import UrlPath, open_store
from splitdask._util._progress import Progress, counted
from splitdask._util._validate import check_int, check_metadata
from splitdask._write._binwrite import FLUSH_MAX, OFFSETS_BUDGET, Batches, BinWriter
from splitdask._write._changes import AddRecords, Mode
from splitdask._write._cleanup import new_tag, warn_left
from splitdask._write._commit import (
    DEFAULT_KEEP_VERSIONS,
    DEFAULT_RETENTION,
    DEFAULT_RETRIES,
    CommitInfo,
    Transaction,
)
from splitdask._write._compact import auto_compact
from splitdask._write._options import resolve_bin_count, resolve_codec, resolve_mode

__all__ = ["SplitWriter", "write_split_data"]

# Records are staged in one buffer per bin; all bins of one writer together stay
# under this.
_BUFFER_BUDGET = 64 << 20
_FLUSH_MIN = 64 << 10
# A small append goes to few bins, about one per this many records or bytes, so a
# hundred records do not become a part in every bin.
_SMALL_APPEND_RECORDS = 1024
_SMALL_APPEND_BYTES = 256 << 10


class SplitWriter:
    """Write records round-robin over ``splits`` bins and commit them atomically.

    Use it as a context manager: leaving the block normally commits, leaving it by
    an exception discards everything written in it, and the dataset stays exactly
    as it was.

    Parameters
    ----------
    urlpath
        Dataset root: a local path or any fsspec URL.
    splits
        Number of bins to deal records over. ``None`` keeps the existing dataset's
        bin count (256 for a new one), except that a small append (about 1,024
        records or 256 KiB per bin, or less) is dealt over only as many of the
        least-filled bins as it fills, so appending a few records does not add a
        part to every bin. Appending with more splits than the dataset has bins adds
        bins; with fewer, the least-filled bins receive the records.
        ``num_bins=`` is accepted as an alias (the loader's name for the same
        number; docs/decisions.md lists the names for the bin count).
    shuffle
        Deal over the bins in a random rotation instead of ``0, 1, 2, ...``.
    seed
        Seed for ``shuffle``.
    mode
        ``"a"`` append to the dataset (or create it), ``"w"`` replace it (old parts are
        removed after the new manifest is committed), ``"x"`` create it and raise
        ``FileExistsError`` if one exists.
    storage_options
        Passed to fsspec.
    metadata
        JSON-serialisable mapping stored in the manifest (merged over the existing
        metadata when appending).
    part_max_bytes
        A bin's part is closed and a new one started past this size.
    spool_bytes
        Remote stores only: a part is spooled to a local temp file until it is
        closed and uploaded. When the open parts of all bins together pass this
        size, the largest is closed and uploaded, so the temp disk a write uses
        stays under ``spool_bytes`` plus one batch, however many bins there are.
    retention
        Seconds that the version this write replaces (and every older one) stays
        readable for loaders that hold it, after this write committed; files of
        killed writers older than this are removed by the housekeeping after
        commits. See :func:`splitdask.gc`.
    keep_versions
        The newest versions kept whatever their age (default 1: the newest only).
    tag
        A label for the version this write makes: ``splitdask log`` shows it and
        ``SplitDataLoader(url, version=tag)`` opens it.
    retries
        Times the commit re-bases onto another writer's newer commit and tries
        again before raising :class:`~splitdask.CommitConflictError`.
    progress
        Show a progress bar (``tqdm.auto``: records/s and MB/s) while writing.
    num_bins
        Alias of ``splits``.
    compression
        ``None`` (default) or ``"zstd"``: each record is compressed on its own with
        a zstd dictionary trained from the first records of each bin, so
        ``loader[i]`` still decompresses one record. Compressed parts are format v3
        (their manifest version 3): splitdask releases before it refuse them.
    compression_level
        zstd level, ``-131072`` to ``22`` (default 3); only with ``compression``.
    codec
        How records are stored, recorded in the dataset for its readers: ``"bytes"``
        (as given), ``"json"``, ``"msgpack"``, ``"npy"``, ``"pickle"`` or a name given to
        :func:`splitdask.register_codec`. ``None``: the dataset's (``"bytes"`` for a new
        one); another than the dataset's raises ``ValueError``.

    Examples
    --------
    >>> with SplitWriter("data/train", splits=64) as w:  # doctest: +SKIP
    ...     w.write(b"first record")
    ...     w.write_many(records)
    >>> w.info.num_records  # doctest: +SKIP
    """

    def __init__(
        self,
        urlpath: UrlPath,
        splits: int | None = None,
        *,
        shuffle: bool = False,
        seed: int | None = None,
        mode: Mode = "a",
        storage_options: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        part_max_bytes: int = 256 << 20,
        spool_bytes: int = 2 << 30,
        retention: float = DEFAULT_RETENTION,
        retries: int = DEFAULT_RETRIES,
        progress: bool = False,
        num_bins: int | None = None,
        compression: str | None = None,
        compression_level: int | None = None,
        keep_versions: int = DEFAULT_KEEP_VERSIONS,
        tag: str | None = None,
        codec: str | None = None,
    ) -> None:
        splits = resolve_bin_count(splits, num_bins)
        packing = check_compression(compression, compression_level)
        metadata = check_metadata(metadata)
        if splits is not None:
            splits = check_int(splits, "splits", minimum=1, maximum=MAX_BINS)
        self.store = open_store(urlpath, storage_options)
        retries = check_int(retries, "retries", minimum=0)
        self._target = Transaction.begin(
            self.store,
            mode,
            retention=retention,
            retries=retries,
            keep_versions=keep_versions,
            tag=tag,
        )
        self.codec = resolve_codec(codec, self._target.base, self.store.urlpath)
        """The codec records are encoded with (:class:`~splitdask._format._codec.Codec`)."""
        self._tag = new_tag()
        base_bins = self._target.base.num_bins if self._target.base else 0
        nsplits = splits if splits is not None else (base_bins or 256)
        self.num_bins = max(base_bins, nsplits)
        # The least-filled bins take the records; shuffle breaks ties and orders
        # the rotation at random.
        if shuffle:
            rng = np.random.default_rng(resolve_seed(seed))
            ties = [int(b) for b in rng.permutation(self.num_bins)]
            chosen = self._target.bins_by_fill(self.num_bins, ties)[:nsplits]
            self._rot = [chosen[int(i)] for i in rng.permutation(nsplits)]
        else:
            self._rot = self._target.bins_by_fill(self.num_bins)[:nsplits]
        self._metadata = metadata
        max_records = max(1 << 16, OFFSETS_BUDGET // (16 * nsplits))
        # Each bin holds back a dictionary's training sample: bounded by the buffer budget.
        sample = min(SAMPLE_BYTES, max(_FLUSH_MIN, _BUFFER_BUDGET // nsplits))
        self._writers = [
            BinWriter(self.store, b, part_max_bytes, max_records, self._tag, packing, sample)
            for b in self._rot
        ]
        flush = min(FLUSH_MAX, max(_FLUSH_MIN, _BUFFER_BUDGET // nsplits))
        self._narrowable = splits is None  # the caller left the deal width to us
        self._spool = spool_bytes if self.store.spools else None
        self._flush = flush
        self._batches = Batches(self._writers, flush, self._spool)
        self._closed = False
        self._progress = Progress(progress, desc=f"writing {self.store.urlpath}")
        self.info: CommitInfo | None = None
        """Set by a successful :meth:`commit`."""

    def __enter__(self) -> SplitWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._closed:
            return
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def write(self, record: Any) -> None:
        """Add one record (bytes-like, or a value of the writer's ``codec``)."""
        self.write_many((record,))

    def write_many(self, records: Iterable[Any]) -> None:
        """Add records from any iterable, streaming: nothing is held but small buffers.
        A record the codec cannot encode raises ``TypeError`` (naming its position and
        field); the records before it are written."""
        if self._closed:
            raise ValueError("write to a SplitWriter that is already committed or aborted")
        if self._progress.enabled:
            records = counted(records, self._progress)
        try:
            _deal(self._batches, self.codec, records)
        except BaseException:
            if any(w.failed for w in self._writers):
                # A part could not be written (a full disk, say): this write can
                # never commit, so its other temp files and parts go now.
                self.abort()
            raise

    def abort(self) -> None:
        """Discard everything written; the committed dataset is untouched."""
        if self._closed:
            return
        self._closed = True
        self._progress.close()
        for w in self._writers:
            # Every writer's temp file goes, whatever removing another one raised.
            try:
                w.abort()
            except Exception as exc:
                warn_left(self.store, f"the temp file of a part of bin {w.bin_index}", exc)
        self._target.abandon(p for w in self._writers for p in w.parts)

    def commit(self) -> CommitInfo:
        """Make the written records part of the dataset, in one atomic step."""
        if self._closed:
            raise ValueError("SplitWriter is already committed or aborted")
        try:
            self._narrow_small_append()
            self._finish_parts()
            manifest, info = self._commit_manifest()
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._progress.close()
        self.info = info
        base = self._target.base
        if base is not None and base.num_records and info.records_written:
            # An append to existing data: its bins may have grown small parts.
            t, grown = self._target, [w.bin_index for w in self._writers if w.parts]
            auto_compact(
                self.store,
                manifest,
                grown,
                retention=t.retention,
                retries=t.retries,
                keep_versions=t.keep_versions,
            )
        return info

    def _narrow_small_append(self) -> None:
        """Deal a small append over a few of the least-filled bins instead of all.

        Only while every record is still staged (no part opened yet), so nothing is
        rewritten: the staged records are dealt again, in their order, over the first
        ``k`` bins of the rotation. Only when ``splits`` was not given: an explicit
        ``splits`` deals over exactly that many bins, as documented.
        """
        b = self._batches
        base = self._target.base
        if not self._narrowable or base is None or not base.num_records or b.k == 0:
            return
        if any(w.parts or w.open_bytes or w.held for w in self._writers):
            return
        m = len(self._writers)
        nbytes = sum(b.sizes)
        k = max(-(-b.k // _SMALL_APPEND_RECORDS), -(-nbytes // _SMALL_APPEND_BYTES))
        if k >= m or b.k > m * _SMALL_APPEND_RECORDS:
            return
        staged = [b.pending[j % m][j // m] for j in range(b.k)]
        keep = list(range(k))
        if k == 1 and (sticky := self._sticky_bin(base, b.k)) is not None:
            keep = [sticky]
        self._rot = [self._rot[i] for i in keep]
        self._writers = [self._writers[i] for i in keep]
        narrowed = Batches(self._writers, self._flush, self._spool)
        narrowed.deal(staged)
        self._batches = narrowed

    def _sticky_bin(self, base: Manifest, n: int) -> int | None:
        """The rotation index of the bin the last append went to, if this one-bin append
        can follow it there and leave that bin within a small append of the least
        filled. Consecutive small appends then extend one run of the global order
        (one manifest segment, not one per append) and one bin's parts (which
        compaction merges), instead of touching a new bin every time."""
        last = base.order[-1] if base.order else None
        if last is None or len(last.bins) != 1:
            return None
        b = last.bins[0]
        counts = self._target.base_counts(self.num_bins)
        if b not in self._rot or counts[b] + n > min(counts) + _SMALL_APPEND_RECORDS:
            return None
        return self._rot.index(b)

    def _finish_parts(self) -> None:
        self._batches.flush()
        # finish() of the others is a no-op; a writer may hold records back to train
        # a compression dictionary before it opens a part.
        opened = [w for w in self._writers if w.open_bytes or w.held]
        if self.store.upload_concurrency > 1 and len(opened) > 1:
            # A part's commit (an upload, or an fsync) waits on I/O: do a few at once.
            with ThreadPoolExecutor(self.store.upload_concurrency) as pool:
                list(pool.map(BinWriter.finish, opened))
        else:
            for w in opened:
                w.finish()
        self.store.sync_dir(BINS_DIR)

    def _commit_manifest(self) -> tuple[Manifest, CommitInfo]:
        written = self._batches.k
        # Record k of this write went to bin rot[k % len(rot)]: one round-robin run.
        deals = [(written, tuple(self._rot[: min(len(self._rot), written)]))] if written else []
        new_parts = [p for w in self._writers for p in w.parts]
        change = AddRecords(
            self._target.mode,
            self.num_bins,
            {w.bin_index: w.parts for w in self._writers},
            deals,
            self._metadata,
            self.codec.name,
        )
        manifest, _ = self._target.commit(change, tag=self._tag, new_parts=new_parts)
        return manifest, CommitInfo.of(self.store.urlpath, manifest, new_parts)


def _deal(batches: Batches, codec: Codec, records: Iterable[Any]) -> None:
    """Encode ``records`` and deal them (the error at a record "bytes" cannot store
    says which ``codec=`` can)."""
    plain = codec.name == DEFAULT_CODEC
    try:
        batches.deal(records if plain else encode_records(codec, records, batches.k))
    except TypeError as exc:
        if not plain or (hint := type_hint(str(exc))) is None:
            raise
        raise TypeError(hint) from None


def write_split_data(
    target_dir: UrlPath,
    input_sequence: Iterable[Any],
    splits: int | None = None,
    shuffle: bool = False,
    start_clean: bool = False,
    *,
    seed: int | None = None,
    mode: Mode | None = None,
    storage_options: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    retention: float = DEFAULT_RETENTION,
    retries: int = DEFAULT_RETRIES,
    progress: bool = False,
    num_bins: int | None = None,
    compression: str | None = None,
    compression_level: int | None = None,
    keep_versions: int = DEFAULT_KEEP_VERSIONS,
    tag: str | None = None,
    codec: str | None = None,
) -> CommitInfo:
    """Write ``input_sequence`` over ``splits`` bins, as ``splitdataloader`` did.

    Parameters
    ----------
    target_dir
        Dataset root: local path or fsspec URL.
    input_sequence
        Iterable of records, consumed once, streaming: bytes-like objects, or
        values of ``codec`` (dicts with ``codec="msgpack"``, say).
    splits
        Number of bins; record ``k`` of this call goes to the ``k % splits``-th bin of
        the rotation. Defaults to the existing dataset's bin count, or 256 for a new
        dataset (the predecessor's default); see :class:`SplitWriter` for how a
        small append without ``splits`` uses fewer bins.
    shuffle
        Randomise which bin each position of the rotation is.
    start_clean
        The predecessor's name for ``mode="w"``, kept as an alias: replace any
        existing dataset instead of appending to it. Unlike the predecessor, the old
        data stays readable until the new data is committed.
    mode
        As for :class:`SplitWriter`; default ``"a"`` (``"w"`` with ``start_clean``).
        ``start_clean=True`` with another mode raises ``TypeError``.
    seed, storage_options, metadata, retention, retries, progress, compression
    compression_level, keep_versions, tag, codec
        See :class:`SplitWriter` (with ``progress``, the bar shows an ETA when
        ``input_sequence`` has a length).
    num_bins
        Alias of ``splits``.

    Returns
    -------
    CommitInfo
        Counts for this write and for the dataset after it.

    Raises
    ------
    TypeError
        If a record is not bytes-like (the message says which ``codec=`` stores it) or
        ``codec`` cannot encode it; it names the record's position (and field).
        Nothing from this call becomes visible.
    ValueError
        If ``codec`` is unknown, or not the dataset's when appending.
    """
    with SplitWriter(
        target_dir,
        splits,
        shuffle=shuffle,
        seed=seed,
        mode=resolve_mode(mode, "a", start_clean=start_clean),
        storage_options=storage_options,
        metadata=metadata,
        retention=retention,
        retries=retries,
        progress=progress,
        num_bins=num_bins,
        compression=compression,
        compression_level=compression_level,
        keep_versions=keep_versions,
        tag=tag,
        codec=codec,
    ) as writer:
        if progress and isinstance(input_sequence, Sized):
            writer._progress.total(len(input_sequence))
        writer.write_many(input_sequence)
    assert writer.info is not None
    return writer.info

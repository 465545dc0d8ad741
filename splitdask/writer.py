"""Writing datasets: bin parts, the round-robin :class:`SplitWriter`, and ``write_split_data``.

A write never touches what is committed: records go to new, uniquely named parts,
and only the final manifest replacement (one atomic step) makes them part of the
dataset. Old parts of an overwritten dataset are removed after that step.
"""

from __future__ import annotations

import secrets
import warnings
from array import array
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import accumulate
from types import TracebackType
from typing import Any, Literal

import numpy as np
import xxhash

from splitdask import legacy
from splitdask.errors import CommitConflictError, SplitDaskError
from splitdask.format import (
    BINS_DIR,
    DATA_START,
    MAGIC,
    MANIFEST_NAME,
    Manifest,
    PartInfo,
    Segment,
    encode_footer,
    part_name,
)
from splitdask.index import resolve_seed
from splitdask.storage import PartSink, Store, UrlPath, fsync_dir, read_manifest

__all__ = ["CommitInfo", "SplitWriter", "WriteTarget", "write_bin_part", "write_split_data"]

Mode = Literal["a", "w", "x"]

# Memory budgets shared by all bins of one writer: records are staged in one
# buffer per bin, and offsets are kept per open part, so both are capped.
_BUFFER_BUDGET = 64 << 20
_OFFSETS_BUDGET = 64 << 20
_FLUSH_MIN, _FLUSH_MAX = 64 << 10, 4 << 20  # bytes staged per bin before a write
_BATCH_RECORDS = 4096  # records staged per bin before a write (bounds tiny records)
# Remote parts uploaded at once on commit. Each upload holds about four
# storage.UPLOAD_BLOCKs (the block, its copy for the request, the client's
# buffers), so uploads add at most about 4 * 32 MiB whatever the number of bins.
_UPLOADS = 4


@dataclass(frozen=True)
class CommitInfo:
    """What a commit did.

    Attributes
    ----------
    urlpath
        The dataset's location.
    generation
        Manifest generation now committed (0 for a dataset that was never written).
    records_written, bytes_written, parts_written
        Added by this commit (``bytes_written`` counts record bytes only).
    num_records, num_bins
        Of the whole dataset after the commit.
    """

    urlpath: str
    generation: int
    records_written: int
    bytes_written: int
    parts_written: int
    num_records: int
    num_bins: int

    @classmethod
    def of(cls, urlpath: str, manifest: Manifest, new_parts: Sequence[PartInfo]) -> CommitInfo:
        """The commit that made ``manifest`` by adding ``new_parts``."""
        return cls(
            urlpath=urlpath,
            generation=manifest.generation,
            records_written=sum(p.count for p in new_parts),
            bytes_written=sum(p.payload for p in new_parts),
            parts_written=len(new_parts),
            num_records=manifest.num_records,
            num_bins=manifest.num_bins,
        )


@dataclass(frozen=True)
class WriteTarget:
    """A dataset about to be written: what was committed when the write began.

    Both :class:`SplitWriter` and :func:`splitdask.to_split_bins` write new parts
    first and then call :meth:`commit`, which is the only code that replaces the
    manifest. It pickles, so a Dask commit task can carry it.
    """

    store: Store
    mode: Mode
    current: Manifest | None
    """The committed manifest when the write began (``None``: no dataset)."""
    replaces_legacy: bool = False

    @classmethod
    def open(cls, store: Store, mode: Mode) -> WriteTarget:
        """Check ``mode`` against what is at ``store``; raise before anything is written."""
        if mode not in ("a", "w", "x"):
            raise ValueError(f"mode must be 'a', 'w' or 'x', got {mode!r}")
        current = read_manifest(store)
        has_legacy = current is None and legacy.is_legacy(store)
        if mode == "x" and (current is not None or has_legacy):
            raise FileExistsError(f"a dataset already exists at {store.urlpath}")
        if mode == "a" and has_legacy:
            raise SplitDaskError(
                f"{store.urlpath} holds a splitdataloader 0.0.1 dataset: splitdask reads it "
                "but does not append to it; write to a new location or replace it (mode='w', "
                "start_clean=True)"
            )
        store.makedirs(BINS_DIR)
        return cls(store, mode, current, has_legacy and mode == "w")

    @property
    def base(self) -> Manifest | None:
        """The manifest new records are added to (``None`` when replacing or creating)."""
        return self.current if self.mode == "a" else None

    def base_counts(self, num_bins: int) -> list[int]:
        """Records already in each of ``num_bins`` bins."""
        counts = self.base.bin_counts() if self.base else []
        return counts + [0] * (num_bins - len(counts))

    def bins_by_fill(self, num_bins: int, ties: Sequence[int] | None = None) -> list[int]:
        """Bins, least-filled first: where new records go, so appends stay balanced.

        Equally filled bins keep their order in ``ties`` (default: by number).
        """
        counts = self.base_counts(num_bins)
        return sorted(range(num_bins) if ties is None else ties, key=lambda b: counts[b])

    def commit(
        self,
        num_bins: int,
        new_parts: Mapping[int, Sequence[PartInfo]],
        segments: Sequence[Segment],
        metadata: Mapping[str, Any] | None = None,
    ) -> Manifest:
        """Write the manifest naming the base's parts plus ``new_parts`` (atomic).

        ``segments`` are absolute: they start at the base's record count, and their
        ``first`` indices count the base's records of each bin. Parts of a replaced
        dataset are removed only after the new manifest is in place.
        """
        store, base = self.store, self.base
        now = read_manifest(store)
        if (now.uid if now else None) != (self.current.uid if self.current else None):
            raise CommitConflictError(
                f"{store.urlpath} was committed by another writer while this one was "
                "writing; nothing was committed by this one"
            )
        if base is not None and not segments:
            return base
        old_bins = list(base.bins) if base else []
        old_bins += [()] * (num_bins - len(old_bins))
        bins = tuple(tuple(old) + tuple(new_parts.get(b, ())) for b, old in enumerate(old_bins))
        manifest = Manifest(
            bins=bins,
            order=(*(base.order if base else ()), *segments),
            generation=(now.generation if now else 0) + 1,
            uid=secrets.token_hex(8),
            metadata={**(base.metadata if base else {}), **(metadata or {})},
        )
        manifest.validate(store.urlpath)
        store.write_atomic(MANIFEST_NAME, manifest.to_json())
        # Only now is the old data unreferenced; losing this cleanup loses nothing,
        # so a failure here must not turn the commit that just happened into an error
        # (a caller would then abandon the parts it just committed).
        if self.mode == "w" and self.current is not None:
            _tidy(store, [p.path for p in self.current.parts()], "replaced parts")
        if self.replaces_legacy:
            try:
                legacy.remove(store)
            except Exception as exc:
                _warn_left(store, "the replaced splitdataloader files", exc)
        return manifest

    def abandon(self, parts: Iterable[PartInfo]) -> None:
        """Remove parts that were written but will never be committed (best effort:
        a part left behind is never read, and the write's own error matters more)."""
        _tidy(self.store, [p.path for p in parts], "uncommitted parts")


def _tidy(store: Store, rels: Sequence[str], what: str) -> None:
    """Remove files no manifest names; on failure warn, leaving them as garbage."""
    try:
        store.remove(rels)
    except Exception as exc:
        _warn_left(store, f"{len(rels)} {what}", exc)


def _warn_left(store: Store, what: str, exc: Exception) -> None:
    warnings.warn(
        f"{store.urlpath}: could not remove {what} ({type(exc).__name__}: {exc}); they "
        "are not part of the dataset and can be deleted by hand",
        RuntimeWarning,
        stacklevel=3,
    )


class _BinWriter:
    """Streams one bin's records, a batch at a time, into parts of bounded size."""

    def __init__(
        self, store: Store, bin_index: int, max_bytes: int, max_records: int, tag: str = ""
    ) -> None:
        self.store = store
        self.bin_index = bin_index
        self.max_bytes = max_bytes
        self.max_records = max_records
        self.tag = tag
        self.parts: list[PartInfo] = []
        self._sink: PartSink | None = None
        self._path = ""
        self._offsets = array("Q")
        self._hash = xxhash.xxh3_64()
        self._pos = 0

    def add_many(self, records: list[bytes]) -> None:
        """Append a batch; joining and summing in C keeps per-record cost low."""
        if self._sink is None:
            self._open()
        self._write(b"".join(records))
        ends = accumulate(map(len, records), initial=self._pos)
        next(ends)  # the initial value is the previous end, already stored
        self._offsets.extend(ends)
        self._pos = self._offsets[-1]
        if self._pos >= self.max_bytes or len(self._offsets) > self.max_records:
            self.finish()

    def _open(self) -> None:
        self._path = part_name(self.bin_index, self.tag + secrets.token_hex(8))
        self._sink = self.store.create_part(self._path, buffer_size=256 << 10)
        self._offsets = array("Q", [DATA_START])
        self._hash = xxhash.xxh3_64()
        self._write(MAGIC)
        self._pos = DATA_START

    def _write(self, data: bytes) -> None:
        assert self._sink is not None
        self._sink.write(data)
        self._hash.update(data)

    def finish(self) -> None:
        """Close the open part (footer, then commit the file) if there is one."""
        if self._sink is None:
            return
        footer = encode_footer(np.frombuffer(self._offsets, dtype=np.uint64))
        self._write(footer)
        self._sink.commit()
        self._sink = None
        count = len(self._offsets) - 1
        size = self._pos + len(footer)
        checksum = f"xxh3_64:{self._hash.hexdigest()}"
        self.parts.append(PartInfo(self._path, count, size, checksum))
        self._offsets = array("Q")

    def abort(self) -> None:
        if self._sink is not None:
            self._sink.abort()
            self._sink = None

    @property
    def open_bytes(self) -> int:
        """Bytes written to the part still open (spooled, for a remote store)."""
        return self._pos if self._sink is not None else 0


class _Batches:
    """Deals records round-robin into per-bin batches, bounded in bytes and count.

    Records are only referenced until their batch is flushed, so memory stays at
    about ``len(writers) * flush_bytes`` whatever the input's length. With a
    ``spool_budget``, the open parts of all bins together stay under it: past it the
    largest one is closed (and, on a remote store, uploaded and its spool removed).
    """

    def __init__(
        self, writers: list[_BinWriter], flush_bytes: int, spool_budget: int | None = None
    ) -> None:
        self.writers = writers
        self.flush_bytes = flush_bytes
        self.spool_budget = spool_budget
        self.pending: list[list[bytes]] = [[] for _ in writers]
        self.sizes = [0] * len(writers)
        self.k = 0

    def deal(self, records: Iterable[Any]) -> None:
        writers, pending, sizes = self.writers, self.pending, self.sizes
        m, limit, k = len(writers), self.flush_bytes, self.k
        try:
            for record in records:
                rec = record if type(record) is bytes else _as_record(record, k)
                j = k % m
                batch = pending[j]
                batch.append(rec)
                sizes[j] += len(rec)
                k += 1
                if sizes[j] >= limit or len(batch) >= _BATCH_RECORDS:
                    writers[j].add_many(batch)
                    pending[j] = []
                    sizes[j] = 0
                    if self.spool_budget is not None:
                        self._bound_spool(self.spool_budget)
        finally:
            self.k = k

    def flush(self) -> None:
        for j, batch in enumerate(self.pending):
            if batch:
                self.writers[j].add_many(batch)
                if self.spool_budget is not None:
                    self._bound_spool(self.spool_budget)
        self.pending = [[] for _ in self.writers]
        self.sizes = [0] * len(self.writers)

    def _bound_spool(self, budget: int) -> None:
        # Runs once per batch (>= 64 KiB), so summing over the bins is cheap.
        total = sum(w.open_bytes for w in self.writers)
        while total > budget:
            largest = max(self.writers, key=lambda w: w.open_bytes)
            total -= largest.open_bytes
            largest.finish()


def _as_record(record: Any, position: int) -> bytes:
    """A copy of ``record``'s bytes, or a ``TypeError`` naming its position.

    The copy matters: a caller may reuse a bytearray or array after ``write``.
    """
    try:
        view = memoryview(record)
    except TypeError:
        raise TypeError(
            f"record {position} is of type {type(record).__name__}; expected a bytes-like "
            "object (bytes, bytearray, memoryview or a C-contiguous buffer)"
        ) from None
    if not view.c_contiguous:
        raise TypeError(
            f"record {position} is a non-contiguous {type(record).__name__} buffer; "
            "pass a C-contiguous copy"
        )
    return view.tobytes()


def write_bin_part(
    store: Store,
    bin_index: int,
    records: Iterable[Any],
    *,
    where: str = "",
    part_max_bytes: int = 256 << 20,
    tag: str = "",
) -> list[PartInfo]:
    """Write ``records`` to new, uncommitted parts of one bin and return them.

    This is the unit of work of a Dask partition: the parts become part of the
    dataset only when a :meth:`WriteTarget.commit` names them. On any error the
    parts written so far are removed. ``where`` prefixes a type error's message
    (a partition's name, say). ``tag`` (lowercase hex, at most 48 digits) starts
    every new part's unique name, so the parts of one write can be told apart from
    others' when its leftovers (a killed task's parts) are collected.
    """
    if tag and (len(tag) > 48 or tag.strip("0123456789abcdef")):
        raise ValueError(f"tag must be at most 48 lowercase hex digits, got {tag!r}")
    w = _BinWriter(store, bin_index, part_max_bytes, _OFFSETS_BUDGET // 8, tag)
    batches = _Batches([w], _FLUSH_MAX)
    try:
        batches.deal(records)
        batches.flush()
        w.finish()
    except BaseException as exc:
        w.abort()
        _tidy(store, [p.path for p in w.parts], "uncommitted parts")
        if isinstance(exc, TypeError) and where:
            raise TypeError(f"{where}: {exc}") from None
        raise
    return w.parts


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
        bin count (256 for a new one). Appending with more splits than the dataset
        has bins adds bins; with fewer, the least-filled bins receive the records.
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
    ) -> None:
        if splits is not None and (isinstance(splits, bool) or not isinstance(splits, int)):
            raise TypeError(f"splits must be an int, not {type(splits).__name__}")
        if splits is not None and splits < 1:
            raise ValueError(f"splits must be at least 1, got {splits}")
        self.store = Store(urlpath, storage_options)
        self._target = WriteTarget.open(self.store, mode)
        base_bins = self._target.base.num_bins if self._target.base else 0
        nsplits = splits if splits is not None else (base_bins or 256)
        self.num_bins = max(base_bins, nsplits)
        self._counts_before = self._target.base_counts(self.num_bins)
        # The least-filled bins take the records; shuffle breaks ties and orders
        # the rotation at random.
        if shuffle:
            rng = np.random.default_rng(resolve_seed(seed))
            ties = [int(b) for b in rng.permutation(self.num_bins)]
            chosen = self._target.bins_by_fill(self.num_bins, ties)[:nsplits]
            self._rot = [chosen[int(i)] for i in rng.permutation(nsplits)]
        else:
            self._rot = self._target.bins_by_fill(self.num_bins)[:nsplits]
        self._metadata = dict(metadata or {})
        max_records = max(1 << 16, _OFFSETS_BUDGET // (8 * nsplits))
        self._writers = [_BinWriter(self.store, b, part_max_bytes, max_records) for b in self._rot]
        flush = min(_FLUSH_MAX, max(_FLUSH_MIN, _BUFFER_BUDGET // nsplits))
        spool = None if self.store.is_local else spool_bytes
        self._batches = _Batches(self._writers, flush, spool)
        self._closed = False
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
        """Add one record (bytes-like)."""
        self.write_many((record,))

    def write_many(self, records: Iterable[Any]) -> None:
        """Add records from any iterable, streaming: nothing is held but small buffers."""
        if self._closed:
            raise ValueError("write to a SplitWriter that is already committed or aborted")
        self._batches.deal(records)

    def abort(self) -> None:
        """Discard everything written; the committed dataset is untouched."""
        if self._closed:
            return
        self._closed = True
        for w in self._writers:
            w.abort()
        self._target.abandon(p for w in self._writers for p in w.parts)

    def commit(self) -> CommitInfo:
        """Make the written records part of the dataset, in one atomic step."""
        if self._closed:
            raise ValueError("SplitWriter is already committed or aborted")
        try:
            self._finish_parts()
            info = self._commit_manifest()
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self.info = info
        return info

    def _finish_parts(self) -> None:
        self._batches.flush()
        if self.store.is_local:
            for w in self._writers:
                w.finish()
            fsync_dir(self.store.full(BINS_DIR))
        else:
            # Remote parts upload on finish; do a few at once.
            with ThreadPoolExecutor(_UPLOADS) as pool:
                list(pool.map(_BinWriter.finish, self._writers))

    def _commit_manifest(self) -> CommitInfo:
        written = self._batches.k
        segments = []
        if written:
            used = tuple(self._rot[: min(len(self._rot), written)])
            base = self._target.base
            start = base.num_records if base else 0
            first = tuple(self._counts_before[b] for b in used)
            segments.append(Segment(start, written, used, first))
        manifest = self._target.commit(
            self.num_bins, {w.bin_index: w.parts for w in self._writers}, segments, self._metadata
        )
        new_parts = [p for w in self._writers for p in w.parts]
        return CommitInfo.of(self.store.urlpath, manifest, new_parts)


def write_split_data(
    target_dir: UrlPath,
    input_sequence: Iterable[Any],
    splits: int | None = None,
    shuffle: bool = False,
    start_clean: bool = False,
    *,
    seed: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> CommitInfo:
    """Write ``input_sequence`` over ``splits`` bins, as ``splitdataloader`` did.

    Parameters
    ----------
    target_dir
        Dataset root: local path or fsspec URL.
    input_sequence
        Iterable of bytes-like records; consumed once, streaming.
    splits
        Number of bins; record ``k`` of this call goes to the ``k % splits``-th bin of
        the rotation. Defaults to the existing dataset's bin count, or 256 for a new
        dataset (the predecessor's default).
    shuffle
        Randomise which bin each position of the rotation is.
    start_clean
        Replace any existing dataset instead of appending to it. Unlike the
        predecessor, the old data stays readable until the new data is committed.
    seed, storage_options, metadata
        See :class:`SplitWriter`.

    Returns
    -------
    CommitInfo
        Counts for this write and for the dataset after it.

    Raises
    ------
    TypeError
        If a record is not bytes-like; it names the record's position. Nothing from
        this call becomes visible.
    """
    with SplitWriter(
        target_dir,
        splits,
        shuffle=shuffle,
        seed=seed,
        mode="w" if start_clean else "a",
        storage_options=storage_options,
        metadata=metadata,
    ) as writer:
        writer.write_many(input_sequence)
    assert writer.info is not None
    return writer.info

"""Bin parts on the way in: records dealt into per-bin batches, streamed into parts.

No commit happens here: a part written by :func:`write_bin_part` or a
:class:`BinWriter` is a file nothing names until ``_commit.Transaction.commit``
does.
"""

from __future__ import annotations

import contextlib
import errno
import secrets
import tempfile
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate, islice
from typing import Any

import numpy as np
import xxhash

from splitdask._format import (
    DATA_START,
    GROUPED_PART_VERSION,
    MAGIC,
    WRITE_PART_VERSION,
    PartInfo,
    encode_footer_v2,
    encode_footer_v4,
    footer_hash,
    part_name,
    record_sum,
)
from splitdask._format._compression import SAMPLE_BYTES, Compression, PartEncoder
from splitdask._store import PartSink, Store
from splitdask._write._cleanup import tidy, warn_left

__all__ = ["OFFSETS_BUDGET", "Batches", "BinWriter", "write_bin_part"]

# Offsets and checksums are kept per open part (16 bytes per record) until it is
# closed; those of all open parts of one writer stay under this.
OFFSETS_BUDGET = 64 << 20
FLUSH_MAX = 4 << 20  # bytes staged per bin before a write
_BATCH_RECORDS = 4096  # records staged per bin before a write (bounds tiny records)
# Records are dealt a chunk at a time: at most _CHUNK records or about _CHUNK_BYTES
# (sized from the previous chunk), beyond the batches, are held at once.
_CHUNK = 16384
_CHUNK_BYTES = 4 << 20
_SINK_BUFFER = 32 << 10
_FIRST_CHUNK = 16


class BinWriter:
    """Streams one bin's records, a batch at a time, into parts of bounded size.

    With a ``compression``, records are compressed into frames of a few records
    each (``_compression.PartEncoder``) and the parts are format v4;
    ``sample_bytes`` of records are held back to train the dictionary before the
    first part opens.
    """

    def __init__(
        self,
        store: Store,
        bin_index: int,
        max_bytes: int,
        max_records: int,
        tag: str = "",
        compression: Compression | None = None,
        sample_bytes: int = SAMPLE_BYTES,
    ) -> None:
        self.store = store
        self.bin_index = bin_index
        self.max_bytes = max_bytes
        self.max_records = max_records
        self.tag = tag
        self.parts: list[PartInfo] = []
        self._sink: PartSink | None = None
        self._path = ""
        self._uid = ""
        # Made when a part opens: a writer of a bin that gets no records holds nothing.
        self._offsets: array[int] | None = None
        self._sums: array[int] | None = None
        self._hash: Any = None
        self._pos = 0
        self._enc = None if compression is None else PartEncoder(compression, sample_bytes)
        self.failed = False
        """Whether writing a part failed (its temp file is removed at once): the
        parts already finished must not be committed with the rest missing."""

    def add_many(self, records: Sequence[Any], encoded: bool = False) -> None:
        """Append a batch; joining and summing in C keeps per-record cost low."""
        if self._enc is not None and not encoded:
            records = self._enc.feed(records)  # frames, or none while sampling
            if not records:
                return
        if self._sink is None:
            self._open()
        assert self._offsets is not None
        assert self._sums is not None
        self._write(b"".join(records))
        self._sums.extend(map(record_sum, records))
        ends = accumulate(map(len, records), initial=self._pos)
        next(ends)  # the initial value is the previous end, already stored
        self._offsets.extend(ends)
        self._pos = self._offsets[-1]
        # Records, not frames, bound a compressed part: its encoder keeps 8 B a record.
        held = len(self._offsets) if self._enc is None else len(self._enc.sizes)
        if self._pos >= self.max_bytes or held > self.max_records:
            self.finish()

    def _open(self) -> None:
        self._uid = self.tag + secrets.token_hex(8)
        self._path = part_name(self.bin_index, self._uid)
        # Batches (>= 64 KiB but the last) pass a buffer smaller than they are
        # untouched; one as large as a batch had each copied into it, and its pages
        # (per open part) faulted in.
        with self._failing():
            self._sink = self.store.create_part(self._path, buffer_size=_SINK_BUFFER)
        self._offsets = array("Q", [DATA_START])
        self._sums = array("Q")
        self._hash = xxhash.xxh3_64()
        self._write(MAGIC)
        self._pos = DATA_START

    def _write(self, data: bytes) -> None:
        assert self._sink is not None
        with self._failing():
            self._sink.write(data)
        self._hash.update(data)

    @contextlib.contextmanager
    def _failing(self) -> Iterator[None]:
        """Around every call to the sink: if it fails, the open part can never be
        finished (some of the data may be in its file), so its temp file is removed
        at once; an I/O error is raised again, of its errno, naming the dataset and
        saying that nothing was committed."""
        try:
            yield
        except BaseException as exc:
            self.failed = True
            try:
                self.abort()
            except Exception as cleanup:
                warn_left(self.store, f"the temp file of {self._path}", cleanup)
            if type(exc) is not OSError:  # PermissionError &c. name their file already
                raise
            raise OSError(
                exc.errno,
                f"{self.store.urlpath}: writing a new part of bin {self.bin_index} failed: "
                f"{exc.strerror or exc}{_hint(exc.errno, self.store.spools)}; nothing was "
                "committed (the dataset is as it was before this write) and this write's "
                "parts and temp files are removed",
            ) from exc

    def finish(self) -> None:
        """Close the open part (footer, then commit the file) if there is one."""
        if self._enc is not None and (held := self._enc.drain()):
            self.add_many(held, encoded=True)
            if self._sink is None:
                return  # add_many filled and finished the part
        if self._sink is None:
            return
        assert self._offsets is not None
        assert self._sums is not None
        # The footer repeats the uid in the part's name, so a reader can tell the
        # part from any other dataset's or commit's.
        if self._enc is None:
            footer = encode_footer_v2(
                np.frombuffer(self._offsets, dtype=np.uint64),
                np.frombuffer(self._sums, dtype=np.uint64),
                self._uid,
            )
        else:
            footer = self._footer_v4()
        self._write(footer)
        with self._failing():
            self._sink.commit()
        self._sink = None
        count = len(self._offsets) - 1 if self._enc is None else len(self._enc.sizes)
        size = self._pos + len(footer)
        checksum = f"xxh3_64:{self._hash.hexdigest()}"
        # The manifest records the footer's hash: a random read, which never sees the
        # whole-part checksum, then refuses any footer but this one.
        fsum = footer_hash(footer)
        if self._enc is None:
            v2 = WRITE_PART_VERSION
            self.parts.append(PartInfo(self._path, count, size, checksum, v2, footer_sum=fsum))
        else:
            c, raw, n = self._enc.compression, self._enc.raw_bytes, len(footer)
            v4 = GROUPED_PART_VERSION
            info = PartInfo(self._path, count, size, checksum, v4, c.name, c.level, n, raw, fsum)
            self.parts.append(info)
            self._enc.next_part()
        self._offsets = self._sums = None

    def _footer_v4(self) -> bytes:
        assert self._enc is not None
        assert self._offsets is not None
        assert self._sums is not None
        e = self._enc
        return encode_footer_v4(
            np.diff(np.frombuffer(self._offsets, dtype=np.uint64)),
            np.frombuffer(self._sums, dtype=np.uint64),
            np.frombuffer(e.sizes, dtype=np.uint64),
            np.frombuffer(e.counts, dtype=np.uint8),
            e.dictionary,
            self._uid,
            level=e.compression.level,
        )

    def abort(self) -> None:
        """Remove the open part's temp file, if there is one."""
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.abort()

    @property
    def held(self) -> int:
        """Records held back to train a compression dictionary, not yet in a part."""
        return 0 if self._enc is None else self._enc.held

    @property
    def open_bytes(self) -> int:
        """Bytes written to the part still open (spooled, for a remote store)."""
        return self._pos if self._sink is not None else 0


class Batches:
    """Deals records round-robin into per-bin batches, bounded in bytes and count.

    Records are only referenced until their batch is flushed, so memory stays at
    about ``len(writers) * flush_bytes`` whatever the input's length. With a
    ``spool_budget``, the open parts of all bins together stay under it: past it the
    largest one is closed (and, on a remote store, uploaded and its spool removed).
    """

    def __init__(
        self, writers: list[BinWriter], flush_bytes: int, spool_budget: int | None = None
    ) -> None:
        self.writers = writers
        self.flush_bytes = flush_bytes
        self.spool_budget = spool_budget
        self.pending: list[list[bytes]] = [[] for _ in writers]
        self.sizes = [0] * len(writers)
        self.k = 0

    def deal(self, records: Iterable[Any]) -> None:
        """Deal ``records`` on from where the last call stopped, a chunk at a time.

        A chunk's type check and each bin's share (``chunk[j::m]``) are C loops; a
        share joins its bin's batch whole unless it would fill it, so the batches
        (and hence the parts) come out exactly as a record-by-record deal makes them.
        If ``records`` raises, or a record is not bytes-like, everything before it
        is dealt and ``self.k`` counts it, as if dealt one by one.
        """
        if isinstance(records, tuple | list) and len(records) < _FIRST_CHUNK:
            return self._deal_each(records)  # write(record): no chunk for one record
        it = iter(records)
        step = _FIRST_CHUNK  # then sized from what came: records of any size
        while True:
            chunk: list[Any] = []
            try:
                chunk.extend(islice(it, step))
            except BaseException:
                self._deal_chunk(self._checked(chunk))  # what came before the failure
                raise
            if not chunk:
                return
            nbytes = self._deal_chunk(self._checked(chunk))
            if len(chunk) < step:
                return
            step = min(_CHUNK, max(1, _CHUNK_BYTES * len(chunk) // max(1, nbytes)))

    def _deal_each(self, records: list[Any] | tuple[Any, ...]) -> None:
        """Deal a few records one by one (cheaper than a chunk for one record)."""
        writers, pending, sizes = self.writers, self.pending, self.sizes
        m, limit = len(writers), self.flush_bytes
        for record in records:
            rec = record if type(record) is bytes else _as_record(record, self.k)
            j = self.k % m
            pending[j].append(rec)
            sizes[j] += len(rec)
            self.k += 1
            if sizes[j] >= limit or len(pending[j]) >= _BATCH_RECORDS:
                writers[j].add_many(pending[j])
                pending[j] = []
                sizes[j] = 0
                if self.spool_budget is not None:
                    self._bound_spool(self.spool_budget)

    def _checked(self, chunk: list[Any]) -> list[bytes]:
        """``chunk`` as bytes; at a record that is not bytes-like, the records before it
        are dealt and the ``TypeError`` names its position."""
        if set(map(type, chunk)) <= {bytes}:
            return chunk
        out: list[bytes] = []
        try:
            for i, record in enumerate(chunk):
                out.append(record if type(record) is bytes else _as_record(record, self.k + i))
        except TypeError:
            self._deal_chunk(out)
            raise
        return out

    def _deal_chunk(self, chunk: list[bytes]) -> int:
        """Deal ``chunk`` on from record ``self.k``; returns its size in bytes."""
        m, k, n = len(self.writers), self.k, len(chunk)
        nbytes = 0
        for i in range(min(m, n)):
            # Record k + i of the write, and every m-th after it, goes to bin (k + i) % m.
            nbytes += self._take((k + i) % m, chunk[i::m] if m > 1 else chunk)
        self.k = k + n
        return nbytes

    def _take(self, j: int, share: list[bytes]) -> int:
        """Add ``share`` to bin ``j``'s batch, handing the batch to its writer each time
        it reaches ``flush_bytes`` or ``_BATCH_RECORDS`` (at the record that does).
        Returns the share's size in bytes."""
        pending, sizes, limit = self.pending, self.sizes, self.flush_bytes
        taken = 0
        while share:
            room = _BATCH_RECORDS - len(pending[j])
            head = share[:room] if len(share) > room else share
            nbytes = sum(map(len, head))
            if sizes[j] + nbytes < limit and len(head) < room:
                pending[j].extend(head)
                sizes[j] += nbytes
                return taken + nbytes
            # The record that fills the batch: the first at which the running size
            # reaches the limit, or the last that fits.
            cut = len(head)
            if sizes[j] + nbytes >= limit:
                ends = list(accumulate(map(len, head), initial=sizes[j]))
                cut = bisect_left(ends, limit, lo=1)
                nbytes = ends[cut] - sizes[j]
            taken += nbytes
            pending[j].extend(head[:cut])
            self.writers[j].add_many(pending[j])
            pending[j] = []
            sizes[j] = 0
            if self.spool_budget is not None:
                self._bound_spool(self.spool_budget)
            share = share[cut:]
        return taken

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


def _hint(code: int | None, spools: bool) -> str:
    """What an I/O error's code says about the fix, for :meth:`BinWriter._failing`."""
    disk = (
        f"the temp directory {tempfile.gettempdir()} where new parts are spooled"
        if spools
        else "the disk"
    )
    if code in (errno.ENOSPC, errno.EDQUOT):
        return f" ({disk} is full, or its quota used up: free space, or write elsewhere)"
    if code == errno.EFBIG:
        return (
            f" (a file on {disk} passed the largest size the filesystem or the process "
            "allows: see `ulimit -f`, or pass a smaller part_max_bytes)"
        )
    return ""


def _as_record(record: Any, position: int) -> bytes:
    """A copy of ``record``'s bytes, or a ``TypeError`` naming its position.

    The copy matters: a caller may reuse a bytearray or array after ``write``.
    """
    try:
        view = memoryview(record)
    except (TypeError, ValueError):  # ValueError: NumPy dtypes with no buffer format
        raise TypeError(
            f"record {position} is of type {type(record).__name__}; expected a bytes-like "
            "object (bytes, bytearray, memoryview or a C-contiguous buffer)"
        ) from None
    if not view.c_contiguous:
        raise TypeError(
            f"record {position} is a non-contiguous {type(record).__name__} buffer; "
            "pass a C-contiguous copy"
        )
    if view.format.lstrip("@=<>!") not in _PLAIN:
        # An object array's buffer holds PyObject pointers, meaningless once stored.
        raise TypeError(
            f"record {position} is a {type(record).__name__} buffer of format "
            f"{view.format!r}; expected plain bytes or numbers (an object or structured "
            "array's memory is not its data)"
        )
    return view.tobytes()


# struct codes of plain fixed-size values: bytes, integers, floats, bools.
_PLAIN = frozenset("bBchHiIlLqQnNefd?")


def write_bin_part(
    store: Store,
    bin_index: int,
    records: Iterable[Any],
    *,
    where: str = "",
    part_max_bytes: int = 256 << 20,
    tag: str = "",
    compression: Compression | None = None,
) -> list[PartInfo]:
    """Write ``records`` to new, uncommitted parts of one bin and return them.

    This is the unit of work of a Dask partition: the parts become part of the
    dataset only when a ``Transaction.commit`` names them. On any error the
    parts written so far are removed. ``where`` prefixes a type error's message
    (a partition's name, say). ``tag`` (lowercase hex, at most 48 digits) starts
    every new part's unique name, so the parts of one write can be told apart from
    others' when its leftovers (a killed task's parts) are collected.
    ``compression`` (from ``_codec.check_compression``) makes them compressed v4 parts.
    """
    if tag and (len(tag) > 48 or tag.strip("0123456789abcdef")):
        raise ValueError(f"tag must be at most 48 lowercase hex digits, got {tag!r}")
    w = BinWriter(store, bin_index, part_max_bytes, OFFSETS_BUDGET // 16, tag, compression)
    batches = Batches([w], FLUSH_MAX)
    try:
        batches.deal(records)
        batches.flush()
        w.finish()
    except BaseException as exc:
        w.abort()
        tidy(store, [p.path for p in w.parts], "uncommitted parts")
        if isinstance(exc, TypeError) and where:
            raise TypeError(f"{where}: {exc}") from None
        raise
    return w.parts

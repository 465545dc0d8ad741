"""Uploads of new parts to object storage, spooled through a local temp file.

On S3 a part goes up while it is written: as soon as more than one block is spooled,
a multipart upload starts and each full block is sent, concurrently with the writing
and with the other blocks; the commit sends the rest and completes it. A part of at
most one block is one PUT at commit. Other fsspec backends upload the spool file at
commit, through a buffered remote file. Either way the object appears whole or not at
all.

Memory is bounded per process, not per upload: a block read back from a spool file
takes slots (one per ``chunk_bytes``) of a process-wide pool, :func:`upload_slots`,
until its request ends; a writer that outruns the network waits for a slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from typing import Any, Protocol

import xxhash

from splitdask._store._access import access
from splitdask._store._base import Store, discard_file
from splitdask._store._net import NetSettings, net_settings


class _Remote(Protocol):
    """What an upload needs of its store (an ``FsspecStore``): the filesystem below
    any cache layer, and paths as stored and as users name them."""

    urlpath: str

    @property
    def direct(self) -> Any: ...

    def full(self, rel: str) -> str: ...

    def where(self, rel: str) -> str: ...


__all__ = [
    "UPLOAD_BLOCK",
    "SpoolSink",
    "block_size",
    "remove_spools",
    "spool_prefix",
    "upload",
    "upload_slots",
]

UPLOAD_BLOCK = 8 << 20
"""The default upload block (``NetSettings.chunk_bytes``'s default): a part up to
this size goes up in one PUT, a larger one as a multipart upload of such blocks."""

_S3_MIN_BLOCK = 5 << 20  # S3's smallest part (but the last) of a multipart upload
_GROW_EVERY = 900  # blocks double every this many: 10,000 hold S3's largest object, 5 TiB
_READ = 1 << 20  # bytes per read of the generic path


def spool_prefix(store: Store | _Remote) -> str:
    """Name prefix of the temp files spooled for ``store``'s dataset, so a later write
    to the same dataset can find the ones a killed writer left."""
    return f"splitdask-{xxhash.xxh3_64_hexdigest(store.urlpath.encode())}-"


def block_size(number: int, net: NetSettings) -> int:
    """Bytes of block ``number`` (from 1) of a multipart upload: ``net.chunk_bytes``
    (the size of a ranged GET, for the same reason: the first-byte latency is a small
    share of it), at least S3's 5 MiB, doubled every 900 blocks so that S3's 10,000
    parts hold any object (a part's size is not known while it is written)."""
    return max(net.chunk_bytes, _S3_MIN_BLOCK) << ((number - 1) // _GROW_EVERY)


def upload_slots(net: NetSettings, block: int) -> int:
    """Blocks of ``block`` bytes a process sends at once, over all its uploads: half
    of what its connection pool and its read budget allow (``compact`` and
    ``import`` read and write at once), at least 2. 16 with the defaults, so at most
    about 128 MiB of upload blocks are in memory: the connections that keep a link
    of 40 MB/s per connection and 30 ms first-byte latency at about 600 MB/s."""
    return max(2, min(net.connections, net.inflight_bytes // block) // 2)


class _Slots:
    """A counting semaphore whose release may come from any thread (the event loop's)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._cond = threading.Condition()
        self._free = n

    def acquire(self, k: int) -> None:
        with self._cond:
            while self._free < k:
                self._cond.wait()
            self._free -= k

    def release(self, k: int) -> None:
        with self._cond:
            self._free += k
            self._cond.notify_all()


_SLOTS: dict[int, _Slots] = {}
_SLOTS_GUARD = threading.Lock()


def _slots(n: int) -> _Slots:
    with _SLOTS_GUARD:
        return _SLOTS.setdefault(n, _Slots(n))


def _forget_slots() -> None:
    # A child forked while a parent thread was uploading must not inherit taken slots.
    global _SLOTS_GUARD
    _SLOTS.clear()
    _SLOTS_GUARD = threading.Lock()


os.register_at_fork(after_in_child=_forget_slots)


class _S3Upload:
    """One object going up to S3 from a file, in order: blocks are read with
    ``os.pread`` in the caller's thread and sent on s3fs's event loop."""

    def __init__(self, fs: Any, remote: str) -> None:
        self._fs = fs
        self.remote = remote
        bucket, key, _ = fs.split_path(remote)
        self._ids = {"Bucket": bucket, "Key": key}
        self._net = net_settings()
        self._unit = block_size(1, self._net)
        self._slots = _slots(upload_slots(self._net, self._unit))
        self._created: Future[Any] | None = None
        self._sent: list[Future[str]] = []
        self._failed: list[BaseException] = []
        self.offset = 0
        """Bytes of the file sent as blocks so far."""

    @property
    def next_block(self) -> int:
        return block_size(len(self._sent) + 1, self._net)

    def _run(self, coro: Any) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self._fs.loop)

    def send(self, fd: int, n: int) -> None:
        """Send the file's next ``n`` bytes as the next block, starting the multipart
        upload with the first. Waits for slots first (and raises the failure of an
        earlier block, if one failed)."""
        k = min(self._slots.n, -(-n // self._unit))
        self._slots.acquire(k)
        try:
            if self._failed:
                raise self._failed[0]
            data = os.pread(fd, n, self.offset)
            if len(data) != n:
                raise OSError(f"spool file of {self.remote} is shorter than what was written")
            if self._created is None:
                self._created = self._run(self._fs._call_s3("create_multipart_upload", **self._ids))
            fut = self._run(self._part(len(self._sent) + 1, data))
        except BaseException:
            self._slots.release(k)
            raise
        fut.add_done_callback(functools.partial(self._done, k))
        self._sent.append(fut)
        self.offset += n

    async def _part(self, number: int, data: bytes) -> str:
        assert self._created is not None
        upload_id = (await asyncio.wrap_future(self._created))["UploadId"]
        out = await self._fs._call_s3(
            "upload_part", PartNumber=number, Body=data, UploadId=upload_id, **self._ids
        )
        return str(out["ETag"])

    def _done(self, k: int, fut: Future[str]) -> None:
        self._slots.release(k)
        exc = CancelledError() if fut.cancelled() else fut.exception()
        if exc is not None:
            self._failed.append(exc)

    def finish(self, fd: int, size: int) -> None:
        """Send the rest of the file and complete the upload; one PUT of the whole
        file if no block was sent."""
        rest = size - self.offset
        if self._created is None:
            k = min(self._slots.n, max(1, -(-rest // self._unit)))
            self._slots.acquire(k)
            try:
                self._fs.call_s3("put_object", Body=os.pread(fd, rest, 0), **self._ids)
            finally:
                self._slots.release(k)
        else:
            if rest:
                self.send(fd, rest)
            etags = [f.result() for f in self._sent]
            parts = [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]
            upload_id = self._created.result()["UploadId"]
            self._fs.call_s3(
                "complete_multipart_upload",
                MultipartUpload={"Parts": parts},
                UploadId=upload_id,
                **self._ids,
            )
        self._fs.invalidate_cache(self.remote)

    def abort(self) -> None:
        """Abort the multipart upload, once none of its blocks is in flight: a block
        still running when the abort arrives can land after it (and S3 then keeps it,
        billed, until another abort)."""
        for f in self._sent:
            with contextlib.suppress(BaseException):
                f.result()
        if self._created is not None:
            with contextlib.suppress(Exception):
                upload_id = self._created.result()["UploadId"]
                self._fs.call_s3("abort_multipart_upload", UploadId=upload_id, **self._ids)


class SpoolSink:
    """A new part: spooled to a local temp file, and on S3 sent block by block while
    it is written (:class:`_S3Upload`); committed whole, or not at all."""

    def __init__(self, store: _Remote, rel: str, buffer_size: int) -> None:
        self._store = store
        self._rel = rel
        fd, self._tmp = tempfile.mkstemp(prefix=spool_prefix(store), suffix=".part")
        self._file = os.fdopen(fd, "wb", buffering=buffer_size)
        self._size = 0
        self._s3: _S3Upload | None = None
        self.write: Callable[[Any], int]
        if hasattr(store.direct, "_call_s3"):
            self._s3 = _S3Upload(store.direct, store.full(rel))
            self.write = self._write_streaming
        else:
            self.write = self._file.write

    def _write_streaming(self, data: Any) -> int:
        n = self._file.write(data)
        self._size += n
        up = self._s3
        assert up is not None
        # A block goes up once more than it is spooled beyond the last one sent: the
        # part is then surely larger than one block, and its last block not empty.
        if self._size - up.offset > up.next_block:
            self._file.flush()
            with access(self._store.where(self._rel)):
                while self._size - up.offset > up.next_block:
                    up.send(self._file.fileno(), up.next_block)
        return n

    def commit(self) -> None:
        self._file.flush()
        try:
            with access(self._store.where(self._rel)):
                if self._s3 is not None:
                    try:
                        self._s3.finish(self._file.fileno(), self._size)
                    except BaseException:
                        self._s3.abort()
                        _remove(self._store.direct, self._s3.remote)
                        raise
                else:
                    upload(self._store.direct, self._tmp, self._store.full(self._rel))
        finally:
            self._s3 = None  # an abort() after a failed commit has nothing left to do
            self._drop_spool()

    def abort(self) -> None:
        try:
            if self._s3 is not None:
                self._s3.abort()
        finally:
            self._drop_spool()

    def _drop_spool(self) -> None:
        """Close and remove the spool file (its data done with or discarded)."""
        discard_file(self._file, self._tmp)


def upload(fs: Any, local: str, remote: str) -> None:
    """Copy a local file to ``remote``; the object appears whole or not at all.

    On S3 (s3fs) a file up to one block is one PUT, a larger one a multipart upload
    whose blocks go up concurrently within the process's :func:`upload_slots`. Other
    backends get one buffered remote file with an explicit block size
    (``fs.put_file``'s memory depends on the backend: s3fs reads up to 100 MiB at
    once). After a failure no object is left at ``remote``, and a multipart upload is
    aborted once none of its blocks is still in flight.
    """
    if not hasattr(fs, "_call_s3"):
        try:
            _generic(fs, local, remote, block_size(1, net_settings()))
        except BaseException:
            _remove(fs, remote)
            raise
        return
    up = _S3Upload(fs, remote)
    with open(local, "rb", buffering=0) as src:
        fd, size = src.fileno(), os.fstat(src.fileno()).st_size
        try:
            while size - up.offset > up.next_block:
                up.send(fd, up.next_block)
            up.finish(fd, size)
        except BaseException:
            up.abort()
            _remove(fs, remote)
            raise


def _remove(fs: Any, remote: str) -> None:
    """Remove what a failed upload may have left: the answer to its last request
    (a PUT, a completion) may have been lost after the request took effect."""
    with contextlib.suppress(Exception):
        fs.rm_file(remote)


def _generic(fs: Any, local: str, remote: str, block: int) -> None:
    f = fs.open(remote, "wb", block_size=block)
    try:
        with open(local, "rb", buffering=0) as src:
            while data := src.read(_READ):
                f.write(data)
    except BaseException:
        # Make sure that neither close() nor garbage collection completes the upload.
        with contextlib.suppress(Exception):
            f.discard()
        with contextlib.suppress(Exception):
            f.closed = True
        raise
    f.close()


def remove_spools(prefix: str, older_than: float) -> list[str]:
    """Remove the spool files named ``prefix*.part`` in the temp directory last written
    before ``older_than`` (a POSIX time), left by writers that were killed."""
    removed = []
    with contextlib.suppress(OSError), os.scandir(tempfile.gettempdir()) as entries:
        for entry in entries:
            if not (entry.name.startswith(prefix) and entry.name.endswith(".part")):
                continue
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_mtime < older_than:
                    os.unlink(entry.path)
                    removed.append(entry.path)
    return removed

"""Uploads of new parts to object storage: spooled to a local temp file, then sent in
one PUT or one multipart upload whose blocks go up concurrently, so memory does not
grow with the part and one large part keeps many connections busy.

Memory is bounded per process, not per upload: every block read from a spool file
for sending takes one of :func:`upload_slots` slots until its request ends, however
many parts are being committed at once (``FsspecStore.upload_concurrency``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import threading
from concurrent.futures import CancelledError, Future
from typing import TYPE_CHECKING, Any

import xxhash

from splitdask._store._access import access
from splitdask._store._base import Store
from splitdask._store._net import NetSettings, net_settings

if TYPE_CHECKING:
    from splitdask._store._fsspec import FsspecStore

__all__ = [
    "UPLOAD_BLOCK",
    "SpoolSink",
    "block_size",
    "spool_prefix",
    "upload",
    "upload_slots",
]

UPLOAD_BLOCK = 8 << 20
"""The default upload block (``NetSettings.chunk_bytes``'s default): a part up to
this size goes up in one PUT, a larger one as a multipart upload of such blocks."""

_S3_MIN_BLOCK = 5 << 20  # S3's smallest part (but the last) of a multipart upload
_S3_MAX_BLOCKS = 10_000  # and its most parts
_READ = 1 << 20  # bytes per read of the generic path


def spool_prefix(store: Store) -> str:
    """Name prefix of the temp files spooled for ``store``'s dataset, so a later write
    to the same dataset can find the ones a killed writer left."""
    return f"splitdask-{xxhash.xxh3_64_hexdigest(store.urlpath.encode())}-"


class SpoolSink:
    def __init__(self, store: FsspecStore, rel: str, buffer_size: int) -> None:
        self._store = store
        self._rel = rel
        fd, self._tmp = tempfile.mkstemp(prefix=spool_prefix(store), suffix=".part")
        self._file = os.fdopen(fd, "wb", buffering=buffer_size)
        self.write = self._file.write

    def commit(self) -> None:
        self._file.close()
        try:
            with access(self._store.where(self._rel)):
                upload(self._store.direct, self._tmp, self._store.full(self._rel))
        finally:
            os.unlink(self._tmp)

    def abort(self) -> None:
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)


def block_size(size: int, net: NetSettings) -> int:
    """Bytes of one upload block for a part of ``size`` bytes: ``net.chunk_bytes``
    (the size of a ranged GET, for the same reason: the first-byte latency is a small
    share of it), at least S3's 5 MiB, and large enough that a part needs at most
    S3's 10,000 blocks."""
    return max(net.chunk_bytes, _S3_MIN_BLOCK, -(-size // _S3_MAX_BLOCKS))


def upload_slots(net: NetSettings, block: int) -> int:
    """Blocks a process sends at once, over all its uploads: half of what its
    connection pool and its read budget allow (``compact`` and ``import`` read and
    write at once), at least 2. 16 with the defaults, so at most about 128 MiB of
    upload blocks are in memory, the connections that keep a link of 40 MB/s per
    connection and 30 ms first-byte latency at about 600 MB/s."""
    return max(2, min(net.connections, net.inflight_bytes // block) // 2)


class _Slots:
    """A counting semaphore whose release may come from any thread (the event loop's)."""

    def __init__(self, n: int) -> None:
        self._cond = threading.Condition()
        self._free = n

    def acquire(self) -> None:
        with self._cond:
            while self._free <= 0:
                self._cond.wait()
            self._free -= 1

    def release(self) -> None:
        with self._cond:
            self._free += 1
            self._cond.notify()


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


def upload(fs: Any, local: str, remote: str) -> None:
    """Copy a local file to ``remote``; the object appears whole or not at all.

    On S3 (s3fs) a file up to one block is one PUT; a larger one is one multipart
    upload whose blocks are read and sent concurrently within the process's
    :func:`upload_slots`. Other backends get one buffered remote file with an
    explicit block size (``fs.put_file``'s memory depends on the backend: s3fs reads
    up to 100 MiB at once). After a failure no object is left at ``remote``, and a
    multipart upload is aborted once none of its blocks is still in flight.
    """
    net = net_settings()
    size = os.path.getsize(local)
    block = block_size(size, net)
    try:
        if hasattr(fs, "_call_s3"):
            slots = _slots(upload_slots(net, block))
            bucket, key, _ = fs.split_path(remote)
            with open(local, "rb", buffering=0) as src:
                if size <= block:
                    _put(fs, src, bucket, key, slots)
                else:
                    _multipart(fs, src, bucket, key, size, block, slots)
            fs.invalidate_cache(remote)
        else:
            _generic(fs, local, remote, block)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm_file(remote)  # the last request may have landed, its answer lost
        raise


def _put(fs: Any, src: Any, bucket: str, key: str, slots: _Slots) -> None:
    slots.acquire()
    try:
        fs.call_s3("put_object", Bucket=bucket, Key=key, Body=src.read())
    finally:
        slots.release()


def _multipart(
    fs: Any, src: Any, bucket: str, key: str, size: int, block: int, slots: _Slots
) -> None:
    """Blocks are read here, in the caller's thread, and sent on s3fs's event loop;
    a slot is taken before a block is read and given back when its request ends."""
    upload_id = fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key)["UploadId"]
    ids = {"Bucket": bucket, "Key": key, "UploadId": upload_id}
    sent: list[Future[Any]] = []
    failed: list[BaseException] = []

    def done(fut: Future[Any]) -> None:
        slots.release()
        exc = CancelledError() if fut.cancelled() else fut.exception()
        if exc is not None:
            failed.append(exc)

    try:
        for n in range(1, -(-size // block) + 1):
            slots.acquire()
            try:
                data = src.read(block)
                if failed:
                    raise failed[0]
            except BaseException:
                slots.release()
                raise
            call = fs._call_s3("upload_part", PartNumber=n, Body=data, **ids)
            fut = asyncio.run_coroutine_threadsafe(call, fs.loop)
            fut.add_done_callback(done)
            sent.append(fut)
            del data, call
        parts = [{"PartNumber": n, "ETag": f.result()["ETag"]} for n, f in enumerate(sent, 1)]
        fs.call_s3("complete_multipart_upload", MultipartUpload={"Parts": parts}, **ids)
    except BaseException:
        # No block may land after the abort (S3 would keep it, billed, until a second
        # abort): wait for those in flight, each bounded by the request timeouts.
        for f in sent:
            with contextlib.suppress(BaseException):
                f.result()
        with contextlib.suppress(Exception):
            fs.call_s3("abort_multipart_upload", **ids)
        raise


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

"""Uploads of new parts to object storage: spooled to a local temp file, then sent in
one PUT or one multipart upload, so memory does not grow with the part."""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import TYPE_CHECKING, Any

import xxhash

from splitdask._store._access import access
from splitdask._store._base import Store

if TYPE_CHECKING:
    from splitdask._store._fsspec import FsspecStore

__all__ = ["UPLOAD_BLOCK", "SpoolSink", "remove_spools", "spool_prefix", "upload"]

UPLOAD_BLOCK = 8 << 20
"""Bytes an upload to a remote store holds in memory (per upload in flight, about
twice this at peak); larger parts go up as multipart uploads of this block size."""


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


def upload(fs: Any, local: str, remote: str) -> None:
    """Copy a local file to ``remote`` holding at most about two blocks in memory.

    ``fs.put_file`` would do, but its memory depends on the backend (s3fs reads up to
    100 MiB at once, or ten 50 MiB chunks in parallel); a buffered remote file with an
    explicit block size uploads in one PUT or a multipart upload of such blocks.
    """
    chunk = 1 << 20
    f = fs.open(remote, "wb", block_size=UPLOAD_BLOCK)
    try:
        with open(local, "rb", buffering=0) as src:
            while data := src.read(chunk):
                f.write(data)
    except BaseException:
        # Abort (s3fs abandons the multipart upload) and make sure that neither
        # close() nor garbage collection completes the upload after all.
        with contextlib.suppress(Exception):
            f.discard()
        with contextlib.suppress(Exception):
            f.closed = True
        with contextlib.suppress(Exception):
            fs.rm_file(remote)
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

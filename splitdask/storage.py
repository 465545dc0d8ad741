"""The fsspec layer: where a dataset lives and the few operations the format needs.

A :class:`Store` is a dataset root given as ``urlpath`` + ``storage_options``, as
fsspec and Dask take them. Local paths skip fsspec on the hot paths (``mmap`` for
reads, buffered files renamed into place for writes); every other URL goes
through the filesystem fsspec resolves, with ranged reads merged and fetched
concurrently where the backend can.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import secrets
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Any, Protocol

import fsspec
from fsspec.implementations.local import LocalFileSystem

from splitdask.format import MANIFEST_NAME, Manifest

__all__ = ["PartSink", "Store", "UrlPath", "fsync_dir", "read_manifest"]

UrlPath = str | os.PathLike[str]

# Object stores have no directories to create, and creating one there can have
# side effects (s3fs creates a missing *bucket*), so writes never mkdir on them.
_OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "abfs", "az", "adl", "memory", "oss", "r2"}


class PartSink(Protocol):
    """A new part being written; it becomes visible under its name only on commit."""

    def write(self, data: Any, /) -> int: ...

    def commit(self) -> None: ...

    def abort(self) -> None: ...


class Store:
    """A dataset root on any fsspec filesystem.

    Parameters
    ----------
    urlpath
        Local path, ``PathLike``, or any fsspec URL (``s3://bucket/key``,
        ``memory://x``, ``simplecache::s3://...``).
    storage_options
        Passed to the fsspec filesystem (credentials, ``endpoint_url``, ...).
    """

    def __init__(self, urlpath: UrlPath, storage_options: Mapping[str, Any] | None = None) -> None:
        if not isinstance(urlpath, str | os.PathLike):
            raise TypeError(f"urlpath must be a str or os.PathLike, not {type(urlpath).__name__}")
        if storage_options is not None and not isinstance(storage_options, Mapping):
            raise TypeError(
                f"storage_options must be a dict or None, not {type(storage_options).__name__}"
            )
        self.urlpath = os.fspath(urlpath)
        self.storage_options = dict(storage_options or {})
        fs, root = fsspec.core.url_to_fs(self.urlpath, **self.storage_options)
        self.fs = fs
        self.root = root.rstrip("/") or root
        self.is_local = isinstance(fs, LocalFileSystem)
        protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
        self._object_store = bool(_OBJECT_STORES.intersection(protocols))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.urlpath, self.storage_options))

    def __repr__(self) -> str:
        return f"Store({self.urlpath!r})"

    def full(self, rel: str) -> str:
        """Path of ``rel`` (relative to the root) on the filesystem."""
        return f"{self.root}/{rel}" if self.root != "/" else f"/{rel}"

    # -- reading ------------------------------------------------------------------

    def read_file(self, rel: str) -> bytes:
        if self.is_local:
            with open(self.full(rel), "rb") as f:
                return f.read()
        return bytes(self.fs.cat_file(self.full(rel)))

    def read_range(self, rel: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of ``rel``: one ranged request on remote stores."""
        if self.is_local:
            with open(self.full(rel), "rb") as f:
                f.seek(start)
                return f.read(end - start)
        return bytes(self.fs.cat_file(self.full(rel), start=start, end=end))

    def read_ranges(
        self, rels: Sequence[str], starts: Sequence[int], ends: Sequence[int]
    ) -> list[bytes]:
        """Several ranges at once; async backends (s3fs) fetch them concurrently."""
        if self.is_local or len(rels) == 1:
            return [self.read_range(r, s, e) for r, s, e in zip(rels, starts, ends, strict=True)]
        paths = [self.full(r) for r in rels]
        out = self.fs.cat_ranges(paths, list(starts), list(ends), on_error="raise")
        return [bytes(b) for b in out]

    def exists(self, rel: str) -> bool:
        if self.is_local:
            return os.path.exists(self.full(rel))
        return bool(self.fs.exists(self.full(rel)))

    def size(self, rel: str) -> int:
        if self.is_local:
            return os.stat(self.full(rel)).st_size
        return int(self.fs.size(self.full(rel)))

    def mmap(self, rel: str) -> mmap.mmap:
        """Read-only map of a local file."""
        with open(self.full(rel), "rb") as f:
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)

    @contextlib.contextmanager
    def open_read(self, rel: str) -> Iterator[IO[bytes]]:
        """A streaming reader, for checksumming whole parts."""
        if self.is_local:
            with open(self.full(rel), "rb") as f:
                yield f
        else:
            with self.fs.open(self.full(rel), "rb", block_size=8 << 20, cache_type="none") as f:
                yield f

    # -- writing ------------------------------------------------------------------

    def makedirs(self, rel: str = "") -> None:
        path = self.full(rel) if rel else self.root
        if self.is_local:
            os.makedirs(path, exist_ok=True)
        elif not self._object_store:
            self.fs.makedirs(path, exist_ok=True)

    def create_part(self, rel: str, buffer_size: int = 1 << 20) -> PartSink:
        """A sink for a new immutable file at ``rel``, visible only after ``commit()``.

        Local: a buffered temp file in the same directory, fsynced and renamed into
        place. Remote: spooled to a local temp file and uploaded in one PUT (or one
        multipart upload) on commit, so memory stays at ``buffer_size`` per open part
        whatever the part's size.
        """
        if self.is_local:
            return _LocalSink(self.full(rel), buffer_size)
        return _SpoolSink(self, self.full(rel), buffer_size)

    def write_atomic(self, rel: str, data: bytes) -> None:
        """Replace ``rel`` with ``data`` in one atomic step (the commit point)."""
        path = self.full(rel)
        if self.is_local:
            tmp = f"{path}.tmp-{secrets.token_hex(6)}"
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            fsync_dir(os.path.dirname(path))
        else:
            # A single PUT: object stores make it visible whole or not at all.
            self.fs.pipe_file(path, data)

    def remove(self, rels: Sequence[str]) -> None:
        """Delete files, ignoring ones already gone."""
        for rel in rels:
            with contextlib.suppress(FileNotFoundError):
                if self.is_local:
                    os.unlink(self.full(rel))
                else:
                    self.fs.rm_file(self.full(rel))


def fsync_dir(path: str) -> None:
    """Make renames in ``path`` durable (a no-op where directories can't be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _LocalSink:
    def __init__(self, path: str, buffer_size: int) -> None:
        self._path = path
        self._tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.tmp"
        self._file = open(self._tmp, "wb", buffering=buffer_size)  # noqa: SIM115
        self.write = self._file.write

    def commit(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._tmp, self._path)

    def abort(self) -> None:
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)


class _SpoolSink:
    def __init__(self, store: Store, path: str, buffer_size: int) -> None:
        self._store = store
        self._path = path
        fd, self._tmp = tempfile.mkstemp(prefix="splitdask-", suffix=".part")
        self._file = os.fdopen(fd, "wb", buffering=buffer_size)
        self.write = self._file.write

    def commit(self) -> None:
        self._file.close()
        try:
            self._store.fs.put_file(self._tmp, self._path)
        finally:
            os.unlink(self._tmp)

    def abort(self) -> None:
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)


def read_manifest(store: Store) -> Manifest | None:
    """The committed manifest at ``store``, or ``None`` when there is none."""
    try:
        data = store.read_file(MANIFEST_NAME)
    except FileNotFoundError:
        return None
    return Manifest.from_json(data, f"{store.urlpath}/{MANIFEST_NAME}")

"""The fsspec layer: where a dataset lives and the few operations the format needs.

A :class:`Store` is a dataset root given as ``urlpath`` + ``storage_options``, as
fsspec and Dask take them. Local paths skip fsspec on the hot paths (``mmap`` for
reads, buffered files renamed into place for writes); every other URL goes
through the filesystem fsspec resolves, with ranged reads merged and fetched
concurrently where the backend can.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import secrets
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Any, Protocol

import fsspec
from fsspec.implementations.cached import CachingFileSystem
from fsspec.implementations.local import LocalFileSystem

from splitdask.errors import CorruptDatasetError
from splitdask.format import BINS_DIR, MANIFEST_NAME, Manifest

__all__ = ["UPLOAD_BLOCK", "PartSink", "Store", "UrlPath", "fsync_dir", "read_manifest"]

UrlPath = str | os.PathLike[str]

# Object stores have no directories to create, and creating one there can have
# side effects (s3fs creates a missing *bucket*), so writes never mkdir on them.
_OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "abfs", "az", "adl", "memory", "oss", "r2"}
# Of those, the ones whose first path component is a bucket (container) that must
# exist before anything can be written.
_BUCKET_STORES = _OBJECT_STORES - {"memory"}

UPLOAD_BLOCK = 8 << 20
"""Bytes an upload to a remote store holds in memory (per upload in flight, about
twice this at peak); larger parts go up as multipart uploads of this block size."""


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
        # Parts are immutable (a new name for every write), so they may be read through
        # a caching layer (``simplecache::``, ``filecache::``); the manifest is not, so
        # it, and every write, delete and verify, go to the store itself.
        direct = fs
        while isinstance(direct, CachingFileSystem):
            direct = direct.fs
        self.fs = fs
        """Filesystem for reading parts (may be a cache in front of :attr:`direct`)."""
        self.direct = direct
        """The storage itself, without caching layers."""
        self.root = root.rstrip("/") or root
        self.is_local = isinstance(direct, LocalFileSystem)
        protocols = direct.protocol if isinstance(direct.protocol, tuple) else (direct.protocol,)
        self._object_store = bool(_OBJECT_STORES.intersection(protocols))
        self._bucketed = bool(_BUCKET_STORES.intersection(protocols))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.urlpath, self.storage_options))

    def __repr__(self) -> str:
        return f"Store({self.urlpath!r})"

    def full(self, rel: str) -> str:
        """Path of ``rel`` (relative to the root) on the filesystem."""
        return f"{self.root}/{rel}" if self.root != "/" else f"/{rel}"

    # -- reading ------------------------------------------------------------------

    def _reader(self, rel: str) -> Any:
        """The filesystem to read ``rel`` from: parts may come from a cache."""
        return self.fs if rel.startswith(BINS_DIR + "/") else self.direct

    @contextlib.contextmanager
    def _access(self, rel: str) -> Iterator[None]:
        """Turn a refused request into an error that names the file and the likely fix."""
        where = f"{self.urlpath}/{rel}" if rel else self.urlpath
        try:
            yield
        except PermissionError as exc:
            raise PermissionError(
                f"{where}: access denied ({exc}); check the credentials and "
                "permissions given in storage_options"
            ) from exc
        except Exception as exc:
            # botocore's NoCredentialsError and its kin derive from no builtin error
            # and splitdask does not import the backends, so match them by name.
            if "credential" not in type(exc).__name__.lower():
                raise
            raise PermissionError(
                f"{where}: no credentials ({type(exc).__name__}: {exc}); pass "
                "them in storage_options (for s3: key and secret, or profile) or configure "
                "them in the environment"
            ) from exc

    def _short(self, rel: str, start: int, end: int, got: int | None) -> CorruptDatasetError:
        has = "" if got is None else f", got {got}"
        return CorruptDatasetError(
            f"{self.urlpath}/{rel}: asked for bytes {start}-{end}{has}: the file is shorter "
            "than the manifest says (truncated or replaced?)"
        )

    def read_file(self, rel: str) -> bytes:
        """A whole small file that may change (the manifest, a legacy index)."""
        if self.is_local:
            with open(self.full(rel), "rb") as f:
                return f.read()
        with self._access(rel):
            # start=0 makes it one ranged GET; without it s3fs first asks for the size.
            return bytes(self.direct.cat_file(self.full(rel), start=0))

    def read_range(self, rel: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of ``rel``: one ranged request on remote stores.

        Raises
        ------
        FileNotFoundError
            If ``rel`` does not exist.
        CorruptDatasetError
            If ``rel`` ends before ``end``.
        """
        if end <= start:
            return b""  # an empty HTTP range is invalid, and S3 answers it with everything
        if self.is_local:
            with open(self.full(rel), "rb") as f:
                f.seek(start)
                data = f.read(end - start)
        else:
            try:
                with self._access(rel):
                    data = bytes(self._reader(rel).cat_file(self.full(rel), start=start, end=end))
            except FileNotFoundError:
                raise FileNotFoundError(errno.ENOENT, "no such file", rel) from None
            except OSError as exc:
                if exc.errno != errno.EINVAL:  # s3fs: "range not satisfiable"
                    raise
                raise self._short(rel, start, end, None) from None
        if len(data) != end - start:
            raise self._short(rel, start, end, len(data))
        return data

    def read_ranges(
        self, rels: Sequence[str], starts: Sequence[int], ends: Sequence[int]
    ) -> list[bytes]:
        """Several ranges at once; async backends (s3fs) fetch them concurrently.

        Raises as :meth:`read_range` does, for the first failed range; a
        ``FileNotFoundError``'s ``filename`` is the missing file's ``rel``.
        """
        if self.is_local or len(rels) < 2:
            return [self.read_range(r, s, e) for r, s, e in zip(rels, starts, ends, strict=True)]
        out: list[bytes] = [b""] * len(rels)
        todo = [k for k in range(len(rels)) if ends[k] > starts[k]]
        if not todo:
            return out
        paths = [self.full(rels[k]) for k in todo]
        with self._access(rels[todo[0]]):
            got = self._reader(rels[todo[0]]).cat_ranges(
                paths, [starts[k] for k in todo], [ends[k] for k in todo], on_error="return"
            )
        for k, data in zip(todo, got, strict=True):
            rel, start, end = rels[k], starts[k], ends[k]
            if isinstance(data, FileNotFoundError):
                raise FileNotFoundError(errno.ENOENT, "no such file", rel)
            if isinstance(data, OSError) and data.errno == errno.EINVAL:
                raise self._short(rel, start, end, None)
            if isinstance(data, BaseException):
                with self._access(rel):
                    raise data
            if len(data) != end - start:
                raise self._short(rel, start, end, len(data))
            out[k] = bytes(data)
        return out

    def exists(self, rel: str) -> bool:
        if self.is_local:
            return os.path.exists(self.full(rel))
        with self._access(rel):
            return bool(self.direct.exists(self.full(rel)))

    def size(self, rel: str) -> int:
        if self.is_local:
            return os.stat(self.full(rel)).st_size
        with self._access(rel):
            return int(self.direct.size(self.full(rel)))

    def mmap(self, rel: str) -> mmap.mmap:
        """Read-only map of a local file."""
        with open(self.full(rel), "rb") as f:
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)

    @contextlib.contextmanager
    def open_read(self, rel: str) -> Iterator[IO[bytes]]:
        """A streaming reader of the file as stored (never a cached copy), for checksums."""
        if self.is_local:
            with open(self.full(rel), "rb") as f:
                yield f
        else:
            with (
                self._access(rel),
                self.direct.open(self.full(rel), "rb", block_size=8 << 20, cache_type="none") as f,
            ):
                yield f

    def missing_bucket(self) -> str | None:
        """The root's bucket if the store has buckets and this one does not exist.

        ``None`` also when the answer is unknown because asking is not permitted (on
        S3, HeadBucket needs ``s3:ListBucket``, which a user allowed only to get and
        put objects under a prefix lacks): such a user can still read and write.
        """
        if not self._bucketed:
            return None
        bucket = str(self.root).lstrip("/").split("/", 1)[0]
        try:
            self.direct.info(bucket)
        except FileNotFoundError:
            return bucket
        except PermissionError:
            return None
        return None

    # -- writing ------------------------------------------------------------------

    def makedirs(self, rel: str = "") -> None:
        """Prepare ``rel`` for writing: a directory where there are directories; on
        object stores, only a check that the bucket exists, so that a write to a
        missing bucket fails here rather than after its data was spooled."""
        path = self.full(rel) if rel else self.root
        if self.is_local:
            os.makedirs(path, exist_ok=True)
        elif not self._object_store:
            with self._access(rel):
                self.direct.makedirs(path, exist_ok=True)
        elif (bucket := self.missing_bucket()) is not None:
            raise FileNotFoundError(
                f"cannot write {self.urlpath}: bucket {bucket!r} does not exist (splitdask "
                "never creates buckets)"
            )

    def create_part(self, rel: str, buffer_size: int = 1 << 20) -> PartSink:
        """A sink for a new immutable file at ``rel``, visible only after ``commit()``.

        Local: a buffered temp file in the same directory, fsynced and renamed into
        place. Remote: spooled to a local temp file and uploaded on commit, in one PUT
        or one multipart upload of :data:`UPLOAD_BLOCK` blocks (both become visible
        whole or not at all), so memory stays at ``buffer_size`` per open part and
        about ``2 * UPLOAD_BLOCK`` per upload, whatever the part's size.
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
            with self._access(rel):
                self.direct.pipe_file(path, data)

    def remove(self, rels: Sequence[str]) -> None:
        """Delete files, ignoring ones already gone."""
        for rel in rels:
            with contextlib.suppress(FileNotFoundError):
                if self.is_local:
                    os.unlink(self.full(rel))
                else:
                    with self._access(rel):
                        self.direct.rm_file(self.full(rel))


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
        rel = self._path[len(self._store.root) + 1 :]
        try:
            with self._store._access(rel):
                _upload(self._store.direct, self._tmp, self._path)
        finally:
            os.unlink(self._tmp)

    def abort(self) -> None:
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)


def _upload(fs: Any, local: str, remote: str) -> None:
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


def read_manifest(store: Store) -> Manifest | None:
    """The committed manifest at ``store``, or ``None`` when there is none."""
    try:
        data = store.read_file(MANIFEST_NAME)
    except FileNotFoundError:
        return None
    return Manifest.from_json(data, f"{store.urlpath}/{MANIFEST_NAME}")

"""The abstract :class:`Store`: a dataset root and the few operations the format needs.

A store knows files and byte ranges, never manifests or parts: what the bytes
mean is the format's business (``_format``), and which files make a dataset is the
snapshot's (``_snapshot``). Two implementations: :class:`~._local.LocalStore`
(``mmap``, ``pread``, ``fsync`` and atomic rename) and
:class:`~._fsspec.FsspecStore` (ranged requests, merged and concurrent, spooled
uploads, caching of immutable parts), built by :func:`~splitdask._store.open_store`.
"""

from __future__ import annotations

import contextlib
import copy
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import IO, Any, ClassVar, NamedTuple, Protocol

import xxhash

from splitdask._store._cache import PartCache
from splitdask._store._net import NetSettings

__all__ = ["FileInfo", "PartSink", "Store", "UrlPath", "discard_file"]

UrlPath = str | os.PathLike[str]


class FileInfo(NamedTuple):
    """A file found by :meth:`Store.list_info`."""

    name: str
    size: int
    mtime: float
    """POSIX time of the last modification (0 where the backend does not say)."""


class PartSink(Protocol):
    """A new part being written; it becomes visible under its name only on commit."""

    def write(self, data: Any, /) -> int: ...

    def commit(self) -> None: ...

    def abort(self) -> None: ...


class Store(ABC):
    """A dataset root on some storage.

    Paths given to methods (``rel``) are relative to the root and use ``/``.
    Methods that read *parts* (:meth:`read_range`, :meth:`read_ranges`,
    :meth:`read_whole`, :meth:`open_tail`) may be served from a cache, because a
    part is never rewritten under its name; :meth:`read_file` and every write go
    to the storage itself.
    """

    is_local: ClassVar[bool] = False
    """Whether records are read from memory-mapped local files."""
    spools: ClassVar[bool] = False
    """Whether a new part is held on local temp disk until it is committed (its
    size then counts against a writer's spool budget)."""
    upload_concurrency: ClassVar[int] = 1
    """How many parts a writer should commit at once."""
    atomic_commit: ClassVar[bool] = True
    """Whether :meth:`replace_if` is one atomic compare-and-swap for every process
    that writes to the store (else only for the threads of this process)."""
    net: NetSettings | None = None
    """How remote I/O is sized (:mod:`._net`); ``None`` for a local store."""
    cache: PartCache | None = None
    """The local part cache that serves this store's parts (remote stores only)."""

    def __init__(self, urlpath: str, storage_options: dict[str, Any], root: str) -> None:
        self.urlpath = urlpath
        self.storage_options = storage_options
        self.root = root.rstrip("/") or root

    def __reduce__(self) -> tuple[Any, ...]:
        from splitdask._store import open_store, reopen_store

        if self.cache is None:
            return (open_store, (self.urlpath, self.storage_options))
        # The cache's directory and limit travel with the store, so Dask, Ray and
        # DataLoader workers share the cache whatever their environment says.
        cache = (self.cache.directory, self.cache.limit)
        return (reopen_store, (self.urlpath, self.storage_options, *cache))

    def uncached(self) -> Store:
        """This store without its part cache (``verify`` checks what is stored)."""
        if self.cache is None:
            return self
        plain = copy.copy(self)
        plain.cache = None
        return plain

    def forget_cached(self, rel: str) -> bool:
        """Drop ``rel``'s cached copy (found damaged); whether there was one."""
        return self.cache is not None and self.cache.forget(self.urlpath, rel)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.urlpath!r})"

    def full(self, rel: str) -> str:
        """Path of ``rel`` on the underlying filesystem."""
        if not rel:
            return self.root
        return f"{self.root}/{rel}" if self.root != "/" else f"/{rel}"

    def where(self, rel: str) -> str:
        """``rel`` as users name it in errors: the dataset URL joined with ``rel``."""
        return f"{self.urlpath}/{rel}" if rel else self.urlpath

    # -- reading ------------------------------------------------------------------

    @abstractmethod
    def read_file(self, rel: str, limit: int | None = None) -> bytes:
        """A whole small file that may change (the manifest, a legacy index), never cached.

        Raises
        ------
        CorruptDatasetError
            If it is larger than ``limit`` bytes (nothing past the limit is read).
        """

    def read_files(self, rels: Sequence[str], limit: int | None = None) -> list[bytes]:
        """Several small files whole (:meth:`read_file` each; concurrently on a
        remote store, where each would otherwise cost a round trip)."""
        return [self.read_file(rel, limit) for rel in rels]

    def map_file(self, rel: str, limit: int | None = None) -> Any:
        """An immutable file whole, as a buffer: a read-only map where the store has
        maps (processes on one machine then share its pages), else its bytes."""
        return self.read_file(rel, limit)

    @abstractmethod
    def read_range(self, rel: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of ``rel``.

        Raises
        ------
        FileNotFoundError
            If ``rel`` does not exist (``filename`` is ``rel``).
        CorruptDatasetError
            If ``rel`` ends before ``end``.
        """

    def read_ranges(
        self,
        rels: Sequence[str],
        starts: Sequence[int],
        ends: Sequence[int],
        gap: int | None = None,
    ) -> list[bytes]:
        """Several ranges, raising as :meth:`read_range` does for the first failure.

        ``gap``: ranges of one file at most this far apart may be fetched as one
        request (``None``: the store decides by cost; ``0``: only touching ones).
        """
        return [self.read_range(r, s, e) for r, s, e in zip(rels, starts, ends, strict=True)]

    @abstractmethod
    def read_whole(self, rels: Sequence[str], sizes: Sequence[int]) -> list[Any]:
        """Whole parts as buffers (maps or bytes), each checked to have its size."""

    @abstractmethod
    def open_tail(self, rel: str, size: int, tail: int) -> tuple[Any | None, Any]:
        """Open a part of ``size`` bytes for record reads.

        Returns ``(data, tail)``: ``data`` is a buffer of the whole part when the
        store can hand one out cheaply (a map), else ``None`` (records are then
        fetched by range); ``tail`` holds at least its last ``tail`` bytes.
        """

    def open_tails(
        self, rels: Sequence[str], sizes: Sequence[int], tails: Sequence[int]
    ) -> list[tuple[Any | None, Any]]:
        """:meth:`open_tail` for several parts (concurrently where the store can)."""
        return [self.open_tail(*args) for args in zip(rels, sizes, tails, strict=True)]

    @abstractmethod
    def exists(self, rel: str) -> bool: ...

    @abstractmethod
    def size(self, rel: str) -> int: ...

    @abstractmethod
    def open_read(self, rel: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        """A streaming reader of the file as stored (never a cached copy), for checksums."""

    @abstractmethod
    def list_dir(self, rel: str) -> list[str]:
        """Names (not paths) of the files in directory ``rel``; empty if there is none."""

    def list_stamped(
        self, rel: str, pick: Callable[[list[str]], Collection[str]]
    ) -> tuple[list[str], list[FileInfo]]:
        """Names in directory ``rel``, and the :class:`FileInfo` of (at least) those
        ``pick`` chooses among them: one listing where listings carry sizes and times
        anyway (object stores); locally, a ``stat`` of the chosen ones only."""
        infos = self.list_info(rel)
        return [i.name for i in infos], infos

    def missing_bucket(self) -> str | None:
        """The root's bucket, if the store has buckets and this one does not exist."""
        return None

    # -- writing ------------------------------------------------------------------

    def check_writable(self) -> None:
        """Before a write: fail early where it cannot go (an object store's missing
        bucket). Creates nothing: folders appear when the first file is written."""
        if (bucket := self.missing_bucket()) is not None:
            raise FileNotFoundError(
                f"cannot write {self.urlpath}: bucket {bucket!r} does not exist (splitdask "
                "never creates buckets)"
            )

    def remove_empty_dirs(self) -> None:  # noqa: B027  (optional hook: no-op by default)
        """After a failed write: remove the folders this store made that are still
        empty, so a write that committed nothing leaves nothing behind."""

    @abstractmethod
    def makedirs(self, rel: str = "") -> None:
        """Prepare ``rel`` for writing (a directory, or a check that the bucket exists)."""

    @abstractmethod
    def create_part(self, rel: str, buffer_size: int = 1 << 20) -> PartSink:
        """A sink for a new immutable file at ``rel``, visible only after ``commit()``."""

    @abstractmethod
    def write_atomic(self, rel: str, data: bytes) -> None:
        """Replace ``rel`` with ``data`` in one atomic step (the commit point)."""

    def read_versioned(self, rel: str) -> tuple[bytes | None, str | None]:
        """``rel``'s content and a token naming that version; ``(None, None)`` if absent.

        The token is a hash of the content unless the store has version tags of its
        own (S3's ETag): either way, equal tokens mean equal content.
        """
        try:
            data = self.read_file(rel)
        except FileNotFoundError:
            return None, None
        return data, xxhash.xxh3_128_hexdigest(data)

    def replace_if(self, rel: str, data: bytes, token: str | None) -> str | None:
        """Replace ``rel`` with ``data`` only if it is still the version ``token`` read
        by :meth:`read_versioned` (``None``: only if ``rel`` does not exist).

        Returns the new version's token, or ``None``, writing nothing, if another
        writer replaced it first. This default compares and replaces while holding
        :meth:`_commit_lock`; a store with conditional writes overrides it.
        """
        with self._commit_lock():
            if self.read_versioned(rel)[1] != token:
                return None
            self.write_atomic(rel, data)
            return xxhash.xxh3_128_hexdigest(data)

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        """Create ``rel`` holding ``data`` only if it does not exist, in one atomic
        step (a version's commit); whether this call created it. This default
        compares and creates under :meth:`_commit_lock`; stores that can ask the
        storage itself (S3's ``If-None-Match``, a local hard link) override it."""
        return self.replace_if(rel, data, None) is not None

    @abstractmethod
    def _commit_lock(self) -> contextlib.AbstractContextManager[None]:
        """A lock that every writer of this dataset takes around compare and replace
        (see :attr:`atomic_commit` for how far it reaches)."""

    @abstractmethod
    def list_info(self, rel: str) -> list[FileInfo]:
        """Name, size and modification time of each file in directory ``rel``."""

    def clean_spools(self, older_than: float) -> list[str]:
        """Remove this dataset's local spool files last written before ``older_than``
        (a POSIX time), left by writers that were killed; return their paths."""
        return []

    def sync_dir(self, rel: str) -> None:  # noqa: B027  (optional hook: no-op by default)
        """Make the renames done in directory ``rel`` durable, where that means anything."""

    @abstractmethod
    def remove(self, rels: Sequence[str]) -> None:
        """Delete files, ignoring ones already gone."""


def discard_file(f: IO[bytes], path: str) -> None:
    """Close ``f`` and remove the temp file ``path`` it wrote. Closing may fail
    (flushing the buffer of a full disk): the data is being discarded, so that failure
    is dropped and the file is removed all the same."""
    try:
        f.close()
    except OSError:
        pass
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def iter_chunks(f: IO[bytes], size: int = 8 << 20) -> Iterator[bytes]:
    """A file's bytes in chunks of ``size``."""
    while chunk := f.read(size):
        yield chunk

"""Any fsspec filesystem: ranged requests (merged, and concurrent where the backend
is async), spooled uploads, and a caching layer for immutable parts."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import threading
from collections.abc import Iterator, Sequence
from typing import IO, Any

from splitdask._store._access import (
    access,
    in_transit,
    not_found,
    retrying,
    short_read,
    too_large,
)
from splitdask._store._base import FileInfo, PartSink, Store
from splitdask._store._resolve import resolve
from splitdask._store._upload import SpoolSink, spool_prefix

__all__ = ["FsspecStore"]

# Object stores have no directories to create, and creating one there can have
# side effects (s3fs creates a missing *bucket*), so writes never mkdir on them.
_OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "abfs", "az", "adl", "memory", "oss", "r2"}
# Of those, the ones whose first path component is a bucket (container) that must
# exist before anything can be written.
_BUCKET_STORES = _OBJECT_STORES - {"memory"}

# replace_if on a store without conditional writes is atomic only among the threads
# of one process: one lock per dataset root serialises them.
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()

# Ranges of one file closer than this are fetched as one request; the bytes in
# between are cheaper than another round trip.
_MERGE_GAP = 1 << 20
_MERGE_MAX = 64 << 20


class FsspecStore(Store):
    """A dataset root on an fsspec filesystem.

    Parameters
    ----------
    fs
        Filesystem for reading parts: the storage itself, or a caching layer
        (``simplecache::``, ``filecache::``) in front of ``direct``.
    direct
        The storage itself: the manifest, every write, delete and verify go here.
    """

    spools = True
    upload_concurrency = 4
    atomic_commit = False

    def __init__(
        self, urlpath: str, storage_options: dict[str, Any], root: str, fs: Any, direct: Any
    ) -> None:
        super().__init__(urlpath, storage_options, root)
        self._fs = fs
        self._direct = direct
        self._pid = os.getpid()
        protocols = direct.protocol if isinstance(direct.protocol, tuple) else (direct.protocol,)
        self._object_store = bool(_OBJECT_STORES.intersection(protocols))
        self._bucketed = bool(_BUCKET_STORES.intersection(protocols))

    @property
    def fs(self) -> Any:
        """Filesystem for reading parts (may be a cache in front of :attr:`direct`)."""
        if self._pid != os.getpid():
            self._after_fork()
        return self._fs

    @property
    def direct(self) -> Any:
        """The storage itself, without caching layers."""
        if self._pid != os.getpid():
            self._after_fork()
        return self._direct

    def _after_fork(self) -> None:
        # An async filesystem (s3fs) made before a fork owns an event loop thread the
        # child does not have, and refuses to run there ("not fork-safe"): a forked
        # DataLoader or MpQItr worker gets a filesystem of its own.
        self._fs, self._direct, _ = resolve(self.urlpath, self.storage_options)
        self._pid = os.getpid()

    # -- reading ------------------------------------------------------------------

    def read_file(self, rel: str, limit: int | None = None) -> bytes:
        # start=0 makes it one ranged GET; without it s3fs first asks for the size.
        end = None if limit is None else limit + 1
        data = retrying(
            self.where(rel), lambda: bytes(self.direct.cat_file(self.full(rel), start=0, end=end))
        )
        if limit is not None and len(data) > limit:
            raise too_large(self.where(rel), len(data), limit)
        return data

    def read_range(self, rel: str, start: int, end: int) -> bytes:
        if end <= start:
            return b""  # an empty HTTP range is invalid, and S3 answers it with everything
        try:
            data = retrying(
                self.where(rel),
                lambda: bytes(self.fs.cat_file(self.full(rel), start=start, end=end)),
            )
        except FileNotFoundError:
            raise not_found(rel) from None
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # s3fs: "range not satisfiable"
                raise
            raise short_read(self.where(rel), start, end, None) from None
        if len(data) != end - start:
            raise short_read(self.where(rel), start, end, len(data))
        return data

    def read_ranges(
        self, rels: Sequence[str], starts: Sequence[int], ends: Sequence[int]
    ) -> list[bytes]:
        """Near ranges of one file are merged into one request, and all requests go
        out in one concurrent call (async backends such as s3fs)."""
        if len(rels) < 2:
            return super().read_ranges(rels, starts, ends)
        out: list[bytes] = [b""] * len(rels)
        spans = _merge(rels, starts, ends)
        if not spans:
            return out
        # Damaged responses come back as values (on_error): raised, then retried.
        got = retrying(
            self.where(spans[0][0]),
            lambda: _raise_in_transit(
                self.fs.cat_ranges(
                    [self.full(r) for r, _, _, _ in spans],
                    [lo for _, lo, _, _ in spans],
                    [hi for _, _, hi, _ in spans],
                    on_error="return",
                )
            ),
        )
        for (rel, lo, hi, items), data in zip(spans, got, strict=True):
            if isinstance(data, FileNotFoundError):
                raise not_found(rel)
            if isinstance(data, OSError) and data.errno == errno.EINVAL:
                raise short_read(self.where(rel), lo, hi, None)
            if isinstance(data, BaseException):
                with access(self.where(rel)):
                    raise data
            if len(data) != hi - lo:
                raise short_read(self.where(rel), lo, hi, len(data))
            for k in items:
                out[k] = data[starts[k] - lo : ends[k] - lo]
        return out

    def read_whole(self, rels: Sequence[str], sizes: Sequence[int]) -> list[Any]:
        return self.read_ranges(rels, [0] * len(rels), sizes)

    def open_tail(self, rel: str, size: int, tail: int) -> tuple[Any | None, Any]:
        return None, self.read_range(rel, max(0, size - tail), size)

    def open_tails(
        self, rels: Sequence[str], sizes: Sequence[int], tails: Sequence[int]
    ) -> list[tuple[Any | None, Any]]:
        starts = [max(0, s - t) for s, t in zip(sizes, tails, strict=True)]
        return [(None, tail) for tail in self.read_ranges(rels, starts, sizes)]

    def exists(self, rel: str) -> bool:
        with access(self.where(rel)):
            return bool(self.direct.exists(self.full(rel)))

    def size(self, rel: str) -> int:
        with access(self.where(rel)):
            return int(self.direct.size(self.full(rel)))

    @contextlib.contextmanager
    def open_read(self, rel: str) -> Iterator[IO[bytes]]:
        with (
            access(self.where(rel)),
            self.direct.open(self.full(rel), "rb", block_size=8 << 20, cache_type="none") as f,
        ):
            # A read that fails leaves the position where it was: read again if the
            # body was damaged in transit (s3fs itself no longer retries).
            read = f.read
            f.read = lambda n=-1: retrying(self.where(rel), lambda: read(n))
            yield f

    def list_dir(self, rel: str) -> list[str]:
        return [i.name for i in self.list_info(rel)]

    def list_info(self, rel: str) -> list[FileInfo]:
        path = self.full(rel)
        with access(self.where(rel)):
            # A fresh listing, and none left behind: s3fs answers later exists/info/
            # open from a cached listing, which would hide parts written after it.
            self.direct.invalidate_cache(path)
            try:
                listed = self.direct.ls(path, detail=True)
            except FileNotFoundError:
                return []
            finally:
                self.direct.invalidate_cache(path)
        return sorted(
            FileInfo(
                str(d["name"]).rstrip("/").rsplit("/", 1)[-1], int(d.get("size") or 0), _mtime(d)
            )
            for d in listed
            if d.get("type", "file") == "file"
        )

    def clean_spools(self, older_than: float) -> list[str]:
        prefix = spool_prefix(self)
        tmp = tempfile.gettempdir()
        removed = []
        with contextlib.suppress(OSError), os.scandir(tmp) as entries:
            for entry in entries:
                if not (entry.name.startswith(prefix) and entry.name.endswith(".part")):
                    continue
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_mtime < older_than:
                        os.unlink(entry.path)
                        removed.append(entry.path)
        return removed

    @contextlib.contextmanager
    def _commit_lock(self) -> Iterator[None]:
        with _LOCKS_GUARD:
            lock = _LOCKS.setdefault(f"{self.direct.protocol}:{self.root}", threading.Lock())
        with lock:
            yield

    def missing_bucket(self) -> str | None:
        """``None`` also when the answer is unknown because asking is not permitted (on
        S3, HeadBucket needs ``s3:ListBucket``, which a user allowed only to get and
        put objects under a prefix lacks): such a user can still read and write."""
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
        """A directory where there are directories; on object stores only a check that
        the bucket exists, so that a write to a missing bucket fails here rather than
        after its data was spooled."""
        if not self._object_store:
            with access(self.where(rel)):
                self.direct.makedirs(self.full(rel), exist_ok=True)
        elif (bucket := self.missing_bucket()) is not None:
            raise FileNotFoundError(
                f"cannot write {self.urlpath}: bucket {bucket!r} does not exist (splitdask "
                "never creates buckets)"
            )

    def create_part(self, rel: str, buffer_size: int = 1 << 20) -> PartSink:
        """Spooled to a local temp file and uploaded on commit (:mod:`._upload`), in
        one PUT or one multipart upload (both become visible whole or not at all),
        so memory stays at ``buffer_size`` per open part plus a few upload blocks
        per upload, whatever the part's size."""
        return SpoolSink(self, rel, buffer_size)

    def write_atomic(self, rel: str, data: bytes) -> None:
        # A single PUT: object stores make it visible whole or not at all.
        with access(self.where(rel)):
            self.direct.pipe_file(self.full(rel), data)

    def remove(self, rels: Sequence[str]) -> None:
        for rel in rels:
            with contextlib.suppress(FileNotFoundError), access(self.where(rel)):
                self.direct.rm_file(self.full(rel))


def _merge(
    rels: Sequence[str], starts: Sequence[int], ends: Sequence[int]
) -> list[tuple[str, int, int, list[int]]]:
    """Non-empty ranges grouped into requests ``(rel, lo, hi, indices served)``."""
    order = sorted(
        (k for k in range(len(rels)) if ends[k] > starts[k]), key=lambda k: (rels[k], starts[k])
    )
    spans: list[tuple[str, int, int, list[int]]] = []
    for k in order:
        rel, s, e = rels[k], starts[k], ends[k]
        if spans:
            prel, lo, hi, items = spans[-1]
            if prel == rel and s - hi <= _MERGE_GAP and max(hi, e) - lo <= _MERGE_MAX:
                spans[-1] = (rel, lo, max(hi, e), items)
                items.append(k)
                continue
        spans.append((rel, s, e, [k]))
    return spans


def _mtime(info: dict[str, Any]) -> float:
    """A listing entry's modification time as a POSIX timestamp (0 if not given)."""
    for key in ("LastModified", "mtime", "created", "last_modified"):
        value = info.get(key)
        if value is None:
            continue
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
        with contextlib.suppress(TypeError, ValueError):
            return float(value)
    return 0.0


def _raise_in_transit(got: list[Any]) -> list[Any]:
    """``got``, unless one of its results is a response damaged in transit: then that."""
    for item in got:
        if isinstance(item, Exception) and in_transit(item):
            raise item
    return got

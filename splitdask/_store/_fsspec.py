"""Any fsspec filesystem: ranged requests (merged, and concurrent where the backend
is async), spooled uploads, and a caching layer for immutable parts."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
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
from splitdask._store._fetch import Fetcher, plan_ranges
from splitdask._store._net import NetSettings, net_settings
from splitdask._store._resolve import resolve
from splitdask._store._upload import SpoolSink, remove_spools, spool_prefix

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
    # Parts committed at once. Memory is bounded by the process's upload slots
    # (``_upload.upload_slots``, 16 blocks by default), not by this: it lets parts of
    # one block or less (one PUT each) keep as many connections busy.
    upload_concurrency = 16
    atomic_commit = False

    def __init__(
        self, urlpath: str, storage_options: dict[str, Any], root: str, fs: Any, direct: Any
    ) -> None:
        super().__init__(urlpath, storage_options, root)
        self._fs = fs
        self._direct = direct
        self._pid = os.getpid()
        self.net: NetSettings = net_settings()
        pool = (storage_options.get("config_kwargs") or {}).get("max_pool_connections")
        if isinstance(pool, int) and pool > 0:  # the user sized botocore's pool: follow it
            self.net = dataclasses.replace(self.net, connections=pool)
        self._fetcher = self._make_fetcher()
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
        self._fetcher = self._make_fetcher()

    def _make_fetcher(self) -> Fetcher | None:
        """Concurrent requests of our own where parts are read from an async
        filesystem directly; through a cache layer (or a sync backend) the
        filesystem's own ``cat_ranges`` serves."""
        if self._fs is self._direct and getattr(self._direct, "async_impl", False):
            return Fetcher(self._direct, self.net)
        return None

    @property
    def fetcher(self) -> Fetcher | None:
        if self._pid != os.getpid():
            self._after_fork()
        return self._fetcher

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

    def read_files(self, rels: Sequence[str], limit: int | None = None) -> list[bytes]:
        # Each read keeps its own retries and errors; threads wait on the store's loop.
        with ThreadPoolExecutor(max(1, min(len(rels), 16))) as pool:
            return list(pool.map(lambda rel: self.read_file(rel, limit), rels))

    def read_range(self, rel: str, start: int, end: int) -> bytes:
        if end <= start:
            return b""  # an empty HTTP range is invalid, and S3 answers it with everything
        if self.fetcher is not None or self.cache is not None:
            return self.read_ranges([rel], [start], [end])[0]
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
        self,
        rels: Sequence[str],
        starts: Sequence[int],
        ends: Sequence[int],
        gap: int | None = None,
    ) -> list[bytes]:
        """Ranges of one file are grouped into requests by cost (:func:`plan_ranges`),
        and every request goes out at once."""
        if len(rels) < 2 and self.fetcher is None and self.cache is None:
            return super().read_ranges(rels, starts, ends, gap)
        out: list[bytes] = [b""] * len(rels)
        if self.cache is not None:  # ranges of cached parts are read locally
            starts, ends = self.cache.serve_ranges(self.urlpath, rels, starts, ends, out)
        by_rel: dict[str, list[int]] = {}
        for k, rel in enumerate(rels):
            by_rel.setdefault(rel, []).append(k)
        spans: list[tuple[str, int, int, list[int]]] = []
        for rel, ks in by_rel.items():
            plan = plan_ranges([starts[k] for k in ks], [ends[k] for k in ks], self.net, gap)
            spans += [(rel, lo, hi, [ks[i] for i in items]) for lo, hi, items in plan]
        if not spans:
            return out
        paths = [self.full(r) for r, _, _, _ in spans]
        los, his = [lo for _, lo, _, _ in spans], [hi for _, _, hi, _ in spans]
        fetcher = self.fetcher
        if fetcher is not None:  # large spans in chunks, all at once, each retried
            got = fetcher.spans(paths, los, his, [self.where(r) for r, _, _, _ in spans])
        else:
            # Damaged responses come back as values (on_error): raised, then retried.
            got = retrying(
                self.where(spans[0][0]),
                lambda: _raise_in_transit(self.fs.cat_ranges(paths, los, his, on_error="return")),
            )
        for (rel, lo, hi, items), data in zip(spans, got, strict=True):
            self._check_got(rel, lo, hi, data)
            for k in items:
                out[k] = data[starts[k] - lo : ends[k] - lo]
        return out

    def _check_got(self, rel: str, lo: int, hi: int, data: Any) -> None:
        """Raise, worded for ``rel``, if a request failed or came back short."""
        if isinstance(data, FileNotFoundError):
            raise not_found(rel)
        if isinstance(data, OSError) and data.errno == errno.EINVAL:
            raise short_read(self.where(rel), lo, hi, None)
        if isinstance(data, BaseException):
            with access(self.where(rel)):
                raise data
        if len(data) != hi - lo:
            raise short_read(self.where(rel), lo, hi, len(data))

    def read_whole(self, rels: Sequence[str], sizes: Sequence[int]) -> list[Any]:
        """Through the local part cache when one is configured (hits mapped, misses
        fetched once by every process on the machine, then kept); else fetched."""
        if self.cache is None:
            return self._download_whole(rels, sizes)
        return self.cache.read_whole(self.urlpath, rels, sizes, self._download_whole)

    def _download_whole(self, rels: Sequence[str], sizes: Sequence[int]) -> list[Any]:
        """Whole parts from the storage: each in concurrent chunks (:func:`chunk_spans
        <splitdask._store._fetch.chunk_spans>`), all parts at once."""
        fetcher = self.fetcher
        if fetcher is None:
            return self.read_ranges(rels, [0] * len(rels), sizes, 0)
        got = fetcher.wholes([self.full(r) for r in rels], sizes, [self.where(r) for r in rels])
        for rel, size, data in zip(rels, sizes, got, strict=True):
            self._check_got(rel, 0, size, data)
        return got

    def open_tail(self, rel: str, size: int, tail: int) -> tuple[Any | None, Any]:
        if self.cache is not None and (data := self.cache.mapped(self.urlpath, rel, size)):
            return data, data[max(0, size - tail) : size]
        return None, self.read_range(rel, max(0, size - tail), size)

    def open_tails(
        self, rels: Sequence[str], sizes: Sequence[int], tails: Sequence[int]
    ) -> list[tuple[Any | None, Any]]:
        starts = [max(0, s - t) for s, t in zip(sizes, tails, strict=True)]
        out: list[tuple[Any | None, Any]] = [(None, b"")] * len(rels)
        if self.cache is not None:  # cached parts are mapped, not fetched (nor filled)
            for k, (rel, size) in enumerate(zip(rels, sizes, strict=True)):
                if data := self.cache.mapped(self.urlpath, rel, size):
                    out[k] = (data, data[starts[k] : size])
        todo = [k for k, o in enumerate(out) if o[0] is None]
        got = self.read_ranges(
            [rels[k] for k in todo], [starts[k] for k in todo], [sizes[k] for k in todo]
        )
        for k, tail in zip(todo, got, strict=True):
            out[k] = (None, tail)
        return out

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
        return remove_spools(spool_prefix(self), older_than)

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
        else:
            self.check_writable()

    def create_part(self, rel: str, buffer_size: int = 1 << 20) -> PartSink:
        """Spooled to a local temp file and uploaded on commit (:mod:`._upload`), in
        one PUT or one multipart upload (both become visible whole or not at all),
        so memory stays at ``buffer_size`` per open part plus a few upload blocks
        per upload, whatever the part's size. Folders are made here, with the first
        part (object stores have none)."""
        if not self._object_store:
            self.makedirs(rel.rpartition("/")[0])
        return SpoolSink(self, rel, buffer_size)

    def write_atomic(self, rel: str, data: bytes) -> None:
        # A single PUT: object stores make it visible whole or not at all.
        with access(self.where(rel)):
            self.direct.pipe_file(self.full(rel), data)

    def remove(self, rels: Sequence[str]) -> None:
        for rel in rels:
            with contextlib.suppress(FileNotFoundError), access(self.where(rel)):
                self.direct.rm_file(self.full(rel))


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

"""A bounded local cache of remote parts, shared by every process on the machine
(its settings: :mod:`._cachesettings`).

Parts are immutable and never renamed or reused (their names carry a uid), so a
cached part is never stale: an entry is keyed by a hash of the dataset URL and the
part's path and is valid for as long as it exists. Each entry is one file,
``<key>.part``, holding the part whole; it is handed out as a read-only ``mmap``.

Safety across processes, without a server:

- a download is written to ``<key>.<pid>-<rand>.tmp`` and renamed into place, so an
  entry is whole or absent; temp files are never read, and ones older than
  :data:`STALE_TEMP_SECONDS` (left by killed processes) are removed;
- ``<key>.lock`` is ``flock``-ed by the process fetching the entry, so processes that
  want the same missing part fetch it once: the others wait on the lock, then map
  the file. The kernel drops a killed process's locks, so nothing it held blocks;
- ``.evict.lock`` serialises adding with evicting (least recently used first, by
  the entry's mtime, which every hit touches), so the entries' total never exceeds
  the limit. Unlinking an entry another process has mapped is safe on POSIX.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import mmap
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from splitdask._format import parse_part_name

__all__ = [
    "STALE_TEMP_SECONDS",
    "CacheInfo",
    "CacheStats",
    "PartCache",
    "cacheable",
    "clear_cache",
    "scan",
]

STALE_TEMP_SECONDS = 3600.0
"""A temp file this old belongs to a download that died: removed when seen."""

_EVICT_LOCK = ".evict.lock"
_ENTRY = re.compile(r"[0-9a-f]{40}\.(part|lock|[0-9]+-[0-9a-f]{8}\.tmp)")


class CacheInfo(NamedTuple):
    """What a cache directory holds now (every process's entries)."""

    directory: str
    entries: int
    bytes: int
    limit: int


@dataclass
class CacheStats:
    """What one process's cache object did (see :meth:`PartCache.stats`)."""

    hits: int = 0
    """Parts served from the cache (including ones another process had just fetched)."""
    misses: int = 0
    """Parts fetched whole from storage into the cache by this process."""
    bytes_from_cache: int = 0
    bytes_downloaded: int = 0
    damaged: int = 0
    """Cached copies that failed a whole-part check, removed and fetched again."""


def cacheable(rel: str) -> bool:
    """Whether ``rel`` is a splitdask part (a uid in its name, so never rewritten);
    splitdataloader's bin files may be, so they are never cached."""
    parsed = parse_part_name(rel)
    return parsed is not None and not parsed[2]


def scan(directory: str) -> tuple[int, int]:
    """``(entries, bytes)`` of the whole entries in ``directory``."""
    n = total = 0
    with contextlib.suppress(FileNotFoundError), os.scandir(directory) as it:
        for e in it:
            if e.name.endswith(".part") and _ENTRY.fullmatch(e.name):
                with contextlib.suppress(FileNotFoundError):
                    total += e.stat(follow_symlinks=False).st_size
                    n += 1
    return n, total


def clear_cache(directory: str) -> tuple[int, int]:
    """Remove every entry, lock and temp file of the cache in ``directory`` (and
    nothing else); return the entries and bytes removed. Processes using it go on:
    their mapped parts stay valid, and missing parts are fetched again."""
    n, total = scan(directory)
    with contextlib.suppress(FileNotFoundError), os.scandir(directory) as it:
        for e in it:
            if _ENTRY.fullmatch(e.name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(e.path)
    return n, total


@contextlib.contextmanager
def _flock(path: str, blocking: bool = True) -> Iterator[bool]:
    """An exclusive ``flock`` on ``path`` (created if missing); yields whether it
    was taken (always, when ``blocking``)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


class PartCache:
    """The cache in ``directory``, bounded by ``limit`` bytes, as one process sees it.

    Parameters
    ----------
    directory
        Made if missing. Entries of every dataset share it and its limit.
    limit
        Bytes the entries may take together; a part larger than this is served
        but not kept.
    """

    def __init__(self, directory: str, limit: int) -> None:
        self.directory = directory
        self.limit = limit
        self.stats = CacheStats()
        self._count_lock = threading.Lock()  # a reader's prefetch thread counts too

    def __repr__(self) -> str:
        return f"PartCache({self.directory!r}, limit={self.limit})"

    def _count(self, **add: int) -> None:
        with self._count_lock:
            for name, n in add.items():
                setattr(self.stats, name, getattr(self.stats, name) + n)

    def key(self, url: str, rel: str) -> str:
        """The entry name of part ``rel`` of the dataset at ``url``."""
        return hashlib.sha1(f"{url.rstrip('/')}\0{rel}".encode(), usedforsecurity=False).hexdigest()

    def _path(self, key: str, suffix: str) -> str:
        return os.path.join(self.directory, key + suffix)

    def info(self) -> CacheInfo:
        n, total = scan(self.directory)
        return CacheInfo(self.directory, n, total, self.limit)

    # -- reading ----------------------------------------------------------------------

    def lookup(self, key: str, size: int) -> Any | None:
        """The cached part mapped read-only, touched as recently used; ``None`` if
        it is not cached, or cached with another size than the manifest's ``size``
        (that copy is damaged: it is removed, so the part is fetched again).
        Not counted in :attr:`stats` (callers count what they serve).
        """
        path = self._path(key, ".part")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            if os.fstat(fd).st_size != size:  # damaged, or not ours: fetch it again
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                return None
            with contextlib.suppress(OSError):
                now = time.time_ns()  # explicit: the kernel's own stamp is coarse (ms)
                os.utime(fd, ns=(now, now))  # most recently used
            return mmap.mmap(fd, size, prot=mmap.PROT_READ) if size else b""
        finally:
            os.close(fd)

    def read_range(self, key: str, start: int, end: int) -> bytes | None:
        """Bytes ``[start, end)`` of a cached part, or ``None`` if it is not cached
        (or shorter: the caller then reads from storage and reports that)."""
        try:
            fd = os.open(self._path(key, ".part"), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            data = os.pread(fd, end - start, start)
        finally:
            os.close(fd)
        if len(data) != end - start:
            return None
        self._count(bytes_from_cache=len(data))
        return data

    def get_many(
        self,
        keys: Sequence[str],
        sizes: Sequence[int],
        download: Callable[[list[int]], list[Any]],
    ) -> list[Any]:
        """Each entry mapped, the missing ones fetched by ``download(indices)`` (which
        returns their bytes) and added.

        Processes share downloads: the entries this one can lock at once it fetches
        together; for those another process is fetching, it waits on their locks
        (taking them in key order, so no two processes wait on each other), then
        maps what the other process stored and fetches only what it did not.
        """
        out: list[Any] = [self._hit(k, s) for k, s in zip(keys, sizes, strict=True)]
        missing = sorted((i for i, o in enumerate(out) if o is None), key=keys.__getitem__)
        if not missing:
            return out
        with contextlib.ExitStack() as held:
            mine = [i for i in missing if held.enter_context(self._lock(keys[i], blocking=False))]
            self._fill(out, mine, keys, sizes, download)
        theirs = [i for i in missing if out[i] is None]
        if theirs:
            with contextlib.ExitStack() as held:
                for k in dict.fromkeys(keys[i] for i in theirs):  # in key order, once each
                    held.enter_context(self._lock(k, blocking=True))
                self._fill(out, theirs, keys, sizes, download)
        return out

    def _hit(self, key: str, size: int) -> Any | None:
        data = self.lookup(key, size)
        if data is not None:
            self._count(hits=1, bytes_from_cache=size)
        return data

    def _lock(self, key: str, blocking: bool) -> contextlib.AbstractContextManager[bool]:
        return _flock(self._path(key, ".lock"), blocking)

    def _fill(
        self,
        out: list[Any],
        todo: list[int],
        keys: Sequence[str],
        sizes: Sequence[int],
        download: Callable[[list[int]], list[Any]],
    ) -> None:
        """Under the entries' locks: map what appeared meanwhile, fetch and add the rest."""
        for i in todo:
            out[i] = self._hit(keys[i], sizes[i])
        fetch = [i for i in todo if out[i] is None]
        if not fetch:
            return
        for i, data in zip(fetch, download(fetch), strict=True):
            self._count(misses=1, bytes_downloaded=len(data))
            out[i] = self._add(keys[i], data)

    # -- adding and evicting ----------------------------------------------------------

    def _add(self, key: str, data: Any) -> Any:
        """Store ``data`` as entry ``key``; its map, or ``data`` itself if it does not fit
        (or the disk refuses: the cache is an optimisation, never a reason to fail)."""
        size = len(data)
        if size > self.limit or not size:
            return data
        tmp = self._path(key, f".{os.getpid()}-{os.urandom(4).hex()}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            with _flock(os.path.join(self.directory, _EVICT_LOCK)):
                self._evict(self.limit - size)
                os.rename(tmp, self._path(key, ".part"))
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.ENOENT):
                return data
            raise
        return self.lookup(key, size) or data

    def _evict(self, room: int) -> None:
        """Remove least recently used entries until they take at most ``room`` bytes;
        and temp files left by killed downloads."""
        entries: list[tuple[int, str, int]] = []
        total = 0
        stale = time.time() - STALE_TEMP_SECONDS
        with os.scandir(self.directory) as it:
            for e in it:
                if not _ENTRY.fullmatch(e.name):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    st = e.stat(follow_symlinks=False)
                    if e.name.endswith(".part"):
                        entries.append((st.st_mtime_ns, e.path, st.st_size))
                        total += st.st_size
                    elif e.name.endswith(".tmp") and st.st_mtime < stale:
                        os.unlink(e.path)
        entries.sort()
        for _, path, size in entries:
            if total <= room:
                break
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                os.unlink(path[: -len(".part")] + ".lock")  # no inode per part ever seen
            total -= size

    # -- a store's parts ----------------------------------------------------------------

    def read_whole(
        self,
        url: str,
        rels: Sequence[str],
        sizes: Sequence[int],
        download: Callable[[Sequence[str], Sequence[int]], list[Any]],
    ) -> list[Any]:
        """Parts of the dataset at ``url`` whole: cached ones mapped, the others
        fetched by ``download(rels, sizes)`` (which checks their sizes) and added.
        Files that are not parts with a uid (:func:`cacheable`) are only fetched."""
        idx = [i for i, rel in enumerate(rels) if cacheable(rel)]
        out: list[Any] = [None] * len(rels)
        if len(idx) < len(rels):
            keep = set(idx)
            rest = [i for i in range(len(rels)) if i not in keep]
            got = download([rels[i] for i in rest], [sizes[i] for i in rest])
            for i, data in zip(rest, got, strict=True):
                out[i] = data
        if idx:

            def fetch(which: list[int]) -> list[Any]:
                return download([rels[idx[j]] for j in which], [sizes[idx[j]] for j in which])

            keys = [self.key(url, rels[i]) for i in idx]
            got = self.get_many(keys, [sizes[i] for i in idx], fetch)
            for i, data in zip(idx, got, strict=True):
                out[i] = data
        return out

    def mapped(self, url: str, rel: str, size: int) -> Any | None:
        """Part ``rel`` mapped if it is cached (counted as a hit), else ``None``."""
        if not cacheable(rel):
            return None
        return self._hit(self.key(url, rel), size)

    def serve_ranges(
        self,
        url: str,
        rels: Sequence[str],
        starts: Sequence[int],
        ends: Sequence[int],
        out: list[Any],
    ) -> tuple[list[int], list[int]]:
        """Fill ``out[k]`` with range ``k`` where its part is cached; return the ranges
        left for storage (``starts``, ``ends``, a served one made empty)."""
        cached: dict[str, bool] = {}
        rest_s, rest_e = list(starts), list(ends)
        for k, rel in enumerate(rels):
            if rest_e[k] <= rest_s[k] or cached.get(rel) is False:
                continue
            got = self.cached_range(url, rel, rest_s[k], rest_e[k])
            cached[rel] = got is not None
            if got is not None:
                out[k] = got
                rest_e[k] = rest_s[k]  # empty: nothing left to fetch
        return rest_s, rest_e

    def cached_range(self, url: str, rel: str, start: int, end: int) -> bytes | None:
        """Bytes of part ``rel`` from the cache, or ``None`` if it is not cached."""
        if not cacheable(rel):
            return None
        return self.read_range(self.key(url, rel), start, end)

    def forget(self, url: str, rel: str) -> bool:
        """Remove part ``rel``'s entry (found damaged); whether there was one."""
        if not cacheable(rel):
            return False
        try:
            os.unlink(self._path(self.key(url, rel), ".part"))
        except FileNotFoundError:
            return False
        self._count(damaged=1)
        return True

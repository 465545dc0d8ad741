"""Local disk: memory-mapped reads, ``pread``, and writes made durable by ``fsync``
and atomic rename."""

from __future__ import annotations

import contextlib
import errno
import functools
import mmap
import os
import secrets
import stat
import sys
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import IO, Any

from splitdask._format import temp_name
from splitdask._store._access import not_found, short_read, size_mismatch, too_large
from splitdask._store._base import FileInfo, PartSink, Store, discard_file
from splitdask.errors import CorruptDatasetError

__all__ = ["LOCK_NAME", "LocalStore", "fsync_dir"]

# A bin read whole maps its parts up to this many; more are read into memory, so one
# bin of a dataset of very many small parts cannot exhaust descriptors or mappings.
_MAP_WHOLE = 64

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)

LOCK_NAME = ".splitdask.lock"
"""Writers hold an exclusive ``flock`` on this file while they compare and replace
the manifest; readers never take it."""


class LocalStore(Store):
    """A dataset root on a local (or locally mounted) filesystem.

    Every file it reads is opened by :meth:`open_regular`: a regular file inside the
    root, never a symlink, FIFO, device or directory, so no read leaves the root or
    blocks.
    """

    is_local = True
    # Commits of parts (fsync + rename) overlap: the disk takes several fsyncs at
    # once faster than one after another.
    upload_concurrency = 8

    def __init__(self, urlpath: str, storage_options: dict[str, Any], root: str) -> None:
        super().__init__(urlpath, storage_options, root)
        self._real_dirs: dict[str, bool] = {}
        self._made_dirs: list[str] = []  # made by this store, outermost first

    def open_regular(self, rel: str) -> int:
        """A read-only descriptor of ``rel``, checked to be a regular file in the root.

        Raises
        ------
        FileNotFoundError
            If it does not exist (``filename`` is ``rel``).
        CorruptDatasetError
            If it, or the directory holding it, is a symlink, or it is not a regular
            file.
        """
        head = rel.rpartition("/")[0]
        if head and not self._inside(head):
            raise CorruptDatasetError(
                f"{self.where(head)}: a symlink or outside the dataset root; splitdask reads "
                "only regular files inside it"
            )
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer (fstat refuses it).
            fd = os.open(self.full(rel), _OPEN_FLAGS)
        except FileNotFoundError:
            raise not_found(rel) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise CorruptDatasetError(
                    f"{self.where(rel)}: a symlink; splitdask reads only regular files "
                    "inside the dataset root"
                ) from None
            raise OSError(exc.errno, f"{self.where(rel)}: {exc.strerror}") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise CorruptDatasetError(
                f"{self.where(rel)}: not a regular file (a {_kind(st.st_mode)}); "
                "splitdask reads only regular files inside the dataset root"
            )
        return fd

    def _inside(self, head: str) -> bool:
        """Whether directory ``head`` of the root resolves to itself (no symlink)."""
        if self._real_dirs.get(head):
            return True
        path = self.full(head)
        ok = os.path.realpath(path) == os.path.join(os.path.realpath(self.root), head)
        if ok and os.path.isdir(path):
            self._real_dirs[head] = True  # only successes are kept: a fix is seen
        return ok

    def read_file(self, rel: str, limit: int | None = None) -> bytes:
        fd = self.open_regular(rel)
        with open(fd, "rb") as f:
            if limit is not None and os.fstat(fd).st_size > limit:
                raise too_large(self.where(rel), os.fstat(fd).st_size, limit)
            return f.read()

    def map_file(self, rel: str, limit: int | None = None) -> Any:
        fd = self.open_regular(rel)
        try:
            size = os.fstat(fd).st_size
            if limit is not None and size > limit:
                raise too_large(self.where(rel), size, limit)
            return mmap.mmap(fd, size, access=mmap.ACCESS_READ) if size else b""
        finally:
            os.close(fd)

    def read_range(self, rel: str, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        fd = self.open_regular(rel)
        try:
            data = os.pread(fd, end - start, start)
        finally:
            os.close(fd)
        if len(data) != end - start:
            raise short_read(self.where(rel), start, end, len(data))
        return data

    def map(self, rel: str, size: int) -> mmap.mmap:
        """Read-only map of ``rel``, checked to be ``size`` bytes long."""
        fd = self.open_regular(rel)
        try:
            got = os.fstat(fd).st_size
            if got != size:
                raise size_mismatch(self.where(rel), got, size)
            return mmap.mmap(fd, size, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)

    def read_whole(self, rels: Sequence[str], sizes: Sequence[int]) -> list[Any]:
        """Maps of few parts; bytes of many, which hold no descriptor each."""
        if len(rels) <= _MAP_WHOLE:
            return [self.map(r, s) for r, s in zip(rels, sizes, strict=True)]
        out = []
        for rel, size in zip(rels, sizes, strict=True):
            data = self.read_range(rel, 0, size)
            if self.size(rel) != size:
                raise size_mismatch(self.where(rel), self.size(rel), size)
            out.append(data)
        return out

    def open_tail(self, rel: str, size: int, tail: int) -> tuple[Any | None, Any]:
        data = self.map(rel, size)
        return data, memoryview(data)

    def exists(self, rel: str) -> bool:
        return os.path.exists(self.full(rel))

    def size(self, rel: str) -> int:
        return os.stat(self.full(rel)).st_size

    @contextlib.contextmanager
    def open_read(self, rel: str) -> Iterator[IO[bytes]]:
        with open(self.open_regular(rel), "rb") as f:
            yield f

    def list_dir(self, rel: str) -> list[str]:
        try:
            return sorted(os.listdir(self.full(rel)))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def makedirs(self, rel: str = "") -> None:
        os.makedirs(self.full(rel), exist_ok=True)

    def create_part(self, rel: str, buffer_size: int = 1 << 20) -> PartSink:
        """A buffered temp file beside ``rel``, fsynced and renamed into place on commit.
        Its folder (and the dataset's) is made here, with the first part."""
        tmp = self.full(temp_name(rel))
        for _ in range(3):  # another writer's cleanup may remove an empty folder between
            try:
                return _LocalSink(self.full(rel), tmp, buffer_size)
            except FileNotFoundError:
                self._make_dirs(os.path.dirname(tmp))
        return _LocalSink(self.full(rel), tmp, buffer_size)

    def _make_dirs(self, path: str) -> None:
        """``os.makedirs``, remembering which folders it made (for :meth:`remove_empty_dirs`)."""
        missing: list[str] = []
        while path and not os.path.isdir(path):
            missing.append(path)
            parent = os.path.dirname(path)
            if parent == path:
                break
            path = parent
        for d in reversed(missing):
            try:
                os.mkdir(d)
            except FileExistsError:
                continue
            self._made_dirs.append(d)

    def remove_empty_dirs(self) -> None:
        for d in reversed(self._made_dirs):
            with contextlib.suppress(OSError):  # not empty (another writer's files): kept
                os.rmdir(d)
        self._made_dirs.clear()

    def write_atomic(self, rel: str, data: bytes) -> None:
        path = self.full(rel)
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

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        """A durable temp file, hard-linked to ``rel``: ``link`` fails if ``rel``
        exists, so the file appears whole or not at all, and only once."""
        path = self.full(rel)
        tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.tmp-{secrets.token_hex(6)}"
        try:
            try:
                f = open(tmp, "xb")  # noqa: SIM115
            except FileNotFoundError:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                f = open(tmp, "xb")  # noqa: SIM115
            with f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                # A file system without hard links: compare and rename under the lock.
                return super().create_exclusive(rel, data)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        fsync_dir(os.path.dirname(path))
        return True

    @contextlib.contextmanager
    def _commit_lock(self) -> Iterator[None]:
        """An exclusive advisory lock on the dataset, held across processes (the
        kernel drops it if the holder dies, so a killed writer never wedges it)."""
        import fcntl

        fd = os.open(self.full(LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def list_info(self, rel: str) -> list[FileInfo]:
        out = []
        try:
            with os.scandir(self.full(rel)) as entries:
                for entry in entries:
                    with contextlib.suppress(FileNotFoundError):
                        st = entry.stat(follow_symlinks=False)
                        out.append(FileInfo(entry.name, st.st_size, st.st_mtime))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(out)

    def list_stamped(
        self, rel: str, pick: Callable[[list[str]], Collection[str]]
    ) -> tuple[list[str], list[FileInfo]]:
        names = self.list_dir(rel)
        infos = []
        for name in pick(names):
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(f"{self.full(rel)}/{name}", follow_symlinks=False)
                infos.append(FileInfo(name, st.st_size, st.st_mtime))
        return names, infos

    def sync_dir(self, rel: str) -> None:
        fsync_dir(self.full(rel))

    def remove(self, rels: Sequence[str]) -> None:
        for rel in rels:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.full(rel))


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    return "special file"


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


# A part's pages are handed to the disk every this many bytes, while the writer
# goes on producing (see _LocalSink.write).
_WRITEBACK_STEP = 256 << 10


def _writeback_call() -> Callable[[int, int, int], object] | None:
    """``sync_file_range(fd, offset, nbytes, SYNC_FILE_RANGE_WRITE)`` from the C
    library, or ``None`` where there is none (not Linux, no libc)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int
    return functools.partial(_start_writeback, call)


def _start_writeback(call: Any, fd: int, offset: int, nbytes: int) -> object:
    return call(fd, offset, nbytes, 2)  # 2: SYNC_FILE_RANGE_WRITE, start and return


_writeback: Callable[[int, int, int], object] | None = None
_writeback_known = False


class _LocalSink:
    """A part being written: a temp file, made durable and renamed on commit.

    Its pages are handed to the disk as they are written (Linux'
    ``sync_file_range``, which starts writeback and returns), so the ``fsync``
    on commit mostly finds them written already: the disk works while the
    writer deals records, instead of all at the end. Durability still rests on
    the ``fsync`` alone.
    """

    def __init__(self, path: str, tmp: str, buffer_size: int) -> None:
        global _writeback, _writeback_known
        if not _writeback_known:
            _writeback, _writeback_known = _writeback_call(), True
        self._path = path
        self._tmp = tmp
        self._file = open(tmp, "wb", buffering=buffer_size)  # noqa: SIM115
        self._synced = 0  # bytes handed to the disk so far
        if _writeback is None:
            self.write = self._file.write  # type: ignore[method-assign]

    def write(self, data: Any, /) -> int:
        n = self._file.write(data)
        end = self._file.tell()
        if _writeback is not None and end - self._synced >= _WRITEBACK_STEP:
            self._file.flush()
            _writeback(self._file.fileno(), self._synced, end - self._synced)
            self._synced = end
        return n

    def commit(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._tmp, self._path)

    def abort(self) -> None:
        """Remove the temp file (even when closing it fails on a full disk)."""
        discard_file(self._file, self._tmp)

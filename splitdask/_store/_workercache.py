"""A private part cache that the DataLoader workers of one pass share, then remove.

Workers of a ``SplitIterableDataset`` read the same window of bins; without a cache
each fetches every part of it. With no ``cache_dir`` configured, the workers of one
pass join a temporary cache named after their parent process and the pass, so the
entry locks make each part one download for all of them; the last worker to leave
removes it, and a cache whose parent died is removed by the next one made.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile

from splitdask._store._cache import PartCache

__all__ = ["WorkerCache"]

_PREFIX = "splitdask-workers-"
_USERS = ".users.lock"


class WorkerCache:
    """Joined on creation (a shared ``flock`` on the users file); :meth:`leave` drops
    it and removes the directory if no other worker holds it."""

    def __init__(self, name: str, limit: int) -> None:
        _sweep()
        self.directory = os.path.join(tempfile.gettempdir(), f"{_PREFIX}{os.getppid()}-{name}")
        os.makedirs(self.directory, exist_ok=True)
        self.cache = PartCache(self.directory, limit)
        self._fd: int | None = os.open(
            os.path.join(self.directory, _USERS), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        fcntl.flock(self._fd, fcntl.LOCK_SH)

    def leave(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another worker still reads from it
            shutil.rmtree(self.directory, ignore_errors=True)
        finally:
            os.close(fd)


def _sweep() -> None:
    """Remove worker caches whose parent process is gone (a killed training run)."""
    tmp = tempfile.gettempdir()
    with contextlib.suppress(OSError), os.scandir(tmp) as it:
        for e in it:
            if not e.name.startswith(_PREFIX):
                continue
            pid = e.name[len(_PREFIX) :].split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(e.path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

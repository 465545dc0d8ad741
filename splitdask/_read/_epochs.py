"""What the training adapters share between processes and read with: an epoch
clock that DataLoader workers agree on, and a reader of bin-space keys.

No torch here: :mod:`splitdask.torch` passes in who the caller is.
"""

from __future__ import annotations

import itertools
import multiprocessing
import multiprocessing.sharedctypes
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.context import get_spawning_popen
from typing import Any

import numpy as np

from splitdask._dataset._index import IntArray
from splitdask._read._bins import BinData, load_parts
from splitdask._read._records import RecordReader
from splitdask.errors import ResumeStateError

__all__ = ["EpochClock", "KeyReader", "resume_point"]

_TOKEN, _CURRENT, _NEXT, _HAS_NEXT, _VERSION, _NEXT_VERSION, _FIXED_FOR = range(7)
_NO_VERSION = -1  # a slot's "not fixed"; 0 is a version of None (a splitdataloader dataset)

Pick = Callable[[], int | None]
"""Which version a starting epoch reads (``None``: a dataset without versions)."""


def _code(version: int | None) -> int:
    return 0 if version is None else version


def _decode(code: int) -> int | None:
    return None if code <= 0 else int(code)


class EpochClock:
    """The epoch an ``iter()`` runs, agreed on by the main process and its workers.

    Persistent DataLoader workers never see a ``set_epoch`` made in the main process
    on their copy of the dataset, and fresh workers are copies of a main object that
    never iterated. So the epoch lives in a few shared integers: the first ``iter()``
    of a DataLoader pass (identified by ``token``, the same for all its workers)
    starts the next epoch (or the one ``set_epoch`` asked for), later ``iter()`` calls
    with that token join it, and the main process reads which epoch is running.

    It is shared with processes that are started with the dataset (fork or spawn);
    a copy pickled any other way gets a fresh clock of its own.
    """

    def __init__(self, first: int = 0) -> None:
        ctx = multiprocessing.get_context("spawn")  # its locks also work under fork
        self._lock: Any = ctx.Lock()
        self._arr: Any = multiprocessing.sharedctypes.RawArray("q", 7)
        self._arr[_CURRENT] = -1
        self._arr[_VERSION] = self._arr[_NEXT_VERSION] = _NO_VERSION
        self.set_next(first)

    def __getstate__(self) -> dict[str, Any]:
        if get_spawning_popen() is None:  # not starting a process: a private clock
            with self._lock:
                fixed = (int(self._arr[_FIXED_FOR]), int(self._arr[_NEXT_VERSION]))
            return {"current": self.current, "next": self.next, "fixed": fixed}
        return {"lock": self._lock, "arr": self._arr}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "arr" in state:
            self._lock, self._arr = state["lock"], state["arr"]
        else:
            self.__init__(state["next"])  # type: ignore[misc]
            self._arr[_FIXED_FOR], self._arr[_NEXT_VERSION] = state.get("fixed", (0, -1))

    @property
    def current(self) -> int:
        """The epoch running (or last run), ``-1`` before the first."""
        return int(self._arr[_CURRENT])

    @property
    def next(self) -> int:
        """The epoch the next DataLoader pass will run."""
        with self._lock:
            return self._next()

    def _next(self) -> int:
        arr = self._arr
        return int(arr[_NEXT] if arr[_HAS_NEXT] else arr[_CURRENT] + 1)

    @property
    def version(self) -> int | None:
        """The dataset version of the epoch running (or last run)."""
        return _decode(self._arr[_VERSION])

    def set_next(self, epoch: int) -> None:
        """Make ``epoch`` the next (its version fixed if it was, else at its start)."""
        with self._lock:
            self._arr[_NEXT] = epoch
            self._arr[_HAS_NEXT] = 1

    def fix_next(self, pick: Pick, force: bool = False) -> int | None:
        """The version of the next epoch: the one already fixed for it, else (or with
        ``force``) ``pick()``'s, fixed now. The next epoch stays what it was."""
        with self._lock:
            arr, epoch = self._arr, self._next()
            if force or arr[_FIXED_FOR] != epoch or arr[_NEXT_VERSION] == _NO_VERSION:
                arr[_NEXT_VERSION], arr[_FIXED_FOR] = _code(pick()), epoch
            return _decode(arr[_NEXT_VERSION])

    def peek(self, token: int) -> int:
        """The epoch :meth:`claim` would give the pass ``token``, claiming nothing."""
        with self._lock:
            arr = self._arr
            if arr[_CURRENT] >= 0 and arr[_TOKEN] == token and not arr[_HAS_NEXT]:
                return int(arr[_CURRENT])
            return self._next()

    def claim(self, token: int, pick: Pick = lambda: None) -> tuple[int, int | None]:
        """The epoch of the pass ``token`` and its version (a new pass starts the next
        epoch, on the version fixed for it, else on ``pick()``'s)."""
        with self._lock:
            arr = self._arr
            if arr[_CURRENT] >= 0 and arr[_TOKEN] == token and not arr[_HAS_NEXT]:
                return int(arr[_CURRENT]), _decode(arr[_VERSION])
            epoch = self._next()
            version = arr[_NEXT_VERSION] if arr[_FIXED_FOR] == epoch else _NO_VERSION
            if version == _NO_VERSION:
                version = _code(pick())
            arr[_TOKEN], arr[_CURRENT], arr[_HAS_NEXT] = token, epoch, 0
            arr[_VERSION], arr[_NEXT_VERSION] = version, _NO_VERSION
            return epoch, _decode(version)


def resume_point(
    state: Mapping[str, Any], expected: Mapping[str, Any], num_records: int
) -> tuple[int, tuple[tuple[int, int], ...]]:
    """The epoch of a resume state and the spans of its order still to run, once
    every key of ``expected`` matches the state's.

    Raises
    ------
    ResumeStateError
        Naming the first key that differs, or if the state is damaged.
    """
    for key, value in expected.items():
        if state.get(key) != value:
            raise ResumeStateError(
                f"this state was saved for another {key}: {state.get(key)!r}, but this "
                f"dataset has {value!r}; a state only resumes the same dataset "
                "with the same shuffle, seed and window"
            )
    flat: Any = state.get("remaining")
    epoch: Any = state.get("epoch")
    if not (
        type(epoch) is int
        and epoch >= 0
        and isinstance(flat, list)
        and not len(flat) % 2
        and all(type(x) is int and 0 <= x <= num_records for x in flat)
    ):
        raise ResumeStateError(f"damaged SplitIterableDataset state: {str(state)[:200]}")
    return epoch, tuple(zip(flat[::2], flat[1::2], strict=True))


class KeyReader:
    """Records by bin-space key.

    Locally (and for a ``"global"`` shuffle) records are read where they lie, each
    checked as ``loader[i]`` checks it. From a remote store the parts a chunk touches
    are fetched whole and kept until no chunk in hand or ahead touches them: a plan
    visits a window's parts together, so each part is fetched once per pass of a
    worker. :meth:`read_chunks` fetches the parts of later chunks ahead, within
    ``ahead_bytes`` of parts held or in flight (by default twice the store's
    in-flight budget: a window in hand and the next one coming).
    """

    def __init__(
        self, reader: RecordReader, whole_parts: bool, ahead_bytes: int | None = None
    ) -> None:
        self.reader = reader
        self.locator = reader.snapshot.locator
        self.whole = whole_parts and not reader.store.is_local
        net = reader.store.net
        if ahead_bytes is None:
            ahead_bytes = 0 if net is None else 2 * net.inflight_bytes
        self.ahead_bytes = ahead_bytes
        self._held: dict[int, BinData] = {}  # one part each
        self._pending: dict[int, Future[BinData]] = {}

    def read(self, keys: IntArray) -> list[Any]:
        pids, local = self.locator.locate_keys(keys)
        if not self.whole:  # mapped or by range, every record checked (C loops locally)
            return self.reader.records_at(pids, local)
        self._hold(np.unique(pids).tolist())
        return self._take(pids, local)

    def read_chunks(self, chunks: Iterable[IntArray]) -> Iterator[list[Any]]:
        """The records of each chunk of keys, in turn.

        From a remote store, the parts of the chunks ahead are fetched (whole, by a
        pool of threads) while the caller consumes the chunk in hand, as long as the
        parts held and in flight stay within ``ahead_bytes``. A first chunk whose parts
        still to come hold more than four chunks is read by range: the first sample
        waits for a few round trips, not for a window of parts.
        """
        if not self.whole:
            yield from map(self.read, chunks)
            return
        src = iter(chunks)
        look: deque[tuple[IntArray, IntArray, list[int]]] = deque()
        with ThreadPoolExecutor(_FETCHERS) as pool:
            try:
                first = True
                while True:
                    while self._bytes_in_hand() < self.ahead_bytes or not look:
                        keys = next(src, None)
                        if keys is None:
                            break
                        pids, local = self.locator.locate_keys(keys)
                        need = np.unique(pids).tolist()
                        look.append((pids, local, need))
                        self._fetch_ahead(pool, [p for p in need if p not in self._held])
                    if not look:
                        return
                    pids, local, need = look.popleft()
                    if first and self._slow_to_hold(pids):
                        yield self.reader.records_at(pids, local)  # by range
                    else:
                        later = {p for _, _, n in look for p in n}
                        self._hold(need, keep=later)
                        yield self._take(pids, local)
                    first = False
            finally:
                for fut in self._pending.values():
                    fut.cancel()

    def _fetch_ahead(self, pool: ThreadPoolExecutor, pids: list[int]) -> None:
        snap = self.reader.snapshot
        for p in pids:
            if p not in self._pending:
                self._pending[p] = pool.submit(
                    load_parts, snap.store, [snap.parts[p]], snap.generation
                )

    def _slow_to_hold(self, pids: IntArray) -> bool:
        """Whether a first chunk (records of parts ``pids``) is better read by range
        than waited for: its parts not in yet hold more than four chunks, and reading
        its records by range would fetch under a quarter of that (records far apart
        in their parts; near ones merge into most of the part, as good as waiting)."""
        net, parts = self.reader.store.net, self.reader.snapshot.parts
        if net is None:
            return False
        missing = ranged = 0
        uniq, counts = np.unique(pids, return_counts=True)
        for p, w in zip(uniq.tolist(), counts.tolist(), strict=True):
            if p in self._held or (p in self._pending and self._pending[p].done()):
                continue
            part = parts[p]
            missing += part.size
            near = part.size < w * net.gap_bytes  # gaps under the merge threshold
            ranged += part.size if near else w * (part.size // max(1, part.count) + 24)
        return missing > 4 * net.chunk_bytes and 4 * ranged < missing

    def _bytes_in_hand(self) -> int:
        parts = self.reader.snapshot.parts
        return sum(parts[p].size for p in (*self._held, *self._pending))

    def _take(self, pids: IntArray, local: IntArray) -> list[Any]:
        """Records ``local[k]`` of held parts ``pids[k]``, in that order."""
        # Slice part by part with map (the loop stays in C), then undo the sort.
        by_part = np.argsort(pids, kind="stable")
        sp, sl = pids[by_part], local[by_part]
        cuts = [0, *(np.flatnonzero(np.diff(sp)) + 1).tolist(), len(sp)]
        got: list[Any] = []
        for a, b in itertools.pairwise(cuts):
            got += self._held[int(sp[a])].take(0, sl[a:b])  # checked whole by load_parts
        if len(cuts) == 2 and np.array_equal(by_part, np.arange(len(by_part))):
            return got
        where = np.empty_like(by_part)
        where[by_part] = np.arange(len(by_part))
        return list(map(got.__getitem__, where.tolist()))

    def _hold(self, need: list[int], keep: set[int] | frozenset[int] = frozenset()) -> None:
        """Hold the parts ``need`` whole (from the read-ahead, or fetched now); drop the
        held ones neither ``need`` nor ``keep`` names."""
        wanted = set(need) | keep
        for pid in [p for p in self._held if p not in wanted]:
            self._held.pop(pid).release()
        for pid in need:
            fut = self._pending.pop(pid, None)
            if fut is not None:
                self._held[pid] = fut.result()
        todo = [p for p in need if p not in self._held]
        if todo:
            snap = self.reader.snapshot
            loaded = load_parts(snap.store, [snap.parts[p] for p in todo], snap.generation)
            self._held.update(zip(todo, loaded.split(), strict=True))

    def close(self) -> None:
        held, self._held = self._held, {}
        for data in held.values():
            data.release()
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if fut.cancel() or fut.exception() is not None:
                continue
            fut.result().release()


_FETCHERS = 16
"""Parts a :class:`KeyReader` fetches at once (threads waiting on the store)."""

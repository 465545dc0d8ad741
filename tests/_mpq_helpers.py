"""Generator functions and subprocess scenarios for ``test_mpq.py``.

They live in their own importable module so that workers started with ``spawn``
or ``forkserver`` can unpickle them by name (``tests/`` is on ``sys.path`` under
pytest, and children inherit ``sys.path``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from splitdask.mpq import MpQItr, WorkerDiedError, get_worker_info

BIG = 512 * 1024  # bytes: above the default shm threshold (256 KiB)


class Pair(NamedTuple):
    image: Any
    label: Any


def count(n: int, start: int = 0) -> Iterator[int]:
    yield from range(start, start + n)


def echo_kwargs(**kwargs: Any) -> Iterator[dict[str, Any]]:
    yield kwargs


def pid_then_count() -> Iterator[int]:
    """First item: the worker's pid; then 0, 1, 2, ... forever."""
    yield os.getpid()
    i = 0
    while True:
        yield i
        i += 1


def fail_after(n: int) -> Iterator[int]:
    yield from range(n)
    raise_value_error_in_child(n)


def raise_value_error_in_child(n: int) -> None:
    raise ValueError(f"generator failed after {n} items")


class Unpicklable(Exception):
    """Pickles, but cannot be rebuilt: its ``__init__`` needs two arguments."""

    def __init__(self, what: str, code: int) -> None:
        super().__init__(f"{what} ({code})")
        self.code = code


def fail_unpicklable(n: int) -> Iterator[int]:
    yield from range(n)
    raise Unpicklable("custom failure", 7)


class HoldsLock(Exception):
    """Cannot even be pickled: it holds a lock."""

    def __init__(self) -> None:
        super().__init__("holds a lock")
        self.lock = threading.Lock()


def fail_holds_lock(n: int) -> Iterator[int]:
    yield from range(n)
    raise HoldsLock()


def raise_stop_iteration() -> Iterator[int]:
    # Not a generator: StopIteration escapes from the call itself.
    return iter([next(iter([]))])


def call_sys_exit(n: int) -> Iterator[int]:
    yield from range(n)
    sys.exit(4)


def yield_unpicklable(n: int) -> Iterator[Any]:
    yield from range(n)
    yield threading.Lock()


def exit_after(n: int, code: int) -> Iterator[int]:
    yield from range(n)
    os._exit(code)


def blocked_after_first(marker: str | None = None) -> Iterator[int]:
    """Yield the pid, then block forever; write ``marker`` in ``finally``."""
    try:
        yield os.getpid()
        threading.Event().wait()
    finally:
        if marker is not None:
            Path(marker).write_text("finally ran")


def never_yields() -> Iterator[int]:
    threading.Event().wait()
    yield 0


def lockstep(n: int, turn: Any, cond: Any) -> Iterator[tuple[int, int, int]]:
    """Yield (worker id, x, seed) for this worker's share of range(n), x in global order.

    Worker ``x % num_workers`` may only produce ``x`` after ``x - 1`` was produced, and
    it moves the turn on only when it runs again, which needs a credit, which needs
    the parent to have consumed one of its items. A parent that read one worker
    until it ran dry would deadlock here.
    """
    info = get_worker_info()
    assert info is not None
    for x in info.shard(range(n)):
        with cond:
            if not cond.wait_for(lambda x=x: turn.value == x, timeout=20):
                raise TimeoutError(f"worker {info.id} never got turn {x}")
        yield info.id, x, info.seed
        with cond:
            turn.value = x + 1
            cond.notify_all()


def worker_fails(n: int, bad_worker: int, how: str) -> Iterator[tuple[int, int]]:
    """Each worker yields (id, i); worker ``bad_worker`` fails after ``n`` items."""
    info = get_worker_info()
    assert info is not None
    i = 0
    while True:
        if info.id == bad_worker and i == n:
            if how == "raise":
                raise KeyError(f"worker {info.id} failed")
            os._exit(5)
        yield info.id, i
        i += 1


def arrays(n: int) -> Iterator[Any]:
    """Items mixing big and small arrays in every supported container."""
    rng = np.random.default_rng(0)
    for i in range(n):
        big = np.full(BIG // 8, i, dtype=np.float64)
        yield {
            "big": big,
            "small": np.arange(10) + i,
            "fortran": np.asfortranarray(rng.random((300, 400))),
            "strided": np.arange(400_000, dtype=np.int32)[::2] + i,
            "record": np.zeros(50_000, dtype=[("a", "<i4"), ("b", "<f8")]),
            "nested": [(big * 2, "label", i), Pair(np.ones((256, 512), np.uint8) * i, i)],
            "objects": np.array([{"i": i}] * 1000, dtype=object),
        }


def sized_arrays(sizes: list[int]) -> Iterator[np.ndarray[Any, Any]]:
    """Item k: ``sizes[k]`` bytes, every byte equal to ``k % 251``."""
    for k, size in enumerate(sizes):
        yield np.full(size, k % 251, dtype=np.uint8)


def with_loader(loader: Any) -> Iterator[tuple[int, bytes, int]]:
    """Yield (index, record, pid) for this worker's share of the loader's records."""
    info = get_worker_info()
    assert info is not None
    for i in info.shard(range(len(loader))):
        yield i, loader[i], os.getpid()


def big_batches(n: int, nbytes: int) -> Iterator[np.ndarray[Any, Any]]:
    for i in range(n):
        yield np.full(nbytes, i % 256, dtype=np.uint8)


# ------------------------------------------------------------------ scenarios
# Run as ``python -c "import _mpq_helpers as h; h.scenario_X(method)"``.


def scenario_interrupt(method: str, where: str) -> None:
    """Print the worker pid, then block (in ``next()`` or in the loop body) until SIGINT."""
    opts = MpQItr.configure(start_method=method, queue_size=2)
    for item in opts(blocked_then_array):
        if isinstance(item, int):
            print(f"READY {item}", flush=True)
            if where == "body":
                sys.stdin.readline()  # interrupted by SIGINT


def blocked_then_array() -> Iterator[Any]:
    yield np.ones(BIG, dtype=np.uint8)  # the pool is in use before the pid is known
    yield os.getpid()
    threading.Event().wait()


def scenario_parent_killed(method: str) -> None:
    """Print the worker pid and block in the loop body; the test SIGKILLs us."""
    opts = MpQItr.configure(start_method=method, queue_size=2)
    for item in opts(pid_then_count):
        print(f"READY {item}", flush=True)
        sys.stdin.readline()


def scenario_everything(method: str) -> None:
    """Every way a run can end, in one process; stderr must stay free of leak warnings."""
    opts = MpQItr.configure(start_method=method, queue_size=4)
    assert sum(1 for _ in opts(arrays, 3)) == 3
    for _ in opts(arrays, 50):
        break
    with contextlib.suppress(ValueError):
        list(opts(fail_after, 2))
    run = iter(opts(pid_then_count))
    os.kill(next(run), 9)
    with contextlib.suppress(WorkerDiedError):
        list(run)
    assert run.closed
    dropped = iter(opts(arrays, 50))
    next(dropped)
    del dropped
    kept = iter(opts(big_batches, 100, 2 << 20))
    next(kept)  # still alive at exit: the finalizer cleans up
    print("DONE", flush=True)

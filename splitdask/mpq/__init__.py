"""A prefetching iterator that runs a generator in worker processes.

``MpQItr(generator_fn, *args, **kwargs)`` calls ``generator_fn(*args, **kwargs)``
in one or more child processes and hands its items to the parent through a
bounded pipeline, so loading and preprocessing overlap with the consumer.

What it guarantees (see ``docs/mpq.md`` for the full contract):

* An exception in a worker is raised in the parent at the point of the stream
  where it happened, after every item before it, with the worker's traceback.
* A worker that dies (signal, ``os._exit``, OOM killer) is reported with its exit
  code as soon as its death is seen: the parent never waits forever.
* Leaving the loop, ``close()``, a ``with`` block, ``KeyboardInterrupt`` and
  garbage collection stop and reap every worker; the shared-memory pool is unlinked.
* It works under the ``fork``, ``spawn`` and ``forkserver`` start methods.

Wire protocol, per worker (no locks or semaphores are shared between processes,
so a worker killed at any instant cannot leave the parent blocked):

* a *data* pipe, worker -> parent. A message is either one frame (a pickle of
  ``(tag, payload)``, which starts with byte ``0x80``) or a batch: ``b"B"``
  followed by ``[u32 length][frame]...``. A feeder thread in the worker sends
  whatever frames are pending as one message, so small items are batched exactly
  when the consumer is behind and sent one by one when it is waiting.
* a *control* pipe, parent -> worker: one byte per consumed item. ``0x01`` gives
  a credit back; ``0x02`` also frees the oldest shared-memory allocation of that
  worker. End of file means "stop". A worker never has more than its credit of
  items in flight, which is what bounds the queue.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import multiprocessing
import multiprocessing.connection
import os
import pickle
import random
import signal
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from multiprocessing.shared_memory import SharedMemory
from types import FrameType, TracebackType
from typing import Any, Generic, ParamSpec, TypeVar

import numpy as np

from splitdask.errors import (
    MpQItrError,
    MpQItrTimeoutError,
    RemoteTraceback,
    WorkerDiedError,
)
from splitdask.mpq import _shm, _wire

__all__ = [
    "MpQItr",
    "MpQItrError",
    "MpQItrTimeoutError",
    "MpQOptions",
    "MpQRun",
    "RemoteTraceback",
    "WorkerDiedError",
    "WorkerInfo",
    "get_worker_info",
]

T = TypeVar("T")
U = TypeVar("U")
P = ParamSpec("P")

_KIB = 1 << 10
_MIB = 1 << 20

# How often a waiting worker checks that its parent is still alive.
_PARENT_POLL = 0.5
# Stopping: grace for SIGTERM, then for SIGKILL (seconds). Their sum stays < 5.
_TERM_GRACE = 2.0
_KILL_GRACE = 2.0
_RESEND = 0.2


# ---------------------------------------------------------------- worker info


@dataclass(frozen=True)
class WorkerInfo:
    """Who the current worker is; see :func:`get_worker_info`.

    Attributes
    ----------
    id : int
        This worker's index, ``0 <= id < num_workers``.
    num_workers : int
        Number of workers of the run.
    seed : int
        This worker's seed: the run's base seed plus ``id``. Python's ``random``
        and NumPy's legacy global generator are seeded with it when the worker
        starts, so forked workers do not share random streams.
    start_method : str
        ``"fork"``, ``"spawn"`` or ``"forkserver"``.
    """

    id: int
    num_workers: int
    seed: int
    start_method: str

    def shard(self, iterable: Iterable[U]) -> Iterator[U]:
        """Yield this worker's share of ``iterable``: items ``id, id + num_workers, ...``.

        Parameters
        ----------
        iterable
            Items that every worker enumerates in the same order.

        Returns
        -------
        Iterator
            Every ``num_workers``-th item, starting at ``id``.
        """
        return itertools.islice(iterable, self.id, None, self.num_workers)


_WORKER_INFO: WorkerInfo | None = None


def get_worker_info() -> WorkerInfo | None:
    """Describe the current :class:`MpQItr` worker, or return ``None`` outside one.

    Call it inside ``generator_fn`` to take a share of the work when
    ``num_workers > 1``; every worker calls ``generator_fn`` with the same
    arguments.

    Returns
    -------
    WorkerInfo or None
        ``None`` in a process that is not an :class:`MpQItr` worker.

    Examples
    --------
    >>> def records(paths):
    ...     info = get_worker_info()
    ...     mine = paths if info is None else info.shard(paths)
    ...     for path in mine:
    ...         yield load(path)  # doctest: +SKIP
    """
    return _WORKER_INFO


# -------------------------------------------------------------------- options


@dataclass(frozen=True)
class MpQOptions:
    """Settings of an :class:`MpQItr`; calling it builds one.

    Get one from :meth:`MpQItr.configure` (or construct it directly). Options
    never travel through ``MpQItr(...)``'s own arguments, which are passed
    untouched to ``generator_fn``, so no option name can collide with a keyword
    argument of the generator.

    Parameters
    ----------
    queue_size : int
        Items produced but not yet consumed, over all workers (each worker gets
        ``ceil(queue_size / num_workers)``). Default 16.
    start_method : str or None
        ``"fork"``, ``"spawn"`` or ``"forkserver"``; ``None`` uses
        multiprocessing's default for the platform.
    num_workers : int
        Worker processes; each runs ``generator_fn(*args, **kwargs)`` and should
        take its share via :func:`get_worker_info`. Default 1.
    timeout : float or None
        Longest wait, in seconds, for the next item before
        :class:`MpQItrTimeoutError`; ``None`` waits as long as the workers live.
    shm_threshold : int or None
        NumPy arrays of at least this many bytes (in the item itself or inside
        its tuples, lists, dicts and named tuples) travel through shared memory
        instead of the pipe. ``None`` disables shared memory. Default 256 KiB.
    shm_pool_bytes : int
        Size of the shared-memory pool of one run, split evenly between workers.
        Pages are only committed when used. Default 512 MiB; shrunk to half of
        the free space of ``/dev/shm`` if that is smaller.
    seed : int or None
        Base seed for the workers (see :class:`WorkerInfo`); ``None`` draws it
        from Python's ``random`` in the parent at every ``iter()``.
    """

    queue_size: int = 16
    start_method: str | None = None
    num_workers: int = 1
    timeout: float | None = None
    shm_threshold: int | None = 256 * _KIB
    shm_pool_bytes: int = 512 * _MIB
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.queue_size <= 65536:
            raise ValueError(f"queue_size must be in 1..65536, got {self.queue_size}")
        if not 1 <= self.num_workers <= 1024:
            raise ValueError(f"num_workers must be in 1..1024, got {self.num_workers}")
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"timeout must be positive or None, got {self.timeout}")
        if self.shm_threshold is not None and self.shm_threshold < 1:
            raise ValueError(f"shm_threshold must be >= 1 or None, got {self.shm_threshold}")
        if self.shm_pool_bytes < 0:
            raise ValueError(f"shm_pool_bytes must be >= 0, got {self.shm_pool_bytes}")
        if self.start_method is not None:
            methods = multiprocessing.get_all_start_methods()
            if self.start_method not in methods:
                raise ValueError(
                    f"start_method {self.start_method!r} is not available here; "
                    f"choose one of {methods}"
                )

    def replace(self, **changes: Any) -> MpQOptions:
        """Return a copy with some options changed (same names as the fields)."""
        return replace(self, **changes)

    def __call__(
        self, generator_fn: Callable[P, Iterable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> MpQItr[T]:
        """Build an :class:`MpQItr` with these options; arguments go to ``generator_fn``."""
        itr = MpQItr(generator_fn, *args, **kwargs)
        itr._options = self
        return itr


# ------------------------------------------------------------------ iterable


class MpQItr(Generic[T]):
    """Run ``generator_fn(*args, **kwargs)`` in worker processes and iterate its items.

    Each ``iter()`` starts a fresh run (an :class:`MpQRun`) with its own workers;
    runs of the same or different ``MpQItr`` objects are independent.

    Parameters
    ----------
    generator_fn
        A callable returning an iterable: usually a generator function. Under
        ``spawn`` and ``forkserver`` it, ``args`` and ``kwargs`` are pickled, so
        it must be defined at module level of an importable module.
    *args, **kwargs
        Passed unchanged to ``generator_fn``. ``generator_fn`` is positional-only,
        so even a keyword argument named ``generator_fn`` reaches the generator.

    See Also
    --------
    MpQItr.configure : set queue size, start method, workers, timeout, shared memory.

    Examples
    --------
    >>> for batch in MpQItr(batches, "train", batch_size=32):  # doctest: +SKIP
    ...     step(batch)
    >>> loader = MpQItr.configure(num_workers=2, start_method="spawn")
    >>> with loader(batches, "train", batch_size=32) as itr:  # doctest: +SKIP
    ...     for batch in itr:
    ...         step(batch)
    """

    _options: MpQOptions

    def __init__(
        self, generator_fn: Callable[P, Iterable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> None:
        if not callable(generator_fn):
            raise TypeError(f"generator_fn must be callable, got {generator_fn!r}")
        self._fn: Callable[..., Iterable[T]] = generator_fn
        self._args: tuple[Any, ...] = args
        self._kwargs: dict[str, Any] = kwargs
        self._options = MpQOptions()
        self._runs: weakref.WeakSet[MpQRun[T]] = weakref.WeakSet()

    @classmethod
    def configure(
        cls,
        *,
        queue_size: int = 16,
        start_method: str | None = None,
        num_workers: int = 1,
        timeout: float | None = None,
        shm_threshold: int | None = 256 * _KIB,
        shm_pool_bytes: int = 512 * _MIB,
        seed: int | None = None,
    ) -> MpQOptions:
        """Return an :class:`MpQOptions` that builds ``MpQItr`` objects with these settings.

        ``MpQItr.configure(num_workers=2)(fn, *args, **kwargs)`` is the configured
        form of ``MpQItr(fn, *args, **kwargs)``. The parameters are described in
        :class:`MpQOptions`.
        """
        return MpQOptions(
            queue_size=queue_size,
            start_method=start_method,
            num_workers=num_workers,
            timeout=timeout,
            shm_threshold=shm_threshold,
            shm_pool_bytes=shm_pool_bytes,
            seed=seed,
        )

    @property
    def options(self) -> MpQOptions:
        """The settings this iterable runs with."""
        return self._options

    def __iter__(self) -> MpQRun[T]:
        run = MpQRun(self._fn, self._args, self._kwargs, self._options)
        self._runs.add(run)
        return run

    def close(self) -> None:
        """Stop every run of this iterable that is still alive (idempotent)."""
        for run in list(self._runs):
            run.close()

    def __enter__(self) -> MpQItr[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        name = getattr(self._fn, "__qualname__", repr(self._fn))
        return f"MpQItr({name}, {self._options!r})"


# ---------------------------------------------------------- parent-side state


# Parent-side pipe ends of every live run of this process. A forked worker closes
# the copies it inherited, so that a pipe's only holders are the two intended
# processes and end-of-file means what it should.
_PARENT_SIDE: set[Connection] = set()
# Shared-memory pools of live runs: a forked worker unmaps the ones it inherited.
_PARENT_SHM: weakref.WeakSet[SharedMemory] = weakref.WeakSet()


@dataclass(eq=False)
class _Worker:
    index: int
    process: BaseProcess
    data: Connection  # parent reads
    control: Connection  # parent writes
    pid: int
    pending: bytearray = field(default_factory=bytearray)
    reader_open: bool = True
    exited: bool = False
    ready: bool = False
    finished: bool = False  # DONE or ERROR delivered
    delivered: int = 0


@dataclass(eq=False)
class _RunState:
    """Everything a run owns; shared with its finalizer (never refers to the run)."""

    owner_pid: int
    workers: list[_Worker] = field(default_factory=list)
    shm: SharedMemory | None = None
    shm_unlinked: bool = False
    closed: bool = False


def _unlink_shm(state: _RunState) -> None:
    if state.shm is not None and not state.shm_unlinked:
        state.shm_unlinked = True
        with contextlib.suppress(FileNotFoundError):
            state.shm.unlink()


def _shutdown(state: _RunState) -> None:
    """Stop and reap the workers, close the pipes, release shared memory. Idempotent."""
    if state.closed or state.owner_pid != os.getpid():
        return
    state.closed = True
    interrupted: BaseException | None = None
    workers = state.workers
    for w in workers:
        _PARENT_SIDE.discard(w.control)
        with contextlib.suppress(OSError):
            w.control.close()  # end of file: a waiting worker stops by itself
    # SIGTERM makes a worker raise inside the generator, so its finally blocks run.
    # It is sent again every _RESEND s: a signal that lands just before the worker
    # enters a blocking call only sets CPython's flag and wakes nothing, and the
    # next one interrupts the call so that the pending handler runs.
    deadline = time.monotonic() + _TERM_GRACE
    while True:
        alive = [w for w in workers if _alive(w.process)]
        for w in alive:
            if not w.finished:
                _signal(w.process, kill=False)
        left = deadline - time.monotonic()
        if not alive or left <= 0 or interrupted is not None:
            break
        try:
            multiprocessing.connection.wait([w.process.sentinel for w in alive], min(left, _RESEND))
        except BaseException as exc:  # a second Ctrl-C: finish cleaning, then raise it
            interrupted = exc
    alive = [w for w in workers if _alive(w.process)]
    for w in alive:
        _signal(w.process, kill=True)
    if alive:
        try:
            multiprocessing.connection.wait([w.process.sentinel for w in alive], _KILL_GRACE)
        except BaseException as exc:
            interrupted = interrupted or exc
    for w in workers:
        with contextlib.suppress(Exception):
            w.process.join(0.1)
            if w.process.exitcode is not None:
                w.process.close()
        _PARENT_SIDE.discard(w.data)
        with contextlib.suppress(OSError):
            w.data.close()
    # Workers are gone, so nobody can attach (and re-register) the segment now.
    if state.shm is not None:
        _PARENT_SHM.discard(state.shm)
        _unlink_shm(state)
        with contextlib.suppress(BufferError, OSError):
            state.shm.close()
    if interrupted is not None:
        raise interrupted


def _signal(process: BaseProcess, *, kill: bool) -> None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        if kill:
            process.kill()
        else:
            process.terminate()


def _alive(process: BaseProcess) -> bool:
    try:
        return process.is_alive()
    except ValueError:  # already closed
        return False


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "an unknown exit status"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        text = f"exit code {code} (killed by {name})"
        if -code == getattr(signal, "SIGKILL", None):
            text += "; the out-of-memory killer sends SIGKILL too"
        elif -code == getattr(signal, "SIGBUS", None):
            text += "; a full /dev/shm causes SIGBUS: lower shm_pool_bytes or shm_threshold=None"
        return text
    return f"exit code {code}"


def _shm_budget(requested: int) -> int:
    try:
        st = os.statvfs("/dev/shm")
    except (OSError, AttributeError):  # no /dev/shm (macOS) or no statvfs (Windows)
        return requested
    return min(requested, st.f_bavail * st.f_frsize // 2)


def _new_base_seed(options: MpQOptions) -> int:
    if options.seed is not None:
        return options.seed
    return random.getrandbits(63)


class MpQRun(Generic[T]):
    """One run of an :class:`MpQItr`: an iterator over the items of its workers.

    Obtained from ``iter(mpq_itr)``. Items of different workers are delivered in
    arrival order; the items of one worker keep their order. The run stops and
    reaps its workers when it is exhausted, fails, is closed, leaves a ``with``
    block, or is garbage collected (in CPython, a ``for`` loop that ``break`` s
    drops the last reference, so the workers stop right there).
    """

    def __init__(
        self,
        fn: Callable[..., Iterable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: MpQOptions,
    ) -> None:
        self._options = options
        self._state = state = _RunState(owner_pid=os.getpid())
        self._finalizer = weakref.finalize(self, _shutdown, state)
        self._frames: deque[tuple[_Worker, memoryview | None]] = deque()
        self._rotation = 0
        self._done = False
        self._delivered = 0
        self._shm_delivered = 0
        n = options.num_workers
        self._credits = -(-options.queue_size // n)
        self._flush_at = max(1, self._credits // 4)
        ctx: BaseContext = multiprocessing.get_context(options.start_method)
        self._start_method: str = ctx.get_start_method()
        try:
            slice_bytes = 0
            if options.shm_threshold is not None:
                pool = _shm_budget(options.shm_pool_bytes)
                slice_bytes = (pool // n) // _shm.ALIGN * _shm.ALIGN
                if slice_bytes >= max(options.shm_threshold, _shm.ALIGN):
                    try:
                        state.shm = SharedMemory(create=True, size=slice_bytes * n)
                    except OSError:  # no usable /dev/shm: everything goes through the pipes
                        slice_bytes = 0
                    else:
                        _PARENT_SHM.add(state.shm)
                else:
                    slice_bytes = 0
            base_seed = _new_base_seed(options)
            for i in range(n):
                self._start_worker(ctx, i, fn, args, kwargs, slice_bytes, base_seed)
        except BaseException:
            self._finalizer()
            raise

    def _start_worker(
        self,
        ctx: BaseContext,
        index: int,
        fn: Callable[..., Iterable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        slice_bytes: int,
        base_seed: int,
    ) -> None:
        opts = self._options
        shm = self._state.shm
        config = _WorkerConfig(
            info=WorkerInfo(
                id=index,
                num_workers=opts.num_workers,
                seed=(base_seed + index) % (1 << 64),
                start_method=self._start_method,
            ),
            credits=self._credits,
            shm_name=None if shm is None else shm.name,
            shm_offset=index * slice_bytes,
            shm_size=slice_bytes,
            shm_threshold=opts.shm_threshold if shm is not None else None,
        )
        data_r, data_w = ctx.Pipe(duplex=False)
        ctrl_r, ctrl_w = ctx.Pipe(duplex=False)
        _PARENT_SIDE.update((data_r, ctrl_w))
        name = getattr(fn, "__qualname__", "generator")
        process = ctx.Process(  # type: ignore[attr-defined]
            target=_worker_main,
            args=(fn, args, kwargs, config, data_w, ctrl_r),
            name=f"MpQItr-{name}-{index}",
            daemon=True,
        )
        try:
            process.start()
        except Exception as exc:
            for conn in (data_r, data_w, ctrl_r, ctrl_w):
                _PARENT_SIDE.discard(conn)
                conn.close()
            raise self._start_error(fn, exc) from exc
        finally:
            # The worker has its own copies now (fork, spawnv_passfds or SCM_RIGHTS).
            data_w.close()
            ctrl_r.close()
        assert process.pid is not None
        self._state.workers.append(_Worker(index, process, data_r, ctrl_w, process.pid))

    def _start_error(self, fn: Callable[..., Any], exc: Exception) -> MpQItrError:
        method = self._start_method
        if method == "fork":
            return MpQItrError(f"could not start an MpQItr worker: {exc!r}")
        try:
            pickle.dumps(fn)
        except Exception as fn_exc:
            return MpQItrError(
                f"generator_fn {fn!r} cannot be sent to a worker under the {method!r} "
                f"start method ({fn_exc}). Define it at module level of an importable "
                "module (not a lambda, a nested function or an interactive __main__), "
                "or use start_method='fork'."
            )
        return MpQItrError(
            f"the arguments of generator_fn {fn!r} cannot be sent to a worker under the "
            f"{method!r} start method: {exc}"
        )

    # -- iterator protocol

    def __iter__(self) -> MpQRun[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        try:
            return self._next()
        except BaseException:  # the end, an error, or Ctrl-C while waiting: stop the workers
            self._done = True
            self._finalizer()
            raise

    def close(self) -> None:
        """Stop and reap the workers and release shared memory (idempotent).

        Workers get ``SIGTERM`` (which runs the generator's ``finally`` blocks),
        then ``SIGKILL`` if they are still alive after 2 s; all is done in < 5 s.
        """
        self._done = True
        self._frames.clear()
        self._finalizer()

    def __enter__(self) -> MpQRun[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def worker_pids(self) -> tuple[int, ...]:
        """Process ids of this run's workers (also of those that have ended)."""
        return tuple(w.pid for w in self._state.workers)

    @property
    def items_delivered(self) -> int:
        """Items this run has returned so far."""
        return self._delivered

    @property
    def shm_items_delivered(self) -> int:
        """How many of them brought their arrays through shared memory."""
        return self._shm_delivered

    @property
    def closed(self) -> bool:
        """Whether the run's workers have been stopped and its resources released."""
        return self._state.closed

    # -- internals

    def _next(self) -> T:
        frames = self._frames
        while True:
            if not frames:
                if all(w.finished for w in self._state.workers):
                    raise StopIteration
                self._receive()
                continue
            worker, blob = frames.popleft()
            if blob is None:
                self._on_exit(worker)
                continue
            try:
                tag, payload = _wire.decode_frame(blob)
            except Exception as exc:
                raise MpQItrError(
                    f"an item from MpQItr worker {worker.index} could not be unpickled in "
                    f"the parent: {exc!r}",
                    worker_id=worker.index,
                ) from exc
            if tag == _wire.ITEM:
                self._consumed(worker, _wire.CREDIT)
                return payload  # type: ignore[no-any-return]
            if tag == _wire.SHM:
                item = self._copy_out(payload)
                self._consumed(worker, _wire.CREDIT_AND_FREE)
                return item  # type: ignore[no-any-return]
            if tag == _wire.READY:
                worker.ready = True
                self._maybe_unlink()
            elif tag == _wire.DONE:
                worker.finished = True
            elif tag == _wire.ERROR:
                worker.finished = True
                raise _wire.decode_error(worker.index, payload)

    def _consumed(self, worker: _Worker, code: bytes) -> None:
        worker.delivered += 1
        self._delivered += 1
        if code == _wire.CREDIT_AND_FREE:
            self._shm_delivered += 1
        worker.pending += code
        if len(worker.pending) >= self._flush_at:
            self._flush(worker)

    def _flush(self, worker: _Worker) -> None:
        if not worker.pending:
            return
        try:
            os.write(worker.control.fileno(), worker.pending)
        except OSError as exc:  # the worker is gone; its sentinel will tell how
            if exc.errno not in (errno.EPIPE, errno.EBADF):
                raise
        worker.pending.clear()

    def _maybe_unlink(self) -> None:
        # Once every worker has mapped the pool, its name is no longer needed:
        # unlinking now means nothing can leak even if this process is SIGKILLed.
        if all(w.ready or w.exited for w in self._state.workers):
            _unlink_shm(self._state)

    def _copy_out(self, payload: tuple[Any, list[int]]) -> Any:
        skeleton, offsets = payload
        shm = self._state.shm
        assert shm is not None
        assert shm.buf is not None  # closed only by _shutdown
        return _shm.rebuild(skeleton, shm.buf, offsets)

    def _receive(self) -> None:
        """Block until some worker sent a message or ended; queue what arrived."""
        workers = [w for w in self._state.workers if not w.finished]
        for w in workers:
            self._flush(w)
        waitables: list[Any] = []
        for w in workers:
            if w.reader_open:
                waitables.append(w.data)
            if not w.exited:
                waitables.append(w.process.sentinel)
        timeout = self._options.timeout
        ready = multiprocessing.connection.wait(waitables, timeout)
        if not ready:
            raise MpQItrTimeoutError(
                f"no item from the MpQItr workers within {timeout} s (workers are alive)"
            )
        ready_set = set(map(id, ready))
        n = len(workers)
        start = self._rotation % n
        self._rotation += 1
        for w in workers[start:] + workers[:start]:
            if w.reader_open and id(w.data) in ready_set:
                self._read_one(w)
            if not w.exited and id(w.process.sentinel) in ready_set:
                self._drain(w)
                w.exited = True
                w.process.join(1.0)
                self._frames.append((w, None))

    def _read_one(self, w: _Worker) -> None:
        try:
            msg = w.data.recv_bytes()
        except (EOFError, OSError):
            w.reader_open = False
            return
        self._split(w, msg)

    def _drain(self, w: _Worker) -> None:
        # The worker has exited: what it wrote is all in the pipe already.
        while w.reader_open:
            try:
                if not w.data.poll(0):
                    return
            except (EOFError, OSError):
                w.reader_open = False
                return
            self._read_one(w)

    def _split(self, w: _Worker, msg: bytes) -> None:
        self._frames.extend((w, frame) for frame in _wire.split_message(msg))

    def _on_exit(self, w: _Worker) -> None:
        if w.finished:
            return
        code = w.process.exitcode
        w.finished = True
        if not w.ready:
            where = "before it started running generator_fn"
            hint = (
                " Under 'spawn'/'forkserver' the worker must be able to import the module "
                "of generator_fn and unpickle its arguments; see the worker's stderr."
                if self._start_method != "fork"
                else ""
            )
        else:
            where = f"after delivering {w.delivered} items, before its generator finished"
            hint = ""
        raise WorkerDiedError(
            f"MpQItr worker {w.index} (pid {w.pid}) died with "
            f"{_describe_exit(code)} {where}.{hint}",
            worker_id=w.index,
            exitcode=code,
            pid=w.pid,
        )


# ------------------------------------------------------------- worker side


@dataclass(frozen=True)
class _WorkerConfig:
    info: WorkerInfo
    credits: int
    shm_name: str | None
    shm_offset: int
    shm_size: int
    shm_threshold: int | None


class _Stop(BaseException):
    """Raised in a worker to stop it: SIGTERM, end of the control pipe, parent gone."""


_STOPPING = False


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Only the first SIGTERM raises; the parent's repeats must not interrupt the
    # generator's finally blocks (SIGKILL follows if the worker takes too long).
    global _STOPPING
    if not _STOPPING:
        _STOPPING = True
        raise _Stop


class _Sender:
    """Feeder thread: sends the frames queued so far as one message."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._cond = threading.Condition(threading.Lock())
        self._pending: list[bytes] = []
        self._closing = False
        self.failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="MpQItr-feeder", daemon=True)
        self._thread.start()

    def put(self, frame: bytes) -> None:
        with self._cond:
            if self.failed is not None:
                raise _Stop
            self._pending.append(frame)
            if len(self._pending) == 1:
                self._cond.notify()

    def close(self) -> None:
        """Send everything queued, then end the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        # Process-directed signals must reach the main thread: a SIGTERM taken by
        # this thread would leave the main thread blocked and its handler unrun.
        if hasattr(signal, "pthread_sigmask"):  # POSIX
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        cond = self._cond
        while True:
            with cond:
                while not self._pending and not self._closing:
                    cond.wait()
                batch, self._pending = self._pending, []
            if not batch:
                return
            try:
                self._send(batch)
            except BaseException as exc:  # parent gone: the main thread sees it on put()
                self.failed = exc
                return

    def _send(self, frames: list[bytes]) -> None:
        send = self._conn.send_bytes
        for message in _wire.pack_frames(frames):
            send(message)


class _Control:
    """Worker's end of the control pipe: credits and shared-memory frees."""

    def __init__(self, conn: Connection, credits: int) -> None:
        self._conn = conn
        self._fd = conn.fileno()
        self.credits = credits
        self.freed = 0
        self._ppid = os.getppid()
        self._parent = multiprocessing.parent_process()

    def wait(self, timeout: float) -> None:
        """Take in what the parent sent, waiting up to ``timeout`` s; _Stop if it is gone."""
        if self._conn.poll(timeout):
            data = os.read(self._fd, 65536)
            if not data:
                raise _Stop
            self.credits += len(data)
            self.freed += data.count(_wire.CREDIT_AND_FREE)
        elif not self._parent_alive():
            raise _Stop

    def _parent_alive(self) -> bool:
        if os.getppid() != self._ppid:
            return False
        return self._parent is None or self._parent.is_alive()


class _Encoder:
    """Turns items into frames, placing big arrays in this worker's shared memory."""

    def __init__(self, config: _WorkerConfig, control: _Control) -> None:
        self._control = control
        self._threshold = config.shm_threshold
        self._shm: SharedMemory | None = None
        self._slots: _shm.Slots | None = None
        if config.shm_name is not None and config.shm_size > 0:
            self._shm = SharedMemory(name=config.shm_name)
            self._slots = _shm.Slots(config.shm_offset, config.shm_size)

    def encode(self, item: Any, index: int) -> bytes:
        frame: tuple[int, Any] = (_wire.ITEM, item)
        if self._slots is not None and self._threshold is not None:
            skeleton, arrays = _shm.extract(item, self._threshold)
            if arrays:
                offsets = self._place(arrays)
                if offsets is not None:
                    frame = (_wire.SHM, (skeleton, offsets))
        try:
            return _wire.encode_frame(*frame)
        except Exception as exc:
            raise MpQItrError(
                f"item {index} yielded by the generator could not be pickled: {exc!r}"
            ) from exc

    def _place(self, arrays: list[np.ndarray[Any, Any]]) -> list[int] | None:
        slots = self._slots
        shm = self._shm
        assert slots is not None
        assert shm is not None
        total = sum(_shm.footprint(arrays))
        if total > slots.size:
            return None  # too big for the pool: plain pickle
        control = self._control
        while True:
            if control.freed:
                slots.release(control.freed)
                control.freed = 0
            start = slots.alloc(total)
            if start is not None:
                break
            control.wait(_PARENT_POLL)
        assert shm.buf is not None
        return _shm.write_arrays(shm.buf, start, arrays)


def _close_inherited() -> None:
    # Under fork this process inherited the parent-side pipe ends and the pool
    # mappings of every live run: drop them, so EOF means what it should and a
    # finished run's pages are not kept alive by a later run's workers.
    for conn in list(_PARENT_SIDE):
        with contextlib.suppress(OSError):
            conn.close()
    _PARENT_SIDE.clear()
    for shm in list(_PARENT_SHM):
        with contextlib.suppress(BufferError, OSError):
            shm.close()
    _PARENT_SHM.clear()


def _worker_main(
    fn: Callable[..., Iterable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    config: _WorkerConfig,
    data: Connection,
    control_conn: Connection,
) -> None:
    """Body of a worker process."""
    global _WORKER_INFO
    _close_inherited()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, _on_sigterm)
    _WORKER_INFO = info = config.info
    random.seed(info.seed)
    # Deliberately the legacy global generator: code that uses np.random.* must not
    # get the same stream in every forked worker.
    np.random.seed(info.seed % (1 << 32))  # noqa: NPY002
    sender = _Sender(data)
    control = _Control(control_conn, config.credits)
    it: Iterator[Any] | None = None
    stopped = False
    try:
        try:
            encoder = _Encoder(config, control)
            sender.put(_wire.encode_frame(_wire.READY, os.getpid()))
            it = iter(fn(*args, **kwargs))
            index = 0
            while True:
                while control.credits <= 0:
                    control.wait(_PARENT_POLL)
                try:
                    item = next(it)
                except StopIteration:
                    break
                frame = encoder.encode(item, index)
                control.credits -= 1
                index += 1
                sender.put(frame)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            sender.put(_wire.encode_frame(_wire.DONE, index))
        except _Stop:
            stopped = True
        except BaseException as exc:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            sender.put(_wire.encode_error(exc))
        if stopped:
            close = getattr(it, "close", None)
            if close is not None:
                with contextlib.suppress(BaseException):
                    close()
        else:
            sender.close()
    except _Stop:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sender.failed is not None or stopped:
        # Nothing more can be delivered; skip waiting for the feeder thread.
        sys.stdout.flush()
        sys.stderr.flush()

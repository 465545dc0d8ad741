"""The parent side of a run: :class:`MpQRun` starts the workers and iterates their items.

The worker side is :mod:`._worker`; what travels between them is :mod:`._wire`;
stopping and reaping is :mod:`._lifecycle`. A run reads its settings through
:class:`RunOptions`, so this module does not depend on the public front
(:mod:`._itr`), which builds runs.
"""

from __future__ import annotations

import errno
import multiprocessing
import multiprocessing.connection
import os
import pickle
import random
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from multiprocessing.context import BaseContext
from multiprocessing.shared_memory import SharedMemory
from typing import Any, Generic, Protocol, TypeVar

from splitdask._util._closing import Closing
from splitdask.errors import MpQItrError, MpQItrTimeoutError, WorkerDiedError
from splitdask.mpq import _lifecycle, _shm, _wire, _worker
from splitdask.mpq._lifecycle import RunState, WorkerHandle
from splitdask.mpq._worker_info import WorkerInfo

T = TypeVar("T")


class RunOptions(Protocol):
    """The settings a run reads; :class:`~splitdask.mpq.MpQOptions` has them all."""

    @property
    def queue_size(self) -> int: ...
    @property
    def start_method(self) -> str | None: ...
    @property
    def num_workers(self) -> int: ...
    @property
    def timeout(self) -> float | None: ...
    @property
    def shm_threshold(self) -> int | None: ...
    @property
    def shm_pool_bytes(self) -> int: ...
    @property
    def seed(self) -> int | None: ...


def _shm_budget(requested: int) -> int:
    try:
        st = os.statvfs("/dev/shm")
    except (OSError, AttributeError):  # no /dev/shm (macOS) or no statvfs (Windows)
        return requested
    return min(requested, st.f_bavail * st.f_frsize // 2)


def _new_base_seed(options: RunOptions) -> int:
    if options.seed is not None:
        return options.seed
    return random.getrandbits(63)


def _create_pool(options: RunOptions) -> tuple[SharedMemory | None, int]:
    """Create the run's shared-memory pool; return it and each worker's slice size.

    ``(None, 0)`` when shared memory is off, the slices would be smaller than
    ``shm_threshold``, or no pool can be created (no usable ``/dev/shm``): then
    everything goes through the pipes.
    """
    if options.shm_threshold is None:
        return None, 0
    n = options.num_workers
    slice_bytes = (_shm_budget(options.shm_pool_bytes) // n) // _shm.ALIGN * _shm.ALIGN
    if slice_bytes < max(options.shm_threshold, _shm.ALIGN):
        return None, 0
    try:
        shm = SharedMemory(create=True, size=slice_bytes * n)
    except OSError:
        return None, 0
    _lifecycle.PARENT_SHM.add(shm)
    return shm, slice_bytes


def _start_worker(
    ctx: BaseContext,
    config: _worker.WorkerConfig,
    fn: Callable[..., Iterable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> WorkerHandle:
    """Start one worker process with fresh pipes; return the parent's handle on it."""
    index = config.info.id
    data_r, data_w = ctx.Pipe(duplex=False)
    ctrl_r, ctrl_w = ctx.Pipe(duplex=False)
    _lifecycle.PARENT_SIDE.update((data_r, ctrl_w))
    name = getattr(fn, "__qualname__", "generator")
    process = ctx.Process(  # type: ignore[attr-defined]
        target=_worker.worker_main,
        args=(fn, args, kwargs, config, data_w, ctrl_r),
        name=f"MpQItr-{name}-{index}",
        daemon=True,
    )
    try:
        process.start()
    except Exception as exc:
        for conn in (data_r, data_w, ctrl_r, ctrl_w):
            _lifecycle.PARENT_SIDE.discard(conn)
            conn.close()
        raise _start_error(config.info.start_method, fn, exc) from exc
    finally:
        # The worker has its own copies now (fork, spawnv_passfds or SCM_RIGHTS).
        data_w.close()
        ctrl_r.close()
    assert process.pid is not None
    return WorkerHandle(index, process, data_r, ctrl_w, process.pid)


def _start_error(method: str, fn: Callable[..., Any], exc: Exception) -> MpQItrError:
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


def _died_error(w: WorkerHandle, start_method: str) -> WorkerDiedError:
    code = w.process.exitcode
    if not w.ready:
        where = "before it started running generator_fn"
        hint = (
            " Under 'spawn'/'forkserver' the worker imports your main module again: "
            "the likely cause is a script that starts MpQItr without an "
            '`if __name__ == "__main__":` guard. Otherwise the worker could not import '
            "the module of generator_fn or unpickle its arguments; see its stderr."
            if start_method != "fork"
            else ""
        )
    else:
        where = f"after delivering {w.delivered} items, before its generator finished"
        hint = ""
    return WorkerDiedError(
        f"MpQItr worker {w.index} (pid {w.pid}) died with "
        f"{_lifecycle.describe_exit(code)} {where}.{hint}",
        worker_id=w.index,
        exitcode=code,
        pid=w.pid,
    )


class MpQRun(Closing, Generic[T]):
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
        options: RunOptions,
    ) -> None:
        self._options = options
        self._state = state = RunState(owner_pid=os.getpid())
        self._finalizer = weakref.finalize(self, _lifecycle.shutdown, state)
        self._frames: deque[tuple[WorkerHandle, memoryview | None]] = deque()
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
            state.shm, slice_bytes = _create_pool(options)
            base_seed = _new_base_seed(options)
            for i in range(n):
                config = self._worker_config(i, slice_bytes, base_seed)
                state.workers.append(_start_worker(ctx, config, fn, args, kwargs))
        except BaseException:
            self._finalizer()
            raise

    def _worker_config(self, index: int, slice_bytes: int, base_seed: int) -> _worker.WorkerConfig:
        opts = self._options
        shm = self._state.shm
        return _worker.WorkerConfig(
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

    def _consumed(self, worker: WorkerHandle, code: bytes) -> None:
        worker.delivered += 1
        self._delivered += 1
        if code == _wire.CREDIT_AND_FREE:
            self._shm_delivered += 1
        worker.pending += code
        if len(worker.pending) >= self._flush_at:
            self._flush(worker)

    def _flush(self, worker: WorkerHandle) -> None:
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
            _lifecycle.unlink_pool(self._state)

    def _copy_out(self, payload: tuple[Any, list[int]]) -> Any:
        skeleton, offsets = payload
        shm = self._state.shm
        assert shm is not None
        assert shm.buf is not None  # closed only by _lifecycle.shutdown
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

    def _read_one(self, w: WorkerHandle) -> None:
        try:
            msg = w.data.recv_bytes()
        except (EOFError, OSError):
            w.reader_open = False
            return
        self._frames.extend((w, frame) for frame in _wire.split_message(msg))

    def _drain(self, w: WorkerHandle) -> None:
        # The worker has exited: what it wrote is all in the pipe already.
        while w.reader_open:
            try:
                if not w.data.poll(0):
                    return
            except (EOFError, OSError):
                w.reader_open = False
                return
            self._read_one(w)

    def _on_exit(self, w: WorkerHandle) -> None:
        if w.finished:
            return
        w.finished = True
        raise _died_error(w, self._start_method)

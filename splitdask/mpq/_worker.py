"""The worker side of a run: the loop that runs ``generator_fn`` in a child process.

It is kept apart from the parent-side iterator (:mod:`._run`), as in torch's
``utils/data/_utils/worker.py``: this module never sees an ``MpQRun``, only a
:class:`WorkerConfig` and its two pipe ends.

Threads: the main thread runs the generator and pickles each item (so an item
that cannot be pickled fails at its own position); a feeder thread
(:class:`_Sender`) writes what is pending, so the generator never waits on a
full pipe while it has credit.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from types import FrameType
from typing import Any

import numpy as np

from splitdask.errors import MpQItrError
from splitdask.mpq import _lifecycle, _shm, _wire, _worker_info

# How often a waiting worker checks that its parent is still alive.
_PARENT_POLL = 0.5


@dataclass(frozen=True)
class WorkerConfig:
    """What the parent tells a worker at start-up, besides generator_fn and its arguments."""

    info: _worker_info.WorkerInfo
    credits: int  # items it may have in flight
    shm_name: str | None  # the run's pool, or None without shared memory
    shm_offset: int  # this worker's slice of the pool
    shm_size: int
    shm_threshold: int | None  # smallest array that goes through the pool


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
    """Feeder thread: sends the frames queued so far, batched by :func:`_wire.pack_frames`."""

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

    def __init__(self, config: WorkerConfig, control: _Control) -> None:
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


def worker_main(
    fn: Callable[..., Iterable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    config: WorkerConfig,
    data: Connection,
    control_conn: Connection,
) -> None:
    """Body of a worker process: run the generator, send its items, report how it ended.

    Parameters
    ----------
    fn, args, kwargs
        ``generator_fn`` and what to call it with.
    config
        This worker's identity, credit and slice of the shared-memory pool.
    data
        Write end of the data pipe.
    control_conn
        Read end of the control pipe.
    """
    _lifecycle.close_inherited()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, _on_sigterm)
    info = config.info
    _worker_info.set_current(info)
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

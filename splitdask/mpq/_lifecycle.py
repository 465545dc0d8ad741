"""What a run owns, and how it is let go: worker handles, stopping, reaping.

:func:`shutdown` is the one place that stops a run. It only takes a
:class:`RunState`, never the run, so a ``weakref.finalize`` can call it after the
run is gone. The registries of parent-side handles live here too: the parent adds
to them when it starts a worker, and a forked worker drops what it inherited
(:func:`close_inherited`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
import weakref
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.shared_memory import SharedMemory

# Stopping: grace for SIGTERM, then for SIGKILL (seconds). Their sum stays < 5.
_TERM_GRACE = 2.0
_KILL_GRACE = 2.0
_RESEND = 0.2

# Parent-side pipe ends of every live run of this process. A forked worker closes
# the copies it inherited, so that a pipe's only holders are the two intended
# processes and end-of-file means what it should.
PARENT_SIDE: set[Connection] = set()
# Shared-memory pools of live runs: a forked worker unmaps the ones it inherited.
PARENT_SHM: weakref.WeakSet[SharedMemory] = weakref.WeakSet()


@dataclass(eq=False)
class WorkerHandle:
    """The parent's view of one worker: its process, pipe ends and progress."""

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
class RunState:
    """Everything a run owns; shared with its finalizer (never refers to the run)."""

    owner_pid: int
    workers: list[WorkerHandle] = field(default_factory=list)
    shm: SharedMemory | None = None
    shm_unlinked: bool = False
    closed: bool = False


def unlink_pool(state: RunState) -> None:
    """Remove the pool's name (once); its memory lives on while it is mapped."""
    if state.shm is not None and not state.shm_unlinked:
        state.shm_unlinked = True
        with contextlib.suppress(FileNotFoundError):
            state.shm.unlink()


def shutdown(state: RunState) -> None:
    """Stop and reap the workers, close the pipes, release shared memory. Idempotent."""
    if state.closed or state.owner_pid != os.getpid():
        return
    state.closed = True
    interrupted: BaseException | None = None
    workers = state.workers
    for w in workers:
        PARENT_SIDE.discard(w.control)
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
        PARENT_SIDE.discard(w.data)
        with contextlib.suppress(OSError):
            w.data.close()
    # Workers are gone, so nobody can attach (and re-register) the segment now.
    if state.shm is not None:
        PARENT_SHM.discard(state.shm)
        unlink_pool(state)
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


def describe_exit(code: int | None) -> str:
    """Say how a process ended, with a hint for SIGKILL (OOM) and SIGBUS (full /dev/shm)."""
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


def close_inherited() -> None:
    """In a new worker: drop the parent-side handles of every live run inherited by fork.

    Without this, end of file would not mean what it should, and a finished run's
    pool pages would be kept alive by a later run's workers.
    """
    for conn in list(PARENT_SIDE):
        with contextlib.suppress(OSError):
            conn.close()
    PARENT_SIDE.clear()
    for shm in list(PARENT_SHM):
        with contextlib.suppress(BufferError, OSError):
            shm.close()
    PARENT_SHM.clear()

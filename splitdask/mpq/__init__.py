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

The package's modules, each importing only those listed before it:

* ``_wire``: the formats on the pipes (frames, batches, error frames, control bytes).
* ``_shm``: the shared-memory slot allocator and the walk that takes arrays out
  of an item and puts copies back.
* ``_worker_info``: :class:`WorkerInfo` and :func:`get_worker_info`.
* ``_lifecycle``: what a run owns, and how it is stopped and reaped.
* ``_worker``: the worker process's loop.
* ``_run``: the parent side of a run, :class:`MpQRun`.
* ``_itr``: the public front, :class:`MpQItr` and :class:`MpQOptions`.

The exceptions live in :mod:`splitdask.errors` with the library's others.
"""

from __future__ import annotations

from splitdask.errors import (
    MpQItrError,
    MpQItrTimeoutError,
    RemoteTraceback,
    WorkerDiedError,
)
from splitdask.mpq._itr import MpQItr, MpQOptions
from splitdask.mpq._run import MpQRun
from splitdask.mpq._worker_info import WorkerInfo, get_worker_info

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

# Name the public path in reprs, docs and pickles (as when this was one module),
# not the private module that happens to define the object.
for _public in (MpQItr, MpQOptions, MpQRun, WorkerInfo, get_worker_info):
    _public.__module__ = __name__
del _public

"""Who the current worker is: :class:`WorkerInfo` and :func:`get_worker_info`.

A module of its own because both sides need it and it needs neither: the parent
builds a ``WorkerInfo`` for each worker, the worker records it at start-up, and
``generator_fn`` reads it back.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from splitdask._util._split import take_batches

U = TypeVar("U")


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

    def shard(self, iterable: Iterable[U], batch_size: int = 1) -> Iterator[U]:
        """Yield this worker's share of ``iterable``: batch ``j`` of ``batch_size``
        items goes to worker ``j % num_workers``.

        The same rule splits a rank's share among PyTorch DataLoader workers in
        :mod:`splitdask.torch` (:mod:`splitdask.plan`).

        Parameters
        ----------
        iterable
            Items that every worker enumerates in the same order.
        batch_size
            Consecutive items that go to one worker (1: items ``id, id +
            num_workers, ...``).

        Returns
        -------
        Iterator
            This worker's batches, in order.
        """
        return take_batches(iterable, self.id, self.num_workers, batch_size)


# Set once, in a worker process, before generator_fn is called.
_CURRENT: WorkerInfo | None = None


def set_current(info: WorkerInfo) -> None:
    """Record ``info`` as the current process's worker identity (worker side only)."""
    global _CURRENT
    _CURRENT = info


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
    return _CURRENT

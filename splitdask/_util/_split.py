"""Which worker takes which batch: the one rule every splitdask reader uses.

Batch ``j`` (``batch_size`` consecutive items) goes to worker ``j % num_workers``: the
order in which a PyTorch DataLoader collects batches from its workers, so that the
output is the same for any worker count. :class:`splitdask.plan.RankPlan` splits a
rank's share this way and :meth:`splitdask.mpq.WorkerInfo.shard` splits any
iterable this way. Pure Python (MpQItr workers do not import NumPy for it).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["take_batches", "worker_batches"]

U = TypeVar("U")


def worker_batches(worker: int, num_workers: int, num_batches: int) -> range:
    """The batch numbers worker ``worker`` of ``num_workers`` takes out of ``num_batches``."""
    return range(worker, num_batches, num_workers)


def take_batches(
    iterable: Iterable[U], worker: int, num_workers: int, batch_size: int = 1
) -> Iterator[U]:
    """The items of ``iterable`` in the batches :func:`worker_batches` gives ``worker``."""
    if batch_size == 1:
        yield from itertools.islice(iterable, worker, None, num_workers)
        return
    it = iter(iterable)
    for j in itertools.count():
        chunk = list(itertools.islice(it, batch_size))
        if not chunk:
            return
        if j % num_workers == worker:
            yield from chunk

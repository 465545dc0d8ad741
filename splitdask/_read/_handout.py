"""What one process of a training pass handed out, and a DataLoader worker's share of
a resume state.

A DataLoader worker of ``W`` reads batches ``w, w + W, ...`` of the rank's share
(:meth:`splitdask.plan.RankPlan.worker_samples`) and counts the samples it handed out.
Its resume state names the pass (epoch and the positions left at its start), the
worker, the worker count, the batch size and that count: what torchdata's
``StatefulDataLoader`` asks each worker for and gives back to the same worker.

No torch here: :mod:`splitdask.torch` passes in who the caller is.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Any, NamedTuple

from splitdask._dataset._index import IntArray
from splitdask._dataset._snapshot import Snapshot
from splitdask._read._epochs import KeyReader
from splitdask._store import Store
from splitdask._store._workercache import WorkerCache
from splitdask.errors import ResumeStateError

__all__ = [
    "WORKERS_HANDED_OUT",
    "WORKER_STATE_VERSION",
    "Handout",
    "Spans",
    "WorkerShare",
    "loader_batch_size",
    "make_state",
    "parse_share",
    "skip_samples",
    "worker_cache",
]

WORKER_STATE_VERSION = 3
"""A DataLoader worker's share of a pass: a version 2 state plus ``"worker"``."""

WORKERS_HANDED_OUT = (
    "state_dict() without samples_seen counts the samples this copy of the dataset "
    "handed out, and DataLoader worker processes handed them out (reading ahead of what "
    "the loop consumed); pass samples_seen=<samples this rank consumed in the epoch>, or "
    "iterate with torchdata's StatefulDataLoader and save its state_dict()"
)
Spans = tuple[tuple[int, int], ...]


class WorkerShare(NamedTuple):
    """DataLoader worker ``worker`` of ``workers`` (batches of ``batch``) of a pass,
    which handed out the first ``seen`` samples of its batches."""

    worker: int
    workers: int
    batch: int
    seen: int

    def as_json(self) -> dict[str, int]:
        return {"id": self.worker, "of": self.workers, "batch": self.batch, "seen": self.seen}

    def check(self, worker: int, workers: int, batch: int) -> None:
        """Refuse to resume this share in another worker, worker count or batch size."""
        if (worker, workers, batch) != self[:3]:
            raise ResumeStateError(
                f"this state is the share of DataLoader worker {self.worker} of {self.workers} "
                f"(batches of {self.batch}), as torchdata's StatefulDataLoader saves one per "
                f"worker, but it was loaded into worker {worker} of {workers} (batches of "
                f"{batch}); resume it through a StatefulDataLoader with the same num_workers "
                "and batch_size, or save a state for the whole rank with "
                "state_dict(samples_seen=...) to change them"
            )


@dataclass
class Handout:
    """One pass of one process: its epoch, version, the rank's positions left at its
    start, who this process is in the DataLoader, and the samples it handed out.

    The pass hands out a chunk of records at a time through the chunk's list
    iterator: the count is the chunks done plus what that iterator has given, so
    nothing is counted per record (a Python step per record cost a fifth of the rate
    of small records).
    """

    epoch: int
    version: int | None
    remaining: Spans
    worker: int
    workers: int
    batch: int
    done: int = 0
    """Samples of the chunks finished (and of those skipped by a resume)."""
    _chunk: Iterator[Any] | None = None
    _chunk_len: int = 0

    @property
    def seen(self) -> int:
        """Samples handed out so far."""
        if self._chunk is None:
            return self.done
        return self.done + self._chunk_len - operator.length_hint(self._chunk)

    def hand_out(self, records: list[Any]) -> Iterator[Any]:
        """An iterator over ``records`` whose progress :attr:`seen` counts."""
        self.done, self._chunk = self.seen, iter(records)
        self._chunk_len = len(records)
        return self._chunk

    def share(self) -> WorkerShare:
        return WorkerShare(self.worker, self.workers, self.batch, self.seen)


def parse_share(state: Mapping[str, Any]) -> WorkerShare:
    """The worker share a version 3 state names.

    Raises
    ------
    ResumeStateError
        If it is missing or damaged.
    """
    got: Any = state.get("worker")
    keys = ("id", "of", "batch", "seen")
    if not (isinstance(got, Mapping) and all(type(got.get(k)) is int for k in keys)):
        raise ResumeStateError(f"damaged SplitIterableDataset worker state: {str(state)[:200]}")
    share = WorkerShare(*(int(got[k]) for k in keys))
    if not (0 <= share.worker < share.workers and share.batch >= 1 and share.seen >= 0):
        raise ResumeStateError(f"damaged SplitIterableDataset worker state: {str(state)[:200]}")
    return share


def skip_samples(chunks: Iterator[IntArray], count: int) -> Iterator[IntArray]:
    """``chunks`` without their first ``count`` samples."""
    for chunk in chunks:
        if count >= len(chunk):
            count -= len(chunk)
            continue
        yield chunk[count:]
        count = 0


def make_state(
    fingerprint: Mapping[str, Any], epoch: int, left: Spans, share: WorkerShare | None = None
) -> dict[str, Any]:
    """A resume state: the rank's positions ``left`` of ``epoch`` (at the start of the
    pass of ``share``, when a worker's)."""
    state = {**fingerprint, "epoch": epoch, "remaining": [x for span in left for x in span]}
    if share is not None:
        state["version"] = WORKER_STATE_VERSION
        state["worker"] = share.as_json()
    return state


def loader_batch_size(caller: FrameType | None, fetch: CodeType, given: int | None) -> int | None:
    """The batch size of the DataLoader whose fetcher (``caller``, running ``fetch``)
    starts a pass, else ``given``.

    A PyTorch DataLoader over an iterable dataset collects a batch by calling
    ``next()`` ``batch_size`` times from its fetcher's ``fetch(possibly_batched_index)``,
    which holds the batch's indices: their number is the batch size.

    Raises
    ------
    ValueError
        If ``given`` differs from the DataLoader's.
    """
    asked = None
    if caller is not None and caller.f_code is fetch:
        fetcher, index = caller.f_locals.get("self"), caller.f_locals.get("possibly_batched_index")
        if getattr(fetcher, "auto_collation", False) and isinstance(index, Sequence):
            asked = len(index)
    if asked is not None and given is not None and asked != given:
        raise ValueError(
            f"SplitIterableDataset(batch_size={given}) but the DataLoader asks for batches "
            f"of {asked}; leave batch_size out (the DataLoader's is used) or make them agree"
        )
    return asked or given


def worker_cache(
    store: Store, snap: Snapshot, window: int, token: int, reader: KeyReader
) -> WorkerCache | None:
    """With DataLoader workers reading whole parts of a remote dataset and no cache
    configured: a temporary cache the workers of pass ``token`` share (two windows of
    ``window`` bins and what the reader fetches ahead, so that a part one worker
    fetched ahead is still there when another needs it)."""
    if not reader.whole or store.cache is not None:
        return None
    per_bin = sorted(
        (sum(snap.parts[p].size for p in pids) for pids in snap.bin_parts), reverse=True
    )
    limit = 2 * sum(per_bin[:window]) + reader.ahead_bytes
    shared = WorkerCache(f"{token:x}", max(1 << 20, limit))
    store.cache = shared.cache
    return shared

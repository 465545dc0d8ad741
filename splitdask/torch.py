"""PyTorch datasets over a splitdask dataset (the optional extra ``splitdask[torch]``).

:class:`SplitIterableDataset` streams an epoch plan (:mod:`splitdask.plan`): each
rank its equal share, each DataLoader worker its batches, resumable mid-epoch from a
small state, also with another world size, worker count or batch size.
:class:`SplitMapDataset` is random access for samplers, fetching a batch at once.
Both pickle as their location and settings, and open the dataset in each worker.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch.distributed as dist
import torch.utils.data as tud

from splitdask._dataset._snapshot import Snapshot, open_snapshot
from splitdask._read._epochs import EpochClock, KeyReader
from splitdask._read._records import RecordReader
from splitdask._store import CacheDir, UrlPath, cache_report, open_store
from splitdask._store._workercache import WorkerCache
from splitdask._util._validate import check_int
from splitdask.errors import ResumeStateError, SplitDaskError
from splitdask.plan import EpochOrder, RankPlan, default_window, epoch_seed, normalise_shuffle

__all__ = ["SplitIterableDataset", "SplitMapDataset"]

STATE_VERSION = 1
_DEFAULT_BLOCK = 64  # worker split granularity without a batch_size


class _Lazy:
    """A dataset location opened on first use in each process."""

    def __init__(
        self,
        urlpath: UrlPath,
        storage_options: Mapping[str, Any] | None,
        cache_dir: CacheDir = None,
        cache_bytes: int | str | None = None,
    ) -> None:
        self._store = open_store(
            urlpath, storage_options, cache_dir=cache_dir, cache_bytes=cache_bytes
        )
        self._no_cache = cache_dir is False
        self._snap: Snapshot | None = None
        self._reader: RecordReader | None = None
        self._identity: str | None = None

    @property
    def snapshot(self) -> Snapshot:
        if self._snap is None:
            snap = open_snapshot(self._store)
            ident = _identity(snap)
            if self._identity is not None and ident != self._identity:
                raise SplitDaskError(
                    f"{self._store.urlpath}: the dataset was committed to after this "
                    "dataset object was made (a worker would read another snapshot than "
                    "the main process); make a new dataset object"
                )
            self._snap, self._identity = snap, ident
        return self._snap

    @property
    def reader(self) -> RecordReader:
        if self._reader is None:
            self._reader = RecordReader(self.snapshot)
        return self._reader

    def _location(self) -> dict[str, Any]:
        cache = self._store.cache
        return {
            "urlpath": self._store.urlpath,
            "storage_options": self._store.storage_options,
            "identity": self._identity,
            "cache": False if cache is None else (cache.directory, cache.limit),
            "no_cache": self._no_cache,
        }

    def _open_location(self, state: dict[str, Any]) -> None:
        directory, limit = state["cache"] or (None, None)
        self._store = open_store(
            state["urlpath"],
            state["storage_options"],
            cache_dir=directory or False,
            cache_bytes=limit,
        )
        self._snap, self._reader, self._identity = None, None, state["identity"]
        self._no_cache = state["no_cache"]

    def cache_info(self) -> dict[str, Any] | None:
        """The local part cache's counters in this process and its directory's
        contents (see :meth:`splitdask.SplitDataLoader.cache_info`); ``None`` without one."""
        return cache_report(self._store.cache)


def _identity(snap: Snapshot) -> str:
    """A short name of a committed state, to tell resume states of other data apart."""
    blob = json.dumps(snap.identity, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class SplitMapDataset(_Lazy, tud.Dataset[Any]):
    """Random access for a ``DataLoader`` with a sampler (e.g. ``DistributedSampler``).

    Parameters
    ----------
    urlpath, storage_options
        The dataset's location.
    transform
        Called on each record (``bytes``) in the worker.
    cache_dir, cache_bytes
        A local part cache shared by the workers (see :class:`splitdask.SplitDataLoader`):
        parts already in it are read locally; random reads do not fill it.

    Notes
    -----
    ``__getitems__`` serves a whole batch with one batched read: one request per
    part touched on remote stores.
    """

    def __init__(
        self,
        urlpath: UrlPath,
        storage_options: Mapping[str, Any] | None = None,
        *,
        transform: Callable[[Any], Any] | None = None,
        cache_dir: CacheDir = None,
        cache_bytes: int | str | None = None,
    ) -> None:
        super().__init__(urlpath, storage_options, cache_dir, cache_bytes)
        self.transform = transform
        self._len = self.snapshot.num_records

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> Any:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        idx = np.asarray(indices, dtype=np.int64)
        bad = (idx < 0) | (idx >= self._len)
        if bad.any():
            raise IndexError(f"index {int(idx[bad][0])} is out of range for {self._len} records")
        recs = self.reader.records(idx)
        return recs if self.transform is None else [self.transform(r) for r in recs]

    def __getstate__(self) -> dict[str, Any]:
        return {**self._location(), "transform": self.transform, "len": self._len}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._open_location(state)
        self.transform, self._len = state["transform"], state["len"]


class SplitIterableDataset(_Lazy, tud.IterableDataset[Any]):
    """Stream an epoch plan: every record once per epoch over all ranks, equal lengths.

    Parameters
    ----------
    urlpath, storage_options
        The dataset's location.
    shuffle
        ``"window"`` (default), ``"bins"``, ``"global"`` or ``None``; see
        :class:`splitdask.plan.EpochOrder`.
    seed
        Epoch ``e`` is shuffled with ``seed + e``.
    window
        Bins shuffled together in ``"window"`` mode; by default at least 8, or
        as many as fit 256 MiB and 2**20 records.
    batch_size
        The DataLoader's batch size: workers split the rank's share by batches of
        it, so the output order is the same for any ``num_workers``.
    drop_last
        Drop (instead of pad with repeats) the fewer than ``world_size`` records
        that would make rank lengths unequal.
    rank, world_size
        Default to ``torch.distributed``'s when it is initialised, else 0 and 1.
    transform
        Called on each record (``bytes``) in the worker.
    cache_dir, cache_bytes
        A local part cache shared by every worker and rank on the machine (see
        :class:`splitdask.SplitDataLoader`): the second epoch reads from local disk.
        Without one (and unless ``cache_dir=False``), the DataLoader workers of a
        pass over a remote dataset share a private temporary cache of about two
        windows, removed when they finish, so that each part is fetched once a pass.
    """

    def __init__(
        self,
        urlpath: UrlPath,
        storage_options: Mapping[str, Any] | None = None,
        *,
        shuffle: str | None = "window",
        seed: int = 0,
        window: int | None = None,
        batch_size: int | None = None,
        drop_last: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        transform: Callable[[Any], Any] | None = None,
        cache_dir: CacheDir = None,
        cache_bytes: int | str | None = None,
    ) -> None:
        super().__init__(urlpath, storage_options, cache_dir, cache_bytes)
        self.shuffle = normalise_shuffle(shuffle)
        self.seed = check_int(seed, "seed", minimum=0, error=TypeError)
        snap = self.snapshot
        self._counts = snap.bin_counts()
        # Samples read per step: about 1 MiB of records, so big records stay few.
        self._chunk = int(min(4096, max(1, (1 << 20) * snap.num_records // max(1, snap.nbytes))))
        if window is None:
            window = default_window(self._counts, snap.nbytes)
        self.window = check_int(window, "window", minimum=1)
        self.batch_size = (
            None if batch_size is None else check_int(batch_size, "batch_size", minimum=1)
        )
        self.drop_last = bool(drop_last)
        distributed = dist.is_available() and dist.is_initialized()
        if world_size is None:
            world_size = dist.get_world_size() if distributed else 1
        self.world_size = check_int(world_size, "world_size", minimum=1)
        if rank is None:
            rank = dist.get_rank() if distributed else 0
        self.rank = check_int(rank, "rank", minimum=0, maximum=self.world_size - 1)
        self.transform = transform
        self._clock = EpochClock()
        self._resume: tuple[int, tuple[tuple[int, int], ...]] | None = None
        self._iters = 0

    # -- plans ------------------------------------------------------------------------

    def plan(self, epoch: int) -> RankPlan:
        """This rank's plan for ``epoch`` (the rest of it, for a resumed epoch)."""
        order = EpochOrder(self._counts, self.shuffle, epoch_seed(self.seed, epoch), self.window)
        remaining: tuple[tuple[int, int], ...] = ((0, order.num_records),)
        if self._resume is not None and self._resume[0] == epoch:
            remaining = self._resume[1]
        return RankPlan(order, remaining, self.world_size, self.rank, self.drop_last)

    @property
    def epoch(self) -> int:
        """The epoch running (or the next one, before the first ``iter()``)."""
        current = self._clock.current
        return current if current >= 0 else self._clock.next

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass (``iter()``) run ``epoch``; later passes count on from it."""
        self._clock.set_next(check_int(epoch, "epoch", minimum=0))

    def __len__(self) -> int:
        """Samples this rank yields in the next pass."""
        return len(self.plan(self._clock.next))

    def __iter__(self) -> Iterator[Any]:
        info = tud.get_worker_info()
        self._iters += 1
        if info is None:
            worker, workers, token = 0, 1, int.from_bytes(os.urandom(7), "little")
        else:
            # Every worker of one DataLoader pass has the same base seed and, when
            # persistent, the same count of passes.
            worker, workers = info.id, info.num_workers
            token = hash((info.seed - info.id, self._iters)) & ((1 << 62) - 1)
        plan = self.plan(self._clock.claim(token))
        reader = KeyReader(self.reader, whole_parts=self.shuffle != "global")
        block = self.batch_size or _DEFAULT_BLOCK
        transform = self.transform
        shared = self._worker_cache(workers, token, reader)
        try:
            chunks = map(plan.keys, plan.worker_samples(worker, workers, block, self._chunk))
            for recs in reader.read_chunks(chunks):
                if transform is None:
                    yield from recs
                else:
                    yield from map(transform, recs)
        finally:
            reader.close()
            if shared is not None:
                self._store.cache = None
                shared.leave()

    def _worker_cache(self, workers: int, token: int, reader: KeyReader) -> WorkerCache | None:
        """With several workers reading whole parts of a remote dataset and no cache
        configured: a temporary cache the workers of this pass share (two windows and
        what the reader fetches ahead, so that a part one worker fetched ahead is
        still there when another needs it)."""
        store = self._store
        if workers < 2 or not reader.whole or store.cache is not None or self._no_cache:
            return None
        snap = self.snapshot
        per_bin = sorted(
            (sum(snap.parts[p].size for p in pids) for pids in snap.bin_parts), reverse=True
        )
        window = self.window if self.shuffle == "window" else 1
        limit = 2 * sum(per_bin[:window]) + reader.ahead_bytes
        shared = WorkerCache(f"{token:x}", max(1 << 20, limit))
        store.cache = shared.cache
        return shared

    # -- resume -----------------------------------------------------------------------

    def state_dict(self, samples_seen: int) -> dict[str, Any]:
        """Where this epoch is once every rank has consumed ``samples_seen`` samples.

        Returns
        -------
        dict
            Small and JSON-serialisable (its size grows with the world size only).
        """
        epoch = self.epoch
        plan = self.plan(epoch)
        check_int(samples_seen, "samples_seen", minimum=0, maximum=len(plan))
        left = plan.remaining_after(samples_seen)
        return {
            **self._fingerprint(),
            "epoch": epoch,
            "remaining": [x for span in left for x in span],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Make the next ``iter()`` run the rest of the saved epoch, then go on.

        Raises
        ------
        ResumeStateError
            If ``state`` is not a state of this dataset snapshot, seed, shuffle and
            window.
        """
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            raise ResumeStateError(
                f"not a SplitIterableDataset state (version {STATE_VERSION}): {str(state)[:200]}"
            )
        mine = self._fingerprint()
        for key, value in mine.items():
            if state.get(key) != value:
                raise ResumeStateError(
                    f"this state was saved for another {key}: {state.get(key)!r}, but this "
                    f"dataset has {value!r}; a state only resumes the same dataset snapshot "
                    "with the same shuffle, seed and window"
                )
        flat: Any = state.get("remaining")
        epoch: Any = state.get("epoch")
        n = self.snapshot.num_records
        if not (
            type(epoch) is int
            and epoch >= 0
            and isinstance(flat, list)
            and not len(flat) % 2
            and all(type(x) is int and 0 <= x <= n for x in flat)
        ):
            raise ResumeStateError(f"damaged SplitIterableDataset state: {str(state)[:200]}")
        self._resume = (epoch, tuple(zip(flat[::2], flat[1::2], strict=True)))
        self._clock.set_next(epoch)

    def _fingerprint(self) -> dict[str, Any]:
        _ = self.snapshot
        return {
            "version": STATE_VERSION,
            "dataset": self._identity,
            "num_records": self.snapshot.num_records,
            "shuffle": self.shuffle,
            "seed": self.seed,
            "window": self.window,
        }

    # -- pickling ---------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        keep = (
            "shuffle",
            "seed",
            "window",
            "batch_size",
            "drop_last",
            "rank",
            "world_size",
            "transform",
            "_counts",
            "_chunk",
            "_clock",
            "_resume",
            "_iters",
        )
        return {**self._location(), **{k: self.__dict__[k] for k in keep}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._open_location(state)
        for key in ("urlpath", "storage_options", "identity"):
            state.pop(key)
        self.__dict__.update(state)

"""PyTorch datasets over a splitdask dataset (the optional extra ``splitdask[torch]``).

:class:`SplitIterableDataset` streams an epoch plan (:mod:`splitdask.plan`): each
rank its equal share, each DataLoader worker its batches, resumable mid-epoch from a
small state, also with another world size, worker count or batch size, and after
appends (the state names its version). :class:`SplitMapDataset` is random access for
samplers, fetching a batch at once. Both pickle as their location, version and
settings, and open that version in each worker, whatever was committed since.
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

from splitdask._dataset._snapshot import Snapshot, open_snapshot, read_manifest
from splitdask._read._epochs import EpochClock, KeyReader
from splitdask._read._records import RecordReader
from splitdask._store import CacheDir, UrlPath, cache_report, open_store
from splitdask._store._workercache import WorkerCache
from splitdask._util._validate import check_int, check_version
from splitdask.errors import ResumeStateError, SplitDaskError
from splitdask.plan import EpochOrder, RankPlan, default_window, epoch_seed, normalise_shuffle

__all__ = ["SplitIterableDataset", "SplitMapDataset"]

STATE_VERSION = 2
"""Version 2 names the dataset version of its epoch; version 1 states still load."""
_DEFAULT_BLOCK = 64  # worker split granularity without a batch_size


class _Lazy:
    """A dataset location opened on first use in each process."""

    def __init__(
        self,
        urlpath: UrlPath,
        storage_options: Mapping[str, Any] | None,
        cache_dir: CacheDir = None,
        cache_bytes: int | str | None = None,
        version: int | str | None = None,
    ) -> None:
        self._store = open_store(
            urlpath, storage_options, cache_dir=cache_dir, cache_bytes=cache_bytes
        )
        self._no_cache = cache_dir is False
        self._version = check_version(version)  # a number once opened
        self._snap: Snapshot | None = None
        self._reader: RecordReader | None = None
        self._identity: str | None = None

    @property
    def snapshot(self) -> Snapshot:
        """The version this process reads now (see :attr:`version`)."""
        if self._snap is None:
            snap = open_snapshot(self._store, self._version)
            ident = _identity(snap)
            if snap.version is None and self._identity not in (None, ident):
                # A splitdataloader dataset has no versions to pin.
                raise SplitDaskError(
                    f"{self._store.urlpath}: the dataset was committed to after this "
                    "dataset object was made (a worker would read another snapshot than "
                    "the main process); make a new dataset object"
                )
            self._snap, self._identity, self._version = snap, ident, snap.version
        return self._snap

    @property
    def version(self) -> int | None:
        """The dataset version read: the newest when this object was made, or the one
        ``version=`` named (``None`` for a splitdataloader dataset)."""
        return self._pinned()

    def _pinned(self) -> int | None:
        _ = self.snapshot
        return self._version if isinstance(self._version, int) else None

    def _snapshot_of(self, version: int | None) -> Snapshot:
        """The snapshot of ``version``: this process's own if it is that one."""
        snap = self.snapshot
        if version is None or snap.version == version:
            return snap
        return open_snapshot(self._store, version)

    def _use(self, version: int | None) -> Snapshot:
        """Make ``version`` the one this process reads (closing the reader of another)."""
        snap = self._snapshot_of(version)
        if snap is not self._snap:
            reader, self._reader, self._snap = self._reader, None, snap
            if reader is not None:
                reader.close()
        return snap

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
            "version": self._version,
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
        self._version = state.get("version")  # absent: pickled by splitdask < 0.5
        self._no_cache = state["no_cache"]

    def cache_info(self) -> dict[str, Any] | None:
        """The local part cache's counters in this process and its directory's
        contents (see :meth:`splitdask.SplitDataLoader.cache_info`); ``None`` without one."""
        return cache_report(self._store.cache)


def _code(version: int | None) -> int:
    """A version as the epoch clock's shared integers hold it (0: none)."""
    return 0 if version is None else version


def _decode(code: int) -> int | None:
    return None if code <= 0 else code


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
    version
        The dataset version to read (its number or tag, as for
        :class:`splitdask.SplitDataLoader`); default the newest.

    Raises
    ------
    SnapshotExpiredError
        If ``version`` (or, in a worker, the version the main process opened) was
        removed by ``gc``; the error names it and the oldest version kept.

    Notes
    -----
    ``__getitems__`` serves a whole batch with one batched read: one request per
    part touched on remote stores. The dataset pickles as its location and version:
    forked and spawned workers read the version the main process opened.
    """

    def __init__(
        self,
        urlpath: UrlPath,
        storage_options: Mapping[str, Any] | None = None,
        *,
        transform: Callable[[Any], Any] | None = None,
        cache_dir: CacheDir = None,
        cache_bytes: int | str | None = None,
        version: int | str | None = None,
    ) -> None:
        super().__init__(urlpath, storage_options, cache_dir, cache_bytes, version)
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
    version
        The dataset version to read (its number or tag, as for
        :class:`splitdask.SplitDataLoader`); default the newest.
    follow
        ``False`` (default): every epoch reads the one version this object opened
        (or a loaded state names), whatever is committed meanwhile. ``True``: each
        epoch reads the newest version when it starts, so records appended during
        an epoch join at the next one. Either way an epoch's version is fixed once
        (when it starts, or when its length or state is first asked for), every
        worker of the pass reads it, and :meth:`state_dict` records it.

    Raises
    ------
    SnapshotExpiredError
        When an epoch's version was removed by ``gc`` before a worker opened it (or
        before a state naming it is loaded); the error names it and the oldest kept.
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
        version: int | str | None = None,
        follow: bool = False,
    ) -> None:
        super().__init__(urlpath, storage_options, cache_dir, cache_bytes, version)
        if not isinstance(follow, bool):
            raise TypeError(f"follow must be True or False, not {follow!r}")
        self.follow = follow
        self.shuffle = normalise_shuffle(shuffle)
        self.seed = check_int(seed, "seed", minimum=0, error=TypeError)
        snap = self.snapshot
        self._counts = snap.bin_counts()
        self._counts_version = snap.version
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

    # -- versions ---------------------------------------------------------------------

    def _pick(self) -> int:
        """The version a starting epoch reads: the pinned one, or (``follow``) the newest."""
        if not self.follow:
            return _code(self._pinned())
        manifest = read_manifest(self._store)
        return _code(manifest.generation if manifest is not None else None)

    def _epoch_version(self, epoch: int) -> int | None:
        """The version ``epoch`` reads: fixed for the running and the next epoch."""
        clock = self._clock
        if epoch == clock.current >= 0:
            return _decode(clock.version)
        if epoch == clock.next:
            return _decode(clock.fix_next(self._pick))
        return _decode(self._pick())

    @property
    def version(self) -> int | None:
        """The version the running epoch reads (before the first ``iter()``: the next);
        ``None`` for a splitdataloader dataset."""
        return self._epoch_version(self.epoch)

    def _counts_of(self, snap: Snapshot) -> list[int]:
        if snap.version != self._counts_version:
            self._counts, self._counts_version = snap.bin_counts(), snap.version
        return self._counts

    # -- plans ------------------------------------------------------------------------

    def plan(self, epoch: int) -> RankPlan:
        """This rank's plan for ``epoch`` (the rest of it, for a resumed epoch)."""
        return self._plan(epoch, self._snapshot_of(self._epoch_version(epoch)))

    def _plan(self, epoch: int, snap: Snapshot) -> RankPlan:
        counts = self._counts_of(snap)
        order = EpochOrder(counts, self.shuffle, epoch_seed(self.seed, epoch), self.window)
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
        epoch, version = self._clock.claim(token, self._pick)
        plan = self._plan(epoch, self._use(_decode(version)))
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
            Small and JSON-serialisable (its size grows with the world size only). It
            names the epoch and the dataset version that epoch reads.
        """
        epoch = self.epoch
        snap = self._snapshot_of(self._epoch_version(epoch))
        plan = self._plan(epoch, snap)
        check_int(samples_seen, "samples_seen", minimum=0, maximum=len(plan))
        left = plan.remaining_after(samples_seen)
        return {
            **self._fingerprint(snap),
            "epoch": epoch,
            "remaining": [x for span in left for x in span],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Make the next ``iter()`` run the rest of the saved epoch, then go on.

        The rest of the epoch reads the version the state names, whatever was
        committed since (exactly what the uninterrupted run would have read); the
        epochs after it read that version too, or (``follow``) the newest at their
        start. A state saved before splitdask recorded versions resumes only the
        dataset as it was then.

        Raises
        ------
        ResumeStateError
            If ``state`` is not a state of this dataset, seed, shuffle and window
            (or, for a state without a version, of this dataset's version).
        SnapshotExpiredError
            If the version the state names was removed by ``gc``.
        """
        got: Any = state.get("version") if isinstance(state, Mapping) else None
        if got not in (1, STATE_VERSION):
            raise ResumeStateError(
                f"not a SplitIterableDataset state (version {STATE_VERSION}): {str(state)[:200]}"
            )
        snap = self._resumed_snapshot(state)
        for key, value in self._fingerprint(snap).items():
            if key == "version" or (got == 1 and key == "dataset_version"):
                continue
            if state.get(key) != value:
                raise ResumeStateError(
                    f"this state was saved for another {key}: {state.get(key)!r}, but this "
                    f"dataset has {value!r}; a state only resumes the same dataset "
                    "with the same shuffle, seed and window"
                )
        flat: Any = state.get("remaining")
        epoch: Any = state.get("epoch")
        n = snap.num_records
        if not (
            type(epoch) is int
            and epoch >= 0
            and isinstance(flat, list)
            and not len(flat) % 2
            and all(type(x) is int and 0 <= x <= n for x in flat)
        ):
            raise ResumeStateError(f"damaged SplitIterableDataset state: {str(state)[:200]}")
        self._resume = (epoch, tuple(zip(flat[::2], flat[1::2], strict=True)))
        if not self.follow:  # the whole run reads the state's version
            self._version = snap.version
        self._clock.set_next(epoch)
        self._clock.fix_next(lambda: _code(snap.version), epoch)

    def _resumed_snapshot(self, state: Mapping[str, Any]) -> Snapshot:
        """The snapshot a state resumes: the version it names (a state of version 1
        names none: the version this object opened)."""
        if state.get("version") == 1:
            return self._snapshot_of(self._pinned())
        version: Any = state.get("dataset_version")
        if version is not None and (type(version) is not int or version < 1):
            raise ResumeStateError(f"damaged SplitIterableDataset state: {str(state)[:200]}")
        if version is None and self.snapshot.version is not None:
            raise ResumeStateError(
                f"this state was saved for a splitdataloader dataset, but "
                f"{self._store.urlpath} is a splitdask dataset (version {self.snapshot.version})"
            )
        try:
            return self._snapshot_of(version)
        except ValueError as exc:  # no such version yet: another dataset's state
            raise ResumeStateError(f"this state was saved for another dataset: {exc}") from None

    def _fingerprint(self, snap: Snapshot) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "dataset": _identity(snap),
            "dataset_version": snap.version,
            "num_records": snap.num_records,
            "shuffle": self.shuffle,
            "seed": self.seed,
            "window": self.window,
        }

    # -- pickling ---------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        keep = (
            "follow",
            "shuffle",
            "seed",
            "window",
            "batch_size",
            "drop_last",
            "rank",
            "world_size",
            "transform",
            "_counts",
            "_counts_version",
            "_chunk",
            "_clock",
            "_resume",
            "_iters",
        )
        return {**self._location(), **{k: self.__dict__[k] for k in keep}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._open_location(state)
        for key in ("urlpath", "storage_options", "identity", "version"):
            state.pop(key, None)
        self.__dict__.update(state)

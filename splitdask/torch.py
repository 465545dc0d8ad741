"""PyTorch datasets over a splitdask dataset (the optional extra ``splitdask[torch]``).

:class:`SplitIterableDataset` streams an epoch plan (:mod:`splitdask.plan`): each
rank its equal share, each DataLoader worker its batches, resumable mid-epoch from a
small state, also with another world size, worker count or batch size, and after
appends (the state names its version). :class:`SplitMapDataset` is random access for
samplers, fetching a batch at once. Both pickle as their location, version and
settings, and open that version in each worker, whatever was committed since.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch.distributed as dist
import torch.utils.data as tud
from torch.utils.data._utils.fetch import _IterableDatasetFetcher

from splitdask._dataset._snapshot import Snapshot, read_manifest
from splitdask._dataset._versions import list_log
from splitdask._read._decode import Decoder
from splitdask._read._engine import snapshot_decoder
from splitdask._read._epochs import EpochClock, KeyReader, resume_point
from splitdask._read._handout import (
    WORKER_STATE_VERSION,
    WORKERS_HANDED_OUT,
    Handout,
    Spans,
    WorkerShare,
    loader_batch_size,
    make_state,
    parse_share,
    skip_samples,
    worker_cache,
)
from splitdask._read._pinned import Pinned, identity_key
from splitdask._store import CacheDir, UrlPath
from splitdask._torchmap import SplitMapDataset, codec_state
from splitdask._torchmix import SplitMixtureDataset
from splitdask._util._validate import check_int
from splitdask.errors import ResumeStateError
from splitdask.plan import EpochOrder, RankPlan, default_window, epoch_seed, normalise_shuffle

__all__ = ["SplitIterableDataset", "SplitMapDataset", "SplitMixtureDataset"]

STATE_VERSION = 2
"""Version 2 names the dataset version of its epoch; version 1 states still load."""
_DEFAULT_BLOCK = 64  # worker split granularity without a batch_size
_TOKEN_MASK = (1 << 62) - 1
_PICKLED = (  # what a SplitIterableDataset pickles besides its location
    *("follow", "shuffle", "seed", "window", "batch_size", "drop_last", "rank"),
    *("world_size", "transform", "_counts", "_counts_version", "_chunk", "_clock"),
    *("_resume", "_iters"),
)
Resume = tuple[int, Spans, WorkerShare | None]
_FETCH = _IterableDatasetFetcher.fetch.__code__  # where a DataLoader asks for a batch


class SplitIterableDataset(Pinned, tud.IterableDataset[Any]):
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
        Batches the workers split the rank's share by, so that the output order is
        the same for any ``num_workers``. Read from the DataLoader (its
        ``batch_size``) when one iterates the dataset; needed only to iterate
        otherwise, and if given must agree with the DataLoader's.
    drop_last
        Drop (instead of pad with repeats) the fewer than ``world_size`` records
        that would make rank lengths unequal.
    rank, world_size
        Default to ``torch.distributed``'s when it is initialised, else 0 and 1.
    transform
        Called on each record, once decoded, in the worker (picklable, for spawned
        workers: a module-level function).
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
        (when it starts, or when its length, state or :attr:`version` is first asked
        for), every worker of the pass reads it, and :meth:`state_dict` records it.
    decode, allow_pickle
        As for :class:`SplitMapDataset`: records are decoded with the dataset's
        codec (the default collate makes a dict of arrays a dict of tensors).

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
        decode: bool = True,
        allow_pickle: bool = False,
    ) -> None:
        super().__init__(urlpath, storage_options, cache_dir, cache_bytes, version)
        self._codec = snapshot_decoder(self.snapshot, decode, allow_pickle).codec
        if not isinstance(follow, bool):
            raise TypeError(f"follow must be True or False, not {follow!r}")
        self.follow = follow
        self.shuffle = normalise_shuffle(shuffle)
        self.seed = check_int(seed, "seed", minimum=0)
        snap = self.snapshot
        self._counts, self._counts_version = snap.bin_counts(), snap.version
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
        self._clock, self._iters = EpochClock(), 0
        self._resume: Resume | None = None
        self._handout: Handout | None = None  # this process's pass (never pickled)

    # -- versions ---------------------------------------------------------------------

    def _pick(self) -> int | None:
        """The version a starting epoch reads: the pinned one, or (``follow``) the newest."""
        if not self.follow:
            return self._pinned()
        latest = list_log(self._store).latest  # one listing: the newest entry is whole
        if latest:
            return latest
        manifest = read_manifest(self._store)  # written before versions: one version
        return manifest.generation if manifest is not None else None

    def _epoch_version(self, epoch: int) -> int | None:
        """The version ``epoch`` reads: fixed for the running and the next epoch."""
        clock = self._clock
        if epoch == clock.current >= 0:
            return clock.version
        return clock.fix_next(self._pick) if epoch == clock.next else self._pick()

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

    def _plan(self, epoch: int, snap: Snapshot, remaining: Spans | None = None) -> RankPlan:
        counts = self._counts_of(snap)
        order = EpochOrder(counts, self.shuffle, epoch_seed(self.seed, epoch), self.window)
        if remaining is None:
            remaining = ((0, order.num_records),)
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
        self._handout = None  # a new pass: nothing handed out yet
        return self._pass()

    def _pass(self) -> Iterator[Any]:
        # Runs at the first next(): from a DataLoader, inside its fetcher's fetch().
        block = loader_batch_size(sys._getframe(1), _FETCH, self.batch_size) or _DEFAULT_BLOCK
        info = tud.get_worker_info()
        self._iters += 1
        if info is None:
            worker, workers, token = 0, 1, int.from_bytes(os.urandom(7), "little")
        else:
            # The workers of a pass share a base seed and (persistent) a count of passes.
            worker, workers = info.id, info.num_workers
            token = hash((info.seed - info.id, self._iters)) & _TOKEN_MASK
        epoch, version = self._clock.claim(token, self._pick)
        plan = self._plan(epoch, self._use(version))
        share = self._resume[2] if self._resume is not None and self._resume[0] == epoch else None
        if share is not None:
            share.check(worker, workers, block)
        self._handout = handout = Handout(epoch, version, plan.remaining, worker, workers, block)
        reader = KeyReader(self.reader, whole_parts=self.shuffle != "global")
        values = Decoder(self._codec, self.transform).many
        shared = None
        if workers > 1 and not self._no_cache:
            window = self.window if self.shuffle == "window" else 1
            shared = worker_cache(self._store, self.snapshot, window, token, reader)
        try:
            samples = plan.worker_samples(worker, workers, block, self._chunk)
            if share is not None:
                samples, handout.done = skip_samples(samples, share.seen), share.seen
            for recs in reader.read_chunks(map(plan.keys, samples)):
                yield from handout.hand_out(values(recs))  # counts what the caller took
        finally:
            reader.close()
            if shared is not None:
                self._store.cache = None
                shared.leave()

    # -- resume -----------------------------------------------------------------------

    def state_dict(self, samples_seen: int | None = None) -> dict[str, Any]:
        """Where this epoch is: after the samples this copy of the dataset handed out
        in its pass, or once every rank has consumed ``samples_seen`` samples.

        Without ``samples_seen`` (the ``Stateful`` protocol of torchdata's
        ``StatefulDataLoader`` and ``torch.distributed.checkpoint``): in the main
        process with ``num_workers=0``, the rank's state; in a DataLoader worker, its
        share of the pass (a ``StatefulDataLoader`` saves one per worker and gives it
        back to the same worker); before a pass, the start of the next epoch (or the
        state loaded for it). ``samples_seen``: a state of the whole rank, which
        resumes with any world size, worker count or batch size.

        Returns
        -------
        dict
            Small and JSON-serialisable (its size grows with the world size only). It
            names the epoch and the dataset version that epoch reads.

        Raises
        ------
        ResumeStateError
            Without ``samples_seen``, in the main process, when DataLoader workers
            handed the samples out (they read ahead of what the loop consumed).
        """
        if samples_seen is not None:
            epoch = self.epoch
            snap = self._snapshot_of(self._epoch_version(epoch))
            plan = self._plan(epoch, snap)
            check_int(samples_seen, "samples_seen", minimum=0, maximum=len(plan))
            return _state(self, epoch, snap, plan.remaining_after(samples_seen))
        got = self._handout
        if got is None:
            return _idle_state(self)
        snap = self._snapshot_of(got.version)
        if got.workers == 1:
            left = self._plan(got.epoch, snap, got.remaining).remaining_after(got.seen)
            return _state(self, got.epoch, snap, left)
        return _state(self, got.epoch, snap, got.remaining, got.share())

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
        if got not in (1, STATE_VERSION, WORKER_STATE_VERSION):
            raise ResumeStateError(
                f"not a SplitIterableDataset state (version {STATE_VERSION}): {str(state)[:200]}"
            )
        share = parse_share(state) if got == WORKER_STATE_VERSION else None
        snap = self.state_snapshot(state)
        skip = {"version", "dataset_version"} if got == 1 else {"version"}
        mine = {k: v for k, v in self._fingerprint(snap).items() if k not in skip}
        epoch, spans = resume_point(state, mine, snap.num_records)
        self._resume = (epoch, spans, share)
        if not self.follow:  # the whole run reads the state's version
            self._version = snap.version
        self._clock.set_next(epoch)
        self._clock.fix_next(lambda: snap.version, force=True)

    def _fingerprint(self, snap: Snapshot) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "dataset": identity_key(snap),
            "dataset_version": snap.version,
            "num_records": snap.num_records,
            "shuffle": self.shuffle,
            "seed": self.seed,
            "window": self.window,
        }

    # -- pickling ---------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        return {**self._location(), **{k: self.__dict__[k] for k in _PICKLED}, **codec_state(self)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._open_location(state)
        self._codec = state.pop("codec", None)
        for key in ("urlpath", "storage_options", "identity", "version"):
            state.pop(key, None)
        self.__dict__.update(state)
        self._handout = None


def _state(
    ds: SplitIterableDataset,
    epoch: int,
    snap: Snapshot,
    left: Spans,
    share: WorkerShare | None = None,
) -> dict[str, Any]:
    return make_state(ds._fingerprint(snap), epoch, left, share)


def _idle_state(ds: SplitIterableDataset) -> dict[str, Any]:
    """The state of a process that has not handed out a sample of its pass."""
    info = tud.get_worker_info()
    if info is None:
        epoch = ds._clock.next
        loaded = ds._resume is not None and ds._resume[0] == epoch  # and not started
        if ds._iters == 0 and ds._clock.current >= 0 and not loaded:
            raise ResumeStateError(WORKERS_HANDED_OUT)
    else:  # the epoch this worker's next pass joins (see __iter__'s token)
        epoch = ds._clock.peek(hash((info.seed - info.id, ds._iters + 1)) & _TOKEN_MASK)
    snap = ds._snapshot_of(ds._epoch_version(epoch))
    if ds._resume is not None and ds._resume[0] == epoch:
        return _state(ds, epoch, snap, ds._resume[1], ds._resume[2])
    return _state(ds, epoch, snap, ds._plan(epoch, snap).remaining)

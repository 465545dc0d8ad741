"""What :class:`splitdask.torch.SplitMixtureDataset` does, without torch: stream a
mixture's plan (:mod:`splitdask._dataset._mixrank`) and read each source's records.

:mod:`splitdask.torch` adds the ``IterableDataset`` base and tells who the caller is
(DataLoader worker, ``torch.distributed`` rank).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from splitdask._dataset._index import IntArray
from splitdask._dataset._mixrank import MixtureRanks
from splitdask._dataset._mixstate import mixture_state, read_state
from splitdask._dataset._mixture import Mixture, MixtureSource, Source
from splitdask._read._epochs import EpochClock, KeyReader
from splitdask._read._pinned import Pinned
from splitdask._store import CacheDir
from splitdask._util._validate import check_int

__all__ = ["MixtureStream"]

_DEFAULT_BLOCK = 64  # worker split granularity without a batch_size


class _SourceData(Pinned):
    """One source's pinned version, opened in each process on first use."""

    def __init__(self, src: MixtureSource, cache_dir: CacheDir, cache_bytes: Any) -> None:
        super().__init__(src.urlpath, src.storage_options, cache_dir, cache_bytes, src.version)

    def __getstate__(self) -> dict[str, Any]:
        return self._location()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._open_location(state)


class MixtureStream:
    """Stream a weighted mixture of datasets: the same rank and worker rules as
    :class:`splitdask.torch.SplitIterableDataset`, resumable from a small state.

    Parameters
    ----------
    mixture
        A :class:`splitdask.plan.Mixture`, or its sources (then ``weights``,
        ``stopping``, ``seed``, ``shuffle``, ``window``, ``epoch_length`` and
        ``storage_options`` are passed to it).
    batch_size
        The DataLoader's batch size: workers split the rank's share by batches of it,
        so the output order is the same for any ``num_workers``.
    rank, world_size
        Default to ``torch.distributed``'s when it is initialised, else 0 and 1.
    transform
        Called on each record (``bytes``) in the worker.
    sample_source
        Yield ``(sample, source index)`` pairs (the index into ``mixture.sources``).
    cache_dir, cache_bytes
        A local part cache for every source (see :class:`splitdask.SplitDataLoader`).

    Notes
    -----
    Each pass (``iter()``) runs one mixture epoch (``stopping="never"``: on without
    end). Ranks yield equal lengths with neither padding nor drops: the fewer than
    ``world_size`` positions an epoch cannot share out open the next epoch. Every
    source draw is read once in the whole run, so no record of a source comes twice
    within one of its epochs (:func:`splitdask.plan.audit` proves it for a run).
    """

    def __init__(
        self,
        mixture: Mixture | Sequence[Source],
        weights: Sequence[float] | None = None,
        *,
        stopping: str = "all_exhausted",
        seed: int = 0,
        shuffle: str | None = "window",
        window: int | None = None,
        epoch_length: int | None = None,
        storage_options: Mapping[str, Any] | None = None,
        batch_size: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        transform: Callable[[Any], Any] | None = None,
        sample_source: bool = False,
        cache_dir: CacheDir = None,
        cache_bytes: int | str | None = None,
    ) -> None:
        if not isinstance(mixture, Mixture):
            mixture = Mixture(
                mixture,
                weights,
                stopping=stopping,
                seed=seed,
                shuffle=shuffle,
                window=window,
                epoch_length=epoch_length,
                storage_options=storage_options,
            )
        elif weights is not None:
            raise TypeError("weights belong to the Mixture: Mixture(sources, weights)")
        self.mixture = mixture
        """The mixture given (its weights: see :meth:`load_state_dict`)."""
        self._mix = mixture  # the weights in force (a reweighted resume's, after one)
        self._sources = [_SourceData(s, cache_dir, cache_bytes) for s in mixture.sources]
        self.batch_size = (
            None if batch_size is None else check_int(batch_size, "batch_size", minimum=1)
        )
        default_rank, default_world = self._topology()
        self.world_size = check_int(
            default_world if world_size is None else world_size, "world_size", minimum=1
        )
        self.rank = check_int(
            default_rank if rank is None else rank, "rank", minimum=0, maximum=self.world_size - 1
        )
        self.transform = transform
        if not isinstance(sample_source, bool):
            raise TypeError(f"sample_source must be True or False, not {sample_source!r}")
        self.sample_source = sample_source
        # Samples read per step: about 1 MiB of records (the sources' mean size).
        nbytes = sum(s.nbytes for s in mixture.sources)
        n = sum(s.num_records for s in mixture.sources)
        self._chunk = int(min(4096, max(1, (1 << 20) * n // max(1, nbytes))))
        self._clock = EpochClock()
        self._resume: tuple[int, tuple[tuple[int, int], ...]] | None = None
        self._iters = 0

    # -- who calls (torch overrides these) --------------------------------------------

    def _topology(self) -> tuple[int, int]:
        """The default rank and world size."""
        return 0, 1

    def _worker(self) -> tuple[int, int, int]:
        """This worker, the worker count, and a token that all workers of a pass share."""
        return 0, 1, int.from_bytes(os.urandom(7), "little")

    # -- plans ------------------------------------------------------------------------

    @property
    def endless(self) -> bool:
        return self._mix.stopping == "never"

    def ranks(self, epoch: int) -> MixtureRanks:
        """This rank's plan of the pass that starts with ``epoch``."""
        return MixtureRanks(
            self._mix, self.world_size, self.rank, epoch, self._resume, self.endless
        )

    @property
    def epoch(self) -> int:
        """The mixture epoch running (or the next one, before the first ``iter()``)."""
        current = self._clock.current
        return current if current >= 0 else self._clock.next

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass run mixture epoch ``epoch``; later passes count on."""
        self._clock.set_next(check_int(epoch, "epoch", minimum=self._mix.start_epoch))

    def __len__(self) -> int:
        """Samples this rank yields in the next pass (``TypeError`` if it is endless)."""
        return len(self.ranks(self._clock.next))

    def __iter__(self) -> Iterator[Any]:
        self._iters += 1
        worker, workers, token = self._worker()
        epoch, _ = self._clock.claim(token)
        ranks = self.ranks(epoch)
        mix = self._mix
        readers = [
            KeyReader(s.reader, whole_parts=m.shuffle != "global")
            for s, m in zip(self._sources, mix.sources, strict=True)
        ]
        sizes = np.asarray([max(1, s.num_records) for s in mix.sources], dtype=np.int64)
        transform, tag = self.transform, self.sample_source
        block = self.batch_size or _DEFAULT_BLOCK
        try:
            for samples in ranks.worker_samples(worker, workers, block, self._chunk):
                src, k = mix.draws(ranks.positions(samples))
                recs = _read(mix, readers, src, k // sizes[src], k % sizes[src])
                if transform is not None:
                    recs = list(map(transform, recs))
                if tag:
                    yield from zip(recs, src.tolist(), strict=True)
                else:
                    yield from recs
        finally:
            for reader in readers:
                reader.close()

    # -- resume -----------------------------------------------------------------------

    def state_dict(self, samples_seen: int) -> dict[str, Any]:
        """Where the run is once every rank has consumed ``samples_seen`` samples of
        this pass.

        Returns
        -------
        dict
            JSON-serialisable, a few hundred bytes (growing with the world size and the
            number of sources): the sources (datasets, versions, plan settings), the
            weights in force, the mixture epoch and its positions no rank consumed, and
            each source's progress (``"progress"``: records consumed, and the epoch and
            index of its next draw).
        """
        epoch, left = self.ranks(self.epoch).state_after(samples_seen)
        return mixture_state(self._mix, epoch, left)

    def load_state_dict(self, state: Mapping[str, Any], reweight: bool = False) -> None:
        """Make the next ``iter()`` run the rest of the saved epoch, then go on.

        The rest is shared out over the *current* world size, worker count and batch
        size; nothing consumed comes again, nothing is lost. With the same topology the
        resumed run is exactly the uninterrupted one's.

        Parameters
        ----------
        state
            A :meth:`state_dict` of a mixture of the same sources (datasets, versions,
            shuffle settings), stopping rule and seed.
        reweight
            ``False`` (default): the state's weights must be this mixture's. ``True``:
            this mixture's weights take over at once: the rest of the saved epoch is
            not run as positions; instead each source first reads the draws those
            unconsumed positions held (in their order), then goes on from where the
            saved epoch would have left it. So what was consumed stays consumed, no
            source record is skipped or repeated within its epoch, and the next pass
            is a new mixture epoch (the saved one + 1) under the new weights.

        Raises
        ------
        ResumeStateError
            If ``state`` is not a state of these sources and settings (naming what
            differs), or its weights differ and ``reweight`` is not set.
        """
        mix, epoch, left = read_state(self.mixture, state, reweight)
        self._mix = mix
        self._resume = None if left is None else (epoch, left)
        self._clock.set_next(epoch)


def _read(
    mix: Mixture, readers: list[KeyReader], src: IntArray, epoch: IntArray, index: IntArray
) -> list[Any]:
    """The records at (source, source epoch, index), in that order."""
    by_src = np.argsort(src, kind="stable")
    got: list[Any] = []
    for s in np.unique(src).tolist():
        sel = by_src[src[by_src] == s]
        keys = np.empty(len(sel), dtype=np.int64)
        ep = epoch[sel]
        for e in np.unique(ep).tolist():
            at = ep == e
            keys[at] = mix.keys(s, e, index[sel][at])
        got += readers[s].read(keys)
    if len(got) == 1 or np.array_equal(by_src, np.arange(len(by_src))):
        return got
    where = np.empty_like(by_src)
    where[by_src] = np.arange(len(by_src))
    return list(map(got.__getitem__, where.tolist()))

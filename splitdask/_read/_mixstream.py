"""What :class:`splitdask.torch.SplitMixtureDataset` does, without torch: stream a
mixture's plan (:mod:`splitdask._dataset._mixrank`) and read each source's records.

:mod:`splitdask.torch` adds the ``IterableDataset`` base and tells who the caller is
(DataLoader worker, ``torch.distributed`` rank).
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from splitdask._dataset._index import IntArray
from splitdask._dataset._mixrank import MixtureRanks
from splitdask._dataset._mixstate import mixture_state, read_state
from splitdask._dataset._mixture import Mixture, MixtureSource, Source
from splitdask._read._decode import Decoder
from splitdask._read._engine import snapshot_decoder
from splitdask._read._epochs import EpochClock, KeyReader
from splitdask._read._pinned import Pinned
from splitdask._store import CacheDir
from splitdask._store._workercache import WorkerCache
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
        Called on each record, once decoded, in the worker.
    decode, allow_pickle
        As for :class:`splitdask.SplitDataLoader`: each source's records are decoded
        with that source's codec (sources may differ); ``decode=False``: the stored
        bytes. Pickle decodes only with ``allow_pickle=True``.
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
        decode: bool = True,
        allow_pickle: bool = False,
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
        # Each source's codec, found now (an unregistered one fails here, not in a worker).
        self._codecs = [
            snapshot_decoder(s.snapshot, decode, allow_pickle).codec for s in self._sources
        ]
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
        # Samples read per step: about 4 MiB of records (the sources' mean size), at
        # least 256: a step pays a fixed cost per source (interleave, plans, a read
        # each), so a mixture's steps are larger than a single dataset's 1 MiB.
        nbytes = sum(s.nbytes for s in mixture.sources)
        n = sum(s.num_records for s in mixture.sources)
        self._chunk = int(min(16384, max(256, (4 << 20) * n // max(1, nbytes))))
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
        decoders = [Decoder(codec) for codec in self._codecs]
        plain = all(d.plain for d in decoders)
        block = self.batch_size or _DEFAULT_BLOCK
        chunks = ranks.worker_samples(worker, workers, block, self._chunk)
        located = (_locate(mix, ranks.positions(c), sizes) for c in chunks)
        stream = _Demux(located, readers)
        shared = self._worker_cache(workers, token, readers)
        try:
            for src, recs in stream:
                if not plain:
                    recs = [decoders[s].one(r) for s, r in zip(src.tolist(), recs, strict=True)]
                if transform is not None:
                    recs = list(map(transform, recs))
                if tag:
                    yield from zip(recs, src.tolist(), strict=True)
                else:
                    yield from recs
        finally:
            stream.close()
            for reader in readers:
                reader.close()
            if shared is not None:
                for data in self._sources:
                    if data._store.cache is shared.cache:
                        data._store.cache = None
                shared.leave()

    def _worker_cache(
        self, workers: int, token: int, readers: list[KeyReader]
    ) -> WorkerCache | None:
        """With several workers reading whole parts of remote sources that have no
        cache: a temporary one the workers of this pass share (as
        ``SplitIterableDataset``'s: two windows of each such source and what its reader
        fetches ahead), so that each part is fetched once a pass, not once a worker."""
        if workers < 2:
            return None
        limit, chosen = 0, []
        for data, reader, src in zip(self._sources, readers, self._mix.sources, strict=True):
            if not reader.whole or data._store.cache is not None or data._no_cache:
                continue
            snap = data.snapshot
            per_bin = sorted(
                (sum(snap.parts[p].size for p in pids) for pids in snap.bin_parts), reverse=True
            )
            window = src.window if src.shuffle == "window" else 1
            limit += 2 * sum(per_bin[:window]) + reader.ahead_bytes
            chosen.append(data)
        if not chosen:
            return None
        shared = WorkerCache(f"mix-{token:x}", max(1 << 20, limit))
        for data in chosen:
            data._store.cache = shared.cache
        return shared

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


Located = tuple[IntArray, IntArray, list[tuple[int, IntArray]]]
"""A chunk: the source of each sample, the samples ordered by source (stable), and per
source present the keys of its records in that order."""


def _locate(mix: Mixture, positions: IntArray, sizes: IntArray) -> Located:
    """The source of each position and, per source, the keys of its records."""
    src, k = mix.draws(positions)
    by_src = np.argsort(src, kind="stable")
    src_sorted, k = src[by_src], k[by_src]
    epoch, index = k // sizes[src_sorted], k % sizes[src_sorted]
    cuts = np.flatnonzero(np.diff(src_sorted) | np.diff(epoch)) + 1  # runs of (source, epoch)
    edges = [0, *cuts.tolist(), len(k)]
    keys = np.empty_like(k)
    per: list[tuple[int, IntArray]] = []
    lo = 0
    for a, b in itertools.pairwise(edges):
        keys[a:b] = mix.keys(int(src_sorted[a]), int(epoch[a]), index[a:b])
        if b == len(k) or src_sorted[b] != src_sorted[a]:
            per.append((int(src_sorted[a]), keys[lo:b]))
            lo = b
    return src, by_src, per


class _Demux:
    """Chunks of a mixture read source by source, each source's keys through its own
    :meth:`KeyReader.read_chunks` (so a remote source's parts are fetched ahead), and
    put back in the stream's order."""

    def __init__(self, chunks: Iterator[Located], readers: list[KeyReader]) -> None:
        self._chunks = chunks
        self._order: deque[Located] = deque()  # chunks pulled, not yet yielded
        self._queues: list[deque[IntArray]] = [deque() for _ in readers]
        self._outs = [r.read_chunks(self._feed(s)) for s, r in enumerate(readers)]

    def _pull(self) -> bool:
        chunk = next(self._chunks, None)
        if chunk is None:
            return False
        self._order.append(chunk)
        for s, keys in chunk[2]:
            self._queues[s].append(keys)
        return True

    def _feed(self, s: int) -> Iterator[IntArray]:
        while True:
            while not self._queues[s]:
                if not self._pull():
                    return
            yield self._queues[s].popleft()

    def __iter__(self) -> Iterator[tuple[IntArray, list[Any]]]:
        while self._order or self._pull():
            src, by_src, per = self._order.popleft()
            got: list[Any] = []  # in by_src's order
            for s, _ in per:
                got += next(self._outs[s])
            if len(per) == 1:
                yield src, got
                continue
            where = np.empty_like(by_src)
            where[by_src] = np.arange(len(by_src))
            yield src, list(map(got.__getitem__, where.tolist()))

    def close(self) -> None:
        for out in self._outs:  # generators: closing runs their clean-up now
            close = getattr(out, "close", None)
            if close is not None:
                close()

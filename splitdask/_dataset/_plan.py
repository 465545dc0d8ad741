"""Epoch plans: which record each rank and each DataLoader worker reads, in what order.

An epoch's order is a pure function of the dataset's bin sizes, the seed, the epoch,
the shuffle mode and the window; a rank's share of it is a pure function of that plus
the world size, the rank and ``drop_last``; a worker's share adds the worker count and
the batch size. Nothing here does I/O or imports torch.

Records are named by their *bin-space key*: the bins laid end to end in bin order,
each in stored order (bin ``b``'s record ``j`` is ``bin_start[b] + j``). Orders are
computed lazily, a window of bins at a time, so a worker holds about one window's
permutation (8 bytes a record of the window) and never a list of the whole epoch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from splitdask._dataset._index import IntArray
from splitdask._dataset._interleave import Intervals, coalesce
from splitdask._dataset._order import bin_order, bin_permutation
from splitdask._util._split import worker_batches
from splitdask._util._validate import check_int

__all__ = [
    "SHUFFLES",
    "EpochOrder",
    "RankPlan",
    "ShuffleQuality",
    "default_window",
    "epoch_seed",
    "normalise_shuffle",
    "shuffle_quality",
]

SHUFFLES = ("window", "bins", "global", "none")
WINDOW_MIN_BINS = 8
WINDOW_BUDGET = 256 << 20
"""Bytes of records a default window may span (when that is more than 8 bins)."""
WINDOW_RECORDS = 1 << 20
"""Records a default window may span (when that is more than 8 bins)."""

_U64 = np.uint64
_M1, _M2 = _U64(0xBF58476D1CE4E5B9), _U64(0x94D049BB133111EB)


def normalise_shuffle(shuffle: Any) -> str:
    """The shuffle mode: ``"window"``, ``"bins"``, ``"global"`` or ``"none"`` (also
    ``None``/``False``)."""
    if shuffle is None or shuffle is False:
        return "none"
    if isinstance(shuffle, str) and shuffle in SHUFFLES:
        return shuffle
    raise ValueError(
        f"shuffle must be one of {', '.join(map(repr, SHUFFLES))} or None, not {shuffle!r}"
    )


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch, ``seed + epoch`` (as ``DistributedSampler`` does): epoch
    ``e`` of mode ``"bins"`` is ``iterate_binwise(shuffle=True, seed=seed + e)``."""
    return seed + epoch


def default_window(bin_counts: Sequence[int], nbytes: int) -> int:
    """Bins per window: at least 8, or as many as fit both :data:`WINDOW_BUDGET` bytes
    of records and :data:`WINDOW_RECORDS` records (8 MiB of permutation)."""
    num_bins = len(bin_counts)
    per_bin = nbytes / max(1, num_bins)
    per_bin_records = sum(bin_counts) / max(1, num_bins)
    fit = min(
        int(WINDOW_BUDGET // per_bin) if per_bin else num_bins,
        int(WINDOW_RECORDS // per_bin_records) if per_bin_records else num_bins,
    )
    return max(1, min(num_bins, max(WINDOW_MIN_BINS, fit)))


class EpochOrder:
    """Epoch position -> bin-space key, for one epoch of one shuffle mode.

    Parameters
    ----------
    bin_counts
        Records in each bin.
    shuffle
        ``"window"``: bins in a seeded order, ``window`` at a time, the records of a
        window permuted together. ``"bins"``: the same with one bin a window and
        the bin's own permutation (``iterate_binwise(shuffle=True)``'s order).
        ``"global"``: a uniform permutation of all records (a keyed Feistel network
        with cycle walking; nothing materialised). ``"none"``: bins in order, each
        in stored order.
    seed
        The epoch's seed (see :func:`epoch_seed`).
    window
        Bins per window for ``"window"``.
    """

    def __init__(self, bin_counts: Sequence[int], shuffle: str, seed: int, window: int = 1):
        self.mode = normalise_shuffle(shuffle)
        self.seed = check_int(seed, "seed", minimum=0)
        counts = np.asarray(bin_counts, dtype=np.int64)
        self.num_records = int(counts.sum())
        self.bin_start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._perms: OrderedDict[int, IntArray] = OrderedDict()
        if self.mode in ("window", "bins"):
            size = 1 if self.mode == "bins" else check_int(window, "window", minimum=1)
            order = bin_order(self.seed, len(counts))
            self._windows = [order[i : i + size] for i in range(0, len(order), size)]
            sizes = [int(counts[w].sum()) for w in self._windows]
            self._win_start = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            self._counts = counts
        elif self.mode == "global":
            bits = max(2, int(self.num_records - 1).bit_length())
            self._half = (bits + 1) // 2
            ss = np.random.SeedSequence(self.seed, spawn_key=(3,))
            self._keys = ss.generate_state(6, np.uint64)

    def keys(self, pos: IntArray) -> IntArray:
        """Bin-space keys of epoch positions ``0 <= pos < num_records``."""
        pos = np.asarray(pos, dtype=np.int64)
        if self.mode == "none" or not len(pos):
            return pos
        if self.mode == "global":
            keys: IntArray = self._feistel_walk(pos.astype(_U64)).astype(np.int64)
            return keys
        win = np.searchsorted(self._win_start, pos, side="right") - 1
        out = np.empty_like(pos)
        for w in np.unique(win).tolist():
            sel = win == w
            q = self._perm(w)[pos[sel] - self._win_start[w]]
            bins = np.asarray(self._windows[w], dtype=np.int64)
            cum = np.concatenate([[0], np.cumsum(self._counts[bins])])
            j = np.searchsorted(cum, q, side="right") - 1
            out[sel] = self.bin_start[bins[j]] + q - cum[j]
        return out

    def _perm(self, w: int) -> IntArray:
        """Window ``w``'s permutation (the last two are kept: chunks cross windows)."""
        perm = self._perms.get(w)
        if perm is None:
            n = int(self._win_start[w + 1] - self._win_start[w])
            if self.mode == "bins":
                perm = bin_permutation(self.seed, self._windows[w][0], n)
            else:
                rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(2, w)))
                perm = rng.permutation(n).astype(np.int64)
            self._perms[w] = perm
            if len(self._perms) > 2:
                self._perms.popitem(last=False)
        return perm

    def _feistel(self, x: Any) -> Any:
        half = _U64(self._half)
        mask = _U64((1 << self._half) - 1)
        left, right = x >> half, x & mask
        for key in self._keys:
            z = (right ^ key) * _M1
            z = (z ^ (z >> _U64(29))) * _M2
            left, right = right, left ^ ((z ^ (z >> _U64(32))) & mask)
        return (left << half) | right

    def _feistel_walk(self, x: Any) -> Any:
        # A permutation of [0, 4**half) walked until it lands in [0, n): a permutation
        # of [0, n). 4**half < 4n, so under four steps on average.
        n = _U64(self.num_records)
        y = self._feistel(x)
        bad = np.flatnonzero(y >= n)
        while len(bad):
            y[bad] = self._feistel(y[bad])
            bad = bad[y[bad] >= n]
        return y


@dataclass(frozen=True)
class RankPlan:
    """One rank's share of an epoch, split further among DataLoader workers.

    The epoch positions still to read (``remaining``, all of ``[0, n)`` unless
    resuming) are laid end to end and cut into ``world_size`` contiguous runs of
    equal length: contiguous so that a rank reads whole windows, and the bytes all
    ranks fetch stay near the dataset's size. ``drop_last=False`` pads the last run
    by repeating the first positions (fewer than ``world_size``); ``drop_last=True``
    drops fewer than ``world_size`` positions at the end.
    """

    order: EpochOrder
    remaining: Intervals
    world_size: int = 1
    rank: int = 0
    drop_last: bool = False

    def __post_init__(self) -> None:
        check_int(self.world_size, "world_size", minimum=1)
        check_int(self.rank, "rank", minimum=0, maximum=self.world_size - 1)

    @property
    def total(self) -> int:
        """Positions left to share out (no padding)."""
        return sum(b - a for a, b in self.remaining)

    def __len__(self) -> int:
        """Samples each rank yields."""
        m, w = self.total, self.world_size
        return m // w if self.drop_last else -(-m // w)

    def positions(self, samples: IntArray) -> IntArray:
        """Epoch positions of this rank's samples ``0 <= samples < len(self)``."""
        m = self.total
        if not m or not len(samples):
            return np.zeros(0, dtype=np.int64)
        coord = np.asarray(samples, dtype=np.int64) + self.rank * len(self)
        coord %= m  # padding repeats the first positions
        starts = np.asarray([a for a, _ in self.remaining], dtype=np.int64)
        cum = np.concatenate([[0], np.cumsum([b - a for a, b in self.remaining])])
        k = np.searchsorted(cum, coord, side="right") - 1
        out: IntArray = starts[np.minimum(k, len(starts) - 1)] + coord - cum[k]
        return out

    def keys(self, samples: IntArray) -> IntArray:
        """Bin-space keys of this rank's samples."""
        return self.order.keys(self.positions(samples))

    def worker_samples(
        self, worker: int = 0, num_workers: int = 1, batch_size: int = 1, chunk: int = 4096
    ) -> Iterator[IntArray]:
        """This worker's samples (indices into the rank's share), a chunk at a time.

        Worker ``k`` takes batches ``k, k + num_workers, ...`` of ``batch_size``
        samples, the order in which a DataLoader with that batch size collects them,
        so its output is the rank's share in order for any worker count.
        """
        check_int(num_workers, "num_workers", minimum=1)
        check_int(worker, "worker", minimum=0, maximum=num_workers - 1)
        check_int(batch_size, "batch_size", minimum=1)
        n = len(self)
        mine = worker_batches(worker, num_workers, -(-n // batch_size))
        step = max(1, chunk // batch_size)
        offsets = np.arange(batch_size, dtype=np.int64)
        lo = 0
        while lo < len(mine):
            # The first step is one batch: the first sample (after a resume too)
            # waits for no more than its own batch's reads.
            part = mine[lo : lo + (step if lo else 1)]  # a range: nothing per batch is held
            lo += len(part)
            batches = np.arange(part.start, part.stop, part.step, dtype=np.int64)
            samples = (batches[:, None] * batch_size + offsets).ravel()
            yield samples[samples < n]

    def remaining_after(self, samples_seen: int) -> Intervals:
        """Positions no rank has read once every rank has read ``samples_seen``.

        A rank's padding reads first positions of the epoch; when a rank holds
        nothing but padding (a world larger than half the samples left), it can read
        them before their own rank does, and they count as read.
        """
        n, m = len(self), self.total
        check_int(samples_seen, "samples_seen", minimum=0, maximum=n)
        if not m:
            return ()
        read: list[tuple[int, int]] = []  # coordinates read, wrapped as padding wraps
        for r in range(self.world_size):
            lo = r * n % m
            hi = lo + samples_seen
            read += [(lo, min(hi, m)), (0, hi - m)] if hi > m else [(lo, hi)]
        left, at = [], 0
        for a, b in sorted(read):  # the complement in [0, the last coordinate shared out)
            left += _slice(self.remaining, at, a)
            at = max(at, b)
        left += _slice(self.remaining, at, min(self.world_size * n, m))
        return coalesce(left)


def _slice(intervals: Intervals, lo: int, hi: int) -> list[tuple[int, int]]:
    """Concatenated coordinates ``[lo, hi)`` of ``intervals`` as position intervals."""
    out, base = [], 0
    for a, b in intervals:
        s, e = max(lo - base, 0), min(hi - base, b - a)
        if s < e:
            out.append((a + s, a + e))
        base += b - a
    return out


@dataclass(frozen=True)
class ShuffleQuality:
    """How well an order mixes (see :func:`shuffle_quality`)."""

    correlation: float
    """Pearson correlation of output position and write index: 0 is ideal, 1 is
    write order."""
    distinct_bins_per_64: float
    """Mean number of distinct bins in consecutive blocks of 64 records."""
    longest_bin_run: int
    """Longest run of consecutive records from one bin."""


def shuffle_quality(
    order: Sequence[int] | IntArray, bin_of: Sequence[int] | IntArray
) -> ShuffleQuality:
    """Measure an order: its correlation with write order and how it mixes bins.

    Parameters
    ----------
    order
        Write indices (global record indices) in output order.
    bin_of
        The bin of each write index: ``bin_of[i]`` for record ``i``.

    Returns
    -------
    ShuffleQuality
    """
    idx = np.asarray(order, dtype=np.int64)
    bins = np.asarray(bin_of, dtype=np.int64)[idx]
    n = len(idx)
    corr = 0.0
    if n > 1 and idx.std() > 0:
        corr = float(np.corrcoef(np.arange(n), idx)[0, 1])
    blocks = n // 64
    distinct = 0.0
    if blocks:
        b = np.sort(bins[: blocks * 64].reshape(blocks, 64), axis=1)
        distinct = float((1 + (np.diff(b, axis=1) != 0).sum(axis=1)).mean())
    elif n:
        distinct = float(len(np.unique(bins)))
    run = 0
    if n:
        cuts = np.flatnonzero(np.diff(bins) != 0)
        edges = np.concatenate([[-1], cuts, [n - 1]])
        run = int(np.diff(edges).max())
    return ShuffleQuality(corr, distinct, run)

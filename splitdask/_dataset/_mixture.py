"""Weighted mixtures of datasets: which record of which source each position reads.

A mixture is one endless stream of positions. :class:`~splitdask._dataset._interleave.
Interleave` names the source of each position and its *draw* ``d`` within that source
(the how-many-th time that source is drawn); draw ``d`` reads the source's draw
``k = map(d)``, ``k`` being ``d`` itself until a resume changes the weights (see
:meth:`Mixture.reweighted`). Draw ``k`` of a source is index ``k % n`` of the source's
epoch ``k // n`` (``n`` its records), read through that epoch's own shuffle plan
(:class:`~splitdask._dataset._plan.EpochOrder`, seed ``seed + epoch``). So every
position maps to (source, source epoch, index) in a few arithmetic steps, and a
source's records come once each per source epoch, whatever the other sources do.

The stream is cut into *mixture epochs* of ``epoch_length`` positions (one pass of a
DataLoader), set by the stopping rule: until the first source runs out of its epoch
(``"first_exhausted"``), until the last one does (``"all_exhausted"``: smaller sources
go on into their next epochs, each freshly shuffled), or a nominal length
(``"never"``: the pass is endless).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from splitdask._dataset._index import IntArray
from splitdask._dataset._interleave import Interleave, Intervals, coalesce
from splitdask._dataset._plan import EpochOrder, default_window, epoch_seed, normalise_shuffle
from splitdask._dataset._snapshot import identity_key, open_snapshot
from splitdask._store import open_store
from splitdask._util._validate import check_int
from splitdask.errors import ResumeStateError

__all__ = ["STOPPING", "Mixture", "MixtureSource"]

STOPPING = ("first_exhausted", "all_exhausted", "never")
OPEN = -1
"""The end of a map's last, open-ended run of draws (``-1`` in states)."""


@dataclass(frozen=True)
class MixtureSource:
    """One source of a :class:`Mixture`: a dataset version and its epoch plan settings."""

    urlpath: str
    storage_options: dict[str, Any]
    version: int | None
    """The version read (``None``: a splitdataloader dataset, which has none)."""
    identity: str
    bin_counts: tuple[int, ...]
    nbytes: int
    shuffle: str
    seed: int
    window: int
    name: str

    @property
    def num_records(self) -> int:
        return sum(self.bin_counts)

    def order(self, epoch: int) -> EpochOrder:
        """The source's own plan for its epoch ``epoch``."""
        return EpochOrder(self.bin_counts, self.shuffle, epoch_seed(self.seed, epoch), self.window)

    def fingerprint(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dataset": self.identity,
            "dataset_version": self.version,
            "num_records": self.num_records,
            "shuffle": self.shuffle,
            "seed": self.seed,
            "window": self.window,
        }


Source = Any
"""A URL or path, a ``SplitDataLoader`` (its version), a mapping with ``urlpath``
and any of ``storage_options``, ``version``, ``shuffle``, ``seed``, ``window``, ``name``,
or a :class:`MixtureSource` (e.g. another mixture's, already resolved)."""


def resolve_source(
    src: Source, storage_options: Mapping[str, Any] | None, shuffle: str, seed: int, window: Any
) -> MixtureSource:
    if isinstance(src, MixtureSource):
        return src
    spec: dict[str, Any] = {}
    if isinstance(src, Mapping):
        spec = dict(src)
        if "urlpath" not in spec:
            raise ValueError(f"a mixture source given as a mapping needs 'urlpath': {src!r}")
        src = spec.pop("urlpath")
        unknown = set(spec) - {"storage_options", "version", "shuffle", "seed", "window", "name"}
        if unknown:
            raise ValueError(f"unknown mixture source settings {sorted(unknown)} for {src!r}")
    if hasattr(src, "_store") and hasattr(src, "snapshot"):  # a SplitDataLoader
        store, snap = src._store, src.snapshot
    else:
        if not isinstance(src, str | os.PathLike):
            raise TypeError(
                f"a mixture source is a URL, a SplitDataLoader or a mapping, not {src!r}"
            )
        store = open_store(src, spec.get("storage_options", storage_options))
        snap = open_snapshot(store, spec.get("version"))
    counts = tuple(snap.bin_counts())
    win = spec.get("window", window)
    if win is None:
        win = default_window(counts, snap.nbytes)
    return MixtureSource(
        urlpath=store.urlpath,
        storage_options=dict(store.storage_options),
        version=snap.version,
        identity=identity_key(snap),
        bin_counts=counts,
        nbytes=snap.nbytes,
        shuffle=normalise_shuffle(spec.get("shuffle", shuffle)),
        seed=check_int(spec.get("seed", seed), "seed", minimum=0),
        window=check_int(win, "window", minimum=1),
        name=str(spec.get("name") or os.path.basename(store.urlpath.rstrip("/")) or store.urlpath),
    )


def _check_weights(weights: Sequence[float], n: int) -> tuple[float, ...]:
    w = tuple(float(x) for x in weights)
    if len(w) != n:
        raise ValueError(f"{len(w)} weights for {n} sources: give one weight per source")
    if not all(np.isfinite(x) and x >= 0 for x in w) or not sum(w) > 0:
        raise ValueError(f"weights must be finite, >= 0, and not all 0: {list(weights)}")
    total = sum(w)
    return tuple(x / total for x in w)


class Mixture:
    """A weighted mixture of datasets, each with its own shuffle plan and epochs.

    Parameters
    ----------
    sources
        Each a URL or path, a ``SplitDataLoader`` (read at its version), a mapping
        with ``"urlpath"`` and any of ``"storage_options"``, ``"version"``, ``"shuffle"``,
        ``"seed"``, ``"window"``, ``"name"`` (overriding the arguments below for it),
        or a :class:`MixtureSource` (used as it is).
        URLs are opened now, at their newest version (or ``"version"``): the mixture
        reads that version, whatever is committed later.
    weights
        One per source, >= 0 (normalised; a weight of 0 never draws that source).
        Default: each source's share of all records.
    stopping
        ``"all_exhausted"`` (default): a mixture epoch lasts until every source has
        been drawn ``num_records`` times (smaller sources repeat, each epoch freshly
        shuffled). ``"first_exhausted"``: until the first source has.
        ``"never"``: endless; ``epoch_length`` positions make a nominal epoch.
    seed
        Seeds the interleaving; each source's shuffle uses ``seed`` too, unless its
        mapping says otherwise (its epoch ``e`` is shuffled with ``seed + e``).
    shuffle, window
        Each source's shuffle mode and window (see :class:`splitdask.plan.EpochOrder`).
    epoch_length
        Positions per nominal epoch with ``stopping="never"`` (default: all sources'
        records together).
    storage_options
        For the sources given as URLs.

    Attributes
    ----------
    sources : list of MixtureSource
    weights : tuple of float
        Normalised to sum to 1.
    epoch_length : int
        Positions per mixture epoch.
    start_epoch : int
        The first mixture epoch of these weights (0 unless :meth:`reweighted`).
    maps : tuple
        Per source, the source draws its mixture draws ``0, 1, ...`` read, as runs;
        the last ends at :data:`OPEN` (the identity unless :meth:`reweighted`).
    """

    def __init__(
        self,
        sources: Sequence[Source],
        weights: Sequence[float] | None = None,
        *,
        stopping: str = "all_exhausted",
        seed: int = 0,
        shuffle: str | None = "window",
        window: int | None = None,
        epoch_length: int | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not sources:
            raise ValueError("a mixture needs at least one source")
        if stopping not in STOPPING:
            raise ValueError(f"stopping must be one of {', '.join(map(repr, STOPPING))}")
        seed = check_int(seed, "seed", minimum=0)
        mode = normalise_shuffle(shuffle)
        resolved = [resolve_source(s, storage_options, mode, seed, window) for s in sources]
        if weights is None:
            weights = [s.num_records for s in resolved]
        if epoch_length is not None and stopping != "never":
            raise ValueError(
                f"epoch_length is for stopping='never'; with {stopping!r} the sources' sizes "
                "and weights set it"
            )
        length = (
            None if epoch_length is None else check_int(epoch_length, "epoch_length", minimum=1)
        )
        self._setup(resolved, weights, stopping, seed, length, 0, ())

    @classmethod
    def _make(
        cls,
        sources: list[MixtureSource],
        weights: Sequence[float],
        stopping: str,
        seed: int,
        epoch_length: int | None,
        start_epoch: int,
        maps: tuple[Intervals, ...],
    ) -> Mixture:
        self = cls.__new__(cls)
        self._setup(sources, weights, stopping, seed, epoch_length, start_epoch, maps)
        return self

    def _setup(
        self,
        sources: list[MixtureSource],
        weights: Sequence[float],
        stopping: str,
        seed: int,
        epoch_length: int | None,
        start_epoch: int,
        maps: tuple[Intervals, ...],
    ) -> None:
        self.sources = sources
        self.raw_weights = [float(x) for x in weights]  # as given: states keep these
        self.weights = _check_weights(weights, len(sources))
        self.stopping, self.seed, self.start_epoch = stopping, seed, start_epoch
        empty = [
            s.name for s, w in zip(sources, self.weights, strict=True) if w and not s.num_records
        ]
        if empty:
            raise ValueError(f"mixture sources {empty} have no records: give them weight 0")
        self.maps = maps or tuple(((0, OPEN),) for _ in sources)
        self._interleave = Interleave(self.weights, _segment_seed(seed, start_epoch))
        self._orders: OrderedDict[tuple[int, int], EpochOrder] = OrderedDict()
        self.epoch_length = epoch_length or self._stop_length()

    def _stop_length(self) -> int:
        if self.stopping == "never":
            return max(1, sum(s.num_records for s in self.sources))
        ends = [
            self._interleave.positions_for(i, s.num_records)
            for i, s in enumerate(self.sources)
            if self.weights[i] > 0
        ]
        return max(1, min(ends) if self.stopping == "first_exhausted" else max(ends))

    # -- positions --------------------------------------------------------------------

    @property
    def num_sources(self) -> int:
        return len(self.sources)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sources]

    def epoch_span(self, epoch: int) -> tuple[int, int]:
        """The positions of mixture epoch ``epoch`` (before ranks move its edges)."""
        e = epoch - self.start_epoch
        if e < 0:
            raise ValueError(f"epoch {epoch} is before these weights (from {self.start_epoch})")
        return e * self.epoch_length, (e + 1) * self.epoch_length

    def draws(self, positions: IntArray) -> tuple[IntArray, IntArray]:
        """The source of each position and the source draw ``k`` it reads."""
        src, d = self._interleave.sources(positions)
        if all(len(m) == 1 for m in self.maps):  # no reweight: k = d (+ a start)
            k: IntArray = d + np.asarray([m[0][0] for m in self.maps], dtype=np.int64)[src]
            return src, k
        k = np.empty_like(d)
        for s in np.flatnonzero(np.bincount(src, minlength=len(self.maps))).tolist():
            sel = src == s
            k[sel] = map_draws(self.maps[s], d[sel])
        return src, k

    def locate(self, positions: IntArray | Sequence[int]) -> tuple[IntArray, IntArray, IntArray]:
        """Per position: its source, that source's epoch, and the index in that epoch's
        order (a closed form: no replay of the stream)."""
        src, k = self.draws(np.asarray(positions, dtype=np.int64))
        n = np.asarray([s.num_records for s in self.sources], dtype=np.int64)[src]
        return src, k // np.maximum(n, 1), k % np.maximum(n, 1)

    def keys(self, source: int, epoch: int, index: IntArray) -> IntArray:
        """Bin-space keys (see :mod:`splitdask.plan`) of ``source``'s epoch positions."""
        order = self._orders.get((source, epoch))
        if order is None:
            order = self._orders[(source, epoch)] = self.sources[source].order(epoch)
            if len(self._orders) > 2 * len(self.sources):
                self._orders.popitem(last=False)
        return order.keys(index)

    def source_draws(self, source: int, spans: Intervals) -> Intervals:
        """The source draws (``k``) that the positions ``spans`` read of ``source``."""
        out: list[tuple[int, int]] = []
        for a, b in spans:
            lo, hi = (int(x) for x in self._interleave.count(source, np.asarray([a, b])))
            out += map_runs(self.maps[source], lo, hi)
        return coalesce(out)

    # -- states -----------------------------------------------------------------------

    def fingerprint(self) -> dict[str, Any]:
        """What a resume state must match (weights apart: see :meth:`reweighted`)."""
        return {
            "sources": [s.fingerprint() for s in self.sources],
            "stopping": self.stopping,
            "seed": self.seed,
        }

    def segment(self) -> dict[str, Any]:
        """The weights in force and where they start (JSON)."""
        return {
            "weights": self.raw_weights,
            "epoch_length": self.epoch_length,
            "start_epoch": self.start_epoch,
            "maps": [[x for run in m for x in run] for m in self.maps],
        }

    def with_segment(self, seg: Mapping[str, Any]) -> Mixture:
        """This mixture with a state's weights, epoch length and draw maps."""
        try:
            maps = tuple(_runs(m) for m in seg["maps"])
            weights = seg["weights"]
            _check_weights(weights, len(self.sources))
            length = check_int(seg["epoch_length"], "epoch_length", minimum=1)
            start = check_int(seg["start_epoch"], "start_epoch", minimum=0)
            if len(maps) != len(self.sources):
                raise ValueError("one draw map per source")
        except (KeyError, TypeError, ValueError) as exc:
            raise ResumeStateError(f"damaged mixture state ({exc}): {str(seg)[:200]}") from None
        return Mixture._make(self.sources, weights, self.stopping, self.seed, length, start, maps)

    def reweighted(
        self, weights: Sequence[float], epoch: int, remaining: Intervals, epoch_length: int | None
    ) -> Mixture:
        """New weights from mixture epoch ``epoch + 1`` on, resuming a state of ``epoch``
        whose positions ``remaining`` were not consumed.

        What was consumed stays consumed: each source's next draws are first the draws
        those unconsumed positions would have read (in order), then its draws after the
        end of ``epoch``. No source draw is skipped or read twice; only the interleaving
        changes.
        """
        _, end = self.epoch_span(epoch)
        maps = []
        for s in range(len(self.sources)):
            runs = list(self.source_draws(s, remaining))
            tail = int(self._interleave.count(s, np.asarray(end)))
            rest = map_runs(self.maps[s], tail, None)  # bounded runs, then an open one
            bounded = coalesce([*runs, *rest[:-1]])
            start = rest[-1][0]
            if bounded and bounded[-1][1] == start:  # the open run goes on from it
                bounded, start = bounded[:-1], bounded[-1][0]
            maps.append((*bounded, (start, OPEN)))
        return Mixture._make(
            self.sources, weights, self.stopping, self.seed, epoch_length, epoch + 1, tuple(maps)
        )

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_interleave", "_orders")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._orders = OrderedDict()
        self._interleave = Interleave(self.weights, _segment_seed(self.seed, self.start_epoch))


def _segment_seed(seed: int, start: int) -> int:
    return seed if start == 0 else seed ^ (start * 0x9E3779B97F4A7C15 & ((1 << 63) - 1))


def _runs(flat: Any) -> Intervals:
    if not (isinstance(flat, list) and len(flat) % 2 == 0 and flat):
        raise ValueError("a draw map is a flat list of run edges")
    if not all(type(x) is int for x in flat) or flat[-1] != OPEN:
        raise ValueError("a draw map's edges are ints, the last -1")
    runs = tuple(zip(flat[::2], flat[1::2], strict=True))
    if any(a < 0 or (b != OPEN and b <= a) for a, b in runs):
        raise ValueError("a draw map's runs are non-empty")
    return runs


def map_runs(runs: Intervals, lo: int, hi: int | None) -> list[tuple[int, int]]:
    """Draws ``[lo, hi)`` (``hi=None``: on to the end) through a draw map, as runs."""
    out, base = [], 0
    for a, b in runs:
        if b == OPEN:
            s = max(lo - base, 0)
            out.append((a + s, OPEN if hi is None else a + hi - base))
            break
        s, e = max(lo - base, 0), b - a if hi is None else min(hi - base, b - a)
        if s < e:
            out.append((a + s, a + e))
        base += b - a
    return [r for r in out if r[1] == OPEN or r[1] > r[0]]


def map_draws(runs: Intervals, d: IntArray) -> IntArray:
    """Mixture draws ``d`` of a source through its draw map: the source draws read."""
    if len(runs) == 1:
        out: IntArray = d + runs[0][0]
        return out
    starts = np.asarray([a for a, _ in runs], dtype=np.int64)
    sizes = [b - a for a, b in runs[:-1]]
    cum = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
    j = np.searchsorted(cum, d, side="right") - 1
    out = starts[j] + d - cum[j]
    return out


def consumed_runs(spans: Intervals, lo: int, hi: int) -> Intervals:
    """``[lo, hi)`` minus ``spans`` (sorted), as runs."""
    out, at = [], lo
    for a, b in sorted(spans):
        out.append((at, max(at, min(a, hi))))
        at = max(at, b)
    out.append((at, hi))
    return coalesce([r for r in out if r[1] > r[0]])

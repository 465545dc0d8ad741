"""Mixture resume states, and the audit of what a run consumed.

A state names the mixture (its sources' datasets, versions and plan settings, the
stopping rule and seed), the weights in force with where they started and each
source's draw map (see :meth:`Mixture.reweighted`), the mixture epoch, and the
positions of that epoch no rank consumed. From that alone, the records each source
consumed are a closed form: every position before the epoch's end not listed, read
through the interleave and the draw maps, plus every source draw the maps no longer
list (consumed under earlier weights).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from splitdask._dataset._interleave import Intervals, coalesce, count
from splitdask._dataset._mixrank import MixtureRanks
from splitdask._dataset._mixture import OPEN, Mixture, consumed_runs
from splitdask._util._validate import check_int
from splitdask.errors import ResumeStateError

__all__ = ["MixtureAudit", "SourceAudit", "audit", "consumed_draws", "mixture_state", "read_state"]

KIND = "splitdask.mixture"
STATE_VERSION = 1


def consumed_draws(
    mixture: Mixture, epoch: int, remaining: Intervals
) -> list[list[tuple[int, int]]]:
    """Per source, the runs of source draws consumed once mixture epoch ``epoch`` has
    left ``remaining`` (pieces as they arise: overlapping pieces would be repeats)."""
    _, end = mixture.epoch_span(epoch)
    done = consumed_runs(remaining, 0, end)
    out = []
    for s, runs in enumerate(mixture.maps):
        pieces: list[tuple[int, int]] = []
        at = 0  # source draws no run of the map lists were consumed before these weights
        for a, b in sorted(runs):
            pieces += [(at, a)] if a > at else []
            at = max(at, b) if b != OPEN else at
        pieces += mixture.source_draws(s, done)
        out.append([p for p in pieces if p[1] > p[0]])
    return out


def mixture_state(mixture: Mixture, epoch: int, remaining: Intervals) -> dict[str, Any]:
    """A JSON-serialisable resume state (see the module's doc)."""
    progress = []
    for src, pieces in zip(mixture.sources, consumed_draws(mixture, epoch, remaining), strict=True):
        runs = coalesce(sorted(pieces))
        nxt = runs[0][1] if runs and runs[0][0] == 0 else 0  # the first draw not consumed
        n = max(1, src.num_records)
        progress.append(
            {"name": src.name, "consumed": count(runs), "epoch": nxt // n, "index": nxt % n}
        )
    return {
        "version": STATE_VERSION,
        "kind": KIND,
        **mixture.fingerprint(),
        "segment": mixture.segment(),
        "epoch": epoch,
        "remaining": [x for span in remaining for x in span],
        "progress": progress,
    }


def read_state(
    mixture: Mixture, state: Mapping[str, Any], reweight: bool | None = False
) -> tuple[Mixture, int, Intervals | None]:
    """The mixture a state resumes (its weights), its epoch and positions left
    (``None``: all of that epoch, a reweighted resume's first).

    With ``reweight``, ``mixture``'s own weights (and epoch length) take over from the
    epoch after the state's: see :meth:`Mixture.reweighted`.

    Raises
    ------
    ResumeStateError
        If the state is not a mixture state of these sources, versions and settings
        (naming what differs), if it is damaged, or if its weights differ and
        ``reweight`` is ``False`` (``None``: the state's weights, whatever they are).
    """
    if not isinstance(state, Mapping) or state.get("kind") != KIND:
        raise ResumeStateError(f"not a SplitMixtureDataset state: {str(state)[:200]}")
    if state.get("version") != STATE_VERSION:
        raise ResumeStateError(f"mixture state of unknown version {state.get('version')!r}")
    mine = mixture.fingerprint()
    if state.get("stopping") != mine["stopping"] or state.get("seed") != mine["seed"]:
        what = "stopping" if state.get("stopping") != mine["stopping"] else "seed"
        raise ResumeStateError(
            f"this state was saved for another {what}: {state.get(what)!r}, but this mixture "
            f"has {mine[what]!r}"
        )
    theirs = state.get("sources")
    if not isinstance(theirs, list) or len(theirs) != len(mine["sources"]):
        raise ResumeStateError(
            f"this state was saved for another number of sources: {str(theirs)[:200]}; a state "
            "resumes the same sources (weights may change: reweight=True)"
        )
    for i, (got, want) in enumerate(zip(theirs, mine["sources"], strict=True)):
        for key, value in want.items():
            if key != "name" and (not isinstance(got, Mapping) or got.get(key) != value):
                raise ResumeStateError(
                    f"this state was saved for another {key} of source {i} ({want['name']}): "
                    f"{got.get(key) if isinstance(got, Mapping) else got!r}, but this mixture "
                    f"has {value!r}"
                )
    saved = mixture.with_segment(state.get("segment") or {})
    epoch: Any = state.get("epoch")
    flat: Any = state.get("remaining")
    try:
        check_int(epoch, "epoch", minimum=saved.start_epoch)
        hi = saved.epoch_span(epoch)[1]
        ok = isinstance(flat, list) and not len(flat) % 2 and all(type(x) is int for x in flat)
        spans = tuple(zip(flat[::2], flat[1::2], strict=True)) if ok else ()
        ok = ok and all(0 <= a < b <= hi for a, b in spans)
        ok = ok and all(b <= c for (_, b), (c, _) in itertools.pairwise(spans))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ResumeStateError(f"damaged SplitMixtureDataset state: {str(state)[:200]}")
    if reweight is None or (saved.raw_weights == mixture.raw_weights and not reweight):
        return saved, epoch, spans
    if not reweight:
        raise ResumeStateError(
            f"this state was saved with weights {saved.raw_weights}, but this mixture has "
            f"{mixture.raw_weights}; pass reweight=True to change the weights from the next "
            "epoch on (what was consumed stays consumed)"
        )
    length = None if mixture.stopping != "never" else mixture.epoch_length
    return saved.reweighted(mixture.raw_weights, epoch, spans, length), epoch + 1, None


@dataclass(frozen=True)
class SourceAudit:
    """What a run consumed of one source (see :func:`audit`)."""

    name: str
    consumed: int
    """Records consumed (draws of the source), over all its epochs."""
    epochs: dict[int, int]
    """Records consumed in each of the source's epochs."""
    repeats: int
    """Records consumed a second time within one of the source's epochs: 0 is proven
    (by the runs of draws: any repeat would be an overlap, a draw being one record of
    one epoch); with ``records=True`` also by the records' keys themselves."""


@dataclass(frozen=True)
class MixtureAudit:
    """Per source, what a run consumed (see :func:`audit`)."""

    sources: list[SourceAudit]
    positions: int
    """Mixture positions consumed."""
    grows: bool = True
    """Each state's consumption holds the previous state's (what was consumed stays
    consumed); always true for ``samples=``."""
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.grows and not any(s.repeats for s in self.sources)


def audit(
    mixture: Mixture,
    *,
    states: Sequence[Mapping[str, Any]] | None = None,
    samples: int | None = None,
    world_size: int = 1,
    records: bool = False,
) -> MixtureAudit:
    """What a run of ``mixture`` consumed of each source, and the proof that no record
    of a source came twice within one of its epochs.

    Parameters
    ----------
    mixture
        The mixture the run read (its sources and settings; a state's weights win).
    states
        The resume states the run saved, in order (a reweighted resume included): the
        audit is of the last; each must hold what the one before consumed.
    samples, world_size
        Instead of states: a run from the start in which each of ``world_size`` ranks
        consumed ``samples`` samples (over as many epochs as that takes).
    records
        Also compute the keys of every record consumed and count repeats among them
        per source epoch (costs a pass over the plans; the default proves it from the
        runs of draws).
    """
    if (states is None) == (samples is None):
        raise ValueError("give either states= or samples= (with world_size=)")
    pieces: list[list[tuple[int, int]]]
    grows, positions = True, 0
    if samples is not None:
        ranks = MixtureRanks(mixture, world_size, 0, mixture.start_epoch, endless=True)
        spans = [run for r in ranks.consumed(check_int(samples, "samples", minimum=0)) for run in r]
        positions = count(tuple(spans))
        # Run by run, so that positions two ranks both read would show as repeats.
        pieces = [
            [d for run in spans for d in mixture.source_draws(s, (run,))]
            for s in range(mixture.num_sources)
        ]
    else:
        before: list[Intervals] | None = None
        pieces = []
        for state in states or ():
            seg, epoch, got = read_state(mixture, state, reweight=None)
            left = got or ()
            pieces = consumed_draws(seg, epoch, left)
            now = [coalesce(sorted(p)) for p in pieces]
            if before is not None:
                grows = grows and all(_within(b, n) for b, n in zip(before, now, strict=True))
            before = now
            positions = seg.epoch_span(epoch)[1] - count(left)  # under the state's weights
    out = []
    for s, src in enumerate(mixture.sources):
        runs = sorted(pieces[s]) if pieces else []
        merged = coalesce(runs) if runs else ()
        reps = sum(b - a for a, b in runs) - _union(runs)
        n = max(1, src.num_records)
        epochs: dict[int, int] = {}
        for a, b in merged:
            for e in range(a // n, (b - 1) // n + 1):
                epochs[e] = epochs.get(e, 0) + min(b, (e + 1) * n) - max(a, e * n)
        if records:
            reps += _key_repeats(mixture, s, merged)
        out.append(SourceAudit(src.name, count(merged), epochs, reps))
    return MixtureAudit(out, positions, grows)


def _union(runs: list[tuple[int, int]]) -> int:
    total, end = 0, None
    for a, b in runs:
        if end is None or a >= end:
            total, end = total + b - a, b
        elif b > end:
            total, end = total + b - end, b
    return total


def _within(small: Intervals, big: Intervals) -> bool:
    return _union(sorted([*small, *big])) == count(big)


def _key_repeats(mixture: Mixture, s: int, runs: Intervals) -> int:
    n = max(1, mixture.sources[s].num_records)
    by_epoch: dict[int, list[Any]] = {}
    for a, b in runs:
        for e in range(a // n, (b - 1) // n + 1):
            lo, hi = max(a, e * n) - e * n, min(b, (e + 1) * n) - e * n
            by_epoch.setdefault(e, []).append(mixture.keys(s, e, np.arange(lo, hi)))
    return sum(len(k) - len(np.unique(k)) for k in (np.concatenate(v) for v in by_epoch.values()))

"""Which source each position of a mixture draws from, and interval arithmetic.

:class:`Interleave` deals positions ``0, 1, 2, ...`` out to sources in proportion to
their weights, so that every window of the stream holds each source's share to within
a few samples, not only on average: a balanced binary tree of two-way splits, each a
Sturmian sequence (position ``p`` goes left when ``floor((p + 1) f + u)`` steps up,
``f`` the left side's share of the node's weight, ``u`` a seeded phase). A two-way
split is off its share by under one sample in any window, so a source is off by under
one per level of the tree (``ceil(log2(sources))``). Everything is a closed form of the
position: the source of a position and the draws of a source before a position both
cost one step per level, with no state and no replay.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from splitdask._dataset._index import IntArray

__all__ = ["Interleave", "Intervals", "coalesce", "count", "restrict", "take_tail"]

Intervals = tuple[tuple[int, int], ...]
"""Half-open ``[a, b)`` runs of integers, in stream order."""


class Interleave:
    """Positions dealt out to sources by weight (see the module's doc).

    Parameters
    ----------
    weights
        Non-negative, at least one positive; a source of weight 0 is never drawn.
    seed
        Seeds each split's phase.
    """

    def __init__(self, weights: Sequence[float], seed: int) -> None:
        w = [float(x) for x in weights]
        self.num_sources = len(w)
        # Nodes: (left children, right children) as source index ranges; leaves are
        # sources. _frac[n] is the left share of node n, _phase[n] its seeded phase.
        self._frac: list[float] = []
        self._phase: list[float] = []
        self._kids: list[tuple[int, int]] = []  # child node ids; a leaf is -1 - source
        self._path: list[list[tuple[int, bool]]] = [[] for _ in w]  # (node, goes left)
        self._root = self._build(w, 0, len(w), seed, [])

    def _build(
        self, w: list[float], lo: int, hi: int, seed: int, path: list[tuple[int, bool]]
    ) -> int:
        if hi - lo == 1:
            self._path[lo] = path
            return -1 - lo
        node = len(self._frac)
        mid = (lo + hi) // 2
        left, total = sum(w[lo:mid]), sum(w[lo:hi])
        self._frac.append(left / total if total > 0 else 0.0)
        state = np.random.SeedSequence(seed, spawn_key=(7, node)).generate_state(1, np.uint64)
        self._phase.append(float(int(state[0]) >> 11) / float(1 << 53))
        self._kids.append((0, 0))
        kids = (
            self._build(w, lo, mid, seed, [*path, (node, True)]),
            self._build(w, mid, hi, seed, [*path, (node, False)]),
        )
        self._kids[node] = kids
        return node

    def _left(self, node: int, p: IntArray) -> IntArray:
        """Positions among the first ``p`` of ``node``'s stream that go left."""
        f, u = self._frac[node], self._phase[node]
        out: IntArray = np.floor(p.astype(np.float64) * f + u).astype(np.int64)
        return out

    def count(self, source: int, positions: IntArray | int) -> IntArray:
        """Draws of ``source`` among the first ``positions`` positions."""
        c = np.asarray(positions, dtype=np.int64)
        for node, left in self._path[source]:
            lc = self._left(node, c)
            c = lc if left else c - lc
        return c

    def sources(self, pos: IntArray) -> tuple[IntArray, IntArray]:
        """The source of each position and its draw index within that source."""
        idx = np.asarray(pos, dtype=np.int64).copy()
        at = np.full(len(idx), self._root, dtype=np.int64)
        if self._root < 0:
            return -1 - at, idx
        frac, phase = np.asarray(self._frac), np.asarray(self._phase)
        kids = np.asarray(self._kids, dtype=np.int64)
        live = np.arange(len(idx))
        while len(live):  # one level of the tree for every position still at a node
            node, p = at[live], idx[live]
            f, u = frac[node], phase[node]
            before = np.floor(p * f + u).astype(np.int64)
            go_left = np.floor((p + 1) * f + u).astype(np.int64) > before
            idx[live] = np.where(go_left, before, p - before)
            at[live] = np.where(go_left, kids[node, 0], kids[node, 1])
            live = live[at[live] >= 0]
        return -1 - at, idx

    def positions_for(self, source: int, draws: int) -> int:
        """The fewest positions in which ``source`` is drawn ``draws`` times."""
        lo, hi = 0, 1
        while int(self.count(source, hi)) < draws:
            lo, hi = hi, 2 * hi
            if hi > 1 << 62:
                raise ValueError(f"source {source} is never drawn (weight 0)")
        while lo < hi:
            mid = (lo + hi) // 2
            if int(self.count(source, mid)) >= draws:
                hi = mid
            else:
                lo = mid + 1
        return lo


def count(intervals: Intervals) -> int:
    return sum(b - a for a, b in intervals)


def coalesce(intervals: Sequence[tuple[int, int]]) -> Intervals:
    """Empty runs dropped, touching ones joined (order kept)."""
    out: list[tuple[int, int]] = []
    for a, b in intervals:
        if out and out[-1][1] == a:
            out[-1] = (out[-1][0], b)
        elif b > a:
            out.append((a, b))
    return tuple(out)


def restrict(intervals: Intervals, lo: int, hi: int) -> Intervals:
    """The concatenated coordinates ``[lo, hi)`` of ``intervals``, as runs."""
    out, base = [], 0
    for a, b in intervals:
        s, e = max(lo - base, 0), min(hi - base, b - a)
        if s < e:
            out.append((a + s, a + e))
        base += b - a
    return coalesce(out)


def take_tail(intervals: Intervals, keep: int) -> tuple[Intervals, Intervals]:
    """``intervals`` cut after ``keep`` coordinates: (head, tail)."""
    total = count(intervals)
    return restrict(intervals, 0, keep), restrict(intervals, keep, total)

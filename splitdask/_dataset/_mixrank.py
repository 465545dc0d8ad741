"""One rank's share of a mixture's stream, split further among DataLoader workers.

Mixture epoch ``e`` offers the positions it has *pending*: those a resume left of it
(or, without one, its span), then the few its predecessor could not share out. They
are laid end to end and cut into ``world_size`` contiguous runs of
``pending // world_size`` each; the fewer than ``world_size`` left over are not dropped
and not padded with repeats but carried into epoch ``e + 1``'s pending positions. So
ranks yield equal lengths, and every position is read exactly once in the whole run:
no source draw is ever read twice, none skipped. (Without a resume, epoch ``e`` reads
``[W * floor(e L / W), W * floor((e + 1) L / W))``.)
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from splitdask._dataset._index import IntArray
from splitdask._dataset._interleave import Intervals, coalesce, count, restrict
from splitdask._dataset._mixture import Mixture
from splitdask._util._validate import check_int

__all__ = ["MixtureRanks"]


class MixtureRanks:
    """Rank ``rank`` of ``world_size``: its samples of a pass from ``first_epoch`` on.

    Parameters
    ----------
    mixture
        The mixture (its current weights).
    world_size, rank
        The topology.
    first_epoch
        The mixture epoch the pass starts with.
    resume
        ``(epoch, positions not consumed)`` of a resume state, or ``None``.
    endless
        The pass runs on through later epochs (``stopping="never"``).
    """

    def __init__(
        self,
        mixture: Mixture,
        world_size: int,
        rank: int,
        first_epoch: int,
        resume: tuple[int, Intervals] | None = None,
        endless: bool = False,
    ) -> None:
        self.mixture = mixture
        self.world_size = check_int(world_size, "world_size", minimum=1)
        self.rank = check_int(rank, "rank", minimum=0, maximum=world_size - 1)
        self.first_epoch = first_epoch
        self.endless = endless
        self._anchor: tuple[int, Intervals | None] = (mixture.start_epoch, None)
        if resume is not None and first_epoch >= resume[0]:
            self._anchor = resume
        self._pending: dict[int, Intervals] = {}
        self._cum = [0]  # this rank's samples before each epoch of the pass

    def pending(self, epoch: int) -> Intervals:
        """The positions mixture epoch ``epoch`` shares out."""
        got = self._pending.get(epoch)
        if got is not None:
            return got
        e0, given = self._anchor
        if epoch < e0:
            raise ValueError(f"epoch {epoch} is before this run's start ({e0})")
        spans = (self.mixture.epoch_span(e0),) if given is None else given
        w = self.world_size
        for e in range(e0, epoch):
            if e + 1 in self._pending:
                spans = self._pending[e + 1]
                continue
            _, carry = _split(spans, w)
            spans = coalesce([*carry, self.mixture.epoch_span(e + 1)])
        self._pending[epoch] = spans
        return spans

    def epoch_len(self, epoch: int) -> int:
        """Samples each rank yields in ``epoch``."""
        return count(self.pending(epoch)) // self.world_size

    def __len__(self) -> int:
        """Samples of the pass (its first epoch; a pass without end has no length)."""
        if self.endless:
            raise TypeError("a mixture with stopping='never' is endless: it has no len()")
        return self.epoch_len(self.first_epoch)

    def _epoch_of(self, t: int) -> int:
        """The index (from the pass's first epoch) of the epoch holding sample ``t``."""
        while self._cum[-1] <= t:
            self._cum.append(self._cum[-1] + self.epoch_len(self.first_epoch + len(self._cum) - 1))
        return int(np.searchsorted(self._cum, t, side="right")) - 1

    def positions(self, samples: IntArray) -> IntArray:
        """Mixture positions of this rank's samples (sample ``t`` of the pass)."""
        t = np.asarray(samples, dtype=np.int64)
        out = np.empty_like(t)
        if not len(t):
            return out
        self._epoch_of(int(t.max()))
        which = np.searchsorted(self._cum, t, side="right") - 1
        for i in np.unique(which).tolist():
            sel = which == i
            epoch = self.first_epoch + i
            spans = self.pending(epoch)
            coord = t[sel] - self._cum[i] + self.rank * self.epoch_len(epoch)
            starts = np.asarray([a for a, _ in spans], dtype=np.int64)
            cum = np.concatenate([[0], np.cumsum([b - a for a, b in spans])]).astype(np.int64)
            k = np.searchsorted(cum, coord, side="right") - 1
            out[sel] = starts[k] + coord - cum[k]
        return out

    def worker_samples(
        self, worker: int = 0, num_workers: int = 1, batch_size: int = 1, chunk: int = 4096
    ) -> Iterator[IntArray]:
        """This worker's samples, a chunk at a time: batches ``worker, worker +
        num_workers, ...`` of the pass's samples, so the DataLoader's output is the
        rank's share in order for any worker count (endless passes too)."""
        check_int(num_workers, "num_workers", minimum=1)
        check_int(worker, "worker", minimum=0, maximum=num_workers - 1)
        check_int(batch_size, "batch_size", minimum=1)
        step = max(1, chunk // batch_size)
        offsets = np.arange(batch_size, dtype=np.int64)
        n = None if self.endless else len(self)
        num_batches = 0 if n is None else -(-n // batch_size)
        batch = worker
        first = True
        while n is None or batch * batch_size < n:
            # The first chunk is one batch: the first sample waits for no more.
            todo = 1 if first else step
            if n is not None:
                todo = min(todo, len(range(batch, num_batches, num_workers)))
            batches = batch + num_workers * np.arange(todo, dtype=np.int64)
            samples = (batches[:, None] * batch_size + offsets).ravel()
            yield samples if n is None else samples[samples < n]
            batch += num_workers * todo
            first = False

    def state_after(self, samples_seen: int) -> tuple[int, Intervals]:
        """The epoch, and its positions no rank has consumed, once every rank has
        consumed ``samples_seen`` samples of the pass."""
        check_int(samples_seen, "samples_seen", minimum=0)
        if not self.endless:
            check_int(samples_seen, "samples_seen", maximum=len(self))
        epoch, s = self.first_epoch, samples_seen
        while s >= self.epoch_len(epoch) and (s or not self.epoch_len(epoch)):
            s -= self.epoch_len(epoch)
            epoch += 1
            if not self.endless and s == 0:
                break
        spans, n = self.pending(epoch), self.epoch_len(epoch)
        left: list[tuple[int, int]] = []
        for r in range(self.world_size):
            left += restrict(spans, r * n + s, (r + 1) * n)
        left += restrict(spans, self.world_size * n, count(spans))
        return epoch, coalesce(left)

    def consumed(self, samples_seen: int) -> list[Intervals]:
        """Positions each rank has consumed after ``samples_seen`` samples of the pass."""
        out: list[list[tuple[int, int]]] = [[] for _ in range(self.world_size)]
        epoch, s = self.first_epoch, samples_seen
        while s > 0:
            n = self.epoch_len(epoch)
            take = min(s, n)
            if not n and not self.endless:
                break
            spans = self.pending(epoch)
            for r in range(self.world_size):
                out[r] += restrict(spans, r * n, r * n + take)
            s -= take
            epoch += 1
        return [coalesce(o) for o in out]


def _split(spans: Intervals, world_size: int) -> tuple[Intervals, Intervals]:
    """Pending positions: those shared out, and the fewer than ``world_size`` carried."""
    total = count(spans)
    keep = total - total % world_size
    return restrict(spans, 0, keep), restrict(spans, keep, total)

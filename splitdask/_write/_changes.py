"""What a commit does to a manifest, as a pure function of the manifest it finds.

A writer describes its commit as a *change* (records added, parts compacted,
retired parts pruned) instead of a finished manifest, so when another writer
commits first the same change is applied again to the newer manifest (a
re-base) without rewriting any data. No I/O here.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from splitdask._format import Manifest, PartInfo, Segment
from splitdask._format._codec import DEFAULT_CODEC
from splitdask._format._parttable import edit_bins
from splitdask._format._segtable import extend_order
from splitdask.errors import CommitConflictError

__all__ = ["AddRecords", "Change", "Compaction", "Mode", "check_same_codec", "successor"]

Mode = Literal["a", "w", "x"]


class Change(Protocol):
    """A commit's effect: the manifest to write, given the one committed now."""

    def apply(self, now: Manifest | None, when: float, where: str) -> Manifest: ...

    def op(self, now: Manifest | None) -> tuple[str, bool]:
        """What the commit does to ``now``, as the log names it, and whether the new
        version replaces ``now`` rather than changing it."""
        ...


def successor(
    now: Manifest | None,
    bins: Sequence[tuple[PartInfo, ...]],
    order: Sequence[Segment],
    *,
    metadata: Mapping[str, Any],
    codec: str | None = None,
) -> Manifest:
    """The version after ``now``, naming ``bins`` and ``order``, its records in
    ``codec`` (default: ``now``'s). The parts of ``now`` it no longer names stay in
    ``now``, which is kept for its readers until its retention has passed (``_gc``)."""
    return Manifest(
        bins=bins,
        order=order,
        generation=(now.generation if now else 0) + 1,
        uid=secrets.token_hex(8),
        metadata=dict(metadata),
        codec=codec or (now.codec if now else DEFAULT_CODEC),
    )


@dataclass(frozen=True)
class AddRecords:
    """New parts and the global order of their records.

    ``deals`` lists, in global order, runs of ``count`` records dealt round-robin
    over ``bins``; each bin's records continue after those it already holds. With
    mode ``"a"`` they follow the dataset's records; with ``"w"`` they replace the
    dataset (whose parts become retired); with ``"x"`` there must be no dataset.
    ``codec`` is the codec the new records are in: an append must match the
    dataset's (``None``: whatever the dataset has; ``"bytes"`` for a new one).
    """

    mode: Mode
    num_bins: int
    new_parts: Mapping[int, Sequence[PartInfo]]
    deals: Sequence[tuple[int, tuple[int, ...]]]
    metadata: Mapping[str, Any] = field(default_factory=dict)
    codec: str | None = None

    def apply(self, now: Manifest | None, when: float, where: str) -> Manifest:
        if self.mode == "x" and now is not None:
            raise CommitConflictError(
                f"{where}: another writer created a dataset here while this one was "
                "writing; nothing was committed by this one"
            )
        base = now if self.mode == "a" else None
        if base is not None and self.codec is not None:
            check_same_codec(base, self.codec, where)
        if base is not None and not self.deals and not self.metadata:
            return base  # an empty append changes nothing
        num_bins = max(self.num_bins, base.num_bins if base else 0)
        counts = (base.bin_counts() if base else []) + [0] * num_bins
        start = base.num_records if base else 0
        prior: Sequence[Segment] = base.order if base else ()
        keep = len(prior)  # the segments of ``prior`` kept; ``order`` follows them
        order: list[Segment] = []
        for count, dealt in self.deals:
            seg = Segment(start, count, dealt, tuple(counts[b] for b in dealt))
            last = order[-1] if order else (prior[-1] if keep else None)
            if last is not None and _continues(last, count, dealt, counts):
                # Records that continue the last deal where it stopped (the same bins,
                # from the next in its rotation) extend its segment.
                seg = Segment(last.start, last.count + count, last.bins, last.first)
                if order:
                    order.pop()
                else:
                    keep -= 1
            order.append(seg)
            m = len(dealt)
            for j, b in enumerate(dealt):
                counts[b] += (count - j + m - 1) // m  # this deal's share of bin b
            start += count
        old = base.bins if base else ()
        # Only the bins written to change: a large dataset's other bins are not touched.
        grown = {
            b: (*(old[b] if b < len(old) else ()), *parts)
            for b, parts in self.new_parts.items()
            if parts
        }
        bins = edit_bins(old, grown, num_bins)
        metadata = {**(base.metadata if base else {}), **self.metadata}
        codec = self.codec or (base.codec if base else DEFAULT_CODEC)
        return successor(
            now, bins, extend_order(prior, keep, order), metadata=metadata, codec=codec
        )

    def op(self, now: Manifest | None) -> tuple[str, bool]:
        if now is None or self.mode == "x":
            return "create", True
        if self.mode == "w":
            return "overwrite", True
        return ("append" if self.deals else "metadata"), False


def check_same_codec(base: Manifest, codec: str, where: str) -> None:
    """Refuse to append records in ``codec`` to a dataset whose records are in another.

    Raises
    ------
    ValueError
        Naming both codecs, and the fixes.
    """
    if base.codec != codec and base.num_records:
        raise ValueError(
            f"{where}: the dataset's records are stored with codec={base.codec!r}, this "
            f"write's with codec={codec!r}: append with codec={base.codec!r} (or leave "
            "codec unset to use the dataset's), or replace the dataset with mode='w'"
        )


def _continues(last: Segment, count: int, dealt: tuple[int, ...], counts: Sequence[int]) -> bool:
    """Whether ``count`` records dealt over ``dealt``, its bins holding ``counts``
    records, go on exactly as segment ``last`` would: over its bins from the next one
    it deals to (all of them, or as many as there are records), each bin's records
    following on from ``last``'s."""
    m, k = len(last.bins), len(dealt)
    if not (k == m or count <= k < m):
        return False
    if any(dealt[j] != last.bins[(last.count + j) % m] for j in range(k)):
        return False
    return all(counts[b] == last.first[j] + last.share(j) for j, b in enumerate(last.bins))


@dataclass(frozen=True)
class Compaction:
    """Runs of consecutive parts of a bin, each replaced by parts holding the same
    records in the same order. A run that is no longer in the dataset as it was
    (overwritten, or compacted by someone else) is skipped: see :meth:`kept`."""

    runs: Mapping[int, Sequence[tuple[tuple[str, ...], tuple[PartInfo, ...]]]]

    def merged(self) -> list[PartInfo]:
        """Every new part the runs would put in."""
        return [p for runs in self.runs.values() for _, new in runs for p in new]

    def apply(self, now: Manifest | None, when: float, where: str) -> Manifest:
        if now is None:
            raise CommitConflictError(f"{where}: the dataset was removed while compacting")
        edited: dict[int, tuple[PartInfo, ...]] = {}
        for b, runs in self.runs.items():
            for run, new in runs if b < now.num_bins else ():
                parts = list(edited.get(b, now.bins[b]))
                paths = [p.path for p in parts]
                for i in range(len(paths) - len(run) + 1):
                    if tuple(paths[i : i + len(run)]) == run:
                        parts[i : i + len(run)] = new
                        edited[b] = tuple(parts)
                        break
        if not edited:
            return now  # nothing left to compact
        bins = edit_bins(now.bins, edited, now.num_bins)
        return successor(now, bins, now.order, metadata=now.metadata)

    def op(self, now: Manifest | None) -> tuple[str, bool]:
        return "compact", False

"""Parallel writes (Dask partitions, Ray write tasks): which bin each task fills, and
the one commit that names every kept task's parts (:func:`commit_results`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from splitdask._format import PartInfo
from splitdask._write._changes import AddRecords
from splitdask._write._cleanup import tagged
from splitdask._write._commit import CommitInfo, Transaction

__all__ = ["TaskBins", "commit_results"]


@dataclass(frozen=True)
class TaskBins:
    """The bin each task of a parallel write (a Dask partition, a Ray write task) fills.

    Appending to a dataset with bins keeps its bin count: task ``t`` fills the
    ``t % num_bins``-th least-filled bin, so appends stay balanced. Otherwise task
    ``t`` fills bin ``t % num_bins``, or bin ``t`` when ``num_bins`` is ``None`` (one
    bin per task, counted at the commit). The same on every run of a task; it
    pickles, so tasks can carry it.
    """

    num_bins: int | None
    by_fill: tuple[int, ...] | None = None

    @classmethod
    def plan(cls, target: Transaction, num_bins: int | None) -> TaskBins:
        """The bins of a write to ``target``; ``num_bins`` is a new dataset's count."""
        base = target.base
        if base is not None and base.num_bins:
            return cls(base.num_bins, tuple(target.bins_by_fill(base.num_bins)))
        return cls(num_bins)

    def bin_of(self, task: int) -> int:
        """The bin task ``task`` fills."""
        if self.num_bins is None:
            return task
        return (self.by_fill or range(self.num_bins))[task % self.num_bins]


def commit_results(
    target: Transaction,
    bins: TaskBins,
    results: Iterable[tuple[int, Sequence[PartInfo]]],
    *,
    tag: str,
    metadata: Mapping[str, Any],
    codec: str | None = None,
) -> CommitInfo:
    """Name the parts of a parallel write's tasks in one commit, then tidy up.

    Parameters
    ----------
    target
        The write's transaction.
    bins
        Which bin each task filled.
    results
        ``(task, parts)`` for every task whose run the engine kept (a task's other,
        killed or repeated, runs are not listed). Task order is the global order,
        and each task's records are one contiguous run of its bin.
    tag
        The write's tag, which starts the name of every part its tasks made.
    metadata
        Merged into the manifest's metadata.
    codec
        The name of the codec the tasks encoded with (``None``: the dataset's);
        an append in another codec than the dataset's raises ``ValueError``.

    Returns
    -------
    CommitInfo
        For the parts of write ``tag`` the manifest names: this commit's, or those of
        an earlier run of it that got through (a retried commit task).

    Notes
    -----
    If the commit fails, the listed parts are removed (unless a commit named them
    after all). After it, every other file of write ``tag`` is removed: parts of
    task runs the engine did not keep.
    """
    done = sorted(results, key=lambda r: r[0])
    num_bins = bins.num_bins if bins.num_bins is not None else max(t for t, _ in done) + 1
    new_parts: dict[int, list[PartInfo]] = {}
    deals: list[tuple[int, tuple[int, ...]]] = []
    for task, parts in done:
        count = sum(p.count for p in parts)
        if count:
            b = bins.bin_of(task)
            deals.append((count, (b,)))
            new_parts.setdefault(b, []).extend(parts)
    written = [p for ps in new_parts.values() for p in ps]
    change = AddRecords(target.mode, num_bins, new_parts, deals, dict(metadata), codec)
    try:
        manifest, entry = target.commit(change, tag=tag, new_parts=written)
    except BaseException:
        target.abandon(written)
        raise
    # This commit's parts, or (a retried commit task) those of the earlier run of it
    # that got through: only then is the whole manifest searched for them.
    ours = written if entry is not None else [p for p in manifest.parts() if tagged(p.path, tag)]
    target.collect({p.path for p in ours}, tag)
    return CommitInfo.of(target.store.urlpath, manifest, ours)

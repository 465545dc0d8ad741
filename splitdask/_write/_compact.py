"""Compaction: a bin's many small parts rewritten as few, same records, same order.

Appends add parts; without this, a dataset appended to a thousand times would
hold a thousand parts per bin, and every open and commit would pay for them.
Merging a *run of consecutive parts* of one bin keeps every record's local index
in its bin, so the global order (the manifest's segments) does not change; the
replaced parts are retired like any other, so readers of older snapshots keep
reading them.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from splitdask._dataset._parts import part_of
from splitdask._dataset._snapshot import read_manifest
from splitdask._format import Manifest, PartInfo
from splitdask._format._compression import Compression
from splitdask._read._bins import load_parts
from splitdask._store import Store, UrlPath, open_store
from splitdask._write._binwrite import write_bin_part
from splitdask._write._changes import Compaction
from splitdask._write._cleanup import new_tag
from splitdask._write._commit import (
    DEFAULT_RETENTION,
    DEFAULT_RETRIES,
    CommitInfo,
    Transaction,
)
from splitdask._write._retention import DEFAULT_KEEP_VERSIONS
from splitdask.errors import CompactionWarning, DatasetNotFoundError

__all__ = ["AUTO_COMPACT_PARTS", "SMALL_PART", "auto_compact", "compact"]

SMALL_PART = 4 << 20
"""Parts smaller than this (bytes) are merged by the compaction after an append."""
AUTO_COMPACT_PARTS = 8
"""The fan-in of the compaction after an append: parts of one size tier (sizes within
a factor of this) are merged once this many of them follow each other."""
AUTO_COMPACT_MAX = 4 * AUTO_COMPACT_PARTS
"""Most small parts a bin's trailing run keeps after that compaction, whatever the
sizes of the appends (past it, the cheapest runs are merged as well)."""

Runs = dict[int, list[tuple[tuple[str, ...], tuple[PartInfo, ...]]]]


def _runs(parts: Sequence[PartInfo], below: int, min_len: int) -> list[list[PartInfo]]:
    """Maximal runs of consecutive parts each smaller than ``below``, at least ``min_len``
    long, compressed alike (a merged part keeps its records' compression and level)."""
    out: list[list[PartInfo]] = []
    cur: list[PartInfo] = []
    for p in (*parts, None):
        if p is not None and p.size < below and (not cur or _codec(p) == _codec(cur[0])):
            cur.append(p)
            continue
        if len(cur) >= min_len:
            out.append(cur)
        cur = [p] if p is not None and p.size < below else []
    if len(cur) >= min_len:
        out.append(cur)
    return out


def _tier(size: int) -> int:
    """``floor(log_F(size))`` with ``F = AUTO_COMPACT_PARTS``: a part's size tier."""
    tier = 0
    while size >= AUTO_COMPACT_PARTS:
        size //= AUTO_COMPACT_PARTS
        tier += 1
    return tier


def _tiered(run: Sequence[PartInfo]) -> list[list[PartInfo]]:
    """Runs of ``run`` (a bin's trailing run of small parts) to merge after an append.

    Tier by tier from the smallest: in each stretch of consecutive parts of that tier or
    below, once :data:`AUTO_COMPACT_PARTS` of that tier are there, the stretch is merged.
    The merged part is at least ``F`` parts of tier ``t``, so of a higher tier: a record
    is rewritten once per tier it climbs, a few times in all, not once per append (which
    merging the whole run did: it rewrote everything appended so far every ``F``
    appends). If more than :data:`AUTO_COMPACT_MAX` parts would still be left (appends
    of wildly varying sizes), the cheapest runs of ``F`` parts are merged too.
    """
    n, fan = len(run), AUTO_COMPACT_PARTS
    tiers = [_tier(p.size) for p in run]
    taken = [False] * n
    picked: list[tuple[int, int]] = []
    for t in sorted(set(tiers)):
        i = 0
        while i < n:
            j = i
            while j < n and tiers[j] <= t and not taken[j]:
                j += 1
            if tiers[i:j].count(t) >= fan:
                picked.append((i, j))
                taken[i:j] = [True] * (j - i)
            i = max(j, i + 1)
    left = n - sum(j - i - 1 for i, j in picked)
    while left > AUTO_COMPACT_MAX:
        free = [i for i in range(n - fan + 1) if not any(taken[i : i + fan])]
        if not free:
            break
        i = min(free, key=lambda k: sum(p.size for p in run[k : k + fan]))
        picked.append((i, i + fan))
        taken[i : i + fan] = [True] * fan
        left -= fan - 1
    return [list(run[i:j]) for i, j in sorted(picked)]


def _codec(p: PartInfo) -> Compression | None:
    return None if p.compression is None else Compression(p.compression, p.level)


def _merge(
    store: Store,
    manifest: Manifest,
    b: int,
    run: Sequence[PartInfo],
    tag: str,
    part_max_bytes: int,
) -> tuple[PartInfo, ...]:
    """Write the records of ``run`` (parts of bin ``b``), in order, as new parts."""
    # The one part writer: it removes what it wrote if anything fails (tidy), and
    # recompresses with a dictionary trained on the merged records.
    with load_parts(store, [part_of(p) for p in run], manifest.generation) as data:
        new = write_bin_part(
            store,
            b,
            data.records(None, b),
            part_max_bytes=part_max_bytes,
            tag=tag,
            compression=_codec(run[0]),
        )
    return tuple(new)


def _compact_runs(
    store: Store,
    manifest: Manifest,
    picked: Mapping[int, list[list[PartInfo]]],
    *,
    retention: float,
    retries: int,
    part_max_bytes: int,
    keep_versions: int = DEFAULT_KEEP_VERSIONS,
) -> tuple[Manifest, list[PartInfo]]:
    """Merge the picked runs and commit them; the version after, and the merged parts
    it names (none when another writer changed every run first)."""
    tag = new_tag()
    runs: Runs = {}
    tx = Transaction(
        store, "a", manifest, retention=retention, retries=retries, keep_versions=keep_versions
    )
    try:
        for b, bin_runs in picked.items():
            for run in bin_runs:
                new = _merge(store, manifest, b, run, tag, part_max_bytes)
                runs.setdefault(b, []).append((tuple(p.path for p in run), new))
        store.sync_dir("bins")
        change = Compaction(runs)
        committed, entry = tx.commit(change, tag=tag, new_parts=change.merged())
    except BaseException:
        tx.abandon(Compaction(runs).merged())
        raise
    # Only this commit's own entry says which merged parts went in: runs another
    # writer changed meanwhile were skipped, and their merged parts go.
    ours = {p.path for e in entry.edits for p in e.parts} if entry is not None else set()
    tx.abandon(p for p in change.merged() if p.path not in ours)
    return committed, [p for p in change.merged() if p.path in ours]


def auto_compact(
    store: Store,
    manifest: Manifest,
    bins: Sequence[int],
    *,
    retention: float = DEFAULT_RETENTION,
    retries: int = DEFAULT_RETRIES,
    keep_versions: int = DEFAULT_KEEP_VERSIONS,
) -> Manifest | None:
    """After an append to ``bins``: merge runs of each one's trailing run of small parts,
    tier by tier (:func:`_tiered`). Housekeeping: a failure only warns."""
    picked: dict[int, list[list[PartInfo]]] = {}
    for b in set(bins):
        runs = _runs(manifest.bins[b], SMALL_PART, AUTO_COMPACT_PARTS)
        if runs and runs[-1][-1] is manifest.bins[b][-1] and (tiered := _tiered(runs[-1])):
            picked[b] = tiered
    if not picked:
        return None
    try:
        limit = SMALL_PART * AUTO_COMPACT_PARTS
        return _compact_runs(
            store,
            manifest,
            picked,
            retention=retention,
            retries=retries,
            part_max_bytes=limit,
            keep_versions=keep_versions,
        )[0]
    except Exception as exc:
        warnings.warn(
            f"{store.urlpath}: compacting the small parts of bins {sorted(picked)} failed "
            f"({type(exc).__name__}: {exc}); the append is committed, and the next one "
            "will try again",
            CompactionWarning,
            stacklevel=3,
        )
        return None


def compact(
    urlpath: UrlPath,
    storage_options: Mapping[str, Any] | None = None,
    *,
    part_max_bytes: int = 256 << 20,
    retention: float = DEFAULT_RETENTION,
    retries: int = DEFAULT_RETRIES,
    keep_versions: int = DEFAULT_KEEP_VERSIONS,
) -> CommitInfo:
    """Rewrite each bin's consecutive parts smaller than ``part_max_bytes`` as one part.

    The records, ``loader[i]`` for every ``i`` and the global order stay the same; the
    dataset opens and commits faster afterwards. One atomic commit; the replaced parts
    stay in the version before (readers holding it keep reading them) until
    :func:`~splitdask.gc` or a later write removes that version, ``retention``
    seconds after this commit unless it is one of the newest ``keep_versions``.

    Returns
    -------
    CommitInfo
        ``parts_written`` counts the new parts; ``records_written`` the records they
        hold (rewritten, not added).
    """
    store = open_store(urlpath, storage_options)
    manifest = read_manifest(store)
    if manifest is None:
        raise DatasetNotFoundError(f"no splitdask dataset to compact at {store.urlpath}")
    found = {b: _runs(parts, part_max_bytes, 2) for b, parts in enumerate(manifest.bins)}
    picked = {b: runs for b, runs in found.items() if runs}
    if not picked:
        return CommitInfo.of(store.urlpath, manifest, [])
    committed, ours = _compact_runs(
        store,
        manifest,
        picked,
        retention=retention,
        retries=retries,
        part_max_bytes=part_max_bytes,
        keep_versions=keep_versions,
    )
    if not ours:  # every run was changed by another writer first: nothing of ours went in
        return CommitInfo.of(store.urlpath, manifest, [])
    return CommitInfo.of(store.urlpath, committed, ours)

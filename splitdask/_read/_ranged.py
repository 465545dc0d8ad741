"""Records of parts read by range, a batch at a time: grouped by part, the footer
entries they lack fetched first (``_entries``), then every record in one planned set
of concurrent requests (the store merges near ranges by cost), each checked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from splitdask._dataset._index import IntArray
from splitdask._dataset._snapshot import Snapshot
from splitdask._read._entries import fetch_entries
from splitdask._read._openpart import OpenPart

__all__ = ["read_grouped"]


def read_grouped(
    snapshot: Snapshot, part_of: Callable[[int], OpenPart], pids: IntArray, local: IntArray
) -> list[Any]:
    """Records ``local[k]`` of parts ``pids[k]``, part by part (``part_of(pid)`` opens
    one): mapped parts sliced, the others' records (and footer entries they lack)
    fetched in one planned set of concurrent requests each, every record checked."""
    out: list[Any] = [None] * len(pids)
    by_part = np.argsort(pids, kind="stable")
    bounds = np.flatnonzero(np.diff(pids[by_part])) + 1
    paths: list[str] = []
    r_start: list[int] = []
    r_end: list[int] = []
    slots: list[int] = []
    checks: list[tuple[OpenPart, Any, int]] = []
    groups = np.split(by_part, bounds)
    if not snapshot.store.is_local:  # locally parts open one group at a time, below
        firsts = [int(pids[g[0]]) for g in groups]
        fetch_entries(
            snapshot,
            [
                (part_of(p), snapshot.parts[p].path, local[g])
                for p, g in zip(firsts, groups, strict=True)
            ],
        )
    for group in groups:
        pid = int(pids[group[0]])
        part = part_of(pid)
        j = local[group]
        starts, ends = part.starts_np[j].tolist(), part.ends_np[j].tolist()
        if part.data is not None:
            got = list(map(part.data.__getitem__, map(slice, starts, ends)))
            got = part.codec.check(got, j, part.starts, part.ends)
            for t, rec in zip(group.tolist(), got, strict=True):
                out[t] = rec
        else:
            paths += [snapshot.parts[pid].path] * len(group)
            r_start += starts
            r_end += ends
            slots += group.tolist()
            checks.append((part, j, len(group)))
    if slots:
        with snapshot.reading():
            got = snapshot.store.read_ranges(paths, r_start, r_end)
        pos = 0
        for part, j, n in checks:
            got[pos : pos + n] = part.codec.check(got[pos : pos + n], j, part.starts, part.ends)
            pos += n
        for t, data in zip(slots, got, strict=True):
            out[t] = data
    return out

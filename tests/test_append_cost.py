"""Issue 22: appends with an explicit ``splits=`` cost the same after a thousand of them.

Two things made them pile up: the compaction after an append merged a bin's whole
trailing run of small parts, which after the first merge always held everything
appended so far (rewritten every 8 appends: quadratic), and each append's deal over
all the bins added an order segment (validated per bin on every open and commit),
even when it went on exactly where the previous one stopped. Counted, not timed.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from _manifests import manifest_doc

from splitdask import SplitDataLoader, write_split_data
from splitdask._format import PartInfo
from splitdask._write._compact import (
    AUTO_COMPACT_MAX,
    AUTO_COMPACT_PARTS,
    SMALL_PART,
    _tiered,
)


def _part(size: int, k: int) -> PartInfo:
    return PartInfo(f"bins/00000-{k:016x}.bin", 1, size, "xxh3_64:" + "0" * 16, 2)


def _simulate(sizes: list[int]) -> tuple[float, int]:
    """Append parts of ``sizes`` to one bin, compacting after each as ``auto_compact``
    does; returns (bytes written / bytes appended, most small parts seen)."""
    parts: list[PartInfo] = []
    written = appended = most = 0
    for k, size in enumerate(sizes):
        parts.append(_part(size, 2 * k))
        written += size
        appended += size
        start = len(parts)
        while start and parts[start - 1].size < SMALL_PART:
            start -= 1
        run = parts[start:]
        most = max(most, len(run))
        for merged in reversed(_tiered(run)):
            i = run.index(merged[0])
            total = sum(p.size for p in merged)
            written += total
            run[i : i + len(merged)] = [_part(total, 2 * k + 1)]
        parts[start:] = run
    return written / appended, most


SIZES = {
    "tiny": [150] * 5000,
    "small": [10_000] * 3000,
    "varied": [int(10 ** random.Random(1).uniform(2, 6)) for _ in range(3000)],
    "alternating": [1000 if i % 2 else 1 for i in range(5000)],
    "bursty": [500_000 if i % 50 == 0 else 200 for i in range(3000)],
}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_compaction_rewrites_each_byte_a_few_times(name: str) -> None:
    # Merging the whole trailing run rewrote 358 times what was appended (tiny), 31
    # times (small): everything appended so far, every 8 appends.
    amplification, most = _simulate(SIZES[name])
    assert amplification < 6
    assert most <= AUTO_COMPACT_MAX + AUTO_COMPACT_PARTS


def test_compaction_merges_runs_of_one_tier() -> None:
    run = [_part(1000, k) for k in range(AUTO_COMPACT_PARTS - 1)]
    assert _tiered(run) == []  # too few to merge
    run.append(_part(900, 99))
    assert _tiered(run) == [run]
    # A merged part (8 times larger) is left alone by the next small parts' merge.
    bigger = [_part(8000, 100), *(_part(1000, 200 + k) for k in range(AUTO_COMPACT_PARTS))]
    assert _tiered(bigger) == [bigger[1:]]


def _retired_bytes(ds: Path) -> tuple[int, int]:
    doc = manifest_doc(ds)
    live = {p["path"]: p["size"] for b in doc["bins"] for p in b}
    on_disk = sum(e.stat().st_size for e in os.scandir(ds / "bins"))
    return sum(live.values()), on_disk - sum(live.values())


def test_appends_with_splits_keep_metadata_and_garbage_flat(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    batch = [bytes([i % 251]) * 2000 for i in range(16)]  # 2 records per bin
    for _ in range(240):
        write_split_data(ds, batch, splits=8)
    loader = SplitDataLoader(ds)
    assert len(loader) == 240 * 16
    assert [loader[i] for i in range(0, len(loader), 37)] == [
        batch[i % 16] for i in range(0, len(loader), 37)
    ]
    manifest = loader.snapshot.manifest
    assert manifest is not None
    # Each append went on where the last stopped: one segment, not 240.
    assert len(manifest.order) == 1
    live, retired = _retired_bytes(ds)
    # Merging whole runs had rewritten 17.5 times the live bytes by now (and ever more);
    # merging by tier, 2 times.
    assert retired < 4 * live
    assert max(map(len, manifest.bins)) <= AUTO_COMPACT_MAX + AUTO_COMPACT_PARTS


def test_a_deal_that_does_not_continue_gets_its_own_segment(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    records = [b"%05d" % i for i in range(200)]
    write_split_data(ds, records[:12], splits=4)  # bins 0-3 hold 3 each
    write_split_data(ds, records[12:15], splits=4)  # rotation 0,1,2 continues: merged
    write_split_data(ds, records[15:21], splits=2)  # two bins only: its own segment
    write_split_data(ds, records[21:30], splits=4)
    loader = SplitDataLoader(ds)
    assert list(loader) == records[:30]
    assert [loader[i] for i in range(30)] == records[:30]
    manifest = loader.snapshot.manifest
    assert manifest is not None
    assert len(manifest.order) == 3
    assert manifest.order[0].count == 15

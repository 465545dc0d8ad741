"""Writer bounds (memory, remote spool) and exhaustive corruption detection."""

from __future__ import annotations

import tempfile
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from splitdask import CorruptDatasetError, SplitDataLoader, SplitWriter, write_split_data


def test_writer_memory_is_bounded(tmp_path: Path) -> None:
    record = bytes(range(256)) * 4  # 1 KiB

    def stream() -> Iterator[bytes]:
        for _ in range(80_000):  # 80 MiB in total, never held at once
            yield record

    tracemalloc.start()
    try:
        info = write_split_data(tmp_path / "ds", stream(), splits=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.bytes_written == 80_000 * 1024
    assert peak < 16 << 20, f"peak {peak / 2**20:.1f} MiB for an 80 MiB stream"
    assert SplitDataLoader(tmp_path / "ds")[79_999] == record


def test_every_flipped_byte_is_found(tmp_path: Path) -> None:
    url = tmp_path / "ds"
    write_split_data(url, [b"abc", b"", b"defgh"], splits=1)
    part = next((url / "bins").iterdir())
    original = part.read_bytes()
    for pos in range(len(original)):
        damaged = bytearray(original)
        damaged[pos] ^= 0x40
        part.write_bytes(bytes(damaged))
        with pytest.raises(CorruptDatasetError, match=part.name):
            SplitDataLoader(url).verify()
    part.write_bytes(original)
    assert SplitDataLoader(url).verify().parts == 1


def test_remote_spool_stays_under_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A remote write's temp files stay near spool_bytes, not bins x part size."""
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool_dir))
    url = f"memory://splitdask-tests/{uuid.uuid4().hex}"
    record = bytes(range(256)) * 64  # 16 KiB
    peak = 0

    def stream() -> Iterator[bytes]:
        nonlocal peak
        # 128 MiB over 64 bins in 1 MiB batches; no part reaches part_max_bytes.
        for i in range(8192):
            if i % 64 == 0:
                peak = max(peak, sum(f.stat().st_size for f in spool_dir.iterdir()))
            yield record

    with SplitWriter(url, 64, spool_bytes=4 << 20) as w:
        w.write_many(stream())
    loader = SplitDataLoader(url)
    assert len(loader) == 8192
    assert loader[8191] == record
    assert loader.manifest is not None
    assert len(loader.manifest.parts()) > 64  # parts were closed early to stay in budget
    # Budget plus one 1 MiB batch; without the budget it grows towards 128 MiB.
    assert 0 < peak <= (4 << 20) + (2 << 20), f"peak spool {peak / 2**20:.1f} MiB"
    assert list(spool_dir.iterdir()) == []
    fsspec.filesystem("memory").rm(url, recursive=True)

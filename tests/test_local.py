"""Local-disk specifics: bounded writer memory, exhaustive corruption detection."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from splitdask import CorruptDatasetError, SplitDataLoader, write_split_data


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

"""Issue 10: no read returns wrong bytes, no hostile file hangs or escapes the root.

Each test is one case of the issue, on a real local dataset: a read either returns
the record that was written or raises a splitdask error naming the file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _manifests import entry_path, forget_versions, manifest_doc, write_manifest_doc

from splitdask import CorruptDatasetError, SplitDataLoader, write_split_data

RECORDS = [bytes([i % 251]) * (20 + i % 13) for i in range(100)]


def _dataset(path: Path, records: list[bytes] = RECORDS, splits: int = 4) -> Path:
    write_split_data(path, records, splits=splits)
    return path


def _parts(ds: Path) -> list[Path]:
    doc = manifest_doc(ds)
    return [ds / p["path"] for b in doc["bins"] for p in b]


def _every_read(ds: Path) -> list[Any]:
    """What each read path returns (or the error it raised), for comparison."""
    out: list[Any] = []
    for read in (
        lambda lo: [lo[i] for i in range(len(lo))],
        lambda lo: lo[np.arange(len(lo))],
        lambda lo: list(lo.iterate_binwise()),
        lambda lo: list(lo.iterate_binwise(shuffle=True, seed=3)),
    ):
        try:
            out.append(read(SplitDataLoader(ds)))
        except CorruptDatasetError as exc:
            out.append(exc)
    return out


def _all_refused(ds: Path, match: str) -> None:
    for got in _every_read(ds):
        assert isinstance(got, CorruptDatasetError), "a read returned records silently"
        assert str(ds) in str(got)
        assert re.search(match, str(got)), str(got)


def test_shifted_offset_is_refused(tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "ds")
    part = _parts(ds)[0]
    data = bytearray(part.read_bytes())
    # The second offset (record 1's start) one byte later: still ascending.
    pos = len(data) - _footer_len(ds, part) + 8
    value = int.from_bytes(data[pos : pos + 8], "little") + 1
    data[pos : pos + 8] = value.to_bytes(8, "little")
    part.write_bytes(bytes(data))
    _all_refused(ds, "footer checksum mismatch|does not match its checksum")


def _footer_len(ds: Path, part: Path) -> int:
    doc = manifest_doc(ds)
    (info,) = [p for b in doc["bins"] for p in b if ds / p["path"] == part]
    n = info["count"]
    return 8 * (n + 1) + 8 * n + 72 + 24 if info.get("version", 1) == 2 else 8 * (n + 1) + 24


def test_flipped_record_byte_names_file_record_and_range(tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "ds")
    part = _parts(ds)[1]
    data = bytearray(part.read_bytes())
    data[8 + 30] ^= 0x40  # inside record 1 of the part (records are >= 20 bytes)
    part.write_bytes(bytes(data))
    reads = _every_read(ds)
    for got in reads:
        assert isinstance(got, CorruptDatasetError), "a flipped byte was returned silently"
        assert part.name in str(got)
    # The record-by-record paths say exactly which record and where it is.
    assert "record 1 (bytes" in str(reads[0])
    assert "record 1 (bytes" in str(reads[1])
    # Records of other parts still read: the error is about that one record.
    loader = SplitDataLoader(ds)
    assert [loader[i] for i in range(0, 100, 4)] == RECORDS[0:100:4]  # bin 0


def test_part_of_another_dataset_is_refused_on_open(tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "ds")
    other = _dataset(tmp_path / "other")
    mine, theirs = _parts(ds)[2], _parts(other)[2]
    assert mine.stat().st_size == theirs.stat().st_size  # same records, same sizes
    shutil.copyfile(theirs, mine)
    loader = SplitDataLoader(ds)
    with pytest.raises(CorruptDatasetError, match="another dataset or commit"):
        loader[2]  # record 2 is the first of bin 2
    _all_refused(ds, "another dataset or commit|checksum mismatch")


def test_symlink_to_a_part_outside_the_root_is_refused(tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "ds")
    outside = _dataset(tmp_path / "outside")
    part = _parts(ds)[0]
    part.unlink()
    part.symlink_to(outside / part.relative_to(ds).parent / _parts(outside)[0].name)
    _all_refused(ds, "symlink")


def test_symlinked_bins_directory_is_refused(tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "ds")
    shutil.move(ds / "bins", tmp_path / "elsewhere")
    (ds / "bins").symlink_to(tmp_path / "elsewhere")
    _all_refused(ds, "symlink or outside the dataset root")


@pytest.mark.timeout(60)
def test_symlink_to_dev_zero_is_refused_and_verify_returns(tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "ds")
    part = _parts(ds)[0]
    part.unlink()
    part.symlink_to("/dev/zero")
    _all_refused(ds, "symlink")
    with pytest.raises(CorruptDatasetError, match=f"{part.name}.*symlink"):
        SplitDataLoader(ds).verify()


@pytest.mark.timeout(60)
def test_fifo_as_part_or_manifest_does_not_block(tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "ds")
    part = _parts(ds)[0]
    part.unlink()
    os.mkfifo(part)
    _all_refused(ds, "not a regular file \\(a FIFO\\)")
    with pytest.raises(CorruptDatasetError, match="FIFO"):
        SplitDataLoader(ds).verify()
    # The newest version's log entry as a FIFO (read afresh, not from this
    # process's cache of versions),
    entry = Path(entry_path(ds))
    entry.unlink()
    os.mkfifo(entry)
    forget_versions()
    with pytest.raises(CorruptDatasetError, match=f"{entry.name}: not a regular file"):
        SplitDataLoader(ds)
    # and the manifest of a dataset from before versions.
    write_manifest_doc(ds, b"{}")
    manifest = ds / "splitdask.json"
    manifest.unlink()
    os.mkfifo(manifest)
    with pytest.raises(CorruptDatasetError, match="splitdask.json: not a regular file"):
        SplitDataLoader(ds)


def test_directory_as_part_is_refused(tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "ds")
    part = _parts(ds)[3]
    part.unlink()
    part.mkdir()
    _all_refused(ds, "not a regular file \\(a directory\\)")
    with pytest.raises(CorruptDatasetError, match="directory"):
        SplitDataLoader(ds).verify()


@pytest.mark.parametrize("where", ["top", "metadata", "entry"])
def test_deeply_nested_manifest_is_corrupt_not_recursion(tmp_path: Path, where: str) -> None:
    ds = _dataset(tmp_path / "ds")
    deep = "[" * 100_000 + "]" * 100_000
    if where == "top":  # the manifest of a dataset from before versions
        write_manifest_doc(ds, deep.encode())
    elif where == "metadata":
        doc = json.dumps(manifest_doc(ds), separators=(",", ":"))
        write_manifest_doc(ds, doc.replace('"metadata":{}', f'"metadata":{{"x":{deep}}}').encode())
    else:  # the newest version's log entry: the log's own parser
        Path(entry_path(ds)).write_text(deep)
        forget_versions()
    with pytest.raises(CorruptDatasetError, match=r"JSON nested 1000\d\d levels deep"):
        SplitDataLoader(ds)


def _bounded(fn: Any, seconds: float, mib: int) -> Any:
    """The error ``fn`` raises, checked to come within ``seconds`` and ``mib``."""
    t0 = time.perf_counter()
    with pytest.raises(CorruptDatasetError):
        fn()
    elapsed = time.perf_counter() - t0  # timed apart: tracemalloc slows allocation
    assert elapsed < seconds, f"{elapsed:.1f} s"
    tracemalloc.start()
    try:
        with pytest.raises(CorruptDatasetError) as info:
            fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < mib << 20, f"peak {peak / 2**20:.0f} MiB"
    return info.value


def test_million_empty_bins_are_refused_fast(tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "ds", [b"x"], splits=1)
    doc = manifest_doc(ds)
    doc["bins"] += [[] for _ in range(10**6)]
    write_manifest_doc(ds, doc)
    err = _bounded(lambda: SplitDataLoader(ds), 10.0, 120)  # minutes if per-bin work
    # A million "[], " is one array per 4 bytes: refused before parsing (else MAX_BINS).
    assert "CONTAINER_BYTES = 12" in str(err)


def test_segment_naming_a_million_bins_is_refused_fast(tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "ds", [b"x", b"y"], splits=2)
    doc = manifest_doc(ds)
    doc["order"][0]["bins"] = list(range(10**6))
    doc["order"][0]["first"] = [0] * 10**6
    write_manifest_doc(ds, doc)
    err = _bounded(lambda: SplitDataLoader(ds), 3.0, 250)
    assert "segment names 1000000 bins of 2" in str(err)


def test_many_empty_bins_open_in_time_proportional_to_parts(tmp_path: Path) -> None:
    # The most bins allowed, ten of them with records: opening is quick.
    ds = tmp_path / "ds"
    write_split_data(ds, [b"r%d" % i for i in range(10)], splits=10)
    doc = manifest_doc(ds)
    doc["bins"] += [[] for _ in range((1 << 16) - 10)]
    write_manifest_doc(ds, doc)
    t0 = time.perf_counter()
    loader = SplitDataLoader(ds)
    assert loader[7] == b"r7"
    assert len(loader.bin_counts) == 1 << 16
    assert time.perf_counter() - t0 < 2.0


def test_too_many_splits_are_refused_before_writing(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="splits must be at most 65536"):
        write_split_data(tmp_path / "ds", [b"x"] * 10, splits=10**6)
    assert time.perf_counter() - t0 < 1.0
    assert not (tmp_path / "ds" / "splitdask.json").exists()


def test_writer_holds_nothing_per_empty_bin(tmp_path: Path) -> None:
    tracemalloc.start()
    try:
        write_split_data(tmp_path / "ds", [b"x"] * 10, splits=1 << 16)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # About 600 bytes per bin (its writer object, its manifest entry), no buffers.
    assert peak < 64 << 20, f"peak {peak / 2**20:.0f} MiB"
    assert SplitDataLoader(tmp_path / "ds")[9] == b"x"


@pytest.mark.parametrize(
    ("record", "fmt"),
    [
        (np.array([b"a", 1, None], dtype=object), "'O'"),
        (np.zeros(2, dtype=[("a", "<i4"), ("b", "O")]), "'T{"),
        (np.zeros(3, dtype="M8[s]"), ""),
    ],
)
def test_object_and_non_plain_buffers_are_refused(tmp_path: Path, record: Any, fmt: str) -> None:
    with pytest.raises(TypeError, match=f"record 1 is (a|of type) ndarray.*{fmt}"):
        write_split_data(tmp_path / "ds", [b"ok", record], splits=1)
    assert not (tmp_path / "ds" / "splitdask.json").exists()


def test_plain_numeric_buffers_are_stored_as_their_bytes(tmp_path: Path) -> None:
    arrays = [np.arange(5, dtype="<f4"), np.arange(3, dtype=">i8"), np.ones(2, dtype=bool)]
    write_split_data(tmp_path / "ds", arrays, splits=1)
    loader = SplitDataLoader(tmp_path / "ds")
    assert [loader[i] for i in range(3)] == [a.tobytes() for a in arrays]


@pytest.mark.parametrize("where", ["manifest", "entry"])
def test_segment_naming_a_bin_twice_is_refused(tmp_path: Path, where: str) -> None:
    # Bin 0 twice in one segment: each of its records would be read twice (found by
    # fuzzing the log entry's parser; a pre-version manifest had the same gap).
    ds = _dataset(tmp_path / "ds", [b"a", b"b", b"c", b"d"], splits=2)
    twice = [[0, 4, [0, 0], [0, 0]], [4, 2, [1], [0]]]
    keys = ("start", "count", "bins", "first")
    if where == "manifest":
        doc = manifest_doc(ds)
        doc["order"] = [dict(zip(keys, s, strict=True)) for s in twice]
        doc["num_records"] = 6
        write_manifest_doc(ds, doc)
    else:
        path = Path(entry_path(ds))
        entry = json.loads(path.read_bytes())
        entry["segments"], entry["num_records"] = twice, 6
        path.write_text(json.dumps(entry))
        forget_versions()
    with pytest.raises(CorruptDatasetError, match="does not cover bin 0's 2 records exactly once"):
        SplitDataLoader(ds)

"""Issue 14: per-record zstd compression that keeps random access.

Every writer compresses when asked, every read path hands out the records as written,
the format versions keep older readers out, and damage is refused by name.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import dask.bag as db
import numpy as np
import pytest

from splitdask import (
    CorruptDatasetError,
    FormatVersionError,
    SplitDataLoader,
    SplitWriter,
    compact,
    write_split_data,
)
from splitdask._format import Manifest
from splitdask._format import _manifest as _format
from splitdask._format._compression import decode_lengths, encode_lengths
from splitdask.bag import read_split_bins, to_split_bins
from tests._cli_helpers import ok, run
from tests._manifests import manifest_doc

_rng = random.Random(14)
_WORDS = [b"def", b"return", b"self", b"import", b"class", b"for", b"in", b"if", b"else", b"x"]
# Text-like records (compressible, dictionary-friendly), some empty, some long.
RECORDS = [
    b" ".join(_rng.choice(_WORDS) for _ in range(_rng.randrange(0, 40))) + b"\n"
    for _ in range(3000)
] + [b"", os.urandom(3000), b"z" * 200_000]


def _doc(ds: Any) -> dict[str, Any]:
    return manifest_doc(ds)


def _all_reads(lo: SplitDataLoader) -> None:
    """Every loader read path returns exactly the written records."""
    n = len(lo)
    assert n == len(RECORDS)
    idx = np.random.default_rng(0).permutation(n)[:500]
    assert [lo[int(i)] for i in idx] == [RECORDS[i] for i in idx]
    assert lo[idx] == [RECORDS[i] for i in idx]
    assert lo[10:20] == RECORDS[10:20]
    assert list(lo) == RECORDS
    assert sorted(lo.iterate_binwise()) == sorted(RECORDS)
    assert sorted(lo.iterate_binwise(shuffle=True, seed=3)) == sorted(RECORDS)
    assert lo.verify().parts == sum(len(b) for b in lo.manifest.bins)
    assert lo.nbytes == sum(map(len, RECORDS))


def test_write_split_data_round_trip_and_format(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    info = write_split_data(ds, RECORDS, splits=3, compression="zstd", compression_level=5)
    assert info.bytes_written == sum(map(len, RECORDS))
    doc = _doc(ds)
    assert doc["version"] == _format.COMPRESSED_MANIFEST_VERSION == 3
    parts = [p for b in doc["bins"] for p in b]
    assert {(p["version"], p["compression"], p["level"]) for p in parts} == {(4, "zstd", 5)}
    stored = sum(p["size"] for p in parts)
    assert stored < sum(map(len, RECORDS)) / 2  # dictionary-compressed text
    with SplitDataLoader(ds) as lo:
        _all_reads(lo)
        # What `splitdask info` reports: a log (format 4), whose manifest is version 3.
        assert lo.describe().format_version == 4


def test_uncompressed_writes_keep_the_released_versions(tmp_path: Path) -> None:
    write_split_data(tmp_path / "ds", RECORDS[:50], splits=2)
    doc = _doc(tmp_path / "ds")
    # The manifest an uncompressed write makes is the released v2 one (the dataset
    # itself is a v4 log since issue 22, which older readers refuse by design).
    assert doc["version"] == _format.FORMAT_VERSION == 2
    assert {p.get("version") for b in doc["bins"] for p in b} == {2}
    assert not any("compression" in p for b in doc["bins"] for p in b)


def test_an_older_reader_refuses_a_compressed_dataset(tmp_path: Path, monkeypatch: Any) -> None:
    write_split_data(tmp_path / "ds", RECORDS[:100], splits=2, compression="zstd")
    data = json.dumps(_doc(tmp_path / "ds")).encode()  # as a pre-version dataset holds it
    # The released reader accepted manifest versions (1, 2) and part versions (1, 2).
    monkeypatch.setattr(_format, "MANIFEST_VERSIONS", (1, 2))
    with pytest.raises(FormatVersionError, match=r"manifest format version 3.*reads versions 1, 2"):
        Manifest.from_json(data, "old reader")
    monkeypatch.undo()
    # A v2 manifest naming v3 parts is not a dataset any writer makes.
    doc = json.loads(data)
    doc["version"] = 2
    with pytest.raises(CorruptDatasetError, match="v2 manifest names v3 parts"):
        Manifest.from_json(json.dumps(doc).encode(), "m")


def test_mixed_parts_append_and_compaction(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    chunks = [RECORDS[i : i + 400] for i in range(0, 3000, 400)]
    expected: list[bytes] = []
    for k, chunk in enumerate(chunks):
        # Pairs of each kind: compaction merges each pair, never across kinds.
        write_split_data(ds, chunk, splits=2, compression="zstd" if k // 2 % 2 else None)
        expected += chunk
    doc = _doc(ds)
    assert doc["version"] == 3
    kinds = {p.get("compression") for b in doc["bins"] for p in b}
    assert kinds == {None, "zstd"}
    with SplitDataLoader(ds) as lo:
        assert list(lo) == expected
        assert sorted(lo.iterate_binwise()) == sorted(expected)
    info = compact(ds, retention=0)
    assert info.parts_written == 8  # 4 runs of 2 in each of 2 bins
    after = _doc(ds)
    for b in after["bins"]:
        assert [p.get("compression") for p in b] == [None, "zstd", None, "zstd"]
    with SplitDataLoader(ds) as lo:
        assert list(lo) == expected
        assert [lo[i] for i in range(0, len(expected), 7)] == expected[::7]
        lo.verify()


def test_compressed_parts_compact_into_compressed_parts(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    for k in range(4):
        write_split_data(
            ds, RECORDS[k * 100 : (k + 1) * 100], splits=1, compression="zstd", compression_level=1
        )
    assert len(_doc(ds)["bins"][0]) == 4
    compact(ds, retention=0)
    (part,) = _doc(ds)["bins"][0]
    assert (part["compression"], part["level"], part["count"]) == ("zstd", 1, 400)
    with SplitDataLoader(ds) as lo:
        assert list(lo) == RECORDS[:400]


def test_splitwriter_memory_and_s3(s3_url: str, s3_storage_options: dict[str, Any]) -> None:
    with SplitWriter("memory://zstd-ds", 4, compression="zstd") as w:
        w.write_many(RECORDS)
    with SplitDataLoader("memory://zstd-ds") as lo:
        _all_reads(lo)
    url = s3_url + "/ds"
    with SplitWriter(url, 4, storage_options=s3_storage_options, compression="zstd") as w:
        w.write_many(RECORDS)
    # By range first (nothing fetched whole yet), then whole bins, then verify.
    with SplitDataLoader(url, storage_options=s3_storage_options) as lo:
        some = [0, 3001, 3002, 17, 2999]
        assert [lo[i] for i in some] == [RECORDS[i] for i in some]
        assert lo[np.arange(0, 3003, 5)] == RECORDS[::5]
        assert sorted(lo.iterate_binwise(shuffle=True, seed=1)) == sorted(RECORDS)
        assert lo.verify().parts == 4


def test_small_appends_are_not_lost_while_sampling(tmp_path: Path) -> None:
    # Records held back for the dictionary sample must survive the small-append path.
    ds = tmp_path / "ds"
    write_split_data(ds, RECORDS[:1000], splits=4)
    for k in range(3):
        write_split_data(ds, RECORDS[1000 + 10 * k : 1010 + 10 * k], compression="zstd")
    with SplitDataLoader(ds) as lo:
        assert list(lo) == RECORDS[:1030]


def test_dask_bag_write_and_read(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    bag = db.from_sequence(RECORDS, npartitions=3)
    info = to_split_bins(bag, ds, compression="zstd", compute_kwargs={"scheduler": "threads"})
    assert info.records_written == len(RECORDS)
    assert _doc(ds)["version"] == 3
    got = read_split_bins(ds).compute(scheduler="threads")
    assert sorted(got) == sorted(RECORDS)
    with SplitDataLoader(ds) as lo:
        assert list(lo) == RECORDS


def test_cli_import_and_every_output(tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    lines = [r.rstrip(b"\n") for r in RECORDS[:300] if r.strip()]
    src.write_bytes(b"\n".join(lines) + b"\n")
    ds = str(tmp_path / "ds")
    ok("import", str(src), ds, "--bins", "2", "--compression", "zstd", "--compression-level", "7")
    assert {p["level"] for b in _doc(ds)["bins"] for p in b} == {7}
    assert ok("head", ds, "-n", "3") == b"".join(lines[:3])
    assert ok("cat", ds, "5", "-1") == lines[5] + lines[-1]
    out = tmp_path / "out.txt"
    ok("export", ds, str(out), "--format", "lines")
    assert out.read_bytes().splitlines() == lines
    ok("verify", ds)
    bad = run("import", str(src), str(tmp_path / "x"), "--bins", "1", "--compression-level", "3")
    assert bad.returncode != 0
    assert b"compression_level=3 needs compression='zstd'" in bad.stderr


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"compression": "gzip"}, ValueError, "compression must be None or 'zstd', got 'gzip'"),
        ({"compression": 1}, TypeError, "compression must be None or 'zstd', got int"),
        ({"compression": "zstd", "compression_level": 23}, ValueError, "compression_level"),
        (
            {"compression": "zstd", "compression_level": -(1 << 17) - 1},
            ValueError,
            "compression_level",
        ),
        ({"compression": "zstd", "compression_level": 2.5}, TypeError, "compression_level"),
        ({"compression_level": 3}, ValueError, "needs compression='zstd'"),
    ],
)
def test_bad_compression_arguments(
    tmp_path: Path, kwargs: dict[str, Any], error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        write_split_data(tmp_path / "ds", [b"a"], splits=1, **kwargs)
    with pytest.raises(error, match=message):
        to_split_bins(db.from_sequence([b"a"]), tmp_path / "ds2", **kwargs)
    assert not (tmp_path / "ds").exists() or not (tmp_path / "ds" / "splitdask.json").exists()


def _corrupt_one_record(ds: Path) -> tuple[Path, int]:
    """Flip a byte inside a record of the first part; return the part and its index."""
    part = next(p for b in _doc(ds)["bins"] for p in b)
    path = ds / part["path"]
    with SplitDataLoader(ds) as lo:
        opened = lo.snapshot.parts[0]
        starts, ends, _dec = opened.footer(path.read_bytes(), "x")
    j = 5
    pos = int(starts[j]) + (int(ends[j]) - int(starts[j])) // 2
    data = bytearray(path.read_bytes())
    data[pos] ^= 0x55
    path.write_bytes(bytes(data))
    return path, j


def test_a_corrupt_compressed_record_is_refused_naming_the_file(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    write_split_data(ds, RECORDS, splits=2, compression="zstd")
    path, j = _corrupt_one_record(ds)
    with SplitDataLoader(ds) as lo:
        locate = lo.snapshot.locator
        gi = next(i for i in range(len(lo)) if locate.locate(i) == (0, j))
        with pytest.raises(CorruptDatasetError, match=rf"{path.name}.*record {j}\b"):
            lo[gi]
        with pytest.raises(CorruptDatasetError, match=path.name):
            lo[[gi, 0]]
        with pytest.raises(CorruptDatasetError, match=path.name):
            list(lo.iterate_binwise())
        with pytest.raises(CorruptDatasetError, match=path.name):
            lo.verify()


def test_a_frame_claiming_more_than_the_part_holds_is_refused(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    write_split_data(ds, [b"a" * 100] * 40, splits=1, compression="zstd")
    with SplitDataLoader(ds) as lo:
        dec = lo._reader.part(0).decode
        assert dec is not None
        # A magicless single-segment frame header claiming 2**31 decoded bytes.
        bomb = bytes([0xA0]) + (1 << 31).to_bytes(4, "little") + b"\x01\x00\x00"
        with pytest.raises(CorruptDatasetError, match="claims more than"):
            dec.plain(bomb)
        with pytest.raises(CorruptDatasetError, match="does not decompress"):
            dec.plain(b"")


def test_compact_lengths_encoding() -> None:
    for lengths in ([1, 2, 255], [300, 70_000], [1 << 40]):
        blob, width = encode_lengths(lengths)
        assert decode_lengths(blob, len(lengths), width, "w").tolist() == lengths
    blob, width = encode_lengths([5] * 10)
    with pytest.raises(CorruptDatasetError, match="claim 10 bytes, 11 records need 11"):
        decode_lengths(blob, 11, width, "w")
    with pytest.raises(CorruptDatasetError, match="width 3"):
        decode_lengths(blob, 10, 3, "w")


def test_small_compressed_write_keeps_records_held_for_training(tmp_path: Path) -> None:
    """Every bin's records may all still be held back to train its dictionary when
    the write ends; finishing the write must still store them."""
    records = [b"line %d of a small file\n" % i for i in range(40)]
    write_split_data(tmp_path / "s", records, splits=4, compression="zstd")
    with SplitDataLoader(tmp_path / "s") as lo:
        assert list(lo) == records
        assert lo.describe().format_version == 4  # a log of a compressed dataset

"""Issue 14: per-record zstd compression that keeps random access.

Every writer compresses when asked, every read path hands out the records as written,
the format versions keep older readers out, and damage is refused by name.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import random
import sysconfig
from pathlib import Path
from typing import Any

import dask.bag as db
import numpy as np
import pytest
import xxhash
import zstandard

from splitdask import (
    CorruptDatasetError,
    FormatVersionError,
    SplitDataLoader,
    SplitWriter,
    compact,
    write_split_data,
)
from splitdask._format import (
    DATA_START,
    MAGIC,
    Manifest,
    decode_footer_v4,
    encode_footer_v3,
    encode_footer_v4,
    footer_hash,
    record_sum,
)
from splitdask._format import _manifest as _format
from splitdask._format._compression import (
    Compression,
    Decoder,
    _params,
    decode_lengths,
    encode_lengths,
    train,
)
from splitdask._format._grouped import MAX_GROUP, GroupDecoder
from splitdask._store import open_store
from splitdask._write._binwrite import BinWriter
from splitdask.bag import read_split_bins, to_split_bins
from tests._cli_helpers import ok, run
from tests._manifests import manifest_doc, write_manifest_doc

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


# -- format v4: small records share a frame (issue 19) ---------------------------------


def _stdlib_lines() -> list[bytes]:
    """Every non-blank line of this Python's standard library's ``.py`` files (the
    per-line corpus of benchmarks/local.py --compression-only)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [p.read_bytes() for p in sorted(root.rglob("*.py")) if "site-packages" not in p.parts]
    return [line for f in files for line in f.split(b"\n") if line.strip()]


def test_per_line_corpus_stores_within_2x_of_whole_part_zstd(tmp_path: Path) -> None:
    lines = _stdlib_lines()
    assert len(lines) > 100_000  # the corpus is there
    write_split_data(tmp_path / "ds", lines, splits=8, compression="zstd")
    parts = [p for b in _doc(tmp_path / "ds")["bins"] for p in b]
    assert {p["version"] for p in parts} == {4}
    stored = sum(p["size"] for p in parts)
    # Zstd over each whole bin (one part each here, records dealt round-robin).
    cctx = zstandard.ZstdCompressor(level=3)
    whole = sum(len(cctx.compress(b"".join(lines[j::8]))) for j in range(8))
    assert stored <= 2.0 * whole, f"{stored / whole:.2f}x of whole-part zstd"
    with SplitDataLoader(tmp_path / "ds") as lo:
        picks = random.Random(19).sample(range(len(lines)), 2000)
        assert [lo[i] for i in picks] == [lines[i] for i in picks]


def test_frames_hold_several_small_records_and_one_large(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    write_split_data(ds, RECORDS, splits=1, compression="zstd")
    with SplitDataLoader(ds) as lo:
        dec = lo._reader.part(0).decode
        assert isinstance(dec, GroupDecoder)
        counts = dec.counts.tolist()
        assert sum(counts) == len(RECORDS)
        assert 1 < max(counts) <= MAX_GROUP
        # The 200 KB record is a frame of its own.
        big = RECORDS.index(b"z" * 200_000)
        assert counts[int(np.searchsorted(np.cumsum(counts), big, side="right"))] == 1
        # Every record's extent is unique and inside the file.
        ext = set(zip(dec.rec_start.tolist(), dec.rec_end.tolist(), strict=True))
        assert len(ext) == len(RECORDS)
        assert max(dec.rec_end) < lo.manifest.bins[0][0].size
        data = lo._reader.part(0).data
        spans = [
            slice(s, e) for s, e in zip(dec.rec_start.tolist(), dec.rec_end.tolist(), strict=True)
        ]
        views = dec.views(data)
        order = np.random.default_rng(1).permutation(len(spans))
        assert [bytes(views[spans[k]]) for k in order] == [RECORDS[k] for k in order]


def test_records_in_stored_order_reuse_their_checked_frame(tmp_path: Path) -> None:
    """``loader[i]`` keeps the last frame it checked and decoded: records read in
    order come from it, and a damaged frame read next is still refused."""
    ds = tmp_path / "ds"
    recs = RECORDS[:600]
    write_split_data(ds, recs, splits=1, compression="zstd")
    with SplitDataLoader(ds) as lo:
        assert [lo[i] for i in range(len(recs))] == recs
        dec = lo._reader.part(0).decode
        assert isinstance(dec, GroupDecoder)
        second = int(dec.counts[0])  # the first record of frame 1
        path = ds / _doc(ds)["bins"][0][0]["path"]
        data = bytearray(path.read_bytes())
        data[int(dec.bounds[1]) + 2] ^= 0x55  # inside frame 1
    path.write_bytes(bytes(data))
    with SplitDataLoader(ds) as lo:
        assert [lo[i] for i in range(second)] == recs[:second]  # frame 0, decoded once
        with pytest.raises(CorruptDatasetError, match=rf"{path.name}.*record {second}\b"):
            lo[second]
        assert lo[second - 1] == recs[second - 1]


def _v3_part(records: list[bytes], uid: str) -> tuple[bytes, dict[str, Any]]:
    """A format v3 part of ``records`` (one frame each), as the writers of issue 14
    made them, and its manifest entry."""
    dictionary = train(records, 3)
    cctx = zstandard.ZstdCompressor(
        dict_data=zstandard.ZstdCompressionDict(dictionary), compression_params=_params(3)
    )
    frames = [cctx.compress(r) for r in records]
    raw = sum(map(len, records))
    footer = encode_footer_v3(
        [len(f) for f in frames],
        [record_sum(f) for f in frames],
        dictionary,
        uid,
        max_decoded=max(map(len, records)),
        decoded_total=raw,
        level=3,
    )
    data = MAGIC + b"".join(frames) + footer
    entry = {
        "path": f"bins/00000-{uid}.bin",
        "count": len(records),
        "size": len(data),
        "checksum": f"xxh3_64:{xxhash.xxh3_64_hexdigest(data)}",
        "version": 3,
        "compression": "zstd",
        "level": 3,
        "footer": len(footer),
        "raw": raw,
        "footer_sum": f"{footer_hash(footer):016x}",
    }
    return data, entry


def test_v3_parts_stay_readable_beside_v4_parts(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    old, new = RECORDS[:1500], RECORDS[1500:]
    write_split_data(ds, old, splits=1, compression="zstd")
    doc = _doc(ds)
    uid = "00" * 8 + "0123456789abcdef"
    data, entry = _v3_part(old, uid)
    (ds / entry["path"]).write_bytes(data)
    doc["bins"][0] = [entry]
    write_manifest_doc(ds, doc)
    with SplitDataLoader(ds) as lo:
        assert type(lo._reader.part(0).decode) is Decoder  # per-record frames
        assert [lo[i] for i in range(0, 1500, 7)] == old[::7]
    write_split_data(ds, new, splits=1, compression="zstd")  # appends a v4 part
    assert [p["version"] for p in _doc(ds)["bins"][0]] == [3, 4]
    with SplitDataLoader(ds) as lo:
        _all_reads(lo)
    compact(ds, retention=0)  # rewrites both as one v4 part
    assert [p["version"] for p in _doc(ds)["bins"][0]] == [4]
    with SplitDataLoader(ds) as lo:
        _all_reads(lo)


def _footer_at(ds: Path) -> tuple[Path, int, int]:
    """The first part of ``ds``: its path, where its footer starts, its dictionary's size."""
    part = _doc(ds)["bins"][0][0]
    path = ds / part["path"]
    at = part["size"] - part["footer"]
    with SplitDataLoader(ds) as lo:
        dec = lo._reader.part(0).decode
        assert isinstance(dec, GroupDecoder)
        n_dict = len(dec._dict)
    return path, at, n_dict


def test_a_damaged_dictionary_is_refused_naming_the_file(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    write_split_data(ds, RECORDS, splits=1, compression="zstd")
    path, at, n_dict = _footer_at(ds)
    assert n_dict > 1000
    data = bytearray(path.read_bytes())
    data[at + n_dict // 2] ^= 0x20
    path.write_bytes(bytes(data))
    with SplitDataLoader(ds) as lo:
        with pytest.raises(CorruptDatasetError, match=rf"{path.name}.*footer checksum mismatch"):
            lo[0]
        with pytest.raises(CorruptDatasetError, match=path.name):
            lo.verify()


def test_a_wrong_dictionary_is_refused_naming_the_file(tmp_path: Path) -> None:
    """Another dictionary in a footer made consistent again (its own hash, the part's
    checksum): the hash of the footer the commit wrote refuses it."""
    ds = tmp_path / "ds"
    write_split_data(ds, RECORDS, splits=1, compression="zstd")
    doc = _doc(ds)
    part = doc["bins"][0][0]
    path, at, _n = _footer_at(ds)
    with SplitDataLoader(ds) as lo:
        opened = lo._reader.part(0)
        dec = opened.decode
        assert isinstance(dec, GroupDecoder)
        frames = bytes(opened.data[DATA_START:at])
        bounds, counts, sizes = dec.bounds, dec.counts, dec.sizes
        sums = [
            record_sum(frames[s - DATA_START : e - DATA_START])
            for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)
        ]
    other = train([b"%d unrelated words %d" % (i, i * i) for i in range(2000)], 3)
    assert other
    assert other != dec._dict
    footer = encode_footer_v4(
        np.diff(bounds), sums, sizes, counts, other, part["path"][11:-4], level=3
    )
    data = MAGIC + frames + footer
    path.write_bytes(data)
    part.update(size=len(data), footer=len(footer))
    part["checksum"] = f"xxh3_64:{xxhash.xxh3_64_hexdigest(data)}"
    write_manifest_doc(ds, doc)  # footer_sum still the one the commit recorded
    with (
        SplitDataLoader(ds) as lo,
        pytest.raises(CorruptDatasetError, match=rf"{path.name}.*not the one the commit wrote"),
    ):
        lo[5]


def test_v4_footer_claims_are_checked_before_use() -> None:
    recs = [b"record %d" % i for i in range(200)]
    cctx = zstandard.ZstdCompressor(compression_params=_params(3))  # magicless, no dictionary
    frames = [cctx.compress(b"".join(recs[i : i + 10])) for i in range(0, 200, 10)]
    lengths = [len(f) for f in frames]
    sums = [record_sum(f) for f in frames]
    sizes = [len(r) for r in recs]
    uid = "ab" * 8
    body = MAGIC + b"".join(frames)

    def footer(counts: list[int], total: int | None = None) -> Any:
        f = encode_footer_v4(lengths, sums, sizes, counts, b"", uid, level=3)
        return decode_footer_v4(
            body + f, len(body) + len(f), 200, len(f), uid, total or sum(sizes), "p.bin"
        )

    starts, ends, dec = footer([10] * 20)
    assert isinstance(dec, GroupDecoder)
    assert dec(bytes((body + b"x" * 300)[starts[13] : ends[13]]), 13) == recs[13]
    with pytest.raises(
        CorruptDatasetError, match="p.bin: footer says 1890 decoded bytes, the manifest says 1800"
    ):
        footer([10] * 20, total=1800)
    with pytest.raises(CorruptDatasetError, match="p.bin: the frames' record counts"):
        footer([65] + [7] * 18 + [9])  # 65 in one frame
    with pytest.raises(CorruptDatasetError, match="p.bin: the frames' record counts"):
        footer([0] * 19 + [200])
    with pytest.raises(ValueError, match="frames hold 199 records, 200 sizes"):
        encode_footer_v4(lengths, sums, sizes, [10] * 19 + [9], b"", uid, level=3)
    # A frame that decodes to other than its records' sizes is refused by name.
    starts, ends, dec = footer([10] * 20)
    with pytest.raises(CorruptDatasetError, match="p.bin: frame 0 decodes to"):
        dec.frame(cctx.compress(b"x" * 5), 0)


def test_v4_footers_altered_and_rehashed_are_refused_or_read() -> None:
    """Any byte of a v4 footer's body changed, with the footer's hash made right
    again: opening refuses it with a CorruptDatasetError or reads records that are
    each checked (a CorruptDatasetError, never another error or a crash)."""
    recs = [b"line %d of the corpus\n" % i * (1 + i % 3) for i in range(300)]
    cctx = zstandard.ZstdCompressor(compression_params=_params(3))
    counts = [7] * 42 + [6]
    ends = np.cumsum([0, *counts]).tolist()
    frames = [cctx.compress(b"".join(recs[a:b])) for a, b in itertools.pairwise(ends)]
    uid = "cd" * 8
    footer = encode_footer_v4(
        [len(f) for f in frames],
        [record_sum(f) for f in frames],
        [len(r) for r in recs],
        counts,
        b"",
        uid,
        level=3,
    )
    head = MAGIC + b"".join(frames)
    body_len = len(footer) - 8 - 24
    rng = random.Random(4)
    refused = read = 0
    named: list[bool] = []
    for _ in range(400):
        body = bytearray(footer[:body_len])
        for _ in range(rng.choice((1, 2, 4))):
            body[rng.randrange(body_len)] = rng.randrange(256)
        new = bytes(body) + xxhash.xxh3_64_digest(bytes(body))[::-1] + footer[-24:]
        data = head + new
        raw = sum(map(len, recs))
        try:
            starts, ends_, dec = decode_footer_v4(data, len(data), 300, len(new), uid, raw, "p")
            for j in range(0, 300, 17):
                dec(data[int(starts[j]) : int(ends_[j])], j)
            read += 1
        except CorruptDatasetError as exc:
            named.append(str(exc).startswith("p:"))
            refused += 1
    assert refused > 0
    assert refused + read == 400
    assert all(named)  # every refusal names the part


def test_group_decoder_tables_widen_for_huge_frames() -> None:
    """Record rows are 17 B unless a frame decodes to 4 GiB or more (29 B; no
    such frame is made here: the tables alone are built from its claimed sizes)."""
    bounds = np.array([8, 20, 40], np.int64)
    sums = memoryview(np.array([1, 2], "<u4").tobytes()).cast("I")
    small = GroupDecoder(b"", sums, bounds, np.array([2, 1]), np.array([3, 4, 5]), "p")
    assert small._row.size == small._rows.itemsize == 17
    assert small.sizes.tolist() == [3, 4, 5]
    huge = [3, 1 << 32, 5]
    wide = GroupDecoder(b"", sums, bounds, np.array([2, 1]), np.array(huge), "p")
    assert wide._row.size == wide._rows.itemsize == 29
    assert wide.sizes.tolist() == huge
    assert wide.rec_end.tolist() == [20, 21, 40]
    assert wide.detached().sizes.tolist() == huge


def test_a_group_decoder_is_freed_without_the_cycle_collector() -> None:
    """The decoder's ``loader[i]`` closure refers to its tables, not to the decoder:
    no cycle keeps a closed part's tables alive until the GC runs."""
    recs = [b"abc", b"defg", b"hi"]
    cctx = zstandard.ZstdCompressor(compression_params=_params(3))
    frame = cctx.compress(b"".join(recs))
    sums = memoryview(np.array([record_sum(frame) & 0xFFFFFFFF], "<u4").tobytes()).cast("I")
    bounds = np.array([8, 8 + len(frame)], np.int64)
    gc.collect()
    gc.disable()
    try:
        dec = GroupDecoder(b"", sums, bounds, np.array([3]), np.array([3, 4, 2]), "p")
        assert dec.record(frame + b"x", 1) == b"defg"  # the extent: frame, then m bytes
        del dec
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_compressed_parts_are_bounded_by_records_not_frames(tmp_path: Path) -> None:
    """A writer's record limit (its per-record memory) counts records, though a
    compressed part keeps one offset per frame of up to 64 of them."""
    store = open_store(tmp_path)
    store.makedirs("bins")
    w = BinWriter(store, 0, 1 << 30, 1000, compression=Compression("zstd", 3), sample_bytes=0)
    records = [b"%d" % i for i in range(5000)]  # tiny: 64 to a frame
    for k in range(0, 5000, 500):
        w.add_many(records[k : k + 500])
    w.finish()
    counts = [p.count for p in w.parts]
    assert sum(counts) == 5000
    assert max(counts) <= 1000 + 500  # checked after each batch
    assert len(counts) >= 4

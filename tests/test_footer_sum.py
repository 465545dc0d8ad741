"""The manifest records each part's footer hash, and random reads refuse any other footer.

The forgery of issue 22: two records of a part swapped together with their per-record
checksums and the footer's own checksum recomputed. Every check a footer can make of
itself passes; only the whole-part checksum (bin reads, ``verify``) and now the footer
hash the commit recorded see it. Built with the format's own helpers, on real parts.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from _manifests import manifest_doc, write_manifest_doc
from conftest import RequestLog

from splitdask import CorruptDatasetError, SplitDataLoader, write_split_data
from splitdask._format import (
    DATA_START,
    Manifest,
    PartInfo,
    decode_footer_v2,
    decode_footer_v3,
    decode_footer_v4,
    encode_footer_v2,
    encode_footer_v3,
    encode_footer_v4,
    footer_hash,
    footer_size,
)
from splitdask._format._grouped import GroupDecoder
from splitdask._read._entries import SPARSE_MIN_FOOTER

REFUSED = "the footer is not the one the commit wrote"


def _records(n: int) -> list[bytes]:
    """Distinct records of varying length (a swap then moves offsets as well)."""
    return [b"%06d:" % i + bytes([i % 251]) * (7 + i % 11) for i in range(n)]


def _swap(records: list[bytes], sums: list[int], a: int, b: int) -> None:
    records[a], records[b] = records[b], records[a]
    sums[a], sums[b] = sums[b], sums[a]


def forge_v2(data: bytes, info: PartInfo, a: int, b: int) -> bytes:
    """Part ``data`` with records ``a`` and ``b`` swapped, with their checksums, and
    a footer that is consistent with itself again."""
    offsets, sums = decode_footer_v2(data, info.size, info.count, info.uid, "forge")
    starts, ends = offsets[:-1].tolist(), offsets[1:].tolist()
    records = [data[s:e] for s, e in zip(starts, ends, strict=True)]
    sum_list = sums.tolist()
    _swap(records, sum_list, a, b)
    new_offsets = np.cumsum([DATA_START, *map(len, records)], dtype=np.uint64)
    footer = encode_footer_v2(new_offsets, np.array(sum_list, np.uint64), info.uid)
    forged = data[:DATA_START] + b"".join(records) + footer
    assert len(forged) == len(data)
    assert forged != data
    return forged


def forge_v3(data: bytes, info: PartInfo, a: int, b: int) -> bytes:
    """As :func:`forge_v2`, for a compressed part: frames and their u32 sums swapped,
    the footer re-encoded with the part's own dictionary. The frames must be of one
    length: the lengths (compressed in the footer) then stay, and so does the
    footer's size, which the manifest records."""
    starts, ends, dec = decode_footer_v3(
        data, info.size, info.count, info.footer, info.uid, info.raw, "forge"
    )
    frames = [data[s:e] for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]
    assert len(frames[a]) == len(frames[b])
    assert frames[a] != frames[b]
    sum_list = list(dec.frame_sums)
    _swap(frames, sum_list, a, b)
    footer = encode_footer_v3(
        np.array([len(f) for f in frames], np.uint64),
        np.array(sum_list, np.uint64),
        bytes(dec._dict),
        info.uid,
        max_decoded=dec.cap,
        decoded_total=info.raw,
        level=info.level,
    )
    forged = data[:DATA_START] + b"".join(frames) + footer
    assert len(forged) == len(data)
    assert forged != data
    return forged


def _forge_v4(data: bytes, info: PartInfo) -> tuple[bytes, int, int]:
    """As :func:`forge_v3`, for a v4 part (frames of several records): two frames of
    one length, holding records of the same sizes, swapped with their sums; returns
    the forged part and the first record of each."""
    _starts, _ends, dec = decode_footer_v4(
        data, info.size, info.count, info.footer, info.uid, info.raw, "forge"
    )
    assert isinstance(dec, GroupDecoder)
    b_ = dec.bounds.tolist()
    frames = [data[s:e] for s, e in itertools.pairwise(b_)]
    first = np.concatenate([[0], np.cumsum(dec.counts)]).tolist()
    shape = [tuple(dec.sizes[first[g] : first[g + 1]].tolist()) for g in range(len(frames))]
    a, b = next(
        (a, b)
        for a in range(1, len(frames))
        for b in range(a + 1, len(frames))
        if len(frames[a]) == len(frames[b]) and shape[a] == shape[b] and frames[a] != frames[b]
    )
    sum_list = list(dec.frame_sums)
    _swap(frames, sum_list, a, b)
    footer = encode_footer_v4(
        np.diff(dec.bounds),
        np.array(sum_list, np.uint64),
        dec.sizes,
        dec.counts,
        bytes(dec._dict),
        info.uid,
        level=info.level,
    )
    forged = data[:DATA_START] + b"".join(frames) + footer
    assert len(forged) == len(data)
    assert forged != data
    return forged, first[a], first[b]


def _manifest(ds: Path) -> Manifest:
    return Manifest.from_json(json.dumps(manifest_doc(ds)).encode(), "test")


def _forge_local(ds: Path) -> tuple[PartInfo, int, int]:
    """Forge the part of bin 0 of local dataset ``ds``: swap two of its records (the
    first two whose stored forms are of one length); returns it and the two."""
    (info,) = _manifest(ds).bins[0]
    path = ds / info.path
    data = path.read_bytes()
    if info.version == 4:  # what writers make since issue 19
        forged, a, b = _forge_v4(data, info)
        path.write_bytes(forged)
        return info, a, b
    if info.compression:
        starts, ends, _ = decode_footer_v3(
            data, info.size, info.count, info.footer, info.uid, info.raw, "forge"
        )
    else:
        offsets, _ = decode_footer_v2(data, info.size, info.count, info.uid, "forge")
        starts, ends = offsets[:-1], offsets[1:]
    lengths = (ends - starts).tolist()
    a = 1
    b = next(j for j in range(a + 1, info.count) if lengths[j] == lengths[a])
    forge = forge_v3 if info.compression else forge_v2
    path.write_bytes(forge(data, info, a, b))
    return info, a, b


@pytest.mark.parametrize("compression", [None, "zstd"])
def test_a_forged_footer_is_refused_by_random_reads(tmp_path: Path, compression: Any) -> None:
    records = _records(400)
    ds = tmp_path / "ds"
    write_split_data(ds, records, splits=2, compression=compression)
    info, a, b = _forge_local(ds)  # bin 0's local records a, b: records 2a and 2b
    assert info.footer_sum
    loader = SplitDataLoader(ds)
    with pytest.raises(CorruptDatasetError, match=REFUSED) as got:
        loader[2 * a]
    assert info.path in str(got.value)
    assert str(ds) in str(got.value)
    with pytest.raises(CorruptDatasetError, match=REFUSED):
        SplitDataLoader(ds)[2 * b]
    with pytest.raises(CorruptDatasetError, match=REFUSED):
        SplitDataLoader(ds).read_batch([0, 2 * b, 5])
    with pytest.raises(CorruptDatasetError, match=REFUSED):
        SplitDataLoader(ds)[[2 * a, 2 * b]]
    # The whole-part paths refuse it by the part's checksum, as before.
    with pytest.raises(CorruptDatasetError, match=info.path):
        SplitDataLoader(ds).read_bin(0)
    with pytest.raises(CorruptDatasetError, match="1 problem") as found:
        SplitDataLoader(ds).verify()
    assert info.path in str(found.value)
    # Bin 1 is intact and still reads.
    fresh = SplitDataLoader(ds)
    assert [fresh[i] for i in range(1, 400, 2)] == records[1::2]
    assert list(fresh.read_batch([1, 3, 399])) == [records[1], records[3], records[399]]


def test_the_manifest_records_each_footers_hash(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    write_split_data(ds, _records(300), splits=3)
    write_split_data(ds, _records(50), splits=3)  # an append: new parts record it too
    doc = manifest_doc(ds)
    entries = [p for b in doc["bins"] for p in b]
    assert len(entries) == 6
    for entry in entries:
        data = (ds / entry["path"]).read_bytes()
        assert entry["footer_sum"] == f"{footer_hash(data):016x}"
        assert int.from_bytes(data[-32:-24], "little") == int(entry["footer_sum"], 16)


def test_parts_without_a_recorded_hash_still_read(tmp_path: Path) -> None:
    """Manifests written before the field (and v1 parts) have none: nothing is
    compared, and they read as before."""
    records = _records(200)
    ds = tmp_path / "ds"
    write_split_data(ds, records, splits=2)
    doc = manifest_doc(ds)
    for b in doc["bins"]:
        for p in b:
            del p["footer_sum"]
    write_manifest_doc(ds, doc)
    assert all(p.footer_sum == 0 for p in _manifest(ds).parts())
    loader = SplitDataLoader(ds)
    assert [loader[i] for i in range(200)] == records
    assert list(loader.read_batch(list(range(200)))) == records


@pytest.mark.parametrize(
    "value",
    ["0000000000000000", "ABCDEF0123456789", "abc", "0123456789abcdef0", 12345, None, ""],
)
def test_footer_sum_is_parsed_strictly(tmp_path: Path, value: Any) -> None:
    ds = tmp_path / "ds"
    write_split_data(ds, _records(20), splits=1)
    doc = manifest_doc(ds)
    doc["bins"][0][0]["footer_sum"] = value
    with pytest.raises(CorruptDatasetError, match="invalid footer_sum"):
        Manifest.from_json(json.dumps(doc).encode(), "m")


def test_a_v1_part_cannot_claim_a_footer_hash() -> None:
    part = PartInfo("bins/00000-aaaaaaaa.bin", 1, 8 + 1 + footer_size(1), "xxh3_64:" + "0" * 16)
    doc = {
        "format": "splitdask",
        "version": 2,
        "generation": 1,
        "uid": "u",
        "bins": [[{**part.to_doc(), "footer_sum": "0123456789abcdef"}]],
        "order": [{"start": 0, "count": 1, "bins": [0], "first": [0]}],
    }
    assert "footer_sum" not in part.to_doc()  # 0: not written
    with pytest.raises(CorruptDatasetError, match="invalid footer_sum"):
        Manifest.from_json(json.dumps(doc).encode(), "m")
    del doc["bins"][0][0]["footer_sum"]
    assert Manifest.from_json(json.dumps(doc).encode(), "m").parts() == [part]


def test_a_forged_big_footer_is_refused_by_entry_reads_on_s3(
    s3_url: str, s3_storage_options: dict[str, Any], s3_endpoint: str, s3_requests: RequestLog
) -> None:
    """A footer of >= 64 KiB is read by the entry: the first read fetches a record's
    offsets and checksum (which the forgery made consistent) and the footer's hash."""
    records = [i.to_bytes(4, "little") * 8 for i in range(6000)]
    assert footer_size(len(records), 2) >= SPARSE_MIN_FOOTER
    write_split_data(s3_url, records, splits=1, storage_options=s3_storage_options)
    info = SplitDataLoader(s3_url, storage_options=s3_storage_options).snapshot.manifest
    assert info is not None
    (part,) = info.parts()
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    bucket, _, prefix = s3_url.removeprefix("s3://").partition("/")
    key = f"{prefix}/{part.path}"
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=bucket, Key=key, Body=forge_v2(body, part, 10, 4000))

    for i in (10, 4000):
        loader = SplitDataLoader(s3_url, storage_options=s3_storage_options)
        m = s3_requests.mark()
        with pytest.raises(CorruptDatasetError, match=REFUSED) as got:
            loader[i]
        assert part.path in str(got.value)
        # Refused from the entries alone: nothing near the footer's size was fetched.
        ranges = [r.range for r in s3_requests.since(m, contains="/bins/")]
        assert ranges
        assert all(r is not None for r in ranges)
        sizes = [
            int(r.split("-")[1]) - int(r.removeprefix("bytes=").split("-")[0]) + 1 for r in ranges
        ]
        assert sum(sizes) < 100
    with pytest.raises(CorruptDatasetError, match=REFUSED):
        SplitDataLoader(s3_url, storage_options=s3_storage_options).read_batch([10, 4000])
    picks = random.Random(5).sample(range(6000), 50)
    with pytest.raises(CorruptDatasetError, match=REFUSED):
        SplitDataLoader(s3_url, storage_options=s3_storage_options)[picks]

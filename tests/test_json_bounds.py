"""Issue 22: opening any metadata costs at most a small multiple of its size.

A manifest under the size limit made of millions of ``[]`` under a key the library
ignores used to take gigabytes to parse. The scan before parsing refuses a document
holding more arrays and objects than its size allows; legitimate manifests (many
parts, many segments, many empty bins, big metadata) still open.
"""

from __future__ import annotations

import json
import secrets
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from _manifests import manifest_doc, write_manifest_doc

from splitdask import CorruptDatasetError, SplitDataLoader, SplitWriter, write_split_data
from splitdask._format import MAX_METADATA_BYTES, Manifest, PartInfo, Segment
from splitdask._format._jsonbound import (
    CONTAINER_BYTES,
    FREE_CONTAINERS,
    check_json_bounds,
    json_shape,
)
from splitdask._util._validate import MAX_METADATA_CONTAINERS

MiB = 1 << 20


def _peak(fn: Any) -> tuple[Any, int]:
    """``fn()``'s result (or the CorruptDatasetError it raised) and its peak traced memory."""
    tracemalloc.start()
    try:
        try:
            out = fn()
        except CorruptDatasetError as exc:
            out = exc
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _with_junk(ds: Path, junk: bytes) -> int:
    """Add ``"junk": <junk>`` (a key the reader ignores) to ``ds``'s manifest; its size."""
    doc = json.dumps(manifest_doc(ds), separators=(",", ":")).encode()
    data = doc[:-1] + b',"junk":' + junk + b"}"
    write_manifest_doc(ds, data)
    return len(data)


def test_millions_of_empty_arrays_are_refused_before_parsing(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    records = [b"r%d" % i for i in range(100)]
    write_split_data(ds, records, splits=4)
    size = _with_junk(ds, b"[" + b",".join([b"[]"] * (10 * MiB)) + b"]")  # 30 MB
    assert size > 30 * 10**6

    err, peak = _peak(lambda: SplitDataLoader(ds))
    assert isinstance(err, CorruptDatasetError)
    assert str(ds / "splitdask.json") in str(err)
    assert f"CONTAINER_BYTES = {CONTAINER_BYTES}" in str(err)
    assert f"FREE_CONTAINERS = {FREE_CONTAINERS}" in str(err)
    # The file itself, read once, and the scan's chunks: not 27 times the file.
    assert peak < 1.5 * size, f"peak {peak / MiB:.0f} MiB for {size / MiB:.0f} MiB"


@pytest.mark.parametrize("junk", [b"{}", b"[0]", b'{"a":[]}'])
def test_other_dense_containers_are_refused(tmp_path: Path, junk: bytes) -> None:
    ds = tmp_path / "ds"
    write_split_data(ds, [b"x"], splits=1)
    n = FREE_CONTAINERS + 8 * MiB // CONTAINER_BYTES + 1  # each holds one or more
    _with_junk(ds, b"[" + b",".join([junk] * n) + b"]")
    with pytest.raises(CorruptDatasetError, match="JSON arrays and objects"):
        SplitDataLoader(ds)


def test_what_passes_the_scan_costs_a_small_multiple_of_its_size(tmp_path: Path) -> None:
    """The densest document the scan lets through, of the costliest things JSON holds
    (an empty array per CONTAINER_BYTES bytes, short strings between), opens within
    18 times its size (16 measured: the file, its text, the objects); without the
    bound, ``[]`` alone takes about 25 times."""
    ds = tmp_path / "ds"
    write_split_data(ds, [b"x"], splits=1)
    unit = b'[],"ab","cd"'  # 12 bytes with its comma: one array, two new strings
    assert len(unit) + 1 == CONTAINER_BYTES + 1
    n = 8 * MiB // len(unit)
    size = _with_junk(ds, b"[" + b",".join([unit] * n) + b"]")
    data = json.dumps(manifest_doc(ds), separators=(",", ":")).encode()
    _, containers = json_shape(data)
    assert containers <= FREE_CONTAINERS + size // CONTAINER_BYTES  # it passes

    loader, peak = _peak(lambda: SplitDataLoader(ds))
    assert loader[0] == b"x"
    assert peak < 18 * size, f"peak {peak / size:.1f} times the manifest"


def _part(b: int, count: int) -> PartInfo:
    size = 8 + 20 * count + 16 * count + 104
    fsum = int(secrets.token_hex(8), 16) | 1
    return PartInfo(
        f"bins/{b:05d}-{secrets.token_hex(8)}.bin",
        count,
        size,
        f"xxh3_64:{secrets.token_hex(8)}",
        2,
        footer_sum=fsum,
    )


def _roundtrip(m: Manifest) -> bytes:
    data = m.to_json()
    back = Manifest.from_json(data, "test")
    assert back.bins == m.bins
    assert back.order == m.order
    assert back.metadata == m.metadata
    return data


def test_legitimate_manifests_still_open() -> None:
    # Many parts: 4,096 bins of 5 parts, dealt round-robin five times.
    nb, k, per = 4096, 5, 1000
    bins = tuple(tuple(_part(b, per) for _ in range(k)) for b in range(nb))
    order = tuple(
        Segment(r * nb * per, nb * per, tuple(range(nb)), (r * per,) * nb) for r in range(k)
    )
    _roundtrip(Manifest(bins, order, 1, "u", {}))

    # Many segments: 200,000 one-bin appends (the densest thing splitdask writes).
    counts = [0] * 64
    segments, start = [], 0
    for i in range(200_000):
        b, c = (i * 7) % 64, 1 + i % 3
        segments.append(Segment(start, c, (b,), (counts[b],)))
        counts[b] += c
        start += c
    data = _roundtrip(
        Manifest(tuple((_part(b, counts[b]),) for b in range(64)), tuple(segments), 1, "u", {})
    )
    _, containers = json_shape(data)
    assert containers > FREE_CONTAINERS  # past the free allowance, within the per-byte one
    assert len(data) / containers > 1.25 * CONTAINER_BYTES

    # The most bins, nearly all empty, and the most metadata the writer allows.
    nb = 1 << 16
    bins = tuple((_part(b, 10),) if b < 10 else () for b in range(nb))
    meta = {f"k{i}": [i] for i in range(MAX_METADATA_CONTAINERS - 1)}
    meta["blob"] = ["x" * (MAX_METADATA_BYTES - 2 * MiB)]  # one big string: no containers
    _roundtrip(Manifest(bins, (Segment(0, 100, tuple(range(10)), (0,) * 10),), 1, "u", meta))


def test_more_bins_than_allowed_are_still_refused_by_their_limit(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    write_split_data(ds, [b"x"], splits=1)
    doc = manifest_doc(ds)
    doc["bins"] += [[] for _ in range(1 << 16)]  # within FREE_CONTAINERS: parsed
    write_manifest_doc(ds, json.dumps(doc, separators=(",", ":")).encode())
    with pytest.raises(CorruptDatasetError, match="MAX_BINS"):
        SplitDataLoader(ds)


def test_a_utf16_manifest_is_refused_by_name(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    write_split_data(ds, [b"x"], splits=1)
    text = json.dumps(manifest_doc(ds), separators=(",", ":"))
    write_manifest_doc(ds, text.encode("utf-16-le"))
    with pytest.raises(CorruptDatasetError, match="NUL byte at offset 1: not UTF-8 JSON"):
        SplitDataLoader(ds)


def test_dense_metadata_is_refused_by_the_writer(tmp_path: Path) -> None:
    dense = {"pairs": [[i, i + 1] for i in range(MAX_METADATA_CONTAINERS)]}
    with pytest.raises(ValueError, match="MAX_METADATA_CONTAINERS"):
        SplitWriter(tmp_path / "ds", 1, metadata=dense)
    assert not (tmp_path / "ds").exists() or not any((tmp_path / "ds").iterdir())
    ok = {"pairs": [[i, i + 1] for i in range(MAX_METADATA_CONTAINERS - 2)]}
    write_split_data(tmp_path / "ds", [b"x"], splits=1, metadata=ok)
    assert SplitDataLoader(tmp_path / "ds").metadata == ok


def test_other_documents_name_their_own_limits() -> None:
    """The check serves any JSON document (a log entry, say) with its own limits."""
    doc = json.dumps({"a": [[1]] * 100}).encode()
    check_json_bounds(doc, 1 << 20, 4, "entry", container_bytes=2, free_containers=0)
    with pytest.raises(CorruptDatasetError, match=r"more than allowed \(FREE_CONTAINERS = 10"):
        check_json_bounds(doc, 1 << 20, 4, "entry", container_bytes=100, free_containers=10)
    with pytest.raises(CorruptDatasetError, match="largest log entry read .MAX_ENTRY_BYTES = 8"):
        check_json_bounds(doc, 8, 4, "entry", kind="log entry", size_name="MAX_ENTRY_BYTES")
    with pytest.raises(CorruptDatasetError, match="nested 3 levels"):
        check_json_bounds(doc, 1 << 20, 2, "entry")


@pytest.mark.parametrize(
    ("text", "depth", "containers"),
    [
        (b'{"a":"[[[{","b":["\\\\",["\\"]"]]}', 3, 3),
        (b'"\\\\\\"[["', 0, 0),
        (b"[[],[[]],{}]", 3, 5),
        (b"0", 0, 0),
    ],
)
def test_json_shape_counts_only_brackets_outside_strings(
    text: bytes, depth: int, containers: int
) -> None:
    json.loads(text)  # valid JSON: the scan is exact for it
    assert json_shape(text) == (depth, containers)


def test_json_shape_is_the_same_across_chunk_boundaries() -> None:
    """Strings, escapes and brackets cut by the scan's 1 MiB chunks count as whole."""
    for pad in range(0, 6):
        head = b" " * (MiB - 3 - pad)
        doc = head + b'["\\\\\\\\\\"[{", [[]], "x\\\\"]'
        json.loads(doc)
        assert json_shape(doc) == (3, 3), pad

"""Format v1 validation: damaged or hostile bytes give clear errors, never wild reads."""

from __future__ import annotations

import json

import numpy as np
import pytest

from splitdask import CorruptDatasetError, FormatVersionError
from splitdask._format import (
    DATA_START,
    MAGIC,
    Manifest,
    PartInfo,
    Segment,
    decode_footer,
    encode_footer,
    footer_size,
)

CHECKSUM = "xxh3_64:0123456789abcdef"


def make_part(records: list[bytes]) -> bytes:
    offsets = np.cumsum([DATA_START, *map(len, records)])
    return MAGIC + b"".join(records) + encode_footer(offsets)


def test_footer_roundtrip() -> None:
    part = make_part([b"ab", b"", b"cde"])
    offsets = decode_footer(part, len(part), 3, "p")
    assert offsets.tolist() == [8, 10, 10, 13]
    assert len(part) == DATA_START + 5 + footer_size(3)


@pytest.mark.parametrize(
    ("mutate", "count", "message"),
    [
        (lambda b: b[:-1] + b"X", 2, "bad trailing magic"),
        (lambda b: b, 1, "footer says 2 records, manifest says 1"),
        (lambda b: b[5:], 2, "too small|do not span"),
        (lambda b: b, 2**60, "too small for a part of"),
    ],
)
def test_footer_rejects(mutate: object, count: int, message: str) -> None:
    part = mutate(make_part([b"ab", b"cd"]))  # type: ignore[operator]
    with pytest.raises(CorruptDatasetError, match=message):
        decode_footer(part, len(part), count, "p")


def test_footer_rejects_descending_offsets_and_other_versions() -> None:
    bad = MAGIC + b"abcd" + encode_footer([8, 11, 10, 12])
    with pytest.raises(CorruptDatasetError, match="not ascending"):
        decode_footer(bad, len(bad), 3, "p")
    part = bytearray(make_part([b"x"]))
    part[-16] = 9  # version field
    with pytest.raises(FormatVersionError, match="version 9, this library reads versions 1, 2"):
        decode_footer(bytes(part), len(part), 1, "p")


def manifest_doc(**changes: object) -> bytes:
    doc = {
        "format": "splitdask",
        "version": 1,
        "generation": 1,
        "uid": "u",
        "num_records": 3,
        "bins": [
            [{"path": "bins/00000-aaaaaaaa.bin", "count": 2, "size": 100, "checksum": CHECKSUM}],
            [{"path": "bins/00001-bbbbbbbb.bin", "count": 1, "size": 100, "checksum": CHECKSUM}],
        ],
        "order": [{"start": 0, "count": 3, "bins": [0, 1], "first": [0, 0]}],
        "metadata": {},
    }
    doc.update(changes)
    return json.dumps(doc).encode()


def test_manifest_roundtrip() -> None:
    m = Manifest.from_json(manifest_doc(), "m")
    assert m.num_records == 3
    assert m.bin_counts() == [2, 1]
    assert Manifest.from_json(m.to_json(), "m") == m
    assert Segment(0, 3, (0, 1), (0, 0)).share(0) == 2


def part(path: str, count: int = 1) -> dict[str, object]:
    return {"path": path, "count": count, "size": 100, "checksum": CHECKSUM}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format": "zarr"}, "not a splitdask manifest"),
        ({"bins": [[part("../../etc/passwd")]]}, "invalid part path"),
        ({"bins": [[part("/abs/00000-aaaaaaaa.bin")]]}, "invalid part path"),
        ({"bins": [[part("bins/00000-aaaaaaaa.bin", 10**9)]]}, "cannot hold"),
        ({"order": [{"start": 1, "count": 3, "bins": [0, 1], "first": [0, 0]}]}, "contiguous"),
        ({"order": [{"start": 0, "count": 3, "bins": [0, 5], "first": [0, 0]}]}, "out of range"),
        ({"order": [{"start": 0, "count": 3, "bins": [0, 1], "first": [1, 0]}]}, "exactly once"),
        ({"num_records": 4}, "num_records disagrees"),
        ({"generation": -1}, "malformed"),
        ({"bins": "nope"}, "malformed"),
    ],
)
def test_manifest_rejects(changes: dict[str, object], message: str) -> None:
    with pytest.raises(CorruptDatasetError, match=message):
        Manifest.from_json(manifest_doc(**changes), "m")


def test_manifest_rejects_part_in_wrong_bin_and_junk() -> None:
    swapped = [[part("bins/00001-aaaaaaaa.bin", 2)], [part("bins/00000-bbbbbbbb.bin")]]
    with pytest.raises(CorruptDatasetError, match="misplaced"):
        Manifest.from_json(manifest_doc(bins=swapped), "m")
    with pytest.raises(CorruptDatasetError, match="not valid JSON"):
        Manifest.from_json(b"\x01{", "m")
    with pytest.raises(CorruptDatasetError, match="NUL byte at offset 0: not UTF-8 JSON"):
        Manifest.from_json(b"\x00{", "m")
    with pytest.raises(FormatVersionError, match="version 4"):
        Manifest.from_json(manifest_doc(version=4), "m")


def test_partinfo_is_plain_data() -> None:
    p = PartInfo("bins/00000-aaaaaaaa.bin", 1, 100, CHECKSUM)
    assert p.count == 1

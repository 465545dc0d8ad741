"""Checkpoints: a version's whole manifest as NumPy arrays in one immutable file.

Opening a dataset reads its newest checkpoint and replays the log entries after it
(``_log``), so neither grows with the number of commits. Every per-part and
per-segment field is a little-endian array; a small JSON header says how long each
is. No I/O here; ``docs/format.md`` ("Checkpoints") is the prose specification.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
import xxhash

from splitdask._format._footer import COMPRESSED_PART_VERSION
from splitdask._format._jsonbound import check_json_bounds
from splitdask._format._manifest import (
    MAX_BINS,
    MAX_DEPTH,
    MAX_METADATA_BYTES,
    MAX_PARTS,
    MAX_SEGMENTS,
    Manifest,
    PartInfo,
    Segment,
    parse_part,
)
from splitdask.errors import CorruptDatasetError, FormatVersionError

__all__ = ["CHECKPOINT_MAGIC", "checkpoint_header", "decode_checkpoint", "encode_checkpoint"]

CHECKPOINT_MAGIC = b"SPLTCKPT"
_VERSION = 1
_HEAD = struct.Struct("<8sII")  # magic, checkpoint version, header length
_TAIL = struct.Struct("<Q8s")  # XXH3-64 of everything before it, magic
_MAX_FLAT = MAX_SEGMENTS * 64
_MAX_UID_BYTES = MAX_PARTS * 64

# (name, dtype, length key): the arrays, in file order, each padded to 8 bytes.
_PART_COLUMNS = (
    ("bin", "<u4"),
    ("count", "<u8"),
    ("size", "<u8"),
    ("checksum", "<u8"),
    ("footer_sum", "<u8"),
    ("footer", "<u8"),
    ("raw", "<u8"),
    ("level", "<i4"),
    ("version", "u1"),
    ("codec", "u1"),
)
_COMPRESSIONS = (None, "zstd")


def _pad(n: int) -> int:
    return -n % 8


def _layout(parts: int, segments: int, flat: int, uid_bytes: int) -> list[tuple[str, str, int]]:
    cols = [(name, dt, parts) for name, dt in _PART_COLUMNS]
    cols += [("uid_end", "<u4", parts), ("uids", "u1", uid_bytes)]
    cols += [("seg_start", "<u8", segments), ("seg_count", "<u8", segments)]
    cols += [("seg_end", "<u8", segments), ("flat_bins", "<u4", flat), ("flat_first", "<u8", flat)]
    return cols


def encode_checkpoint(manifest: Manifest, info: Mapping[str, Any]) -> bytes:
    """The checkpoint of ``manifest``; ``info`` says how its commit came about (its
    ``time``, ``op``, ``tag``, ``written``: as the log entry has them)."""
    parts = manifest.parts()
    bins = [b for b, ps in enumerate(manifest.bins) for _ in ps]
    uids = "".join(p.uid for p in parts).encode("ascii")
    flat_bins = [b for s in manifest.order for b in s.bins]
    arrays: dict[str, Any] = {
        "bin": bins,
        "count": [p.count for p in parts],
        "size": [p.size for p in parts],
        "checksum": [int(p.checksum[8:], 16) for p in parts],
        "footer_sum": [getattr(p, "footer_sum", 0) for p in parts],
        "footer": [p.footer for p in parts],
        "raw": [p.raw for p in parts],
        "level": [p.level for p in parts],
        "version": [p.version for p in parts],
        "codec": [_COMPRESSIONS.index(p.compression) for p in parts],
        "uid_end": np.cumsum([len(p.uid) for p in parts], dtype=np.int64),
        "uids": np.frombuffer(uids, np.uint8),
        "seg_start": [s.start for s in manifest.order],
        "seg_count": [s.count for s in manifest.order],
        "seg_end": np.cumsum([len(s.bins) for s in manifest.order], dtype=np.int64),
        "flat_bins": flat_bins,
        "flat_first": [f for s in manifest.order for f in s.first],
    }
    header = {
        "version": manifest.generation,
        "uid": manifest.uid,
        **info,
        "num_records": manifest.num_records,
        "num_bins": manifest.num_bins,
        "parts": len(parts),
        "segments": len(manifest.order),
        "flat": len(flat_bins),
        "uid_bytes": len(uids),
        "metadata": dict(manifest.metadata),
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    chunks = [_HEAD.pack(CHECKPOINT_MAGIC, _VERSION, len(head)), head, b"\0" * _pad(len(head))]
    for name, dtype, n in _layout(len(parts), len(manifest.order), len(flat_bins), len(uids)):
        raw = np.asarray(arrays[name], dtype=dtype).tobytes()
        assert len(raw) == n * np.dtype(dtype).itemsize
        chunks += [raw, b"\0" * _pad(len(raw))]
    body = b"".join(chunks)
    return body + _TAIL.pack(xxhash.xxh3_64_intdigest(body), CHECKPOINT_MAGIC)


def decode_checkpoint(data: Any, where: str, version: int) -> Manifest:
    """The manifest in the checkpoint of ``version`` (``data``: its bytes or map)."""
    header, cols = _open(data, where, version)
    try:
        manifest = _manifest(cols, header)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        if isinstance(exc, CorruptDatasetError):
            raise
        raise CorruptDatasetError(f"{where}: malformed checkpoint ({exc!r})") from None
    manifest.validate(where)
    return manifest


def checkpoint_header(data: Any, where: str, version: int) -> dict[str, Any]:
    """The header of a checkpoint (its counts, time, op, tag, metadata), checked."""
    return _open(data, where, version)[0]


def _open(data: Any, where: str, version: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and arrays of a checkpoint. Every length the file claims is checked
    against its size and the format's limits before anything is allocated; then
    its hash."""
    view = memoryview(data).cast("B")
    if len(view) < _HEAD.size + _TAIL.size:
        raise CorruptDatasetError(f"{where}: {len(view)} bytes, too short for a checkpoint")
    magic, ck_version, hlen = _HEAD.unpack_from(view, 0)
    digest, tail_magic = _TAIL.unpack_from(view, len(view) - _TAIL.size)
    if magic != CHECKPOINT_MAGIC or tail_magic != CHECKPOINT_MAGIC:
        raise CorruptDatasetError(f"{where}: not a splitdask checkpoint")
    if ck_version != _VERSION:
        raise FormatVersionError(
            f"{where}: checkpoint version {ck_version}, this library reads version {_VERSION}"
        )
    body = view[: len(view) - _TAIL.size]
    if hlen > min(len(body), MAX_METADATA_BYTES + (1 << 20)):
        raise CorruptDatasetError(f"{where}: checkpoint header of {hlen} bytes claimed")
    if xxhash.xxh3_64_intdigest(body) != digest:
        raise CorruptDatasetError(f"{where}: checkpoint checksum mismatch (the file is damaged)")
    head_bytes = bytes(body[_HEAD.size : _HEAD.size + hlen])
    check_json_bounds(head_bytes, MAX_METADATA_BYTES + (1 << 20), MAX_DEPTH, where)
    try:
        header = json.loads(head_bytes)
        counts = [header[k] for k in ("parts", "segments", "flat", "uid_bytes")]
        limits = (MAX_PARTS, MAX_SEGMENTS, _MAX_FLAT, _MAX_UID_BYTES)
        if any(
            type(c) is not int or not 0 <= c <= lim for c, lim in zip(counts, limits, strict=True)
        ):
            raise ValueError(f"array lengths {counts} out of range")
        if header["version"] != version or not 0 <= header["num_bins"] <= MAX_BINS:
            raise ValueError(f"version {header['version']!r} (expected {version})")
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptDatasetError(f"{where}: malformed checkpoint header ({exc!r})") from None
    layout = _layout(*counts)
    pos = _HEAD.size + hlen + _pad(hlen)
    need = pos + sum(
        n * np.dtype(dt).itemsize + _pad(n * np.dtype(dt).itemsize) for _, dt, n in layout
    )
    if need != len(body):
        raise CorruptDatasetError(f"{where}: {len(body)} bytes where the header implies {need}")
    cols: dict[str, Any] = {}
    for name, dtype, n in layout:
        size = n * np.dtype(dtype).itemsize
        cols[name] = np.frombuffer(body, dtype=dtype, count=n, offset=pos)
        pos += size + _pad(size)
    return header, cols


def _manifest(cols: dict[str, Any], header: dict[str, Any]) -> Manifest:
    num_bins = int(header["num_bins"])
    uid_end = cols["uid_end"].tolist()
    uids = bytes(cols["uids"]).decode("ascii")
    bins: list[list[PartInfo]] = [[] for _ in range(num_bins)]
    starts = [0, *uid_end[:-1]]
    rows = zip(
        cols["bin"].tolist(),
        cols["count"].tolist(),
        cols["size"].tolist(),
        cols["checksum"].tolist(),
        cols["footer_sum"].tolist(),
        cols["footer"].tolist(),
        cols["raw"].tolist(),
        cols["level"].tolist(),
        cols["version"].tolist(),
        cols["codec"].tolist(),
        starts,
        uid_end,
        strict=True,
    )
    for b, count, size, checksum, fsum, footer, raw, level, version, codec, lo, hi in rows:
        doc: dict[str, Any] = {
            "path": f"bins/{b:05d}-{uids[lo:hi]}.bin",
            "count": count,
            "size": size,
            "checksum": f"xxh3_64:{checksum:016x}",
            "version": version,
        }
        if fsum:
            doc["footer_sum"] = f"{fsum:016x}"
        if version >= COMPRESSED_PART_VERSION:
            doc.update(compression=_COMPRESSIONS[codec], level=level, footer=footer, raw=raw)
        bins[b].append(parse_part(doc))
    seg_end = cols["seg_end"].tolist()
    flat_bins, flat_first = cols["flat_bins"].tolist(), cols["flat_first"].tolist()
    order = []
    lo = 0
    starts, counts = cols["seg_start"].tolist(), cols["seg_count"].tolist()
    for start, count, hi in zip(starts, counts, seg_end, strict=True):
        if not lo <= hi <= len(flat_bins):
            raise ValueError("segment bins out of range")
        order.append(Segment(start, count, tuple(flat_bins[lo:hi]), tuple(flat_first[lo:hi])))
        lo = hi
    metadata = header["metadata"]
    if not isinstance(metadata, dict):
        raise TypeError("metadata is not an object")
    return Manifest(
        bins=tuple(map(tuple, bins)),
        order=tuple(order),
        generation=int(header["version"]),
        uid=str(header["uid"]),
        metadata=metadata,
    )

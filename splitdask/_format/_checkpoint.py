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

from splitdask._format._codec import DEFAULT_CODEC, check_codec_name
from splitdask._format._jsonbound import check_json_bounds
from splitdask._format._manifest import (
    MAX_BINS,
    MAX_DEPTH,
    MAX_METADATA_BYTES,
    MAX_PARTS,
    MAX_SEGMENTS,
    Manifest,
)
from splitdask._format._parttable import COLUMNS, PartTable, as_table, check_table
from splitdask._format._segtable import OrderArrays, SegmentTable, order_arrays
from splitdask.errors import CorruptDatasetError, FormatVersionError

__all__ = [
    "CHECKPOINT_MAGIC",
    "MAX_CHECKPOINT_BYTES",
    "checkpoint_header",
    "decode_checkpoint",
    "encode_checkpoint",
]

CHECKPOINT_MAGIC = b"SPLTCKPT"
_VERSION = 1
_HEAD = struct.Struct("<8sII")  # magic, checkpoint version, header length
_TAIL = struct.Struct("<Q8s")  # XXH3-64 of everything before it, magic
_MAX_FLAT = MAX_SEGMENTS * 64
MAX_CHECKPOINT_BYTES = 1 << 30
"""Largest checkpoint read (``MAX_PARTS`` parts of 64-digit uids fit in half of it)."""
_MAX_UID_BYTES = MAX_PARTS * 64


_ORDER_COLUMNS = ("seg_start", "seg_count", "seg_end", "flat_bins", "flat_first")


def _pad(n: int) -> int:
    return -n % 8


def _layout(parts: int, segments: int, flat: int, uid_bytes: int) -> list[tuple[str, str, int]]:
    # The arrays, in file order, each padded to 8 bytes.
    cols = [(name, dt, parts) for name, dt in COLUMNS]
    cols += [("uid_end", "<u4", parts), ("uids", "u1", uid_bytes)]
    cols += [("seg_start", "<u8", segments), ("seg_count", "<u8", segments)]
    cols += [("seg_end", "<u8", segments), ("flat_bins", "<u4", flat), ("flat_first", "<u8", flat)]
    return cols


def encode_checkpoint(manifest: Manifest, info: Mapping[str, Any]) -> bytes:
    """The checkpoint of ``manifest``; ``info`` says how its commit came about (its
    ``time``, ``op``, ``tag``, ``written``: as the log entry has them)."""
    table = as_table(manifest.bins)
    # The uids back to back, in row order (a spliced table's blob may hold others).
    lo, hi = table.cols["uid_lo"].tolist(), table.cols["uid_hi"].tolist()
    uids = b"".join(table.blob[a:b] for a, b in zip(lo, hi, strict=True))
    order = order_arrays(manifest.order)
    flat_bins = order.bins
    arrays: dict[str, Any] = {name: table.cols[name] for name, _ in COLUMNS}
    arrays.update(
        uid_end=np.cumsum(table.cols["uid_hi"] - table.cols["uid_lo"], dtype=np.int64),
        uids=np.frombuffer(uids, np.uint8),
        seg_start=order.starts,
        seg_count=order.counts,
        seg_end=order.ends,
        flat_bins=flat_bins,
        flat_first=order.firsts,
    )
    parts = table.num_parts
    header = {
        **info,
        "version": manifest.generation,
        "uid": manifest.uid,
        "num_records": manifest.num_records,
        "num_bins": manifest.num_bins,
        "parts": parts,
        "segments": len(manifest.order),
        "flat": len(flat_bins),
        "uid_bytes": len(uids),
        "metadata": dict(manifest.metadata),
    }
    if manifest.codec != DEFAULT_CODEC:
        header["codec"] = manifest.codec  # absent: "bytes" (checkpoints before codecs)
    head = json.dumps(header, separators=(",", ":")).encode()
    chunks = [_HEAD.pack(CHECKPOINT_MAGIC, _VERSION, len(head)), head, b"\0" * _pad(len(head))]
    for name, dtype, n in _layout(parts, len(manifest.order), len(flat_bins), len(uids)):
        raw = np.ascontiguousarray(arrays[name], dtype=dtype).tobytes()
        if len(raw) != n * np.dtype(dtype).itemsize:
            raise ValueError(f"checkpoint column {name}: {len(raw)} bytes for {n} rows")
        chunks += [raw, b"\0" * _pad(len(raw))]
    body = b"".join(chunks)
    return body + _TAIL.pack(xxhash.xxh3_64_intdigest(body), CHECKPOINT_MAGIC)


def decode_checkpoint(data: Any, where: str, version: int) -> Manifest:
    """The manifest in the checkpoint of ``version`` (``data``: its bytes or map).

    Its columns are checked here; its order against its parts by the caller's
    ``Manifest.validate``, once the log entries after it have been replayed.
    """
    header, cols = _open(data, where, version)
    try:
        manifest = _manifest(cols, header, where)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        if isinstance(exc, CorruptDatasetError):
            raise
        raise CorruptDatasetError(f"{where}: malformed checkpoint ({exc!r})") from None
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
    check_json_bounds(
        head_bytes,
        MAX_METADATA_BYTES + (1 << 20),
        MAX_DEPTH,
        where,
        kind="checkpoint header",
        size_name="MAX_METADATA_BYTES + 1 MiB",
    )
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


def _manifest(cols: dict[str, Any], header: dict[str, Any], where: str) -> Manifest:
    num_bins = int(header["num_bins"])
    uid_hi = cols["uid_end"].astype(np.int64)
    uid_lo = np.concatenate([np.zeros(1, np.int64), uid_hi[:-1]])
    table_cols = {name: cols[name] for name, _ in COLUMNS}
    table_cols.update(uid_lo=uid_lo, uid_hi=uid_hi)
    table = PartTable(table_cols, memoryview(cols["uids"]), num_bins)
    check_table(table, where)
    order = SegmentTable(OrderArrays(*(cols[k].astype(np.int64) for k in _ORDER_COLUMNS)))
    metadata = header["metadata"]
    if not isinstance(metadata, dict):
        raise TypeError("metadata is not an object")
    return Manifest(
        bins=table,
        order=order,
        generation=int(header["version"]),
        uid=str(header["uid"]),
        metadata=metadata,
        codec=check_codec_name(header.get("codec", DEFAULT_CODEC)),
    )

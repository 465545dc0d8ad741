"""Bin-part footers, versions 1 to 3 (4: ``_grouped``): bytes only, no I/O.

A bin part is ``MAGIC | records | footer``. Version 1's footer is ``n + 1``
little-endian u64 absolute offsets then the trailer ``<u64 n, u32 version, u32
reserved> MAGIC``. Version 2 adds, between the offsets and the trailer, one u64
XXH3-64 per record, the part's uid (64 ASCII bytes, NUL padded) and the XXH3-64 of
everything from the first offset to the end of the uid, so a reader checks the
footer, the part's identity and then every record it hands out.
Version 3 (compressed parts, ``_compression``) stores each record as a zstd frame and
replaces the offsets and u64 sums by the part's zstd dictionary, the frames' lengths
(narrow ints, zstd-compressed), a u32 checksum per stored frame and a fixed block
saying how to decode. Its size is not a function of the count: the manifest gives it.
``docs/format.md`` is the prose specification.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import numpy.typing as npt
import xxhash

from splitdask._format._compression import SUM_MASK, Decoder, decode_lengths, encode_lengths
from splitdask._format._partcodec import Footer
from splitdask.errors import CorruptDatasetError, FormatVersionError

__all__ = [
    "DATA_START",
    "MAGIC",
    "PART_VERSIONS",
    "TRAILER_SIZE",
    "UID_SIZE",
    "WRITE_PART_VERSION",
    "decode_footer",
    "decode_footer_v2",
    "checked_tail",
    "decode_footer_v3",
    "encode_footer",
    "encode_footer_v2",
    "encode_footer_v3",
    "entry_tables",
    "footer_hash",
    "footer_hash_at",
    "footer_size",
    "min_footer_v3",
    "payload_size",
]

MAGIC = b"SPLTDASK"
DATA_START = len(MAGIC)
_TRAILER = struct.Struct("<QII8s")
TRAILER_SIZE = _TRAILER.size  # 24
UID_SIZE = 64
_V2_TAIL = struct.Struct(f"<{UID_SIZE}sQ")  # uid, footer hash (then the trailer)
_U64 = np.dtype("<u8")
_HASH = struct.Struct("<Q")
PART_VERSIONS = (1, 2, 3, 4)
WRITE_PART_VERSION = 2
"""The part version writers produce without compression; readers open all of
``PART_VERSIONS``. Compressed parts are version ``COMPRESSED_PART_VERSION`` (3) or,
since frames hold several small records, 4 (``_grouped``), which writers make."""
COMPRESSED_PART_VERSION = 3
# dictionary bytes, lengths bytes, largest decoded record, decoded total, level,
# length width, codec (1: zstd), reserved.
_V3_FIXED = struct.Struct("<QQQQiBB2x")
_ZSTD_CODEC = 1


def footer_size(count: int, version: int = 1) -> int:
    """Bytes taken by the footer of a part holding ``count`` records."""
    size = _U64.itemsize * (count + 1) + TRAILER_SIZE
    if version >= 2:
        size += _U64.itemsize * count + _V2_TAIL.size
    return size


def entry_tables(part_size: int, count: int) -> tuple[int, int]:
    """Where a version 2 part's footer tables start in the file: ``(offsets, sums)``.

    Record ``j``'s extent is the u64s at ``offsets + 8 j`` and ``offsets + 8 (j + 1)``,
    its checksum the u64 at ``sums + 8 j``: a reader can fetch just those.
    """
    offsets = part_size - footer_size(count, 2)
    return offsets, offsets + _U64.itemsize * (count + 1)


def footer_hash_at(part_size: int) -> int:
    """Where a version 2 or 3 part of ``part_size`` bytes keeps its footer's XXH3-64
    (8 bytes, just before the trailer): a reader of single entries can fetch it."""
    return part_size - TRAILER_SIZE - _U64.itemsize


def footer_hash(tail: Any) -> int:
    """The XXH3-64 a version 2 or 3 footer stores of itself, from ``tail``: at least
    the part's last 32 bytes (its footer, a whole part or its map will do). Not
    checked here: :func:`decode_footer_v2` and :func:`decode_footer_v3` do that."""
    (value,) = _HASH.unpack_from(tail, len(tail) - TRAILER_SIZE - _HASH.size)
    return int(value)


def payload_size(part_size: int, count: int, version: int = 1) -> int:
    """Bytes of record data in a part of ``part_size`` bytes holding ``count`` records."""
    return part_size - DATA_START - footer_size(count, version)


def encode_footer(offsets: npt.ArrayLike) -> bytes:
    """A version 1 footer of ``n + 1`` absolute record offsets."""
    arr = np.asarray(offsets, dtype=_U64)
    return arr.tobytes() + _TRAILER.pack(len(arr) - 1, 1, 0, MAGIC)


def encode_footer_v2(offsets: npt.ArrayLike, sums: npt.ArrayLike, uid: str) -> bytes:
    """A version 2 footer: offsets, one checksum per record, the part's uid."""
    off = np.asarray(offsets, dtype=_U64)
    sm = np.asarray(sums, dtype=_U64)
    if len(sm) != len(off) - 1:
        raise ValueError(f"{len(sm)} checksums for {len(off) - 1} records")
    raw_uid = uid.encode("ascii")
    if len(raw_uid) > UID_SIZE:
        raise ValueError(f"part uid {uid!r} is longer than {UID_SIZE} bytes")
    h = xxhash.xxh3_64()
    body = off.tobytes() + sm.tobytes() + raw_uid.ljust(UID_SIZE, b"\0")
    h.update(body)
    return body + struct.pack("<Q", h.intdigest()) + _TRAILER.pack(len(sm), 2, 0, MAGIC)


def _footer_view(
    tail: bytes | memoryview, part_size: int, count: int, version: int, where: str
) -> memoryview:
    fsize = footer_size(count, version)
    if part_size < DATA_START + fsize or len(tail) < fsize:
        raise CorruptDatasetError(
            f"{where}: {part_size} bytes is too small for a part of {count} records "
            "(truncated or replaced?)"
        )
    view = memoryview(tail)
    view = view[len(view) - fsize :]
    n, got, _reserved, magic = _TRAILER.unpack(view[-TRAILER_SIZE:])
    if magic != MAGIC:
        raise CorruptDatasetError(f"{where}: not a splitdask bin part (bad trailing magic)")
    if got not in PART_VERSIONS:
        raise FormatVersionError(
            f"{where}: part format version {got}, this library reads versions "
            f"{', '.join(map(str, PART_VERSIONS))}"
        )
    if got != version:
        raise CorruptDatasetError(f"{where}: footer says version {got}, manifest says {version}")
    if n != count:
        raise CorruptDatasetError(f"{where}: footer says {n} records, manifest says {count}")
    return view


def _check_offsets(offsets: npt.NDArray[np.uint64], data_end: int, where: str) -> None:
    if int(offsets[0]) != DATA_START or int(offsets[-1]) != data_end:
        raise CorruptDatasetError(f"{where}: record offsets do not span the data region")
    if len(offsets) > 2 and bool(np.any(offsets[1:] < offsets[:-1])):
        raise CorruptDatasetError(f"{where}: record offsets are not ascending")


def decode_footer(
    tail: bytes | memoryview, part_size: int, count: int, where: str
) -> npt.NDArray[np.uint64]:
    """Validate a version 1 footer and return its offsets as a read-only u64 view.

    ``tail`` holds at least the part's last ``footer_size(count)`` bytes (a whole
    mapped part will do); ``count`` is what the manifest promises. Nothing is
    allocated from the file's claims before they are checked against its size.

    Raises
    ------
    CorruptDatasetError
        If the footer does not match the file size, the count or itself.
    """
    view = _footer_view(tail, part_size, count, 1, where)
    offsets = np.frombuffer(view[:-TRAILER_SIZE], dtype=_U64)
    _check_offsets(offsets, part_size - footer_size(count), where)
    return offsets


def _check_tail(view: memoryview, footer_len: int, uid: str, where: str) -> int:
    """Check a v2/v3 footer's own checksum and the part uid it names; return where
    its body ends (the uid and checksum follow it, then the trailer)."""
    body_end = footer_len - TRAILER_SIZE - 8
    stored_uid, stored_hash = _V2_TAIL.unpack(view[body_end - UID_SIZE : -TRAILER_SIZE])
    if stored_hash != xxhash.xxh3_64_intdigest(view[:body_end]):
        raise CorruptDatasetError(f"{where}: footer checksum mismatch (footer altered)")
    found = stored_uid.rstrip(b"\0").decode("ascii", "replace")
    if found != uid:
        raise CorruptDatasetError(
            f"{where}: the part belongs to another dataset or commit (its footer names "
            f"part {found!r}, the manifest expects {uid!r})"
        )
    return body_end


def decode_footer_v2(
    tail: bytes | memoryview, part_size: int, count: int, uid: str, where: str
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """Validate a version 2 footer; return read-only views of its offsets and sums.

    ``uid`` is the one the manifest gives the part (in its name): a part of another
    dataset or commit, even a valid one of the right size, is refused here.
    """
    view = _footer_view(tail, part_size, count, 2, where)
    n_off = _U64.itemsize * (count + 1)
    body_end = _check_tail(view, len(view), uid, where)
    offsets = np.frombuffer(view[:n_off], dtype=_U64)
    sums = np.frombuffer(view[n_off : body_end - UID_SIZE], dtype=_U64)
    _check_offsets(offsets, part_size - footer_size(count, 2), where)
    return offsets, sums


def min_footer_v3(count: int) -> int:
    """The smallest footer a version 3 part of ``count`` records can have."""
    return 4 * count + _V3_FIXED.size + _V2_TAIL.size + TRAILER_SIZE


def encode_footer_v3(
    lengths: npt.ArrayLike,
    sums: npt.ArrayLike,
    dictionary: bytes,
    uid: str,
    *,
    max_decoded: int,
    decoded_total: int,
    level: int,
) -> bytes:
    """A version 3 footer: dictionary, compact frame lengths, u32 frame sums, uid."""
    sm = (np.asarray(sums, dtype=_U64) & np.uint64(SUM_MASK)).astype("<u4")
    packed, width = encode_lengths(lengths)
    if len(sm) != len(np.asarray(lengths)):
        raise ValueError(f"{len(sm)} checksums for {len(np.asarray(lengths))} records")
    raw_uid = uid.encode("ascii")
    if len(raw_uid) > UID_SIZE:
        raise ValueError(f"part uid {uid!r} is longer than {UID_SIZE} bytes")
    fixed = _V3_FIXED.pack(
        len(dictionary), len(packed), max_decoded, decoded_total, level, width, _ZSTD_CODEC
    )
    body = b"".join((dictionary, packed, sm.tobytes(), fixed, raw_uid.ljust(UID_SIZE, b"\0")))
    digest = struct.pack("<Q", xxhash.xxh3_64_intdigest(body))
    return body + digest + _TRAILER.pack(len(sm), COMPRESSED_PART_VERSION, 0, MAGIC)


def checked_tail(
    tail: Any,
    footer_len: int,
    part_size: int,
    count: int,
    minimum: int,
    version: int,
    uid: str,
    where: str,
) -> tuple[memoryview, int]:
    """The last ``footer_len`` bytes of ``tail`` (a compressed part's footer) once its
    size is possible for ``count`` records (``minimum``) in a part of ``part_size``,
    its trailer names ``version`` and ``count``, and its hash and ``uid`` match; and
    where its body ends."""
    if footer_len < minimum or part_size < DATA_START + footer_len:
        raise CorruptDatasetError(
            f"{where}: a {footer_len}-byte footer cannot describe {count} records in a "
            f"part of {part_size} bytes (truncated or replaced?)"
        )
    if len(tail) < footer_len:
        raise CorruptDatasetError(f"{where}: {len(tail)} bytes read, the footer is {footer_len}")
    view = memoryview(tail)
    view = view[len(view) - footer_len :]
    n, got, _reserved, magic = _TRAILER.unpack(view[-TRAILER_SIZE:])
    if magic != MAGIC:
        raise CorruptDatasetError(f"{where}: not a splitdask bin part (bad trailing magic)")
    if got != version:
        raise CorruptDatasetError(f"{where}: footer says version {got}, manifest says {version}")
    if n != count:
        raise CorruptDatasetError(f"{where}: footer says {n} records, manifest says {count}")
    return view, _check_tail(view, footer_len, uid, where)


def decode_footer_v3(
    tail: bytes | memoryview,
    part_size: int,
    count: int,
    footer_len: int,
    uid: str,
    decoded_total: int,
    where: str,
) -> Footer:
    """Validate a version 3 footer of ``footer_len`` bytes (the manifest's figure);
    return the records' start and end offsets and the part's :class:`Decoder`.

    Every length the footer claims is checked against ``footer_len`` and the part's
    size before it is used, and the decoded total against the manifest's.
    """
    view, body_end = checked_tail(
        tail,
        footer_len,
        part_size,
        count,
        min_footer_v3(count),
        COMPRESSED_PART_VERSION,
        uid,
        where,
    )
    fixed_at = body_end - UID_SIZE - _V3_FIXED.size
    n_dict, n_len, max_dec, total, _level, width, codec = _V3_FIXED.unpack(
        view[fixed_at : fixed_at + _V3_FIXED.size]
    )
    if codec != _ZSTD_CODEC:
        raise CorruptDatasetError(f"{where}: unknown record codec {codec}")
    if n_dict + n_len + 4 * count != fixed_at:
        raise CorruptDatasetError(f"{where}: footer sections do not add up to its size")
    if total != decoded_total or max_dec > total:
        raise CorruptDatasetError(
            f"{where}: footer says {total} decoded bytes (largest record {max_dec}), the "
            f"manifest says {decoded_total}"
        )
    lengths = decode_lengths(view[n_dict : n_dict + n_len], count, width, where)
    offsets = np.empty(count + 1, dtype=np.int64)
    offsets[0] = DATA_START
    # Each length is below 2**63 or the sum check below fails: no silent wrap matters.
    np.cumsum(lengths, out=offsets[1:], dtype=np.int64)
    offsets[1:] += DATA_START
    if int(offsets[-1]) != part_size - footer_len or bool(np.any(lengths == 0)):
        raise CorruptDatasetError(f"{where}: record lengths do not span the data region")
    sums_at = n_dict + n_len
    sums = view[sums_at : sums_at + 4 * count].cast("I")
    return Footer(offsets[:-1], offsets[1:], Decoder(bytes(view[:n_dict]), sums, max_dec, where))

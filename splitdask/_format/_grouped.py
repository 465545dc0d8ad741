"""Compressed parts of format v4: small records share a zstd frame. No I/O.

A v3 part (``_compression``) gives every record its own frame; on records of a few
dozen bytes the frame, its checksum and the lost context between records cost more
than the record (2.9x of zstd over the whole part on the stdlib's lines). A v4 part
groups consecutive records into one frame until the group holds
:data:`GROUP_BYTES` (or :data:`MAX_GROUP` records): a record of that size or more
is a frame of its own, as in v3, and ``loader[i]`` still decodes one frame, now of
a few hundred bytes. The footer adds each record's decoded size and each frame's
record count (narrow ints, zstd-compressed); checksums are per frame.

Record ``j``, the ``m``-th of frame ``g``, has the extent ``(start of g, end of g +
m)``: every record's extent is unique and inside the file (the footer follows the
frames and is longer than :data:`MAX_GROUP`), so every reader slices and fetches
records as for any part, and the codec finds the frame and the record from the
extent alone (:class:`GroupDecoder`).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import xxhash

from splitdask._format._compression import (
    _SMALL_CLAIM,
    GROUP_BYTES,
    MAX_GROUP,
    SUM_MASK,
    Decoded,
    Decoder,
    _claim,
    decode_lengths,
    encode_lengths,
    group_records,
    make_context,
)
from splitdask._format._footer import (
    _TRAILER,
    _V2_TAIL,
    DATA_START,
    MAGIC,
    TRAILER_SIZE,
    UID_SIZE,
    checked_tail,
)
from splitdask._format._partcodec import Footer, record_sum
from splitdask.errors import CorruptDatasetError

__all__ = [
    "GROUPED_PART_VERSION",
    "GROUP_BYTES",
    "MAX_GROUP",
    "GroupDecoder",
    "decode_footer_v4",
    "encode_footer_v4",
    "group_records",
    "min_footer_v4",
]

GROUPED_PART_VERSION = 4
# dictionary, frame lengths, record sizes, frame counts (bytes of each), frames,
# decoded total, level, the three widths, codec (1: zstd).
_V4_FIXED = struct.Struct("<QQQQQQiBBBB")
_ZSTD_CODEC = 1


def min_footer_v4(count: int) -> int:
    """The smallest footer a version 4 part of ``count`` records can have."""
    frames = -(-count // MAX_GROUP)
    return 4 * frames + _V4_FIXED.size + _V2_TAIL.size + TRAILER_SIZE


def encode_footer_v4(
    lengths: npt.ArrayLike,
    sums: npt.ArrayLike,
    sizes: npt.ArrayLike,
    counts: npt.ArrayLike,
    dictionary: bytes,
    uid: str,
    *,
    level: int,
) -> bytes:
    """A version 4 footer: dictionary, frame lengths, record sizes, records per frame,
    u32 frame sums, uid."""
    sm = (np.asarray(sums, dtype=np.uint64) & np.uint64(SUM_MASK)).astype("<u4")
    lens, cnts = np.asarray(lengths), np.asarray(counts)
    if not len(sm) == len(lens) == len(cnts):
        raise ValueError(f"{len(sm)} checksums, {len(lens)} lengths, {len(cnts)} frame counts")
    szs = np.asarray(sizes, dtype=np.uint64)
    if int(cnts.sum()) != len(szs):
        raise ValueError(f"frames hold {int(cnts.sum())} records, {len(szs)} sizes given")
    raw_uid = uid.encode("ascii")
    if len(raw_uid) > UID_SIZE:
        raise ValueError(f"part uid {uid!r} is longer than {UID_SIZE} bytes")
    packed, lw = encode_lengths(lens)
    psizes, sw = encode_lengths(szs)
    pcounts, cw = encode_lengths(cnts)
    fixed = _V4_FIXED.pack(
        len(dictionary),
        len(packed),
        len(psizes),
        len(pcounts),
        len(sm),
        int(szs.sum()),
        level,
        lw,
        sw,
        cw,
        _ZSTD_CODEC,
    )
    body = b"".join(
        (dictionary, packed, psizes, pcounts, sm.tobytes(), fixed, raw_uid.ljust(UID_SIZE, b"\0"))
    )
    digest = struct.pack("<Q", xxhash.xxh3_64_intdigest(body))
    return body + digest + _TRAILER.pack(len(szs), GROUPED_PART_VERSION, 0, MAGIC)


def decode_footer_v4(
    tail: bytes | memoryview,
    part_size: int,
    count: int,
    footer_len: int,
    uid: str,
    decoded_total: int,
    where: str,
) -> Footer:
    """Validate a version 4 footer of ``footer_len`` bytes (the manifest's figure);
    return each record's extent and the part's :class:`GroupDecoder`.

    Every size the footer claims is checked against ``footer_len``, the part's size,
    the count and the manifest's decoded total before anything is allocated from it.
    """
    view, body_end = checked_tail(
        tail, footer_len, part_size, count, min_footer_v4(count), GROUPED_PART_VERSION, uid, where
    )
    fixed_at = body_end - UID_SIZE - _V4_FIXED.size
    fields = _V4_FIXED.unpack(view[fixed_at : fixed_at + _V4_FIXED.size])
    n_dict, n_len, n_size, n_cnt, frames, total, _level, lw, sw, cw, codec = fields
    if codec != _ZSTD_CODEC:
        raise CorruptDatasetError(f"{where}: unknown record codec {codec}")
    if not -(-count // MAX_GROUP) <= frames <= count:
        raise CorruptDatasetError(f"{where}: {frames} frames cannot hold {count} records")
    if n_dict + n_len + n_size + n_cnt + 4 * frames != fixed_at:
        raise CorruptDatasetError(f"{where}: footer sections do not add up to its size")
    if total != decoded_total:
        raise CorruptDatasetError(
            f"{where}: footer says {total} decoded bytes, the manifest says {decoded_total}"
        )
    at = n_dict
    lengths = decode_lengths(view[at : at + n_len], frames, lw, where)
    at += n_len
    sizes = decode_lengths(view[at : at + n_size], count, sw, where)
    at += n_size
    counts = decode_lengths(view[at : at + n_cnt], frames, cw, where).astype(np.int64)
    at += n_cnt
    if bool(np.any(counts < 1)) or bool(np.any(counts > MAX_GROUP)) or counts.sum() != count:
        raise CorruptDatasetError(
            f"{where}: the frames' record counts do not add up to {count} records "
            f"of 1 to {MAX_GROUP} a frame"
        )
    # Sizes and lengths are each below 2**63 or the sums checked below fail.
    if int(sizes.sum(dtype=np.uint64)) != total or bool(np.any(sizes > total)):
        raise CorruptDatasetError(f"{where}: record sizes do not add up to {total} bytes")
    bounds = np.empty(frames + 1, dtype=np.int64)
    bounds[0] = DATA_START
    np.cumsum(lengths, out=bounds[1:], dtype=np.int64)
    bounds[1:] += DATA_START
    if int(bounds[-1]) != part_size - footer_len or bool(np.any(lengths == 0)):
        raise CorruptDatasetError(f"{where}: frame lengths do not span the data region")
    sums = view[at : at + 4 * frames].cast("I")
    dec = GroupDecoder(bytes(view[:n_dict]), sums, bounds, counts, sizes.astype(np.int64), where)
    return Footer(dec.rec_start, dec.rec_end, dec)


class GroupDecoder(Decoder):
    """The codec of a v4 part: checks a frame against its sum, decodes it, and hands
    out the record asked for; safe to share between threads.

    ``bounds`` are the frames' offsets in the part (``frames + 1``), ``counts`` the
    records of each frame and ``sizes`` each record's decoded size.
    """

    __slots__ = (
        "_buf",
        "_by_start",
        "_fend",
        "_first",
        "_lohi",
        "_row",
        "_rows",
        "bounds",
        "counts",
        "rec_end",
        "rec_start",
        "record",
    )

    def __init__(
        self, dictionary: bytes, frame_sums: Any, bounds: Any, counts: Any, sizes: Any, where: str
    ) -> None:
        first = np.zeros(len(counts), dtype=np.int64)
        np.cumsum(counts[:-1], out=first[1:])
        frame_of = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        ends = np.cumsum(sizes, dtype=np.int64)
        gsize = np.add.reduceat(sizes, first) if len(sizes) else np.zeros(0, np.int64)
        super().__init__(dictionary, frame_sums, int(gsize.max()) if len(gsize) else 0, where)
        self.bounds, self.counts = bounds, counts
        # Each record's place in its frame's decoded bytes.
        lo = ends - sizes - (ends - sizes)[first][frame_of]
        place = np.arange(len(sizes)) - first[frame_of]
        self.rec_start = bounds[:-1][frame_of]
        self.rec_end = bounds[1:][frame_of] + place
        # What ``loader[i]`` needs, as one packed row a record unpacked by one call
        # (NumPy scalars or several lookups cost more than the rest of the read):
        # its frame's checksum and decoded size, its place in the frame, its decoded
        # start and end in the frame. 17 B a record (29 if a frame decodes to 4 GiB).
        wide = self.cap >= 1 << 32
        u = "<u8" if wide else "<u4"
        row = np.dtype([("sum", "<u4"), ("size", u), ("m", "u1"), ("lo", u), ("hi", u)])
        rows = np.empty(len(sizes), row)
        rows["sum"] = np.asarray(frame_sums, dtype=np.uint32)[frame_of]
        rows["size"], rows["m"], rows["lo"], rows["hi"] = gsize[frame_of], place, lo, lo + sizes
        self._rows, self._buf = rows, rows.view(np.uint8).data
        self._row = struct.Struct("<IQBQQ" if wide else "<IIBII")
        self._lohi: Any = None  # each record's (lo, hi) as a flat memoryview: whole()
        self._first, self._fend = _fast(first), _fast(bounds[1:])
        self._by_start: dict[int, int] | None = None
        self.record = self._reader()

    @property
    def sizes(self) -> npt.NDArray[np.int64]:
        """Each record's decoded size."""
        rows = self._rows
        sizes: npt.NDArray[np.int64] = (rows["hi"] - rows["lo"]).astype(np.int64)
        return sizes

    def record_sizes(self, starts: Any, ends: Any) -> npt.NDArray[np.int64]:
        return self.sizes  # a record's extent is its frame's: the footer has its size

    def detached(self) -> GroupDecoder:
        sums = memoryview(bytes(self.frame_sums)).cast("I")
        b, c, s = self.bounds.copy(), self.counts.copy(), self.sizes.copy()
        return GroupDecoder(bytes(self._dict), sums, b, c, s, self.where)

    def hot(self) -> Any:
        return self.record

    def _of(self, j: int) -> int:
        return _frame_of(self._first, j)

    def _reader(self) -> Any:
        """:meth:`__call__` as a closure over what it reads (the path of ``loader[i]``:
        no attribute lookups, one unpack of the record's row)."""
        # Nothing here refers to the decoder: it holds this closure, and a cycle
        # would keep its tables after the part is closed until the GC runs.
        row, buf, size = self._row.unpack_from, self._buf, self._row.size
        local, dictionary, errors, hsum = self._local, self._dict, self._errors, record_sum
        big, cap, where, first = self._big, max(self.cap, _SMALL_CLAIM), self.where, self._first

        def frame_of(j: int) -> int:
            return _frame_of(first, j)

        # The last frame decoded (by its first record), checked when it was: records
        # read in stored order decode each frame once. One tuple, replaced whole, so
        # threads sharing the decoder never see one frame's key with another's bytes.
        last: list[tuple[int, bytes]] = [(-1, b"")]

        def record(stored: Any, j: int) -> bytes:
            """Record ``j`` from its stored extent (its frame, then ``m`` bytes)."""
            want, n, m, lo, hi = row(buf, size * j)
            key, kept = last[0]
            if key == j - m:
                return kept[lo:hi]
            frame = stored[:-m] if m else stored
            if hsum(frame) & SUM_MASK != want:
                raise CorruptDatasetError(
                    f"{where}: record {j} (in frame {frame_of(j)}) does not match its checksum "
                    "(the file was altered or a read returned wrong bytes)"
                )
            try:
                dec = local.dec
            except AttributeError:
                dec = make_context(dictionary, local)
            try:
                if frame[0] >= big and _claim(frame) > cap:
                    raise ValueError(f"it claims more than the part's largest frame ({cap} B)")
                out: bytes = dec(frame)
            except errors as exc:
                raise CorruptDatasetError(
                    f"{where}: record {j} (in frame {frame_of(j)}) does not decompress ({exc})"
                ) from None
            if len(out) != n:
                raise _wrong_size(where, frame_of(j), n, len(out))
            last[0] = (j - m, out)
            return out[lo:hi]

        return record

    def __call__(self, stored: Any, j: int) -> bytes:
        """Record ``j`` from its stored extent (its frame, then ``m`` bytes)."""
        return self.record(stored, j)  # type: ignore[no-any-return]

    def frame(self, frame: Any, first: int) -> bytes:
        """The records of the frame starting at record ``first``, decoded: of the
        size they add up to."""
        out = self.plain(frame, first)
        n = self._row.unpack_from(self._buf, self._row.size * first)[1]
        if len(out) != n:
            raise _wrong_size(self.where, self._of(first), n, len(out))
        return out

    def many(self, frames: Sequence[Any], js: Any) -> list[bytes]:
        """Records ``js`` from their stored extents; a frame holding several records
        in a row is checked and decoded once (slices, sorted batches)."""
        row, buf, size = self._row.unpack_from, self._buf, self._row.size
        out: list[bytes] = []
        last, got = -1, b""
        for stored, j in zip(frames, js.tolist(), strict=True):
            want, _n, m, lo, hi = row(buf, size * j)
            if j - m != last:  # the frame's first record names it
                frame = stored[:-m] if m else stored
                if record_sum(frame) & SUM_MASK != want:
                    return [*out, self.record(stored, j)]  # raises, naming the record
                got, last = self.frame(frame, j - m), j - m
            out.append(got[lo:hi])
        return out

    def first_bad(self, data: Any, starts: Any, ends: Any) -> int | None:
        b = self.bounds.tolist()
        for g in range(len(b) - 1):
            if record_sum(data[b[g] : b[g + 1]]) & SUM_MASK != self.frame_sums[g]:
                return int(self._first[g])
        return None

    def at(self, start: int, end: int) -> tuple[int, int]:
        """The frame and record whose extent is ``start:end``."""
        if self._by_start is None:
            self._by_start = {s: g for g, s in enumerate(self.bounds[:-1].tolist())}
        g = self._by_start[start]
        return g, self._first[g] + end - self._fend[g]

    def whole(self, data: Any) -> _GroupDecoded:
        return _GroupDecoded(data, self)

    def lohi(self) -> Any:
        """Each record's decoded start and end in its frame, flat (``2 j``, ``2 j + 1``),
        made on the first whole-part read: 8 B a record more while the part is open,
        beside its whole buffer; indexed faster than a row is unpacked."""
        if self._lohi is None:
            rows = self._rows
            self._lohi = _fast(np.stack([rows["lo"], rows["hi"]], 1), rows["lo"].dtype)
        return self._lohi

    def views(self, data: Any) -> _GroupDecoded:
        return _GroupViews(data, self)


def _frame_of(first: Any, j: int) -> int:
    """The frame holding record ``j``, given each frame's first record (for error
    messages: a search)."""
    return int(np.searchsorted(np.asarray(first), j, side="right")) - 1


def _wrong_size(where: str, g: int, n: int, got: int) -> CorruptDatasetError:
    return CorruptDatasetError(
        f"{where}: frame {g} decodes to {got} bytes, its records add up to {n}"
    )


class _GroupDecoded(Decoded):
    """A v4 part's buffer (checked whole once) whose record extents slice out decoded
    records; the last frame decoded is kept, so records in stored order decode each
    frame once."""

    __slots__ = ("_base", "_dec", "_lohi", "_out", "_start")

    def __init__(self, raw: Any, decoder: GroupDecoder) -> None:
        super().__init__(raw, decoder)
        self._dec = decoder
        self._lohi = decoder.lohi()
        self._start = -1  # the extent start (frame start) of the frame kept
        self._base = 0  # record j's start is at 2 * (j = self._base + extent end)
        self._out = b""

    def __getitem__(self, span: slice) -> Any:
        start = span.start
        if start != self._start:
            dec = self._dec
            g = dec.at(start, span.stop)[0]
            end, first = dec._fend[g], dec._first[g]
            self._out = dec.frame(self.raw[start:end], first)
            self._start, self._base = start, first - end
        r = 2 * (self._base + span.stop)
        return self._out[self._lohi[r] : self._lohi[r + 1]]


class _GroupViews(_GroupDecoded):
    __slots__ = ()

    def __getitem__(self, span: slice) -> memoryview:
        return memoryview(super().__getitem__(span))


def _fast(a: Any, dtype: Any = np.int64) -> Any:
    """An integer array, flat, as a memoryview (indexed by Python ints several times
    faster than the array)."""
    flat: Any = np.ascontiguousarray(a, dtype=dtype).reshape(-1)
    return memoryview(flat).cast("B").cast(flat.dtype.char)

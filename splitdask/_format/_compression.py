"""Per-record zstd compression that keeps random access: no I/O.

Every record of a v3 part is its own zstd frame, compressed with a dictionary
trained from a sample of the part's first records, so reading one record
decompresses exactly one frame. Writers since issue 19 make v4 parts
(``_grouped``), whose frames each hold a few consecutive small records
(:class:`PartEncoder`, :func:`group_records`). Frames carry as little as zstd
allows: no magic number (the part says it is zstd), no dictionary id (the part holds
the one dictionary), no frame checksum (the part keeps a checksum of each stored
frame), only the decoded size (which lets the decoder allocate exactly once, and
which it checks against the part's largest record or frame before allocating). The stored lengths of
the frames are kept as narrow integers compressed with zstd (about a byte a record
for small records) and turned into int64 offsets once per part open.

``zstandard`` is imported on first use only: ``import splitdask`` stays light.
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate, pairwise
from typing import Any

import numpy as np
import numpy.typing as npt

from splitdask._format._partcodec import PartCodec, record_sum
from splitdask._util._validate import check_int
from splitdask.errors import CorruptDatasetError

__all__ = [
    "DEFAULT_LEVEL",
    "DICT_SIZE",
    "GROUP_BYTES",
    "MAX_GROUP",
    "MAX_LEVEL",
    "MIN_LEVEL",
    "SAMPLE_BYTES",
    "SUM_MASK",
    "Compression",
    "Decoded",
    "Decoder",
    "PartEncoder",
    "check_compression",
    "decode_lengths",
    "encode_lengths",
    "group_records",
    "make_context",
    "train",
]

ZSTD = "zstd"
DEFAULT_LEVEL = 3
MIN_LEVEL = -(1 << 17)
"""zstd's fastest level (``ZSTD_minCLevel()``); negative levels trade ratio for speed."""
MAX_LEVEL = 22
DICT_SIZE = 32 << 10
"""Largest dictionary trained for a part (measured: benchmarks/local.py --compression-only)."""
SAMPLE_BYTES = 1 << 20
"""Records a writer holds back to train a dictionary from, before it writes any."""
MIN_SAMPLES = 16
"""Fewer sample records than this train no dictionary (plain zstd frames then)."""
SUM_MASK = 0xFFFFFFFF
"""A compressed record's checksum is the low 32 bits of the XXH3-64 of its frame."""
_SMALL_CLAIM = 65791
"""Frames claiming at most this many decoded bytes (a 2-byte size field) are decoded
without parsing their header: allocating that much is harmless."""
_DID_SIZE = (0, 1, 2, 4)
GROUP_BYTES = 128
"""A writer closes a frame once its records hold this many bytes (measured:
benchmarks/local.py --compression-only; docs/decisions.md). Readers take any grouping."""
MAX_GROUP = 64
"""The most records one frame may hold (a format v4 limit: extents stay in the file)."""


def group_records(records: Sequence[bytes]) -> list[int]:
    """How many of ``records``, in order, each frame holds (:data:`GROUP_BYTES`)."""
    counts: list[int] = []
    k = size = 0
    for n in map(len, records):
        k += 1
        size += n
        if size >= GROUP_BYTES or k == MAX_GROUP:
            counts.append(k)
            k = size = 0
    if k:
        counts.append(k)
    return counts


def _zstd() -> Any:
    import zstandard

    return zstandard


@dataclass(frozen=True)
class Compression:
    """How a writer compresses its parts' records (recorded per part in the manifest)."""

    name: str
    level: int


def check_compression(compression: object, level: object) -> Compression | None:
    """Validate a writer's ``compression=`` and ``compression_level=`` arguments.

    Raises
    ------
    TypeError, ValueError
        Naming the argument, what it got and what it accepts.
    """
    if compression is None:
        if level is not None:
            raise ValueError(
                f"compression_level={level!r} needs compression='zstd' (compression is None)"
            )
        return None
    if not isinstance(compression, str):
        raise TypeError(
            f"compression must be None or 'zstd', got {type(compression).__name__} {compression!r}"
        )
    if compression != ZSTD:
        raise ValueError(f"compression must be None or 'zstd', got {compression!r}")
    if level is None:
        return Compression(ZSTD, DEFAULT_LEVEL)
    lvl = check_int(level, "compression_level", minimum=MIN_LEVEL, maximum=MAX_LEVEL)
    return Compression(ZSTD, lvl)


def _params(level: int) -> Any:
    z = _zstd()
    return z.ZstdCompressionParameters.from_level(
        level,
        format=z.FORMAT_ZSTD1_MAGICLESS,
        write_content_size=1,
        write_checksum=0,
        write_dict_id=0,
    )


def train(samples: Sequence[bytes], level: int) -> bytes:
    """A dictionary for records like ``samples`` (empty: too few to train from)."""
    total = sum(map(len, samples))
    if len(samples) < MIN_SAMPLES or total < 4096:
        return b""
    z = _zstd()
    size = min(DICT_SIZE, max(1024, total // 16))
    try:
        # Fixed FastCover parameters: the optimising search (k=0) costs seconds per
        # part and gained under 1% on the benchmark corpora (docs/decisions.md).
        d = z.train_dictionary(size, list(samples), k=256, d=8, f=16, accel=10, level=level)
    except z.ZstdError:
        return b""
    return bytes(d.as_bytes())


class PartEncoder:
    """Compresses one bin writer's records into frames of a format v4 part: runs of
    consecutive records (:func:`group_records`) share a frame.

    The first ``sample_bytes`` of records are held back (:meth:`feed` returns
    nothing) until a dictionary is trained from them; later parts of the same writer
    reuse it. ``max_raw``, ``raw_bytes``, ``sizes`` (each record's) and ``counts``
    (each frame's records) describe the part being written.
    """

    def __init__(self, compression: Compression, sample_bytes: int = SAMPLE_BYTES) -> None:
        self.compression = compression
        self.sample_bytes = sample_bytes
        self.dictionary = b""
        self._cctx: Any = None
        self._stash: list[bytes] = []
        self._stashed = 0
        self.max_raw = 0
        self.raw_bytes = 0
        self.sizes = array("Q")
        self.counts = array("B")

    def feed(self, records: Sequence[bytes]) -> Sequence[Any]:
        """Frames for ``records`` (and for any held back before them), in order;
        nothing while the sample for the dictionary is still being gathered."""
        if self._cctx is None:
            self._stash += records
            self._stashed += sum(map(len, records))
            if self._stashed < self.sample_bytes:
                return ()
            return self.drain()
        return self._compress(records)

    def drain(self) -> Sequence[Any]:
        """Frames of every record held back (training the dictionary now if needed)."""
        if self._cctx is None:
            z = _zstd()
            groups = _joined(self._stash, group_records(self._stash))
            self.dictionary = train(groups, self.compression.level)
            dict_data = z.ZstdCompressionDict(self.dictionary) if self.dictionary else None
            self._cctx = z.ZstdCompressor(
                dict_data=dict_data, compression_params=_params(self.compression.level)
            )
        stash, self._stash, self._stashed = self._stash, [], 0
        return self._compress(stash)

    def _compress(self, records: Sequence[bytes]) -> Sequence[Any]:
        if not records:
            return ()
        self.max_raw = max(self.max_raw, max(map(len, records)))
        self.raw_bytes += sum(map(len, records))
        counts = group_records(records)
        self.sizes.extend(map(len, records))
        self.counts.extend(counts)
        # One call in C for the whole batch; the segments it returns are buffers that
        # b"".join, len and the checksum take as they are.
        return list(self._cctx.multi_compress_to_buffer(_joined(records, counts)))

    @property
    def held(self) -> int:
        """Records held back for the dictionary's sample."""
        return len(self._stash)

    def next_part(self) -> None:
        """Start the statistics of a new part (the dictionary is kept)."""
        self.max_raw = self.raw_bytes = 0
        self.sizes, self.counts = array("Q"), array("B")


def _joined(records: Sequence[bytes], counts: list[int]) -> list[bytes]:
    """``records`` joined into one input per frame, ``counts`` records each."""
    if len(counts) == len(records):
        return list(records)
    ends = accumulate(counts, initial=0)
    return [b"".join(records[a:b]) for a, b in pairwise(ends)]


class Decoder(PartCodec):
    """The codec of a compressed part (format v3): checks and decodes its records;
    safe to share between threads.

    ``frame_sums[j]`` is the checksum of record ``j``'s stored frame; ``cap`` the
    largest decoded record the part holds (no frame may claim more).
    """

    __slots__ = ("_big", "_dict", "_errors", "_local", "cap", "frame_sums", "where")
    in_place = False

    def __init__(self, dictionary: bytes, frame_sums: Any, cap: int, where: str) -> None:
        self._dict = dictionary
        self.frame_sums = frame_sums
        self.cap = cap
        self.where = where
        self._local = threading.local()  # a zstd context serves one thread at a time
        self._errors = (IndexError, ValueError, _zstd().ZstdError)
        # Frames whose first byte is below this claim at most max(cap, 64 KiB) bytes.
        self._big = 0xC0 if cap >= 1 << 32 else 0x80

    def detached(self) -> Decoder:
        """A decoder that holds no view of the buffer its footer came from."""
        frame_sums = memoryview(bytes(self.frame_sums)).cast("I")
        return Decoder(bytes(self._dict), frame_sums, self.cap, self.where)

    def _make(self) -> Any:
        return make_context(self._dict, self._local)

    def __call__(self, frame: Any, j: int) -> bytes:
        """Record ``j`` from its stored ``frame``: checked against its sum, decoded."""
        if record_sum(frame) & SUM_MASK != self.frame_sums[j]:
            raise CorruptDatasetError(
                f"{self.where}: record {j} does not match its checksum "
                "(the file was altered or a read returned wrong bytes)"
            )
        return self.plain(frame, j)

    def plain(self, frame: Any, j: int = -1) -> bytes:
        """Decode a frame already checked (a whole part's checksum covered it)."""
        try:
            dec = self._local.dec
        except AttributeError:
            dec = self._make()
        try:
            if frame[0] >= self._big and _claim(frame) > max(self.cap, _SMALL_CLAIM):
                raise ValueError(f"it claims more than the part's largest record ({self.cap} B)")
            out: bytes = dec(frame)
        except self._errors as exc:
            which = f"record {j}" if j >= 0 else "a record"
            raise CorruptDatasetError(
                f"{self.where}: {which} does not decompress ({exc})"
            ) from None
        return out

    def many(self, frames: Sequence[Any], js: Any) -> list[bytes]:
        """Records ``js`` from their frames, each checked and decoded."""
        return list(map(self, frames, js.tolist()))

    def check(self, stored: list[Any], js: Any, starts: Any, ends: Any) -> list[Any]:
        return self.many(stored, js)

    def first_bad(self, data: Any, starts: Any, ends: Any) -> int | None:
        for j, (s, e) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
            if record_sum(data[s:e]) & SUM_MASK != self.frame_sums[j]:
                return j
        return None

    def whole(self, data: Any) -> Decoded:
        return Decoded(data, self)

    def views(self, data: Any) -> Decoded:
        return _DecodedViews(data, self)


def make_context(dictionary: bytes, local: threading.local) -> Any:
    """This thread's zstd decompress for frames made with ``dictionary``, kept as
    ``local.dec`` (a context serves one thread at a time)."""
    z = _zstd()
    dict_data = z.ZstdCompressionDict(dictionary) if dictionary else None
    dec = z.ZstdDecompressor(dict_data=dict_data, format=z.FORMAT_ZSTD1_MAGICLESS).decompress
    local.dec = dec
    return dec


def _claim(frame: Any) -> int:
    """The decoded size a magicless frame header claims (4- or 8-byte size field)."""
    fhd = frame[0]
    pos = 1 + (0 if fhd & 0x20 else 1) + _DID_SIZE[fhd & 3]
    n = 4 if fhd >> 6 == 2 else 8
    if len(frame) < pos + n:
        raise ValueError("truncated frame header")
    return int.from_bytes(bytes(frame[pos : pos + n]), "little")


class Decoded:
    """A compressed part's buffer whose slices come out decoded (bin-wise reads:
    the whole part's checksum was checked once, so frames are only decoded)."""

    __slots__ = ("_plain", "raw")

    def __init__(self, raw: Any, decoder: Decoder) -> None:
        self.raw = raw
        self._plain = decoder.plain

    def __getitem__(self, span: slice) -> Any:
        return self._plain(self.raw[span])


class _DecodedViews(Decoded):
    """As :class:`Decoded`, each record a memoryview of its decoded bytes."""

    __slots__ = ()

    def __getitem__(self, span: slice) -> memoryview:
        return memoryview(self._plain(self.raw[span]))


def encode_lengths(lengths: npt.ArrayLike) -> tuple[bytes, int]:
    """Stored record lengths as ``(zstd frame of narrow little-endian ints, width)``."""
    arr = np.asarray(lengths, dtype=np.uint64)
    top = int(arr.max()) if len(arr) else 0
    width = next(w for w in (1, 2, 4, 8) if top < 1 << (8 * w))
    z = _zstd()
    raw = arr.astype(f"<u{width}").tobytes()
    return z.ZstdCompressor(level=DEFAULT_LEVEL, write_content_size=True).compress(raw), width


def decode_lengths(blob: Any, count: int, width: int, where: str) -> npt.NDArray[np.uint64]:
    """The ``count`` lengths :func:`encode_lengths` stored, sizes checked before any
    allocation (the frame must claim exactly ``count * width`` bytes)."""
    if width not in (1, 2, 4, 8):
        raise CorruptDatasetError(f"{where}: record length width {width} is not 1, 2, 4 or 8")
    z = _zstd()
    want = count * width
    try:
        claim = z.frame_content_size(bytes(blob[:32]))
        if claim != want:
            raise CorruptDatasetError(
                f"{where}: the record lengths claim {claim} bytes, {count} records need {want}"
            )
        raw = z.ZstdDecompressor().decompress(bytes(blob), max_output_size=want)
    except z.ZstdError as exc:
        raise CorruptDatasetError(f"{where}: record lengths do not decompress ({exc})") from None
    if len(raw) != want:
        raise CorruptDatasetError(f"{where}: record lengths are {len(raw)} bytes, expected {want}")
    return np.frombuffer(raw, dtype=f"<u{width}").astype(np.uint64)

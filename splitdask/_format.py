"""On-disk format v1: names, the manifest schema and the bin-part footer.

This is the only module that knows byte layouts. It does no I/O: it turns bytes
into validated objects and back. ``docs/format.md`` is the prose specification.

A bin part is::

    MAGIC | record 0 | record 1 | ... | record n-1 | offsets | trailer

``offsets`` are ``n + 1`` little-endian u64 absolute file positions (record ``j``
is ``part[offsets[j]:offsets[j + 1]]``), and the trailer is ``<u64 n, u32 version,
u32 reserved>`` followed by ``MAGIC`` again, so the footer can be found from the
tail of the file alone.
"""

from __future__ import annotations

import functools
import json
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from splitdask.errors import CorruptDatasetError, FormatVersionError

__all__ = [
    "BINS_DIR",
    "DATA_START",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAGIC",
    "MANIFEST_NAME",
    "TRAILER_SIZE",
    "Manifest",
    "PartInfo",
    "Retired",
    "Segment",
    "decode_footer",
    "encode_footer",
    "footer_size",
    "parse_part_name",
    "part_name",
    "payload_size",
    "temp_name",
]

FORMAT_NAME = "splitdask"
FORMAT_VERSION = 1
MANIFEST_NAME = "splitdask.json"
BINS_DIR = "bins"
MAGIC = b"SPLTDASK"
DATA_START = len(MAGIC)
_TRAILER = struct.Struct("<QII8s")
TRAILER_SIZE = _TRAILER.size  # 24
_OFFSET = np.dtype("<u8")
_PART_PATH = re.compile(r"bins/[0-9]{5,}-[0-9a-f]{8,64}\.bin")
_PART_FILE = re.compile(r"(\.?)([0-9]{5,})-([0-9a-f]{8,64})\.bin(\.tmp)?")
_CHECKSUM = re.compile(r"xxh3_64:[0-9a-f]{16}")


def part_name(bin_index: int, uid: str) -> str:
    """Path, relative to the dataset root, of a new part of bin ``bin_index``."""
    return f"{BINS_DIR}/{bin_index:05d}-{uid}.bin"


def temp_name(rel: str) -> str:
    """Name under which a local part is written before it is renamed to ``rel``.

    Hidden (a leading dot) and suffixed, so no reader or listing mistakes it for a part.
    """
    head, _, name = rel.rpartition("/")
    return f"{head}/.{name}.tmp" if head else f".{name}.tmp"


def parse_part_name(name: str) -> tuple[int, str, bool] | None:
    """``(bin, uid, is_temp)`` of a file name under ``bins/``, or ``None`` if it is
    neither a part nor a part's temp file (see :func:`part_name`, :func:`temp_name`)."""
    m = _PART_FILE.fullmatch(name.rsplit("/", 1)[-1])
    if m is None or bool(m[1]) != bool(m[4]):
        return None
    return int(m[2]), m[3], bool(m[4])


def footer_size(count: int) -> int:
    """Bytes taken by the offsets and trailer of a part holding ``count`` records."""
    return _OFFSET.itemsize * (count + 1) + TRAILER_SIZE


def payload_size(part_size: int, count: int) -> int:
    """Bytes of record data in a part of ``part_size`` bytes holding ``count`` records."""
    return part_size - DATA_START - footer_size(count)


def encode_footer(offsets: npt.ArrayLike) -> bytes:
    """Serialise ``n + 1`` absolute record offsets into a part footer."""
    arr = np.asarray(offsets, dtype=_OFFSET)
    count = len(arr) - 1
    return arr.tobytes() + _TRAILER.pack(count, FORMAT_VERSION, 0, MAGIC)


def decode_footer(
    tail: bytes | memoryview, part_size: int, count: int, where: str
) -> npt.NDArray[np.uint64]:
    """Validate a part's footer and return its offsets as a read-only u64 view.

    Parameters
    ----------
    tail
        At least the last ``footer_size(count)`` bytes of the part (more is fine:
        only the end is used, so a whole mmapped part can be passed).
    part_size
        The part's total size in bytes.
    count
        Record count the manifest promises for this part.
    where
        The part's name, used in error messages.

    Raises
    ------
    CorruptDatasetError
        If the footer does not match the file size, the count or itself. Nothing is
        allocated from the file's claims before they are checked against its size.
    """
    fsize = footer_size(count)
    if part_size < DATA_START + fsize or len(tail) < fsize:
        raise CorruptDatasetError(
            f"{where}: {part_size} bytes is too small for a part of {count} records "
            "(truncated or replaced?)"
        )
    view = memoryview(tail)[len(tail) - fsize :]
    n, version, _reserved, magic = _TRAILER.unpack(view[-TRAILER_SIZE:])
    if magic != MAGIC:
        raise CorruptDatasetError(f"{where}: not a splitdask bin part (bad trailing magic)")
    if version != FORMAT_VERSION:
        raise FormatVersionError(
            f"{where}: part format version {version}, this library reads version {FORMAT_VERSION}"
        )
    if n != count:
        raise CorruptDatasetError(f"{where}: footer says {n} records, manifest says {count}")
    offsets = np.frombuffer(view[:-TRAILER_SIZE], dtype=_OFFSET)
    data_end = part_size - fsize
    if int(offsets[0]) != DATA_START or int(offsets[-1]) != data_end:
        raise CorruptDatasetError(f"{where}: record offsets do not span the data region")
    if count > 1 and bool(np.any(offsets[1:] < offsets[:-1])):
        raise CorruptDatasetError(f"{where}: record offsets are not ascending")
    return offsets


@dataclass(frozen=True)
class PartInfo:
    """One immutable file of a bin, as the manifest lists it."""

    path: str
    """Relative to the dataset root, always ``bins/<bin>-<uid>.bin``."""
    count: int
    size: int
    checksum: str
    """``"xxh3_64:<16 hex digits>"`` of the whole file."""

    @property
    def payload(self) -> int:
        """Bytes of record data in the part (its size less header and footer)."""
        return payload_size(self.size, self.count)


@dataclass(frozen=True)
class Retired:
    """A part no longer named by the dataset, and when it stopped being named."""

    path: str
    since: float
    """POSIX time of the commit that replaced it."""
    generation: int
    """The generation of that commit."""

    @functools.cached_property
    def line(self) -> str:
        """This entry in the manifest's ``retired`` string (kept: every later commit
        writes it again until it expires)."""
        return f"{self.path}\t{self.since!r}\t{self.generation}\n"


@dataclass(frozen=True)
class Segment:
    """A run of consecutive global indices dealt round-robin over some bins.

    Record ``start + k`` lives in bin ``bins[k % m]`` at local index
    ``first[k % m] + k // m`` with ``m = len(bins)``. A single bin (``m == 1``) is a
    contiguous run, which is how a Dask partition written as one part is recorded.
    """

    start: int
    count: int
    bins: tuple[int, ...]
    first: tuple[int, ...]

    def share(self, j: int) -> int:
        """How many of the segment's records go to its ``j``-th bin."""
        m = len(self.bins)
        return (self.count - j + m - 1) // m


@dataclass(frozen=True)
class Manifest:
    """The committed state of a dataset: its bins' parts and the global order."""

    bins: tuple[tuple[PartInfo, ...], ...]
    order: tuple[Segment, ...] = ()
    generation: int = 0
    uid: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    retired: tuple[Retired, ...] = ()
    """Parts an earlier commit replaced, kept for readers of older snapshots until
    the retention period has passed (then ``gc`` or the next write removes them)."""

    @property
    def num_bins(self) -> int:
        return len(self.bins)

    @property
    def num_records(self) -> int:
        return self.order[-1].start + self.order[-1].count if self.order else 0

    def bin_counts(self) -> list[int]:
        """Record count of every bin."""
        return [sum(p.count for p in parts) for parts in self.bins]

    def parts(self) -> list[PartInfo]:
        """Every part, bin by bin."""
        return [p for parts in self.bins for p in parts]

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "generation": self.generation,
            "uid": self.uid,
            "num_records": self.num_records,
            "bins": [
                [
                    {"path": p.path, "count": p.count, "size": p.size, "checksum": p.checksum}
                    for p in parts
                ]
                for parts in self.bins
            ],
            "order": [
                {"start": s.start, "count": s.count, "bins": list(s.bins), "first": list(s.first)}
                for s in self.order
            ],
            "metadata": dict(self.metadata),
        }
        if self.retired:
            # Optional: a reader that predates it ignores the key (see docs/format.md).
            # One string, one line per part: readers skip it, and JSON decodes a string
            # far faster than as many small lists.
            doc["retired"] = "".join(r.line for r in self.retired)
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str, *, retired: bool = True) -> Manifest:
        """Parse and fully validate a manifest; ``where`` names it in errors.

        With ``retired=False`` the retired parts are not parsed (readers never need
        them; writers and ``gc`` do), which keeps opening cheap after many commits.
        """
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CorruptDatasetError(f"{where}: manifest is not valid JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
            raise CorruptDatasetError(f"{where}: not a splitdask manifest")
        if doc.get("version") != FORMAT_VERSION:
            raise FormatVersionError(
                f"{where}: manifest format version {doc.get('version')!r}, "
                f"this library reads version {FORMAT_VERSION}"
            )
        try:
            manifest = cls(
                bins=tuple(tuple(_part(p) for p in _list(b)) for b in _list(doc["bins"])),
                order=tuple(_segment(s) for s in _list(doc["order"])),
                generation=_uint(doc["generation"]),
                uid=str(doc["uid"]),
                metadata=_dict(doc.get("metadata", {})),
                retired=_retired(doc.get("retired", "")) if retired else (),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptDatasetError(f"{where}: malformed manifest ({exc!r})") from None
        manifest.validate(where)
        if doc.get("num_records", manifest.num_records) != manifest.num_records:
            raise CorruptDatasetError(f"{where}: num_records disagrees with the order segments")
        return manifest

    def validate(self, where: str) -> None:
        """Check that the order maps every record of every bin exactly once."""
        counts = self.bin_counts()
        claimed: list[list[tuple[int, int]]] = [[] for _ in counts]
        expected_start = 0
        for seg in self.order:
            if seg.start != expected_start or seg.count < 1:
                raise CorruptDatasetError(f"{where}: order segments are not contiguous")
            if not seg.bins or len(seg.bins) != len(seg.first):
                raise CorruptDatasetError(f"{where}: segment at {seg.start} has no bins")
            for j, (b, first) in enumerate(zip(seg.bins, seg.first, strict=True)):
                if not 0 <= b < len(counts):
                    raise CorruptDatasetError(f"{where}: segment names bin {b}, out of range")
                claimed[b].append((first, first + seg.share(j)))
            expected_start += seg.count
        for b, ranges in enumerate(claimed):
            ranges.sort()
            pos = 0
            for lo, hi in ranges:
                if lo != pos:
                    break
                pos = hi
            if pos != counts[b] or any(lo == hi for lo, hi in ranges):
                raise CorruptDatasetError(
                    f"{where}: the order does not cover bin {b}'s {counts[b]} records exactly once"
                )
        seen: set[str] = set()
        for b, parts in enumerate(self.bins):
            for p in parts:
                if p.path in seen or not p.path.startswith(f"{BINS_DIR}/{b:05d}-"):
                    raise CorruptDatasetError(f"{where}: part {p.path!r} misplaced or repeated")
                seen.add(p.path)
        for r in self.retired:
            if r.path in seen:
                raise CorruptDatasetError(f"{where}: part {r.path!r} is both live and retired")
            seen.add(r.path)


def _list(x: object) -> Sequence[Any]:
    if not isinstance(x, list):
        raise TypeError(f"expected a list, got {type(x).__name__}")
    return x


def _dict(x: object) -> dict[str, Any]:
    if not isinstance(x, dict):
        raise TypeError(f"expected an object, got {type(x).__name__}")
    return x


def _uint(x: object) -> int:
    if type(x) is not int or x < 0:
        raise ValueError(f"expected a non-negative integer, got {x!r}")
    return x


def _part(x: object) -> PartInfo:
    d = _dict(x)
    path = str(d["path"])
    # A hostile manifest must not point outside the root (``..``, absolute paths).
    if not _PART_PATH.fullmatch(path):
        raise ValueError(f"invalid part path {path!r}")
    checksum = str(d["checksum"])
    if not _CHECKSUM.fullmatch(checksum):
        raise ValueError(f"invalid checksum {checksum!r}")
    part = PartInfo(path, _uint(d["count"]), _uint(d["size"]), checksum)
    if part.count < 1 or part.size < DATA_START + footer_size(part.count):
        raise ValueError(f"part {path!r}: size {part.size} cannot hold {part.count} records")
    return part


def _retired(x: object) -> tuple[Retired, ...]:
    if not isinstance(x, str):
        raise TypeError(f"retired must be a string, got {type(x).__name__}")
    out = []
    for line in x.splitlines():
        path, since_s, generation = line.split("\t")
        if not _PART_PATH.fullmatch(path):
            raise ValueError(f"invalid retired part path {path!r}")
        since = float(since_s)
        if not since >= 0:  # also refuses NaN
            raise ValueError(f"invalid retirement time {since_s!r}")
        out.append(Retired(path, since, _uint(int(generation))))
    return tuple(out)


def _uints(x: object) -> tuple[int, ...]:
    # Inlined checks: a manifest after many appends holds thousands of these lists.
    if type(x) is not list or not all(type(v) is int and v >= 0 for v in x):
        raise ValueError(f"expected a list of non-negative integers, got {x!r:.80}")
    return tuple(x)


def _segment(x: object) -> Segment:
    d = _dict(x)
    return Segment(_uint(d["start"]), _uint(d["count"]), _uints(d["bins"]), _uints(d["first"]))

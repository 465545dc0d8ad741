"""The manifest: its schema, its limits, and the checks that turn its JSON into objects.

With ``_footer`` (part footers) and ``_names`` (part names) this is the only code that
knows byte layouts. It does no I/O: it
turns bytes into validated objects and back, checking every size a file claims
against a documented limit before acting on it. ``docs/format.md`` is the prose
specification.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from splitdask._format._codec import DEFAULT_CODEC, check_codec_name
from splitdask._format._footer import (
    COMPRESSED_PART_VERSION,
    DATA_START,
    PART_VERSIONS,
    footer_size,
    min_footer_v3,
    payload_size,
)
from splitdask._format._grouped import min_footer_v4
from splitdask._format._jsonbound import check_json_bounds
from splitdask._format._names import BINS_DIR
from splitdask._format._segtable import Segment, check_order, order_arrays
from splitdask.errors import CorruptDatasetError, FormatVersionError

__all__ = [
    "COMPRESSED_MANIFEST_VERSION",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "MAX_BINS",
    "MAX_DEPTH",
    "MAX_MANIFEST_BYTES",
    "MAX_METADATA_BYTES",
    "MAX_PARTS",
    "MAX_SEGMENTS",
    "Manifest",
    "PartInfo",
    "Retired",
    "Segment",
]

FORMAT_NAME = "splitdask"
FORMAT_VERSION = 2
"""The manifest version written without compressed parts (2 may name v2 parts)."""
COMPRESSED_MANIFEST_VERSION = 3
"""Written when a live part is compressed (v3): older readers refuse it by version."""
MANIFEST_VERSIONS = (1, 2, 3)
_COMPRESSIONS = ("zstd",)
MANIFEST_NAME = "splitdask.json"

# Limits: a manifest beyond any of them is refused with a CorruptDatasetError naming
# the limit before anything proportional to the claim is built, and writers refuse
# to create a dataset beyond them.
MAX_MANIFEST_BYTES = 256 << 20
"""Largest manifest read (about 2 million parts' worth)."""
MAX_DEPTH = 32
"""Deepest nesting of JSON arrays and objects in a manifest, ``metadata`` included."""
MAX_BINS = 1 << 16
"""Most bins a dataset may have (``splits``)."""
MAX_SEGMENTS = 1 << 20
"""Most order segments (one per append or Dask partition, until compacted)."""
MAX_PARTS = 1 << 21
"""Most live plus retired parts a manifest may name."""
MAX_METADATA_BYTES = 16 << 20
"""Largest user ``metadata``, as compact JSON."""
_PART_PATH = re.compile(r"bins/[0-9]{5,}-[0-9a-f]{8,64}\.bin")
_CHECKSUM = re.compile(r"xxh3_64:[0-9a-f]{16}")
_FOOTER_SUM = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True)
class PartInfo:
    """One immutable file of a bin, as the manifest lists it."""

    path: str
    """Relative to the dataset root, always ``bins/<bin>-<uid>.bin``."""
    count: int
    size: int
    checksum: str
    """``"xxh3_64:<16 hex digits>"`` of the whole file."""
    version: int = 1
    """The part's format version (its footer's layout)."""
    # A compressed (v3) part: "zstd", its level (compaction keeps it), its footer's size
    # (v1/v2 footers follow from ``count``) and its records' decoded bytes.
    compression: str | None = None
    level: int = 0
    footer: int = 0
    raw: int = 0
    footer_sum: int = 0
    """The XXH3-64 the part's footer (v2, v3) stores of itself, as written by the
    commit that named the part; 0: not recorded (v1 parts, parts written before it)."""

    @property
    def payload(self) -> int:
        """Bytes of record data in the part (decoded, for a compressed part)."""
        if self.version >= COMPRESSED_PART_VERSION:
            return self.raw
        return payload_size(self.size, self.count, self.version)

    @property
    def uid(self) -> str:
        """The id in the part's name, which a v2 footer repeats."""
        return self.path.rsplit("-", 1)[-1].removesuffix(".bin")

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "path": self.path,
            "count": self.count,
            "size": self.size,
            "checksum": self.checksum,
        }
        if self.version != 1:
            doc["version"] = self.version  # absent means 1, as a v1 manifest has it
        if self.compression is not None:
            doc.update(
                compression=self.compression, level=self.level, footer=self.footer, raw=self.raw
            )
        if self.footer_sum:
            doc["footer_sum"] = f"{self.footer_sum:016x}"  # absent means not recorded
        return doc


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
class Manifest:
    """The committed state of a dataset: its bins' parts and the global order."""

    bins: Sequence[tuple[PartInfo, ...]]
    """Each bin's parts: a tuple of tuples, or (opened from a checkpoint) a
    ``_parttable.PartTable`` that makes a bin's tuple when it is asked for."""
    order: Sequence[Segment] = ()
    """The global order's segments: a tuple, or (opened from a checkpoint) a
    ``_segtable.SegmentTable`` that makes a segment when it is asked for."""
    generation: int = 0
    uid: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    retired: tuple[Retired, ...] = ()
    """Parts an earlier commit replaced, kept for readers of older snapshots until
    the retention period has passed (then ``gc`` or the next write removes them)."""
    codec: str = DEFAULT_CODEC
    """The name of the codec the records are stored in (``_codec``): ``"bytes"``,
    records as given, for every dataset that names none."""

    @property
    def num_bins(self) -> int:
        return len(self.bins)

    @property
    def num_records(self) -> int:
        return self.order[-1].start + self.order[-1].count if self.order else 0

    def bin_counts(self) -> list[int]:
        """Record count of every bin."""
        fast = getattr(self.bins, "bin_counts", None)  # a part table's columns
        if fast is not None:
            return fast()  # type: ignore[no-any-return]
        return [sum(p.count for p in parts) if parts else 0 for parts in self.bins]

    def parts(self) -> list[PartInfo]:
        """Every part, bin by bin (an object per part: not for hot paths)."""
        return [p for parts in self.bins for p in parts]

    @property
    def version(self) -> int:
        """The manifest version this state is written as in JSON (3 once a part is
        compressed; a part table answers from its codec column)."""
        table = getattr(self.bins, "cols", None)
        if table is not None:
            v3 = bool(table["codec"].any())
        else:
            v3 = any(p.compression for parts in self.bins for p in parts)
        return COMPRESSED_MANIFEST_VERSION if v3 else FORMAT_VERSION

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT_NAME,
            "version": self.version,
            "generation": self.generation,
            "uid": self.uid,
            "num_records": self.num_records,
            "bins": [[p.to_doc() for p in parts] for parts in self.bins],
            "order": [
                {"start": s.start, "count": s.count, "bins": list(s.bins), "first": list(s.first)}
                for s in self.order
            ],
            "metadata": dict(self.metadata),
        }
        if self.codec != DEFAULT_CODEC:
            doc["codec"] = self.codec  # absent means "bytes", as before codecs
        if self.retired:
            # Optional: a reader that predates it ignores the key (see docs/format.md).
            # One string, one line per part: readers skip it, and JSON decodes a string
            # far faster than as many small lists.
            doc["retired"] = "".join(r.line for r in self.retired)
        self.check_limits("manifest")
        meta = json.dumps(doc["metadata"], separators=(",", ":"))
        if len(meta) > MAX_METADATA_BYTES:
            raise ValueError(
                f"metadata is {len(meta)} bytes as JSON, more than MAX_METADATA_BYTES "
                f"({MAX_METADATA_BYTES})"
            )
        return json.dumps(doc, separators=(",", ":")).encode()

    def check_limits(self, where: str) -> None:
        """Refuse a manifest beyond ``MAX_BINS``, ``MAX_SEGMENTS`` or ``MAX_PARTS``."""
        _limit(len(self.bins), MAX_BINS, "bins", "MAX_BINS", where)
        _limit(len(self.order), MAX_SEGMENTS, "order segments", "MAX_SEGMENTS", where)
        parts = sum(map(len, self.bins)) + len(self.retired)
        _limit(parts, MAX_PARTS, "parts", "MAX_PARTS", where)

    @classmethod
    def from_json(cls, data: bytes, where: str, *, retired: bool = True) -> Manifest:
        """Parse and fully validate a manifest; ``where`` names it in errors.

        With ``retired=False`` the retired parts are not parsed (readers never need
        them; writers and ``gc`` do), which keeps opening cheap after many commits.
        """
        # Size and nesting are bounded before parsing: json would otherwise recurse
        # (RecursionError) or build whatever a hostile file describes.
        check_json_bounds(data, MAX_MANIFEST_BYTES, MAX_DEPTH, where)
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise CorruptDatasetError(f"{where}: manifest is not valid JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
            raise CorruptDatasetError(f"{where}: not a splitdask manifest")
        cls.check_version(doc, where, MANIFEST_VERSIONS)
        try:
            bins = _list(doc["bins"])
            _limit(len(bins), MAX_BINS, "bins", "MAX_BINS", where)
            order = _list(doc["order"])
            _limit(len(order), MAX_SEGMENTS, "order segments", "MAX_SEGMENTS", where)
            metadata = _dict(doc.get("metadata", {}))
            meta_size = len(json.dumps(metadata, separators=(",", ":")))
            _limit(meta_size, MAX_METADATA_BYTES, "bytes of metadata", "MAX_METADATA_BYTES", where)
            manifest = cls(
                # Empty bins share one tuple: no per-bin work beyond this loop.
                bins=tuple(tuple(map(_part, _list(b))) if b else () for b in bins),
                order=tuple(_segment(s, len(bins)) for s in order),
                generation=_uint(doc["generation"]),
                uid=str(doc["uid"]),
                metadata=metadata,
                retired=_retired(doc.get("retired", "")) if retired else (),
                codec=check_codec_name(doc.get("codec", DEFAULT_CODEC)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, CorruptDatasetError):
                raise
            raise CorruptDatasetError(f"{where}: malformed manifest ({exc!r})") from None
        manifest.check_limits(where)
        if doc["version"] < 3 and any(p.compression for p in manifest.parts()):
            raise CorruptDatasetError(f"{where}: a v{doc['version']} manifest names v3 parts")
        manifest.validate(where)
        if doc.get("num_records", manifest.num_records) != manifest.num_records:
            raise CorruptDatasetError(f"{where}: num_records disagrees with the order segments")
        return manifest

    @staticmethod
    def check_version(
        doc: Mapping[str, Any], where: str, versions: Sequence[int] = (*MANIFEST_VERSIONS, 4)
    ) -> None:
        """Refuse a manifest (or a log's stub, version 4) of a version not in ``versions``."""
        if doc.get("version") not in versions or type(doc["version"]) is not int:
            known = ", ".join(map(str, (*MANIFEST_VERSIONS, 4)))
            raise FormatVersionError(
                f"{where}: manifest format version {doc.get('version')!r}, this library "
                f"reads versions {known}"
            )

    def validate(self, where: str) -> None:
        """Check that the order maps every record of every bin exactly once, and that
        every part is in its bin's folder and named once.

        The order check runs in NumPy over the segments' bins; parts are checked one
        by one only where they are objects (a part table checks its columns itself).
        """
        check_order(order_arrays(self.order), np.asarray(self.bin_counts(), np.int64), where)
        seen: set[str] = set()
        check_parts = getattr(self.bins, "check_edits", None)
        if check_parts is not None:
            check_parts(where)
        elif not hasattr(self.bins, "cols"):
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
        raise ValueError(f"expected a non-negative integer, got {x!r:.80}")
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
    version = d.get("version", 1)
    if version not in PART_VERSIONS or type(version) is not int:
        raise ValueError(f"part {path!r}: unknown part format version {version!r}")
    count, size = _uint(d["count"]), _uint(d["size"])
    # Absent (0: not recorded), or 16 hex digits, not all zero (a writer then records
    # none), of a part whose footer has a hash (v2 and later).
    footer_sum = 0
    if "footer_sum" in d:
        fs = d["footer_sum"]
        ok = type(fs) is str and _FOOTER_SUM.fullmatch(fs) and version >= 2
        if not ok or not (footer_sum := int(fs, 16)):
            raise ValueError(f"part {path!r}: invalid footer_sum {fs!r}")
    if version >= COMPRESSED_PART_VERSION:
        compression, level = d["compression"], d["level"]
        if compression not in _COMPRESSIONS or type(level) is not int:
            raise ValueError(f"part {path!r}: unknown compression {compression!r}/{level!r}")
        footer = _uint(d["footer"])
        raw = _uint(d["raw"])
        part = PartInfo(
            path, count, size, checksum, version, compression, level, footer, raw, footer_sum
        )
        least = min_footer_v3(count) if version == 3 else min_footer_v4(count)
        fsize = max(footer, least)
    else:
        part = PartInfo(path, count, size, checksum, version, footer_sum=footer_sum)
        fsize = footer_size(count, version)
    if part.count < 1 or part.size < DATA_START + fsize:
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


def _segment(x: object, num_bins: int) -> Segment:
    d = _dict(x)
    bins, first = _uints(d["bins"]), _uints(d["first"])
    if len(bins) > num_bins or len(first) != len(bins):
        raise ValueError(f"a segment names {len(bins)} bins of {num_bins}")
    return Segment(_uint(d["start"]), _uint(d["count"]), bins, first)


def _limit(value: int, limit: int, what: str, name: str, where: str) -> None:
    if value > limit:
        raise CorruptDatasetError(
            f"{where}: {value} {what}, more than this library allows ({name} = {limit})"
        )


# The log (``_log``) parses part entries, segments and JSON values exactly as the
# manifest does.
parse_part = _part
parse_segment = _segment
json_list = _list
json_dict = _dict
json_uint = _uint

"""The version log: one immutable file per commit, each the change from the version before.

A v4 dataset's ``splitdask.json`` is a small *stub* that only says "the log is in
``_log/``"; every commit creates ``_log/<version>.json`` (an :class:`Entry`) if and
only if it does not exist yet, and that create is the commit. :func:`apply` replays
an entry on the manifest of the version before it. No I/O here; ``docs/format.md``
("Version log") is the prose specification.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from splitdask._format._codec import DEFAULT_CODEC, check_codec_name
from splitdask._format._jsonbound import check_json_bounds
from splitdask._format._manifest import (
    FORMAT_NAME,
    MAX_BINS,
    MAX_DEPTH,
    MAX_METADATA_BYTES,
    Manifest,
    PartInfo,
    Segment,
    parse_part,
    parse_segment,
)
from splitdask._format._manifest import (
    json_dict as _dict,
)
from splitdask._format._manifest import (
    json_list as _list,
)
from splitdask._format._manifest import (
    json_uint as _uint,
)
from splitdask._format._parttable import EditedBins, edit_bins
from splitdask._format._segtable import common_prefix, extend_order
from splitdask.errors import CorruptDatasetError, FormatVersionError

__all__ = [
    "LOG_DIR",
    "LOG_FORMAT_VERSION",
    "MAX_ENTRY_BYTES",
    "OPS",
    "STUB",
    "Edit",
    "Entry",
    "apply",
    "checkpoint_name",
    "diff",
    "entry_name",
    "is_stub",
    "parse_log_name",
]

LOG_DIR = "_log"
LOG_FORMAT_VERSION = 4
"""The manifest version of a dataset kept as a log (readers before it refuse it)."""
STUB = json.dumps(
    {"format": FORMAT_NAME, "version": LOG_FORMAT_VERSION, "log": LOG_DIR}, separators=(",", ":")
).encode()
"""``splitdask.json`` of a v4 dataset: written once, when the log is created."""
MAX_ENTRY_BYTES = 64 << 20
"""Largest log entry read (an overwrite names every part, like a whole manifest)."""
OPS = ("create", "append", "overwrite", "compact", "convert", "metadata")
"""What a commit did, as ``splitdask log`` shows it."""


def entry_name(version: int) -> str:
    """Path of version ``version``'s log entry, relative to the dataset root."""
    return f"{LOG_DIR}/{version:020d}.json"


def checkpoint_name(version: int) -> str:
    """Path of version ``version``'s checkpoint, relative to the dataset root."""
    return f"{LOG_DIR}/{version:020d}.ckpt"


def parse_log_name(name: str) -> tuple[int, str] | None:
    """``(version, "json" | "ckpt")`` of a file name in ``_log/``, or ``None``."""
    name = name.rsplit("/", 1)[-1]
    # String tests, not a regex: an open lists every kept version's files.
    if len(name) != 25 or name[20] != "." or not name[:20].isdigit():
        return None
    kind = name[21:]
    return (int(name[:20]), kind) if kind in ("json", "ckpt") and name[:20].isascii() else None


def is_stub(data: bytes) -> bool:
    """Whether ``splitdask.json`` holds the stub of a log (cheap: no full parse)."""
    return len(data) < 256 and data.startswith(b"{") and b'"log"' in data


@dataclass(frozen=True)
class Edit:
    """Bin ``bin`` after the commit: its parts ``[start, stop)`` replaced by ``parts``
    (an append has ``start == stop ==`` the bin's part count)."""

    bin: int
    start: int
    stop: int
    parts: tuple[PartInfo, ...]


@dataclass(frozen=True)
class Entry:
    """One commit: what it did, and the change from the version before.

    Attributes
    ----------
    version
        This commit's number: the version before plus one.
    uid
        Random per commit: names this exact state (Dask graph tokens).
    time
        POSIX time of the commit.
    op
        One of :data:`OPS`.
    parent
        The uid of the version before (empty for the first): a replay checks the
        chain, so a dataset removed and written again is never mixed with its past.
    write
        The write's tag (the start of its parts' names): a retried commit finds its
        own earlier, successful run by it.
    tag
        The user's label for this version (``None``: none).
    reset
        The commit starts from an empty dataset (an overwrite or a create).
    num_bins
        Bins after the commit.
    edits
        Changed bins, each at most once.
    keep_segments, segments
        The global order after the commit: the first ``keep_segments`` segments of
        the version before, then ``segments``.
    metadata
        The user metadata after the commit, or ``None`` when unchanged.
    written
        ``(records, bytes, parts)`` this commit wrote.
    codec
        The records' codec after the commit, or ``None`` when unchanged (after a
        reset: ``"bytes"``).
    """

    version: int
    uid: str
    time: float
    op: str
    parent: str = ""
    write: str = ""
    tag: str | None = None
    reset: bool = False
    num_bins: int = 0
    edits: tuple[Edit, ...] = ()
    keep_segments: int = 0
    segments: tuple[Segment, ...] = ()
    metadata: Mapping[str, Any] | None = None
    written: tuple[int, int, int] = (0, 0, 0)
    num_records: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)
    codec: str | None = None

    def info(self) -> dict[str, Any]:
        """How this version came about, as a checkpoint's header repeats it."""
        return {
            "time": self.time,
            "op": self.op,
            "tag": self.tag,
            "written": list(self.written),
            "parent": self.parent,
        }

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "format": FORMAT_NAME,
            "version": LOG_FORMAT_VERSION,
            "entry": self.version,
            "uid": self.uid,
            "time": self.time,
            "op": self.op,
            "parent": self.parent,
            "write": self.write,
            "tag": self.tag,
            "reset": self.reset,
            "num_bins": self.num_bins,
            "num_records": self.num_records,
            "edits": [[e.bin, e.start, e.stop, [p.to_doc() for p in e.parts]] for e in self.edits],
            "keep_segments": self.keep_segments,
            "segments": [[s.start, s.count, list(s.bins), list(s.first)] for s in self.segments],
            "written": list(self.written),
        }
        if self.codec is not None:
            doc["codec"] = self.codec  # absent: unchanged (an entry from before codecs)
        if self.metadata is not None:
            meta = json.dumps(dict(self.metadata), separators=(",", ":"))
            if len(meta) > MAX_METADATA_BYTES:
                raise ValueError(
                    f"metadata is {len(meta)} bytes as JSON, more than MAX_METADATA_BYTES "
                    f"({MAX_METADATA_BYTES})"
                )
            doc["metadata"] = dict(self.metadata)
        data = json.dumps(doc, separators=(",", ":")).encode()
        # What readers would refuse is never written (metadata merged over many
        # appends could grow past what one append's check allowed).
        check_json_bounds(
            data,
            MAX_ENTRY_BYTES,
            MAX_DEPTH,
            f"log entry {self.version}",
            kind="log entry",
            size_name="MAX_ENTRY_BYTES",
        )
        return data

    @classmethod
    def from_json(cls, data: bytes, where: str, version: int) -> Entry:
        """Parse and check one entry; ``version`` is the one its file name gives."""
        check_json_bounds(
            data, MAX_ENTRY_BYTES, MAX_DEPTH, where, kind="log entry", size_name="MAX_ENTRY_BYTES"
        )
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise CorruptDatasetError(f"{where}: log entry is not valid JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
            raise CorruptDatasetError(f"{where}: not a splitdask log entry")
        if doc.get("version") != LOG_FORMAT_VERSION:
            raise FormatVersionError(
                f"{where}: log entry format version {doc.get('version')!r}, this library "
                f"reads version {LOG_FORMAT_VERSION}"
            )
        try:
            num_bins = _uint(doc["num_bins"])
            if num_bins > MAX_BINS:
                raise ValueError(f"{num_bins} bins, more than MAX_BINS ({MAX_BINS})")
            edits = tuple(_edit(e, num_bins) for e in _list(doc["edits"]))
            if len({e.bin for e in edits}) != len(edits):
                raise ValueError("a bin is edited twice")
            meta = doc.get("metadata")
            entry = cls(
                version=_uint(doc["entry"]),
                uid=_hex(doc["uid"]),
                time=_time(doc["time"]),
                op=_op(doc["op"]),
                parent=str(doc["parent"]),
                write=str(doc["write"]),
                tag=None if doc["tag"] is None else str(doc["tag"]),
                reset=_bool(doc["reset"]),
                num_bins=num_bins,
                edits=edits,
                keep_segments=_uint(doc["keep_segments"]),
                segments=tuple(_segment(s, num_bins) for s in _list(doc["segments"])),
                metadata=None if meta is None else _dict(meta),
                written=_written(doc["written"]),
                num_records=_uint(doc["num_records"]),
                codec=None if "codec" not in doc else check_codec_name(doc["codec"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, CorruptDatasetError):
                raise
            raise CorruptDatasetError(f"{where}: malformed log entry ({exc!r})") from None
        if entry.version != version:
            raise CorruptDatasetError(
                f"{where}: the entry says it is version {entry.version}, its name {version}"
            )
        return entry


def apply(before: Manifest | None, entry: Entry, where: str) -> Manifest:
    """The manifest of ``entry.version``: ``entry`` replayed on ``before`` (the version
    before it; ``None`` or ignored when the entry resets). Checks only what the entry
    touches (its bins and segments); the caller validates the result once."""
    base = None if entry.reset else before
    if not entry.reset and (base is None or base.uid != entry.parent):
        raise CorruptDatasetError(
            f"{where}: version {entry.version} does not follow the version before it"
        )
    bins: Sequence[tuple[PartInfo, ...]] = base.bins if base is not None else ()
    if entry.num_bins < len(bins):
        raise CorruptDatasetError(f"{where}: version {entry.version} drops bins")
    edited = {}
    for e in entry.edits:
        old = bins[e.bin] if e.bin < len(bins) else ()
        if not 0 <= e.start <= e.stop <= len(old):
            raise CorruptDatasetError(
                f"{where}: version {entry.version} edits parts {e.start}:{e.stop} of bin "
                f"{e.bin}, which has {len(old)}"
            )
        edited[e.bin] = (*old[: e.start], *e.parts, *old[e.stop :])
    bins = edit_bins(bins, edited, entry.num_bins)
    order: Sequence[Segment] = base.order if base is not None else ()
    if entry.keep_segments > len(order):
        raise CorruptDatasetError(f"{where}: version {entry.version} keeps missing segments")
    metadata = entry.metadata if entry.metadata is not None else (base.metadata if base else {})
    codec = entry.codec or (base.codec if base is not None else DEFAULT_CODEC)
    manifest = Manifest(
        bins=bins,
        order=extend_order(order, entry.keep_segments, entry.segments),
        generation=entry.version,
        uid=entry.uid,
        metadata=metadata,
        codec=codec,
    )
    if manifest.num_records != entry.num_records:
        raise CorruptDatasetError(
            f"{where}: version {entry.version} says {entry.num_records} records, its order "
            f"{manifest.num_records}"
        )
    return manifest


def diff(
    before: Manifest | None,
    after: Manifest,
    *,
    op: str,
    reset: bool = False,
    write: str = "",
    tag: str | None = None,
    when: float,
    written: Sequence[PartInfo] = (),
) -> Entry:
    """The entry that turns ``before`` into ``after`` (whose generation must follow
    ``before``'s; ``reset``: ``after`` replaces it rather than changing it). Bins are
    compared by identity first, so an append costs in proportion to the bins it
    touched, not to the dataset."""
    reset = reset or before is None
    edits: list[Edit] = []
    old_bins: Sequence[tuple[PartInfo, ...]] = () if reset or before is None else before.bins
    changed = after.bins.changed_since(old_bins) if isinstance(after.bins, EditedBins) else None
    for b in range(len(after.bins)) if changed is None else changed:
        new = after.bins[b]
        old = old_bins[b] if b < len(old_bins) else ()
        if new is old or new == old:
            continue
        i = 0
        limit = min(len(old), len(new))
        while i < limit and new[i] == old[i]:
            i += 1
        k = 0
        while k < limit - i and new[len(new) - 1 - k] == old[len(old) - 1 - k]:
            k += 1
        edits.append(Edit(b, i, len(old) - k, tuple(new[i : len(new) - k])))
    old_order: Sequence[Segment] = () if reset or before is None else before.order
    keep = common_prefix(old_order, after.order)
    same_meta = before is not None and not reset and dict(before.metadata) == dict(after.metadata)
    was = DEFAULT_CODEC if reset or before is None else before.codec
    return Entry(
        version=after.generation,
        uid=after.uid or secrets.token_hex(8),
        time=when,
        op=op,
        parent=before.uid if before is not None else "",
        write=write,
        tag=tag,
        reset=reset,
        num_bins=after.num_bins,
        edits=tuple(edits),
        keep_segments=keep,
        segments=tuple(after.order[keep:]),
        metadata=None if same_meta else dict(after.metadata),
        written=(
            sum(p.count for p in written),
            sum(p.payload for p in written),
            len(written),
        ),
        num_records=after.num_records,
        codec=None if after.codec == was else after.codec,
    )


def _bool(x: object) -> bool:
    if type(x) is not bool:
        raise ValueError(f"expected true or false, got {x!r:.80}")
    return x


def _hex(x: object) -> str:
    if type(x) is not str or not re.fullmatch(r"[0-9a-f]{8,64}", x):
        raise ValueError(f"expected a hex uid, got {x!r:.80}")
    return x


def _time(x: object) -> float:
    if type(x) not in (int, float) or not 0 <= x < 1e11:  # type: ignore[operator]
        raise ValueError(f"expected a POSIX time, got {x!r:.80}")
    return float(x)  # type: ignore[arg-type]


def _op(x: object) -> str:
    if x not in OPS:
        raise ValueError(f"unknown operation {x!r:.80}")
    return str(x)


def _written(x: object) -> tuple[int, int, int]:
    r, b, p = (_uint(v) for v in _list(x))
    return r, b, p


def _edit(x: object, num_bins: int) -> Edit:
    b, start, stop, parts = _list(x)
    if not 0 <= _uint(b) < num_bins:
        raise ValueError(f"edit of bin {b!r}, out of range")
    return Edit(b, _uint(start), _uint(stop), tuple(parse_part(p) for p in _list(parts)))


def _segment(x: object, num_bins: int) -> Segment:
    start, count, bins, first = _list(x)
    return parse_segment({"start": start, "count": count, "bins": bins, "first": first}, num_bins)

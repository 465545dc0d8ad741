"""Reading the version log: which versions exist, and the manifest of any of them.

A v4 dataset keeps one immutable file per commit in ``_log/`` (``_format._log``) and,
every few commits, a checkpoint of the whole manifest (``_format._checkpoint``).
The manifest of version ``v`` is the newest checkpoint at or before ``v`` with the
entries after it replayed. Versions never change once written, so this process
keeps the few it built (:data:`_BUILT`) and reaches a newer one by replaying only
the entries it has not seen. Datasets from before the log (one ``splitdask.json``)
read as a single version, their generation.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from splitdask._format import MANIFEST_NAME, MAX_MANIFEST_BYTES, Manifest
from splitdask._format._checkpoint import (
    MAX_CHECKPOINT_BYTES,
    checkpoint_header,
    decode_checkpoint,
)
from splitdask._format._log import (
    LOG_DIR,
    Entry,
    apply,
    checkpoint_name,
    entry_name,
    is_stub,
    parse_log_name,
)
from splitdask._store import Store
from splitdask.errors import CorruptDatasetError, SnapshotExpiredError

__all__ = [
    "Head",
    "Listing",
    "VersionInfo",
    "list_log",
    "load_version",
    "read_entry",
    "read_head",
    "remember",
    "tagged_version",
    "version_infos",
]

# By (dataset, version): the stamp (size, mtime) the version's file had in the listing
# it was used with (None: this process committed it), and what it built or read. A
# stamp that disagrees with a newer listing means the dataset was removed and written
# again at the same place: the cached version is not that one.
Stamp = tuple[int, float]
_BUILT: OrderedDict[tuple[str, int], tuple[Stamp | None, Manifest]] = OrderedDict()
_ENTRIES: OrderedDict[tuple[str, int], tuple[Stamp | None, Entry]] = OrderedDict()
_LOCK = threading.Lock()
_KEEP = 8
_STAMPED = 64  # the newest versions whose files a listing stamps


def remember(
    store: Store, manifest: Manifest, entry: Entry | None = None, stamp: Stamp | None = None
) -> None:
    """Keep a version this process built (``stamp``: its file's in the listing used)
    or committed (``entry``; its stamp is taken from the next listing)."""
    with _LOCK:
        _BUILT[(store.urlpath, manifest.generation)] = (stamp, manifest)
        _BUILT.move_to_end((store.urlpath, manifest.generation))
        while len(_BUILT) > _KEEP:
            _BUILT.popitem(last=False)
        if entry is not None:
            _keep_entry(store, entry, stamp)


def _keep_entry(store: Store, entry: Entry, stamp: Stamp | None) -> None:
    _ENTRIES[(store.urlpath, entry.version)] = (stamp, entry)
    while len(_ENTRIES) > 64:
        _ENTRIES.popitem(last=False)


def _fresh(hit: tuple[Stamp | None, Any] | None, listing: Listing | None, v: int) -> Any:
    """A cached item if it is the one ``listing`` shows for version ``v`` (or may be:
    this process committed it, and has not seen its file listed yet)."""
    if hit is None:
        return None
    stamp, item = hit
    if listing is None or stamp is None or stamp == listing.stamps.get(v):
        return item
    return None


def _confirmed(store: Store, listing: Listing, v: int, manifest: Manifest) -> bool:
    """Whether version ``v`` as listed is ``manifest``, a version this process
    committed (its file's stamp not known yet): one small read, then its stamp is."""
    with _LOCK:
        hit = _BUILT.get((store.urlpath, v))
    if hit is None or hit[0] is not None:
        return True
    if v not in listing.entries:
        return False
    rel = entry_name(v)
    entry = Entry.from_json(store.read_file(rel), store.where(rel), v)
    if entry.uid != manifest.uid:
        # The dataset was removed and written again by another process: nothing this
        # process kept of it is the dataset there now.
        with _LOCK:
            for cache in (_BUILT, _ENTRIES):
                for key in [k for k in cache if k[0] == store.urlpath]:
                    del cache[key]
        return False
    remember(store, manifest, entry, listing.stamps.get(v))
    return True


@dataclass(frozen=True)
class Head:
    """What ``splitdask.json`` holds: a log's stub, a whole manifest, or nothing."""

    log: bool
    manifest: Manifest | None
    data: bytes | None


def read_head(store: Store) -> Head:
    """Read ``splitdask.json`` (a pre-log manifest is parsed, without retired parts)."""
    try:
        data = store.read_file(MANIFEST_NAME, MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        return Head(False, None, None)
    if is_stub(data):
        try:
            doc = json.loads(data)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise CorruptDatasetError(f"{store.where(MANIFEST_NAME)}: not a splitdask manifest")
        # A version this library does not know is refused here, by its number, before
        # the rest of the stub is judged (a later version may name its log otherwise).
        Manifest.check_version(doc, store.where(MANIFEST_NAME))
        if doc.get("log") != LOG_DIR:
            raise CorruptDatasetError(f"{store.where(MANIFEST_NAME)}: not a splitdask manifest")
        return Head(True, None, data)
    return Head(False, Manifest.from_json(data, store.where(MANIFEST_NAME), retired=False), data)


@dataclass(frozen=True)
class Listing:
    """The versions in a log: those with an entry, and those with a checkpoint."""

    entries: frozenset[int]
    checkpoints: frozenset[int]
    stamps: Mapping[int, Stamp] = field(default_factory=dict)
    """Size and modification time of each version's entry (else its checkpoint)."""

    @property
    def versions(self) -> list[int]:
        """Every version that can be opened, oldest first."""
        return sorted(self.entries | self.checkpoints)

    @property
    def latest(self) -> int:
        return max(self.entries | self.checkpoints, default=0)

    @property
    def oldest(self) -> int:
        return min(self.entries | self.checkpoints, default=0)


def list_log(store: Store) -> Listing:
    """The versions in ``_log/``: one listing (one request on an object store), with
    the stamps of the newest versions' files (those a process may have kept)."""
    entries: set[int] = set()
    checkpoints: set[int] = set()
    names, infos = store.list_stamped(LOG_DIR, _newest)
    for name in names:  # parse_log_name, inlined: every kept version's files are listed
        if len(name) == 25 and name[20] == "." and name[:20].isdigit() and name.isascii():
            kind = name[21:]
            if kind == "json":
                entries.add(int(name[:20]))
            elif kind == "ckpt":
                checkpoints.add(int(name[:20]))
    stamps: dict[int, Stamp] = {}
    for info in infos:
        parsed = parse_log_name(info.name)
        if parsed is not None and (parsed[1] == "json" or parsed[0] not in stamps):
            stamps[parsed[0]] = (info.size, info.mtime)
    return Listing(frozenset(entries), frozenset(checkpoints), stamps)


def _newest(names: list[str]) -> list[str]:
    """The files of the newest versions: listings come sorted, and names sort by
    version (temp files, starting with a dot, first). A kept version older than
    these has no stamp, so it is built again rather than trusted."""
    return names[-2 * _STAMPED :]


def read_entry(store: Store, version: int, listing: Listing | None = None) -> Entry:
    """The log entry of ``version`` (this process keeps the ones it read, and uses
    them again while ``listing``, when given, shows the same file)."""
    with _LOCK:
        hit = _fresh(_ENTRIES.get((store.urlpath, version)), listing, version)
    if hit is not None:
        return hit  # type: ignore[no-any-return]
    rel = entry_name(version)
    entry = Entry.from_json(store.read_file(rel), store.where(rel), version)
    with _LOCK:
        _keep_entry(store, entry, listing.stamps.get(version) if listing else None)
    return entry


def load_version(
    store: Store, version: int | None = None, listing: Listing | None = None
) -> Manifest | None:
    """The manifest of ``version`` (``None``: the newest) of the log at ``store``;
    ``None`` when the log holds no version yet.

    Raises
    ------
    SnapshotExpiredError
        If ``version`` was removed by ``gc`` (the error names the oldest kept).
    ValueError
        If ``version`` is newer than the newest.
    """
    listing = listing or list_log(store)
    if version is None:
        latest = max(listing.entries | listing.checkpoints, default=0)
        if latest == 0:
            return None
        version = latest
    if version not in listing.entries and version not in listing.checkpoints:
        full = listing
        if version > full.latest:
            raise ValueError(
                f"{store.urlpath} has no version {version}: the newest is {full.latest}"
            )
        raise SnapshotExpiredError(
            f"{store.urlpath}: version {version} is no longer kept (gc removed it after its "
            f"retention period); the oldest version kept is {full.oldest}"
        )
    return _build(store, listing, version)


def _build(store: Store, listing: Listing, version: int) -> Manifest:
    """Checkpoint (or a version built before) plus the entries after it."""
    with _LOCK:
        cached = {
            v: m
            for (url, v), hit in _BUILT.items()
            if url == store.urlpath
            and v <= version
            and _replayable(listing, v, version)
            and (m := _fresh(hit, listing, v)) is not None
        }
    checkpoint = max((c for c in listing.checkpoints if c <= version), default=0)
    manifest: Manifest | None = None
    start = 0
    if (
        cached
        and max(cached) >= checkpoint
        and _confirmed(store, listing, max(cached), cached[max(cached)])
    ):
        start = max(cached)
        manifest = cached[start]
    if manifest is None:
        start = checkpoint
    if not _replayable(listing, start, version):
        raise SnapshotExpiredError(
            f"{store.urlpath}: version {version} cannot be rebuilt: log entries before it "
            f"were removed (the oldest version kept is {listing.oldest})"
        )
    data = _prefetch(store, range(start + 1, version + 1), listing, 0 if manifest else start)
    if manifest is None and start:
        rel = checkpoint_name(start)
        if data is None:  # a local store maps it: its pages are shared
            data = store.map_file(rel, MAX_CHECKPOINT_BYTES)
        manifest = decode_checkpoint(data, store.where(rel), start)
    for v in range(start + 1, version + 1):
        rel = entry_name(v)
        manifest = apply(manifest, read_entry(store, v, listing), store.where(rel))
    assert manifest is not None
    if version > start or start == checkpoint:  # (a version built before was checked)
        manifest.validate(store.where(entry_name(version)))
    remember(store, manifest, stamp=listing.stamps.get(version))
    return manifest


def _prefetch(store: Store, versions: range, listing: Listing, checkpoint: int) -> Any:
    """Read the entries of ``versions`` not read yet, and on a remote store the
    ``checkpoint`` (0: none) with them, all at once: one round trip instead of one
    each. Returns the checkpoint's bytes when it was read here."""
    with _LOCK:
        todo = [v for v in versions if _fresh(_ENTRIES.get((store.urlpath, v)), listing, v) is None]
    rels = [entry_name(v) for v in todo]
    first = 1 if checkpoint and not store.is_local else 0  # the checkpoint comes first
    if first:
        rels.insert(0, checkpoint_name(checkpoint))
    if len(rels) < 2:
        return None
    datas = store.read_files(rels, MAX_CHECKPOINT_BYTES)
    for v, rel, data in zip(todo, rels[first:], datas[first:], strict=True):
        entry = Entry.from_json(data, store.where(rel), v)
        with _LOCK:
            _keep_entry(store, entry, listing.stamps.get(v))
    return datas[0] if first else None


def _replayable(listing: Listing, start: int, version: int) -> bool:
    return all(v in listing.entries for v in range(start + 1, version + 1))


@dataclass(frozen=True)
class VersionInfo:
    """One version of a dataset, as :func:`splitdask.versions` lists it.

    Attributes
    ----------
    version
        Its number (commits count from 1).
    time
        POSIX time of its commit.
    op
        What the commit did: ``create``, ``append``, ``overwrite``, ``compact``,
        ``convert`` (the first commit of a dataset written before versions), ``metadata``.
    num_records, num_bins
        Of the dataset at this version.
    records_written, bytes_written, parts_written
        By this commit.
    tag
        The label the writer gave it (``None``: none).
    """

    version: int
    time: float
    op: str
    num_records: int
    num_bins: int
    records_written: int
    bytes_written: int
    parts_written: int
    tag: str | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def version_infos(store: Store, listing: Listing) -> list[VersionInfo]:
    """Every version in ``listing``, from its entry (or its checkpoint's header)."""
    out = []
    for v in listing.versions:
        if v in listing.entries:
            e = read_entry(store, v)
            out.append(VersionInfo(v, e.time, e.op, e.num_records, e.num_bins, *e.written, e.tag))
        else:
            out.append(_checkpoint_info(store, v))
    return out


def _checkpoint_info(store: Store, version: int) -> VersionInfo:
    rel = checkpoint_name(version)
    header = checkpoint_header(store.read_file(rel), store.where(rel), version)
    w: Sequence[int] = header.get("written") or (0, 0, 0)
    return VersionInfo(
        version,
        float(header["time"]),
        str(header.get("op") or "convert"),
        int(header["num_records"]),
        int(header["num_bins"]),
        int(w[0]),
        int(w[1]),
        int(w[2]),
        header.get("tag"),
    )


def tagged_version(store: Store, tag: str) -> int:
    """The newest kept version labelled ``tag``.

    Raises
    ------
    ValueError
        If no kept version has that tag.
    """
    listing = list_log(store)
    for info in reversed(version_infos(store, listing)):
        if info.tag == tag:
            return info.version
    raise ValueError(f"{store.urlpath} has no version tagged {tag!r} (splitdask log lists them)")

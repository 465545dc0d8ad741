"""``gc``: remove the versions no reader may still hold, and the files only they named.

A version is kept while it is one of the newest ``keep_versions``, or while the
commit that replaced it is younger than the retention period (a loader opened on it
may still be reading). The oldest kept version gets a checkpoint, so it opens
without the log entries before it; those entries and checkpoints go, and so do the
parts no kept version names once they are older than the retention period too (a
younger unnamed file may belong to a write still running). Temp files of killed
writers (``bins/.*.tmp``, ``_log/.*.tmp-*``, ``splitdask.json.tmp-*``) go by the same age.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from splitdask._dataset._versions import (
    Listing,
    list_log,
    load_version,
    read_entry,
    read_head,
)
from splitdask._format import BINS_DIR, MANIFEST_NAME, Manifest, parse_part_name
from splitdask._format._checkpoint import checkpoint_header
from splitdask._format._log import LOG_DIR, Entry, apply, checkpoint_name, entry_name
from splitdask._store import Store, UrlPath, open_store
from splitdask._write._cleanup import orphans
from splitdask._write._retention import (
    DEFAULT_KEEP_VERSIONS,
    DEFAULT_RETENTION,
    check_retention,
    write_checkpoint,
)
from splitdask.errors import SnapshotExpiredError

__all__ = ["SWEEP_EVERY", "GcReport", "collect_expired", "gc"]


@dataclass(frozen=True)
class GcReport:
    """What :func:`gc` removed (or, with ``dry_run``, would remove).

    Attributes
    ----------
    retired
        Parts only versions past their retention named.
    orphans
        Files no version names (leftovers of failed or killed writes, temp files).
    bytes
        Their total size.
    kept
        Unnamed files kept because they are younger than the grace period.
    dry_run
        Whether anything was actually removed.
    versions
        The versions removed (their log entries and checkpoints).
    oldest_kept
        The oldest version that can still be opened (0: no dataset).
    """

    retired: tuple[str, ...]
    orphans: tuple[str, ...]
    bytes: int
    kept: int
    dry_run: bool
    versions: tuple[int, ...] = ()
    oldest_kept: int = 0

    @property
    def removed(self) -> tuple[str, ...]:
        return self.retired + self.orphans


def gc(
    urlpath: UrlPath,
    storage_options: Mapping[str, Any] | None = None,
    *,
    older_than: float = DEFAULT_RETENTION,
    keep_versions: int = DEFAULT_KEEP_VERSIONS,
    dry_run: bool = False,
) -> GcReport:
    """Remove versions past their retention, the parts only they named, and leftovers.

    Parameters
    ----------
    urlpath, storage_options
        The dataset, as for :class:`~splitdask.SplitDataLoader`.
    older_than
        The retention in seconds (default one hour): a version is removed once the
        commit that replaced it is older, unless it is one of the newest
        ``keep_versions``; an unnamed file once it was last written before then.
        ``0`` keeps only the newest ``keep_versions``, which breaks loaders still
        reading an older one (they get :class:`~splitdask.SnapshotExpiredError`)
        and can break a write still running.
    keep_versions
        The newest versions kept whatever their age (at least 1).
    dry_run
        Report what would be removed and remove nothing.

    Returns
    -------
    GcReport
    """
    check_retention(older_than, keep_versions)
    store = open_store(urlpath, storage_options)
    return _collect(store, time.time() - older_than, keep_versions, dry_run)


SWEEP_EVERY = 256
"""The housekeeping after every this many versions also looks for killed writers'
files (it lists ``bins/`` and reads the kept versions' entries: not every commit)."""


def collect_expired(
    store: Store, retention: float, keep_versions: int, entry: Entry, listing: Listing
) -> None:
    """After the commit of ``entry``: remove versions that expired, and every
    :data:`SWEEP_EVERY` versions collect as :func:`gc` does.

    Cheap: ``listing`` is the commit's (with its own version), and finding what
    expired reads one small entry more than the versions that did. The log is cut
    at a checkpoint at or before the oldest kept version (one is written only when
    the cut frees parts), so a few expired versions may stay until the next one.
    """
    cutoff = time.time() - retention
    if entry.version % SWEEP_EVERY == 0:
        _collect(store, cutoff, keep_versions, False)
        return
    oldest = _oldest_kept(store, listing, cutoff, keep_versions)
    if oldest > listing.oldest:
        _expire(store, listing, oldest)


def _expire(store: Store, listing: Listing, oldest: int) -> None:
    """Remove the versions before ``oldest`` (or before the newest checkpoint at or
    before it) and the parts only they named: the parts each later entry replaced."""
    first = listing.oldest
    manifest = load_version(store, first, listing)
    if manifest is None:
        return
    replaced: dict[int, set[str]] = {}
    for v in range(first + 1, oldest + 1):
        e = read_entry(store, v, listing)
        if e.reset:
            replaced[v] = {p.path for p in manifest.parts()}
        else:
            replaced[v] = {p.path for d in e.edits for p in manifest.bins[d.bin][d.start : d.stop]}
        manifest = apply(manifest, e, store.where(entry_name(v)))
    cut = max((c for c in listing.checkpoints if first < c <= oldest), default=first)
    if cut < oldest and any(replaced[v] for v in range(cut + 1, oldest + 1)):
        write_checkpoint(store, manifest, read_entry(store, oldest, listing).info())
        cut = oldest
    if cut == first:
        return
    logs = [entry_name(v) for v in listing.entries if v < cut]
    logs += [checkpoint_name(v) for v in listing.checkpoints if v < cut]
    store.remove(sorted(logs))
    store.remove(sorted(set().union(*(replaced[v] for v in range(first + 1, cut + 1)))))


def _superseded(store: Store, version: int, listing: Listing) -> float:
    """When the version after ``version`` was committed (``inf``: there is none)."""
    nxt = version + 1
    if nxt in listing.entries:
        return read_entry(store, nxt).time
    if nxt in listing.checkpoints:
        rel = checkpoint_name(nxt)
        return float(checkpoint_header(store.read_file(rel), store.where(rel), nxt)["time"])
    return float("inf")


def _oldest_kept(store: Store, listing: Listing, cutoff: float, keep_versions: int) -> int:
    """The oldest version kept: the kept ones are a suffix (a later version was
    replaced later), so the walk goes up from the oldest and stops at the first kept,
    reading one small entry per version that expired, and one more."""
    versions = listing.versions
    if not versions:
        return 0
    latest = versions[-1]
    for v in versions[:-1]:
        if v > latest - keep_versions or _superseded(store, v, listing) > cutoff:
            return v
    return latest


def _collect(
    store: Store,
    cutoff: float,
    keep_versions: int,
    dry_run: bool,
    listing: Listing | None = None,
) -> GcReport:
    listing = listing or list_log(store)
    if not listing.versions:
        head = read_head(store)  # a dataset from before versions, one being made, or none
        return _collect_unversioned(store, head.manifest, cutoff, dry_run)
    oldest = _oldest_kept(store, listing, cutoff, keep_versions)
    doomed_versions = tuple(v for v in listing.versions if v < oldest)
    named: set[str] = set()
    if oldest:
        base = load_version(store, oldest, listing)
        assert base is not None
        named = {p.path for p in base.parts()}
        for v in range(oldest + 1, listing.latest + 1):
            if v in listing.entries:
                named |= {p.path for e in read_entry(store, v).edits for p in e.parts}
            elif (m := load_version(store, v, listing)) is not None:
                named |= {p.path for p in m.parts()}
    was_named = _named_by(store, listing, doomed_versions)
    infos = {f"{BINS_DIR}/{i.name}": i for i in store.list_info(BINS_DIR)}
    retired, leftovers, kept = [], [], 0
    for rel, info in infos.items():
        parsed = parse_part_name(rel)
        if parsed is None or rel in named:
            continue
        if info.mtime >= cutoff:
            kept += 1
        elif parsed[2] or rel not in was_named:
            leftovers.append(rel)  # a temp file or a part of a killed writer
        else:
            retired.append(rel)
    leftovers += _stale_temps(store, cutoff)
    report = GcReport(
        retired=tuple(sorted(retired)),
        orphans=tuple(sorted(leftovers)),
        bytes=sum(infos[r].size for r in (*retired, *leftovers) if r in infos),
        kept=kept,
        dry_run=dry_run,
        versions=doomed_versions,
        oldest_kept=oldest,
    )
    if dry_run:
        return report
    if doomed_versions:
        if oldest not in listing.checkpoints:
            base = load_version(store, oldest, listing)
            assert base is not None
            how = read_entry(store, oldest).info() if oldest in listing.entries else {}
            write_checkpoint(store, base, how or {"time": time.time(), "op": "convert"})
        logs = [entry_name(v) for v in doomed_versions if v in listing.entries]
        logs += [checkpoint_name(v) for v in doomed_versions if v in listing.checkpoints]
        store.remove(logs)
    store.remove(report.removed)
    store.clean_spools(cutoff)
    return report


def _named_by(store: Store, listing: Listing, versions: tuple[int, ...]) -> set[str]:
    """The parts any of ``versions`` (about to be removed) named: those are retired;
    an unnamed part none of them named is a killed writer's (an orphan)."""
    if not versions:
        return set()
    out: set[str] = set()
    try:
        first = load_version(store, versions[0], listing)
    except SnapshotExpiredError:
        first = None  # its entries are gone already: the later entries still tell
    if first is not None:
        out = {p.path for p in first.parts()}
    for v in versions[1:]:
        if v in listing.entries:
            out |= {p.path for e in read_entry(store, v).edits for p in e.parts}
    return out


def _stale_temps(store: Store, cutoff: float) -> list[str]:
    """Temp files of killed commits in the root and in ``_log/``, written before ``cutoff``."""
    out = []
    for where, prefix in (("", f"{MANIFEST_NAME}.tmp-"), (LOG_DIR, ".")):
        for info in store.list_info(where):
            if info.name.startswith(prefix) and ".tmp" in info.name and info.mtime < cutoff:
                out.append(f"{where}/{info.name}" if where else info.name)
    return out


def _collect_unversioned(
    store: Store, manifest: Manifest | None, cutoff: float, dry_run: bool
) -> GcReport:
    """A dataset from before versions (or none): only files nothing names."""
    leftovers = orphans(store, manifest, cutoff) + _stale_temps(store, cutoff)
    sizes = {f"{BINS_DIR}/{i.name}": i.size for i in store.list_info(BINS_DIR)}
    report = GcReport(
        retired=(),
        orphans=tuple(leftovers),
        bytes=sum(sizes.get(p, 0) for p in leftovers),
        kept=0,
        dry_run=dry_run,
        oldest_kept=manifest.generation if manifest else 0,
    )
    if not dry_run:
        store.remove(report.removed)
        store.clean_spools(cutoff)
    return report

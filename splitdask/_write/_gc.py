"""``gc``: remove the files no reader can need any more.

Two kinds of file qualify once they are older than the grace period: parts a
commit *retired* (an overwrite or a compaction replaced them; readers of older
snapshots kept reading them meanwhile), and *orphans* that no manifest ever named
(the parts and temp files of writers that were killed or failed). Younger files
are kept, so a write still running and a reader of the previous snapshot are
never broken.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from splitdask._dataset._snapshot import read_manifest
from splitdask._format import BINS_DIR
from splitdask._store import UrlPath, open_store
from splitdask._write._changes import Prune
from splitdask._write._cleanup import orphans
from splitdask._write._commit import DEFAULT_RETENTION, Transaction

__all__ = ["GcReport", "gc"]


@dataclass(frozen=True)
class GcReport:
    """What :func:`gc` removed (or, with ``dry_run``, would remove).

    Attributes
    ----------
    retired
        Parts that earlier commits replaced, past the grace period.
    orphans
        Files no manifest names (leftovers of failed or killed writes).
    bytes
        Their total size.
    kept
        Unnamed or retired files kept because they are younger than the grace period.
    dry_run
        Whether anything was actually removed.
    """

    retired: tuple[str, ...]
    orphans: tuple[str, ...]
    bytes: int
    kept: int
    dry_run: bool

    @property
    def removed(self) -> tuple[str, ...]:
        return self.retired + self.orphans


def gc(
    urlpath: UrlPath,
    storage_options: Mapping[str, Any] | None = None,
    *,
    older_than: float = DEFAULT_RETENTION,
    dry_run: bool = False,
) -> GcReport:
    """Remove retired parts and orphaned files older than ``older_than`` seconds.

    Parameters
    ----------
    urlpath, storage_options
        The dataset, as for :class:`~splitdask.SplitDataLoader`.
    older_than
        Grace period in seconds (default one hour). A retired part is removed when
        the commit that retired it is older; an orphan when it was last written
        before then. ``0`` removes everything unreferenced now, which breaks
        loaders still reading a replaced snapshot (they get
        :class:`~splitdask.SnapshotExpiredError`) and can break a write still
        running.
    dry_run
        Report what would be removed and remove nothing.

    Returns
    -------
    GcReport

    Notes
    -----
    Forgetting the retired parts is a commit (the manifest lists them), made with
    the same compare-and-swap as every write, so a concurrent write is re-based,
    never lost. Files are removed only after that commit.
    """
    if isinstance(older_than, bool) or not isinstance(older_than, int | float) or older_than < 0:
        raise ValueError(f"older_than must be a number of seconds >= 0, not {older_than!r}")
    store = open_store(urlpath, storage_options)
    cutoff = time.time() - older_than
    manifest = read_manifest(store)
    expired = [r.path for r in manifest.retired if r.since <= cutoff] if manifest else []
    leftovers = orphans(store, manifest, cutoff)
    sizes = {f"{BINS_DIR}/{i.name}": i.size for i in store.list_info(BINS_DIR)}
    unnamed = set(sizes) - ({p.path for p in manifest.parts()} if manifest else set())
    report = GcReport(
        retired=tuple(expired),
        orphans=tuple(leftovers),
        bytes=sum(sizes.get(p, 0) for p in (*expired, *leftovers)),
        kept=len(unnamed) - len(expired) - len(leftovers),
        dry_run=dry_run,
    )
    if dry_run:
        return report
    if expired:
        # Keep-forever retention: this commit removes nothing itself; gc does below.
        tx = Transaction(store, "a", manifest, retention=float("inf"))
        tx.commit(Prune(frozenset(expired)))
    store.remove(report.removed)
    store.clean_spools(cutoff)
    return report

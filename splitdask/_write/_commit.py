"""The commit protocol: the one code path that replaces a manifest.

Every writer (``SplitWriter``, ``write_split_data``, ``to_split_bins``, compaction,
``gc``) writes new, uniquely named parts first, then hands a *change*
(``_changes``) to :meth:`Transaction.commit`. The commit reads the manifest with a
version token, applies the change to it, and replaces it only if the token still
holds (a compare-and-swap: a conditional PUT on S3, an exclusive lock locally);
when another writer got there first it applies the same change to the newer
manifest and tries again, without rewriting data.

Parts a commit stops naming are *retired*, not deleted: readers of older snapshots
keep reading them until the retention period has passed. Files nothing names are
removed by ``_cleanup.tidy``, the single cleanup rule. Engines that write in
parallel tasks (Dask, Ray) commit through :func:`commit_results`.
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from splitdask._dataset import _legacy
from splitdask._dataset._snapshot import read_manifest
from splitdask._format import BINS_DIR, MANIFEST_NAME, Manifest, PartInfo
from splitdask._store import Store
from splitdask._write._changes import AddRecords, Change, Mode
from splitdask._write._cleanup import orphans, tagged, tidy, warn_left
from splitdask.errors import CommitConflictError, SplitDaskError

__all__ = [
    "DEFAULT_RETENTION",
    "DEFAULT_RETRIES",
    "CommitInfo",
    "TaskBins",
    "Transaction",
    "commit_results",
    "read_current",
]

DEFAULT_RETENTION = 3600.0
"""Seconds a replaced part stays readable for older snapshots, and the age below
which an unnamed file is taken to belong to a write still running."""
DEFAULT_RETRIES = 20
"""Times a commit that lost a race re-bases and tries again."""


# Manifests this process parsed or wrote, by (dataset, version token). A commit
# re-reads the manifest to compare and swap and mostly finds a version it has seen
# (its own begin, or the commit just before a compaction): parsing it again would
# cost more than the rest of a small append.
_PARSED: OrderedDict[tuple[str, str], Manifest] = OrderedDict()
_PARSED_LOCK = threading.Lock()


def _remember(store: Store, token: str, manifest: Manifest) -> None:
    with _PARSED_LOCK:
        _PARSED[(store.urlpath, token)] = manifest
        while len(_PARSED) > 8:
            _PARSED.popitem(last=False)


def read_current(store: Store) -> tuple[Manifest | None, str | None]:
    """The committed manifest and its version token (tokens name content, so a
    manifest parsed before under the same token is the same manifest)."""
    data, token = store.read_versioned(MANIFEST_NAME)
    if data is None or token is None:
        return None, None
    with _PARSED_LOCK:
        hit = _PARSED.get((store.urlpath, token))
    if hit is None:
        hit = Manifest.from_json(data, store.where(MANIFEST_NAME))
        _remember(store, token, hit)
    return hit, token


def _names_ours(now: Manifest | None, tag: str, new_parts: Sequence[PartInfo]) -> bool:
    """Whether ``now`` names a part of this write (its tag, or one of its new parts):
    an earlier run of the commit got through."""
    if now is None or not (tag or new_parts):
        return False
    paths = {p.path for p in now.parts()}
    # Part names are bins/<bin>-<tag><random>.bin: a substring test is exact.
    return any(p.path in paths for p in new_parts) or bool(
        tag and any(f"-{tag}" in p for p in paths)
    )


def _reworded(exc: Exception, message: str) -> Exception:
    """An error of ``exc``'s class saying ``message`` (an ``OSError`` if the class
    cannot be made from a message alone)."""
    try:
        new = type(exc)(message)
    except Exception:
        return OSError(message)
    return new if str(new) == message else OSError(message)


@dataclass(frozen=True)
class CommitInfo:
    """What a commit did.

    Attributes
    ----------
    urlpath
        The dataset's location.
    generation
        Manifest generation now committed (0 for a dataset that was never written).
    records_written, bytes_written, parts_written
        Added by this commit (``bytes_written`` counts record bytes only).
    num_records, num_bins
        Of the whole dataset after the commit.
    """

    urlpath: str
    generation: int
    records_written: int
    bytes_written: int
    parts_written: int
    num_records: int
    num_bins: int

    @classmethod
    def of(cls, urlpath: str, manifest: Manifest, new_parts: Sequence[PartInfo]) -> CommitInfo:
        """The commit that made ``manifest`` by adding ``new_parts``."""
        return cls(
            urlpath=urlpath,
            generation=manifest.generation,
            records_written=sum(p.count for p in new_parts),
            bytes_written=sum(p.payload for p in new_parts),
            parts_written=len(new_parts),
            num_records=manifest.num_records,
            num_bins=manifest.num_bins,
        )


@dataclass(frozen=True)
class Transaction:
    """A write to a dataset, from what was committed when it began to its commit.

    It pickles, so a Dask commit task can carry it.
    """

    store: Store
    mode: Mode
    current: Manifest | None
    """The committed manifest when the write began (``None``: no dataset)."""
    replaces_legacy: bool = False
    retention: float = DEFAULT_RETENTION
    retries: int = DEFAULT_RETRIES
    started: float = field(default_factory=time.time)

    @classmethod
    def begin(
        cls,
        store: Store,
        mode: Mode,
        *,
        retention: float = DEFAULT_RETENTION,
        retries: int = DEFAULT_RETRIES,
    ) -> Transaction:
        """Check ``mode`` against what is at ``store``; raise before anything is written."""
        if mode not in ("a", "w", "x"):
            raise ValueError(f"mode must be 'a', 'w' or 'x', got {mode!r}")
        if isinstance(retention, bool) or not isinstance(retention, int | float) or retention < 0:
            raise ValueError(
                f"retention must be a non-negative number of seconds, not {retention!r}"
            )
        current, _ = read_current(store)
        has_legacy = current is None and _legacy.is_legacy(store)
        if mode == "x" and (current is not None or has_legacy):
            raise FileExistsError(f"a dataset already exists at {store.urlpath}")
        if mode == "a" and has_legacy:
            raise SplitDaskError(
                f"{store.urlpath} holds a splitdataloader 0.0.1 dataset: splitdask reads it "
                "but does not append to it; write to a new location or replace it (mode='w', "
                "start_clean=True)"
            )
        store.makedirs(BINS_DIR)
        return cls(store, mode, current, has_legacy and mode == "w", float(retention), retries)

    @property
    def base(self) -> Manifest | None:
        """The manifest new records are added to (``None`` when replacing or creating)."""
        return self.current if self.mode == "a" else None

    def base_counts(self, num_bins: int) -> list[int]:
        """Records already in each of ``num_bins`` bins."""
        counts = self.base.bin_counts() if self.base else []
        return counts + [0] * (num_bins - len(counts))

    def bins_by_fill(self, num_bins: int, ties: Sequence[int] | None = None) -> list[int]:
        """Bins, least-filled first: where new records go, so appends stay balanced.

        Equally filled bins keep their order in ``ties`` (default: by number).
        """
        counts = self.base_counts(num_bins)
        return sorted(range(num_bins) if ties is None else ties, key=lambda b: counts[b])

    # -- committing -------------------------------------------------------------------

    def commit(
        self, change: Change, *, tag: str = "", new_parts: Sequence[PartInfo] = ()
    ) -> Manifest:
        """Apply ``change`` to the committed manifest in one compare-and-swap.

        Parameters
        ----------
        change
            What the commit does; applied again to a newer manifest after a lost race.
        tag
            The write's tag: if the manifest already names a part of it, an earlier
            run of this very commit got through (its caller died before hearing of
            it), and that manifest is returned instead of committing twice.
        new_parts
            The parts the change names, checked to still exist when the write has
            run for longer than half the retention period (``gc`` may have taken
            them for a dead writer's leftovers).

        Raises
        ------
        CommitConflictError
            If every try lost a race, or the change cannot apply to what another
            writer committed (``mode="x"`` and the dataset now exists).
        """
        store, where = self.store, self.store.urlpath
        self._check_parts_exist(new_parts)
        for attempt in range(self.retries + 1):
            now, token = read_current(store)
            if now is not None and _names_ours(now, tag, new_parts):
                return now
            when = time.time()
            manifest = change.apply(now, when, where)
            if manifest is now:  # nothing to commit
                return manifest
            cutoff = when - self.retention
            expired = [r.path for r in manifest.retired if r.since <= cutoff]
            if expired:
                kept = tuple(r for r in manifest.retired if r.since > cutoff)
                manifest = replace(manifest, retired=kept)
            manifest.validate(where)
            try:
                new_token = store.replace_if(MANIFEST_NAME, manifest.to_json(), token)
            except Exception as exc:
                # No clean answer (the connection dropped, the response was lost, the
                # retries ran out): the server may have committed it all the same.
                landed = self._settle(exc, manifest, tag, new_parts)
                if landed is manifest:
                    self._after_commit(manifest, expired, when)
                return landed  # (or a later manifest: another writer committed after it)
            if new_token is not None:
                _remember(store, new_token, manifest)
                self._after_commit(manifest, expired, when)
                return manifest
            # Lost the race: back off a little, at random, so writers interleave.
            time.sleep(random.uniform(0, min(1.0, 0.01 * 2**attempt)))
        raise CommitConflictError(
            f"{where}: {self.retries + 1} commit attempts each lost the race to another "
            "writer; nothing was committed by this one (raise retries= to wait longer)"
        )

    def _settle(
        self, exc: Exception, manifest: Manifest, tag: str, new_parts: Sequence[PartInfo]
    ) -> Manifest:
        """After a commit request that failed without a clean answer: read the manifest
        back and return it if the commit landed (``manifest`` itself, or a later one
        naming this write's parts); raise, saying which, if it did not or if that
        cannot be told."""
        where = self.store.urlpath
        try:
            now, _ = read_current(self.store)
        except Exception as again:
            raise OSError(
                f"{where}: the commit request failed ({exc}), and reading the manifest back "
                f"to see whether it landed failed too ({again}); check the dataset (splitdask "
                "info) before writing again: if the commit landed, a retry adds its records "
                "twice"
            ) from exc
        if now is not None and now.uid == manifest.uid:
            return manifest
        if now is not None and _names_ours(now, tag, new_parts):
            return now
        raise _reworded(
            exc,
            f"{where}: the commit did not land ({exc}); nothing was committed; retrying is safe",
        ) from exc

    def _check_parts_exist(self, parts: Sequence[PartInfo]) -> None:
        if not parts or time.time() - self.started < self.retention / 2:
            return
        for p in parts:
            if not self.store.exists(p.path):
                raise CommitConflictError(
                    f"{self.store.where(p.path)}: this write's part was removed before its "
                    f"commit (the write ran longer than half the retention period, "
                    f"{self.retention:g} s, and gc took it for a dead writer's); retry the "
                    "write, with a longer retention= if it runs this long"
                )

    def _after_commit(self, manifest: Manifest, expired: Sequence[str], when: float) -> None:
        """Remove what is past its retention: parts the commit stopped keeping, a
        replaced splitdataloader dataset, and files killed writers left."""
        tidy(self.store, expired, "replaced parts past their retention")
        if self.replaces_legacy:
            try:
                _legacy.remove(self.store)
            except Exception as exc:
                warn_left(self.store, "the replaced splitdataloader files", exc)
        try:
            # orphans as this module's name: tests/test_crash.py replaces it here.
            doomed = orphans(self.store, manifest, when - self.retention)
            self.store.clean_spools(when - self.retention)
        except Exception as exc:
            warn_left(self.store, "leftovers of killed writers", exc)
            return
        # The expired retired parts are no longer named anywhere: not leftovers.
        tidy(self.store, sorted(set(doomed) - set(expired)), "leftovers of killed writers")

    def abandon(self, parts: Iterable[PartInfo]) -> None:
        """Remove parts that were written but will never be committed (any that the
        manifest names after all, because a commit went through, are kept)."""
        rels = [p.path for p in parts]
        if not rels:
            return
        try:
            named = read_manifest(self.store)
        except Exception:
            named = None
        keep = {p.path for p in named.parts()} if named else set()
        tidy(self.store, [r for r in rels if r not in keep], "uncommitted parts")

    def collect(self, manifest: Manifest | None, tag: str) -> None:
        """Remove the files of write ``tag`` that ``manifest`` does not name: the
        parts and temp files of killed or repeated task runs of that write."""
        keep = {p.path for p in manifest.parts()} if manifest else set()
        try:
            names = self.store.list_dir(BINS_DIR)
        except Exception as exc:
            warn_left(self.store, f"the unnamed parts of write {tag}", exc)
            return
        doomed = [f"{BINS_DIR}/{n}" for n in names if tagged(n, tag)]
        tidy(self.store, [rel for rel in doomed if rel not in keep], "unreferenced parts")

    def discard(self, tag: str) -> None:
        """After a failed write: :meth:`collect` against the committed manifest, which
        decides what stays (the parts of write ``tag`` it names, should its commit
        have gone through after all); every other file of the write goes."""
        try:
            manifest = read_manifest(self.store)
        except Exception:
            return  # cannot tell what is committed: gc removes the leftovers later
        self.collect(manifest, tag)


@dataclass(frozen=True)
class TaskBins:
    """The bin each task of a parallel write (a Dask partition, a Ray write task) fills.

    Appending to a dataset with bins keeps its bin count: task ``t`` fills the
    ``t % num_bins``-th least-filled bin, so appends stay balanced. Otherwise task
    ``t`` fills bin ``t % num_bins``, or bin ``t`` when ``num_bins`` is ``None`` (one
    bin per task, counted at the commit). The same on every run of a task; it
    pickles, so tasks can carry it.
    """

    num_bins: int | None
    by_fill: tuple[int, ...] | None = None

    @classmethod
    def plan(cls, target: Transaction, num_bins: int | None) -> TaskBins:
        """The bins of a write to ``target``; ``num_bins`` is a new dataset's count."""
        base = target.base
        if base is not None and base.num_bins:
            return cls(base.num_bins, tuple(target.bins_by_fill(base.num_bins)))
        return cls(num_bins)

    def bin_of(self, task: int) -> int:
        """The bin task ``task`` fills."""
        if self.num_bins is None:
            return task
        return (self.by_fill or range(self.num_bins))[task % self.num_bins]


def commit_results(
    target: Transaction,
    bins: TaskBins,
    results: Iterable[tuple[int, Sequence[PartInfo]]],
    *,
    tag: str,
    metadata: Mapping[str, Any],
) -> CommitInfo:
    """Name the parts of a parallel write's tasks in one commit, then tidy up.

    Parameters
    ----------
    target
        The write's transaction.
    bins
        Which bin each task filled.
    results
        ``(task, parts)`` for every task whose run the engine kept (a task's other,
        killed or repeated, runs are not listed). Task order is the global order,
        and each task's records are one contiguous run of its bin.
    tag
        The write's tag, which starts the name of every part its tasks made.
    metadata
        Merged into the manifest's metadata.

    Returns
    -------
    CommitInfo
        For the parts of write ``tag`` the manifest names: this commit's, or those of
        an earlier run of it that got through (a retried commit task).

    Notes
    -----
    If the commit fails, the listed parts are removed (unless a commit named them
    after all). After it, every other file of write ``tag`` is removed: parts of
    task runs the engine did not keep.
    """
    done = sorted(results, key=lambda r: r[0])
    num_bins = bins.num_bins if bins.num_bins is not None else max(t for t, _ in done) + 1
    new_parts: dict[int, list[PartInfo]] = {}
    deals: list[tuple[int, tuple[int, ...]]] = []
    for task, parts in done:
        count = sum(p.count for p in parts)
        if count:
            b = bins.bin_of(task)
            deals.append((count, (b,)))
            new_parts.setdefault(b, []).extend(parts)
    written = [p for ps in new_parts.values() for p in ps]
    change = AddRecords(target.mode, num_bins, new_parts, deals, dict(metadata))
    try:
        manifest = target.commit(change, tag=tag, new_parts=written)
    except BaseException:
        target.abandon(written)
        raise
    target.collect(manifest, tag)
    ours = [p for p in manifest.parts() if tagged(p.path, tag)]
    return CommitInfo.of(target.store.urlpath, manifest, ours)

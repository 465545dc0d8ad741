"""The commit protocol: the one code path that makes a new version of a dataset.

Every writer (``SplitWriter``, ``write_split_data``, ``to_split_bins``, compaction)
writes new, uniquely named parts first, then hands a *change* (``_changes``) to
:meth:`Transaction.commit`. The commit builds the newest version's manifest, applies
the change, and creates the next version's log entry (``_log/<N+1>.json``) only if
it does not exist yet: a conditional create (S3 ``If-None-Match: *``, a local hard
link), so no file is ever replaced. When another writer created it first, the same
change is applied to that newer version and tried again, without rewriting data.

Versions and the parts they name are kept for their readers until their retention
has passed; ``_gc`` removes the rest. Engines that write in parallel tasks (Dask,
Ray) commit through :func:`commit_results`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from splitdask._dataset import _legacy
from splitdask._dataset._snapshot import read_manifest
from splitdask._dataset._versions import (
    Listing,
    list_log,
    load_version,
    read_entry,
    read_head,
    remember,
)
from splitdask._format import BINS_DIR, MANIFEST_NAME, Manifest, PartInfo
from splitdask._format._log import STUB, Entry, checkpoint_name, diff, entry_name
from splitdask._store import Store
from splitdask._write._changes import Change, Mode
from splitdask._write._cleanup import tagged, tidy, warn_left
from splitdask._write._gc import collect_expired
from splitdask._write._retention import (
    CHECKPOINT_EVERY,
    DEFAULT_KEEP_VERSIONS,
    DEFAULT_RETENTION,
    check_retention,
    write_checkpoint,
)
from splitdask.errors import CommitConflictError, SplitDaskError

__all__ = [
    "CHECKPOINT_EVERY",
    "DEFAULT_KEEP_VERSIONS",
    "DEFAULT_RETENTION",
    "DEFAULT_RETRIES",
    "CommitInfo",
    "Transaction",
    "check_retention",
    "read_current",
]

DEFAULT_RETRIES = 20
"""Times a commit that lost a race re-bases and tries again."""


def read_current(store: Store) -> Manifest | None:
    """The newest committed manifest (of a log, or of a dataset from before versions)."""
    return read_manifest(store)


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
        The version now committed (0 for a dataset that was never written); also
        :attr:`version`.
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

    @property
    def version(self) -> int:
        """The version this commit made (the same number as :attr:`generation`)."""
        return self.generation

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
    keep_versions: int = DEFAULT_KEEP_VERSIONS
    tag: str | None = None
    """The user's label for the version this write makes."""

    @classmethod
    def begin(
        cls,
        store: Store,
        mode: Mode,
        *,
        retention: float = DEFAULT_RETENTION,
        retries: int = DEFAULT_RETRIES,
        keep_versions: int = DEFAULT_KEEP_VERSIONS,
        tag: str | None = None,
    ) -> Transaction:
        """Check ``mode`` against what is at ``store``; raise before anything is written."""
        if mode not in ("a", "w", "x"):
            raise ValueError(f"mode must be 'a', 'w' or 'x', got {mode!r}")
        check_retention(retention, keep_versions)
        if tag is not None and (not isinstance(tag, str) or not tag or tag.isdigit()):
            raise ValueError(f"tag must be a non-empty string that is not a number, not {tag!r}")
        current = read_current(store)
        has_legacy = current is None and _legacy.is_legacy(store)
        if mode == "x" and (current is not None or has_legacy):
            raise FileExistsError(f"a dataset already exists at {store.urlpath}")
        if mode == "a" and has_legacy:
            raise SplitDaskError(
                f"{store.urlpath} holds a splitdataloader 0.0.1 dataset: splitdask reads it "
                "but does not append to it; write to a new location or replace it (mode='w', "
                "start_clean=True)"
            )
        store.check_writable()  # folders are made with the first part, not before
        return cls(
            store,
            mode,
            current,
            has_legacy and mode == "w",
            float(retention),
            retries,
            keep_versions=keep_versions,
            tag=tag,
        )

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
    ) -> tuple[Manifest, Entry | None]:
        """Make the next version: ``change`` applied to the newest, in one conditional create.

        Parameters
        ----------
        change
            What the commit does; applied again to a newer version after a lost race.
        tag
            The write's tag: if a version since this write began was made by it, an
            earlier run of this very commit got through (its caller died before
            hearing of it), and that version is returned instead of committing twice.
        new_parts
            The parts the change names, checked to still exist when the write has
            run for longer than half the retention period (``gc`` may have taken
            them for a dead writer's leftovers).

        Returns
        -------
        (manifest, entry)
            The version committed and its log entry; ``entry`` is ``None`` when this
            call committed nothing (nothing to change, or an earlier run committed).

        Raises
        ------
        CommitConflictError
            If every try lost a race, or the change cannot apply to what another
            writer committed (``mode="x"`` and the dataset now exists).
        """
        store, where = self.store, self.store.urlpath
        self._check_parts_exist(new_parts)
        for attempt in range(self.retries + 1):
            listing = list_log(store)
            if not listing.versions and not self._ensure_log():
                continue  # another writer changed a dataset from before versions
            now = load_version(store, None, listing if listing.versions else None)
            if (landed := self._landed(now, tag)) is not None:
                return landed, None
            when = time.time()
            manifest = change.apply(now, when, where)
            if manifest is now:  # nothing to commit
                return manifest, None
            op, reset = change.op(now)
            entry = diff(
                now,
                manifest,
                op=op,
                reset=reset,
                write=tag,
                tag=self.tag,
                when=when,
                written=new_parts,
            )
            manifest.validate(where)
            try:
                created = store.create_exclusive(entry_name(entry.version), entry.to_json())
            except Exception as exc:
                # No clean answer (the connection dropped, the response was lost, the
                # retries ran out): the server may have created it all the same.
                landed = self._settle(exc, entry, tag)
                if landed.uid == entry.uid:
                    remember(store, manifest, entry)
                    self._after_commit(manifest, entry, listing)
                    return manifest, entry
                return landed, None  # a later version naming this write's parts
            if created:
                remember(store, manifest, entry)
                self._after_commit(manifest, entry, listing)
                return manifest, entry
            # Lost the race: back off a little, at random, so writers interleave.
            time.sleep(random.uniform(0, min(1.0, 0.01 * 2**attempt)))
        raise CommitConflictError(
            f"{where}: {self.retries + 1} commit attempts each lost the race to another "
            "writer; nothing was committed by this one (raise retries= to wait longer)"
        )

    def _ensure_log(self) -> bool:
        """Make the dataset a log if it is not one yet; whether it is one now.

        A new dataset gets the stub. A dataset from before versions gets a checkpoint
        of its manifest as the log's first version, then the stub replaces its
        manifest in one compare-and-swap (older libraries then refuse it by version).
        """
        store = self.store
        head = read_head(store)
        if head.log:
            return True
        if head.manifest is None:
            return store.create_exclusive(MANIFEST_NAME, STUB)
        info = {"time": time.time(), "op": "convert", "tag": None, "written": [0, 0, 0]}
        write_checkpoint(store, head.manifest, info)
        data, token = store.read_versioned(MANIFEST_NAME)
        if data == head.data and store.replace_if(MANIFEST_NAME, STUB, token) is not None:
            return True
        # A writer that predates versions committed meanwhile: convert its state instead.
        tidy(store, [checkpoint_name(head.manifest.generation)], "a stale checkpoint")
        return False

    def _landed(self, now: Manifest | None, tag: str) -> Manifest | None:
        """``now`` if a version made since this write began is this write's own."""
        since = self.current.generation if self.current is not None else 0
        if now is None or not tag or now.generation <= since:
            return None
        for v in range(now.generation, since, -1):
            try:
                if read_entry(self.store, v).write == tag:
                    return now
            except FileNotFoundError:
                break  # collected, or converted from before versions: not ours
        return None

    def _settle(self, exc: Exception, entry: Entry, tag: str) -> Manifest:
        """After a commit request that failed without a clean answer: read the log back
        and return the version if the commit landed (``entry``'s own, or a later one
        after a version of this write); raise, saying which, if it did not or if that
        cannot be told."""
        where = self.store.urlpath
        try:
            now = load_version(self.store)
            mine = read_entry(self.store, entry.version) if now is not None else None
        except FileNotFoundError:
            mine = None
        except Exception as again:
            raise OSError(
                f"{where}: the commit request failed ({exc}), and reading the log back "
                f"to see whether it landed failed too ({again}); check the dataset (splitdask "
                "log) before writing again: if the commit landed, a retry adds its records "
                "twice"
            ) from exc
        if now is not None and mine is not None and mine.uid == entry.uid:
            return load_version(self.store, entry.version) or now
        if (landed := self._landed(now, tag)) is not None:
            return landed
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

    def _after_commit(self, manifest: Manifest, entry: Entry, listing: Listing) -> None:
        """Housekeeping after a commit, never an error: a checkpoint every
        :data:`CHECKPOINT_EVERY` versions, a replaced splitdataloader dataset's
        files, and versions (with their parts) past their retention."""
        if manifest.generation % CHECKPOINT_EVERY == 0:
            try:
                write_checkpoint(self.store, manifest, entry.info())
            except Exception as exc:
                warn_left(self.store, f"a checkpoint of version {manifest.generation}", exc)
        if self.replaces_legacy:
            try:
                _legacy.remove(self.store)
            except Exception as exc:
                warn_left(self.store, "the replaced splitdataloader files", exc)
        try:
            listed = Listing(listing.entries | {entry.version}, listing.checkpoints)
            collect_expired(self.store, self.retention, self.keep_versions, entry, listed)
        except Exception as exc:
            warn_left(self.store, "versions past their retention", exc)

    def abandon(self, parts: Iterable[PartInfo]) -> None:
        """Remove parts that were written but will never be committed (any that the
        manifest names after all, because a commit went through, are kept)."""
        rels = [p.path for p in parts]
        if not rels:
            self.store.remove_empty_dirs()
            return
        try:
            named = read_manifest(self.store)
        except Exception:
            named = None
        keep = {p.path for p in named.parts()} if named else set()
        tidy(self.store, [r for r in rels if r not in keep], "uncommitted parts")
        self.store.remove_empty_dirs()

    def collect(self, keep: set[str], tag: str) -> None:
        """Remove the files of write ``tag`` other than the parts ``keep`` names (those
        its commit named): the parts and temp files of killed or repeated task runs."""
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
        named = manifest.parts() if manifest is not None else []
        self.collect({p.path for p in named if tagged(p.path, tag)}, tag)

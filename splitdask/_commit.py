"""The commit protocol: the one code path that replaces a manifest, and its cleanup.

Every writer (``SplitWriter``, ``write_split_data``, ``to_split_bins``) writes new,
uniquely named parts first, then hands them to :meth:`Transaction.commit`, which
names them in a new manifest in one atomic replacement. What a write leaves
unnamed (the parts of an aborted write, of a killed or repeated task, of a
replaced dataset) is removed by :func:`tidy`, the single cleanup rule: a failure
to remove loses nothing and is reported as a warning, never as an error.
"""

from __future__ import annotations

import secrets
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from splitdask import _legacy
from splitdask._format import BINS_DIR, MANIFEST_NAME, Manifest, PartInfo, Segment, parse_part_name
from splitdask._snapshot import read_manifest
from splitdask._store import Store
from splitdask.errors import CommitConflictError, SplitDaskError

__all__ = ["CommitInfo", "Mode", "Transaction", "new_tag", "tagged", "tidy"]

Mode = Literal["a", "w", "x"]


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


def new_tag() -> str:
    """A fresh tag for one write: it starts the uid of every part the write makes."""
    return secrets.token_hex(8)


def tagged(name: str, tag: str) -> bool:
    """Whether a file under ``bins/`` (a part or its temp file) belongs to write ``tag``."""
    parsed = parse_part_name(name)
    return parsed is not None and parsed[1].startswith(tag)


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

    @classmethod
    def begin(cls, store: Store, mode: Mode) -> Transaction:
        """Check ``mode`` against what is at ``store``; raise before anything is written."""
        if mode not in ("a", "w", "x"):
            raise ValueError(f"mode must be 'a', 'w' or 'x', got {mode!r}")
        current = read_manifest(store)
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
        return cls(store, mode, current, has_legacy and mode == "w")

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

    def commit(
        self,
        num_bins: int,
        new_parts: Mapping[int, Sequence[PartInfo]],
        segments: Sequence[Segment],
        metadata: Mapping[str, Any] | None = None,
    ) -> Manifest:
        """Write the manifest naming the base's parts plus ``new_parts`` (atomic).

        ``segments`` are absolute: they start at the base's record count, and their
        ``first`` indices count the base's records of each bin. Parts of a replaced
        dataset are removed only after the new manifest is in place.

        Raises
        ------
        CommitConflictError
            If another writer committed since this transaction began.
        """
        store, base = self.store, self.base
        now = read_manifest(store)
        if (now.uid if now else None) != (self.current.uid if self.current else None):
            raise CommitConflictError(
                f"{store.urlpath} was committed by another writer while this one was "
                "writing; nothing was committed by this one"
            )
        if base is not None and not segments:
            return base
        old_bins = list(base.bins) if base else []
        old_bins += [()] * (num_bins - len(old_bins))
        bins = tuple(tuple(old) + tuple(new_parts.get(b, ())) for b, old in enumerate(old_bins))
        manifest = Manifest(
            bins=bins,
            order=(*(base.order if base else ()), *segments),
            generation=(now.generation if now else 0) + 1,
            uid=secrets.token_hex(8),
            metadata={**(base.metadata if base else {}), **(metadata or {})},
        )
        manifest.validate(store.urlpath)
        store.write_atomic(MANIFEST_NAME, manifest.to_json())
        self.after_commit(manifest)
        return manifest

    def after_commit(self, manifest: Manifest) -> None:
        """Remove what ``manifest`` replaced: the previous dataset's parts when this
        overwrote it, and a replaced splitdataloader dataset's files."""
        if self.mode == "w" and self.current is not None:
            keep = {p.path for p in manifest.parts()}
            old = [p.path for p in self.current.parts() if p.path not in keep]
            tidy(self.store, old, "replaced parts")
        if self.replaces_legacy:
            try:
                _legacy.remove(self.store)
            except Exception as exc:
                _warn_left(self.store, "the replaced splitdataloader files", exc)

    def abandon(self, parts: Iterable[PartInfo]) -> None:
        """Remove parts that were written but will never be committed."""
        tidy(self.store, [p.path for p in parts], "uncommitted parts")

    def committed_by(self, tag: str) -> Manifest | None:
        """The committed manifest, if it names a part of the write tagged ``tag``.

        A commit whose process dies after the manifest was replaced but before its
        caller heard of it is run again (a Dask retry); it must report that commit.
        """
        now = read_manifest(self.store)
        if now is not None and any(tagged(p.path, tag) for p in now.parts()):
            return now
        return None

    def collect(self, manifest: Manifest, tag: str) -> None:
        """Remove the files of write ``tag`` that ``manifest`` does not name: the
        parts and temp files of killed or repeated task runs."""
        keep = {p.path for p in manifest.parts()}
        try:
            names = self.store.list_dir(BINS_DIR)
        except Exception as exc:
            _warn_left(self.store, f"the unnamed parts of write {tag}", exc)
            return
        doomed = [f"{BINS_DIR}/{n}" for n in names if tagged(n, tag)]
        tidy(self.store, [rel for rel in doomed if rel not in keep], "unreferenced parts")


def tidy(store: Store, rels: Sequence[str], what: str) -> None:
    """Remove files no manifest names; on failure warn, leaving them as garbage.

    Losing this cleanup loses nothing, so it never turns a write that succeeded
    into an error (a caller would then abandon parts it just committed).
    """
    if not rels:
        return
    try:
        store.remove(rels)
    except Exception as exc:
        _warn_left(store, f"{len(rels)} {what}", exc)


def _warn_left(store: Store, what: str, exc: Exception) -> None:
    warnings.warn(
        f"{store.urlpath}: could not remove {what} ({type(exc).__name__}: {exc}); they "
        "are not part of the dataset and can be deleted by hand",
        RuntimeWarning,
        stacklevel=3,
    )

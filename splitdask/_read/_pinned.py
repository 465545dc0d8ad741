"""The location and pinned version of a dataset that training adapters pickle to
their workers (:mod:`splitdask.torch`): each process opens that version on first use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from splitdask._dataset._snapshot import Snapshot, identity_key, open_snapshot
from splitdask._read._records import RecordReader
from splitdask._store import CacheDir, UrlPath, cache_report, open_store
from splitdask._util._validate import check_version
from splitdask.errors import ResumeStateError, SplitDaskError

__all__ = ["Pinned", "identity_key"]


class Pinned:
    """A dataset location and version, opened on first use in each process.

    What the torch datasets share: the version opened first (or named) is pinned
    and travels with a pickled copy (with the cache settings), so a worker opens
    exactly that version, whatever was committed since.
    """

    def __init__(
        self,
        urlpath: UrlPath,
        storage_options: Mapping[str, Any] | None,
        cache_dir: CacheDir = None,
        cache_bytes: int | str | None = None,
        version: int | str | None = None,
    ) -> None:
        self._store = open_store(
            urlpath, storage_options, cache_dir=cache_dir, cache_bytes=cache_bytes
        )
        self._no_cache = cache_dir is False
        self._version = check_version(version)  # a number once opened
        self._snap: Snapshot | None = None
        self._reader: RecordReader | None = None
        self._identity: str | None = None

    @property
    def snapshot(self) -> Snapshot:
        """The version this process reads now (see :attr:`version`)."""
        if self._snap is None:
            snap = open_snapshot(self._store, self._version)
            ident = identity_key(snap)
            if self._version is None and self._identity not in (None, ident):
                # No version to pin: a splitdataloader dataset, or a copy pickled
                # before versions; it must still be what the main process opened.
                raise SplitDaskError(
                    f"{self._store.urlpath}: the dataset was committed to after this "
                    "dataset object was made (a worker would read another snapshot than "
                    "the main process); make a new dataset object"
                )
            self._snap, self._identity, self._version = snap, ident, snap.version
        return self._snap

    @property
    def version(self) -> int | None:
        """The dataset version read: the newest when this object was made, or the one
        ``version=`` named (``None`` for a splitdataloader dataset)."""
        return self._pinned()

    def _pinned(self) -> int | None:
        _ = self.snapshot
        return self._version if isinstance(self._version, int) else None

    def _snapshot_of(self, version: int | None) -> Snapshot:
        """The snapshot of ``version``: this process's own if it is that one."""
        snap = self.snapshot
        if version is None or snap.version == version:
            return snap
        return open_snapshot(self._store, version)

    def _use(self, version: int | None) -> Snapshot:
        """Make ``version`` the one this process reads (closing the reader of another)."""
        snap = self._snapshot_of(version)
        if snap is not self._snap:
            reader, self._reader, self._snap = self._reader, None, snap
            if reader is not None:
                reader.close()
        return snap

    @property
    def reader(self) -> RecordReader:
        if self._reader is None:
            self._reader = RecordReader(self.snapshot)
        return self._reader

    def _location(self) -> dict[str, Any]:
        cache = self._store.cache
        return {
            "urlpath": self._store.urlpath,
            "storage_options": self._store.storage_options,
            "identity": self._identity,
            "version": self._version,
            "cache": False if cache is None else (cache.directory, cache.limit),
            "no_cache": self._no_cache,
        }

    def _open_location(self, state: dict[str, Any]) -> None:
        directory, limit = state["cache"] or (None, None)
        self._store = open_store(
            state["urlpath"],
            state["storage_options"],
            cache_dir=directory or False,
            cache_bytes=limit,
        )
        self._snap, self._reader, self._identity = None, None, state["identity"]
        self._version = state.get("version")  # absent: pickled before versions (the newest)
        self._no_cache = state["no_cache"]

    def cache_info(self) -> dict[str, Any] | None:
        """The local part cache's counters in this process and its directory's
        contents (see :meth:`splitdask.SplitDataLoader.cache_info`); ``None`` without one."""
        return cache_report(self._store.cache)

    def state_snapshot(self, state: Mapping[str, Any]) -> Snapshot:
        """The snapshot a state resumes: the version it names (a state of version 1
        names none: the version this object opened)."""
        if state.get("version") == 1:
            return self._snapshot_of(self._pinned())
        version: Any = state.get("dataset_version")
        if version is not None and (type(version) is not int or version < 1):
            raise ResumeStateError(f"damaged SplitIterableDataset state: {str(state)[:200]}")
        if version is None and self.snapshot.version is not None:
            raise ResumeStateError(
                f"this state was saved for a splitdataloader dataset, but "
                f"{self._store.urlpath} is a splitdask dataset (version {self.snapshot.version})"
            )
        try:
            return self._snapshot_of(version)
        except ValueError as exc:  # no such version yet: another dataset's state
            raise ResumeStateError(f"this state was saved for another dataset: {exc}") from None

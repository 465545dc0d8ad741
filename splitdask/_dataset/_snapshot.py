"""A :class:`Snapshot`: one committed state of a dataset, immutable once opened.

Every reader works from a snapshot: the loader, the Dask bag, and the engines built
on them. :func:`open_snapshot` is the one place that reads a manifest (or a legacy
index) and turns it into parts, bins and the global order, so all of them see the
same dataset and report a missing part with the same words.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from splitdask._dataset import _legacy
from splitdask._dataset._index import BinOrder, Locator
from splitdask._dataset._parts import Part, part_of
from splitdask._dataset._versions import list_log, load_version, read_head, tagged_version
from splitdask._format import BINS_DIR, MANIFEST_NAME, Manifest
from splitdask._format._parttable import EditedBins, PartTable
from splitdask._store import Store
from splitdask._util._lazyseq import LazySequence
from splitdask._util._validate import check_version
from splitdask.errors import (
    CorruptDatasetError,
    DatasetNotFoundError,
    SnapshotExpiredError,
    SplitDaskError,
)

__all__ = [
    "Snapshot",
    "identity_key",
    "missing_part",
    "open_snapshot",
    "read_manifest",
    "reading_parts",
    "snapshot_of",
]


@dataclass(frozen=True, eq=False)
class Snapshot:
    """The parts of every bin and the global order, as one commit left them.

    Attributes
    ----------
    store
        Where the dataset lives.
    parts
        Every part, bin by bin (part ids index this tuple).
    bin_parts
        Part ids of each bin, in stored order.
    locator
        Global index -> ``(part id, record within part)``.
    manifest
        The manifest this was opened from; ``None`` for a splitdataloader dataset.
    """

    store: Store
    parts: Sequence[Part]
    bin_parts: Sequence[Sequence[int]]
    locator: Locator
    num_records: int
    manifest: Manifest | None = None

    @property
    def num_bins(self) -> int:
        return len(self.bin_parts)

    @property
    def generation(self) -> int | None:
        """The version (``None`` for a splitdataloader dataset)."""
        return self.manifest.generation if self.manifest else None

    @property
    def version(self) -> int | None:
        """The version this snapshot is (``None`` for a splitdataloader dataset)."""
        return self.generation

    def reading(self, rel: str | None = None) -> reading_parts:
        """Around reads of this snapshot's parts: :class:`reading_parts`."""
        return reading_parts(self.store, self.generation, rel)

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self.manifest.metadata) if self.manifest else {}

    @property
    def identity(self) -> tuple[Any, ...]:
        """What names this committed state, for deterministic task names."""
        if self.manifest is not None:
            return ("splitdask", self.store.urlpath, self.manifest.uid, self.manifest.generation)
        return (
            "splitdataloader",
            self.store.urlpath,
            [(p.path, p.size, p.count) for p in self.parts],
        )

    def bin_counts(self) -> list[int]:
        """Number of records in each bin."""
        if self.manifest is not None:
            return self.manifest.bin_counts()
        return [sum(self.parts[p].count for p in pids) for pids in self.bin_parts]

    def bin(self, bin_index: int) -> tuple[Part, ...]:
        """The parts of one bin, in stored order."""
        return tuple(self.parts[p] for p in self.bin_parts[bin_index])

    @property
    def nbytes(self) -> int:
        """Total size of the records (payload bytes, without framing)."""
        return sum(p.payload for p in self.parts)


def read_manifest(store: Store, version: int | str | None = None) -> Manifest | None:
    """The manifest of ``version`` (``None``: the newest; a string: the newest version
    with that tag) at ``store``, or ``None`` when nothing was committed there.

    Raises
    ------
    SnapshotExpiredError
        If ``version`` was removed by ``gc``.
    ValueError
        If there is no such version yet.
    """
    version = check_version(version)
    listing = list_log(store)
    if listing.versions:  # a log: its stub need not be read
        if isinstance(version, str):
            version = tagged_version(store, version)
        return load_version(store, version, listing)
    head = read_head(store)
    if head.log:
        if version is not None:
            raise ValueError(f"{store.urlpath} has no version {version!r} yet")
        return None  # being created
    if version is not None and head.manifest is not None and version != head.manifest.generation:
        raise ValueError(
            f"{store.urlpath} was written before versions: it has only version "
            f"{head.manifest.generation}, not {version!r}"
        )
    if version is not None and head.manifest is None:
        raise DatasetNotFoundError(f"no splitdask dataset at {store.urlpath}")
    return head.manifest


def snapshot_of(store: Store, manifest: Manifest) -> Snapshot:
    """The snapshot of an already parsed manifest."""
    if isinstance(manifest.bins, PartTable | EditedBins):
        # A checkpoint's columns: parts become objects only when they are read.
        counts, part_bin, first = manifest.bins.layout
        locator = Locator.of_arrays(BinOrder(manifest.order), counts, part_bin, first)
        parts = LazyParts(manifest.bins, len(counts))
        return Snapshot(store, parts, BinRanges(first), locator, manifest.num_records, manifest)
    made = tuple(map(part_of, manifest.parts()))
    locator = Locator(BinOrder(manifest.order), [[p.count for p in b] for b in manifest.bins])
    return _assemble(store, made, locator, manifest.num_records, manifest)


class BinRanges(LazySequence[range]):
    """Part ids of each bin, for parts numbered bin by bin: ``first[b]`` to ``first[b + 1]``."""

    _what = "bin"

    def __init__(self, first: npt.NDArray[np.int64]) -> None:
        super().__init__(len(first) - 1)
        self._first = first

    def _make(self, b: int) -> range:
        return range(int(self._first[b]), int(self._first[b + 1]))


class LazyParts(LazySequence[Part]):
    """A part table's parts, each made (and kept) when first asked for."""

    _what = "part"

    def __init__(self, table: PartTable | EditedBins, num_parts: int) -> None:
        super().__init__(num_parts)
        self._table = table

    def _make(self, pid: int) -> Part:
        return part_of(self._table.part(pid))


def open_snapshot(store: Store, version: int | str | None = None) -> Snapshot:
    """The dataset committed at ``store`` (a splitdask version or a legacy index):
    ``version`` as :func:`read_manifest` takes it.

    Raises
    ------
    DatasetNotFoundError
        If nothing was ever committed there; it says when the bucket is missing.
    CorruptDatasetError, FormatVersionError
        If the manifest or legacy index is damaged or from an unknown version.
    """
    manifest = read_manifest(store, version)
    if manifest is not None:
        return snapshot_of(store, manifest)
    if _legacy.is_legacy(store):
        order, legacy_parts = _legacy.load(store)
        locator = Locator(order, [[p.count] for p in legacy_parts])
        return _assemble(store, tuple(legacy_parts), locator, len(order.bins), None)
    if (bucket := store.missing_bucket()) is not None:
        raise DatasetNotFoundError(
            f"no splitdask dataset at {store.urlpath}: bucket {bucket!r} does not exist"
        )
    raise not_a_dataset(store)


def not_a_dataset(store: Store) -> DatasetNotFoundError:
    """The error for a location with no dataset, saying what is there instead: nothing,
    a file, an empty folder, or a folder of files (for which ``splitdask import`` makes
    a dataset)."""
    url = store.urlpath
    make = f"to make a dataset of it, run `splitdask import {url} DEST --bins N`"
    entries = store.list_dir("")
    if BINS_DIR in entries:
        return DatasetNotFoundError(
            f"no splitdask dataset at {url}: it holds {BINS_DIR}/ but no committed version "
            f"(a writer that never committed; `splitdask gc {url}` removes its files)"
        )
    if entries:
        return DatasetNotFoundError(
            f"no splitdask dataset at {url}: it is a folder of {len(entries):,} entries "
            f"without {MANIFEST_NAME}, _log/ or splitdataloader's {_legacy.INDEX_NAME}; "
            f"{make}"
        )
    if not store.exists(""):
        return DatasetNotFoundError(f"no splitdask dataset at {url}: nothing is there")
    try:
        with store.open_read(""):
            pass
    except (OSError, ValueError):  # a folder: a local store refuses to open one
        return DatasetNotFoundError(
            f"no splitdask dataset at {url}: it is an empty folder (a writer makes one)"
        )
    return DatasetNotFoundError(f"{url} is a file, not a splitdask dataset (a folder): {make}")


def _assemble(
    store: Store, parts: tuple[Part, ...], locator: Locator, n: int, manifest: Manifest | None
) -> Snapshot:
    bin_parts: list[list[int]] = [[] for _ in locator.bin_base]
    for pid, b in enumerate(locator.part_bin):
        bin_parts[b].append(pid)
    return Snapshot(store, parts, tuple(map(tuple, bin_parts)), locator, n, manifest)


class reading_parts:  # lower case, as contextlib.suppress: used like a function
    """Around reads of parts that a snapshot of ``generation`` lists: a part the store
    lacks raises :func:`missing_part`'s error, naming ``rel`` (by default the file
    the store's ``FileNotFoundError`` names).

    A class rather than ``contextlib.contextmanager``: every part open enters it, and
    a generator costs several calls more.
    """

    __slots__ = ("generation", "rel", "store")

    def __init__(self, store: Store, generation: int | None, rel: str | None = None) -> None:
        self.store, self.generation, self.rel = store, generation, rel

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, FileNotFoundError):
            rel = str(exc.filename) if self.rel is None else self.rel
            raise missing_part(self.store, rel, self.generation) from None


def missing_part(store: Store, rel: str, generation: int | None) -> SplitDaskError:
    """The error for a part that a snapshot of ``generation`` names but the store lacks.

    If the dataset has moved on and no longer names the part, the snapshot expired
    (its parts outlived their retention); if it still names it, the dataset is damaged.
    """
    try:
        now = read_manifest(store)
    except Exception:
        now = None
    if (
        now is not None
        and generation is not None
        and now.generation != generation
        and rel not in {p.path for p in now.parts()}
    ):
        try:
            oldest = f"; the oldest version kept is {list_log(store).oldest}"
        except Exception:
            oldest = ""
        return SnapshotExpiredError(
            f"{store.where(rel)}: this reader's version ({generation}) has expired: the "
            f"dataset was overwritten or compacted since (it is at version {now.generation}) "
            f"and the replaced parts were removed after their retention period{oldest}; open "
            "a new loader (or build a new bag) to read the dataset as it is now"
        )
    return CorruptDatasetError(f"{store.where(rel)}: listed in the manifest but missing")


def identity_key(snap: Snapshot) -> str:
    """A short name of a committed state, to tell resume states of other data apart."""
    blob = json.dumps(snap.identity, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]

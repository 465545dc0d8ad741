"""Dask bags and datasets: :func:`to_split_bins` writes a Bag, :func:`read_split_bins` reads one.

One Dask partition is one bin. Writing, every partition's task writes its records
to new parts that nothing references yet, and one commit task, which depends on
all of them, names the parts it was handed in a new manifest (one atomic
replacement). Dask may run a partition task more than once (its worker died, the
task was retried); each run writes parts under fresh names and only the results
Dask hands to the commit become part of the dataset, so every record of the Bag is
stored exactly once. Reading, partition ``k`` reads bin ``k`` as the manifest
listed it when the Bag was built, so all partitions see one snapshot.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast, overload

import dask.bag as db
import numpy as np
from dask.bag.core import reify
from dask.base import tokenize
from dask.delayed import Delayed, delayed
from dask.highlevelgraph import HighLevelGraph

from splitdask import legacy
from splitdask.errors import CommitConflictError, CorruptDatasetError, DatasetNotFoundError
from splitdask.format import (
    BINS_DIR,
    MANIFEST_NAME,
    Manifest,
    PartInfo,
    Segment,
    decode_footer,
)
from splitdask.index import IntArray, resolve_seed
from splitdask.reader import iter_records
from splitdask.storage import Store, UrlPath, read_manifest
from splitdask.writer import CommitInfo, WriteTarget, write_bin_part

if TYPE_CHECKING:
    from splitdask.reader import SplitDataLoader

__all__ = ["read_split_bins", "to_split_bins"]

log = logging.getLogger(__name__)


# -- writing ---------------------------------------------------------------------------


@overload
def to_split_bins(
    bag: db.Bag,
    urlpath: UrlPath,
    *,
    storage_options: Mapping[str, Any] | None = ...,
    append: bool = ...,
    overwrite: bool = ...,
    compute: Literal[True] = ...,
    metadata: Mapping[str, Any] | None = ...,
    part_max_bytes: int = ...,
    compute_kwargs: Mapping[str, Any] | None = ...,
) -> CommitInfo: ...


@overload
def to_split_bins(
    bag: db.Bag,
    urlpath: UrlPath,
    *,
    storage_options: Mapping[str, Any] | None = ...,
    append: bool = ...,
    overwrite: bool = ...,
    compute: Literal[False],
    metadata: Mapping[str, Any] | None = ...,
    part_max_bytes: int = ...,
    compute_kwargs: Mapping[str, Any] | None = ...,
) -> Delayed: ...


def to_split_bins(
    bag: db.Bag,
    urlpath: UrlPath,
    *,
    storage_options: Mapping[str, Any] | None = None,
    append: bool = False,
    overwrite: bool = False,
    compute: bool = True,
    metadata: Mapping[str, Any] | None = None,
    part_max_bytes: int = 256 << 20,
    compute_kwargs: Mapping[str, Any] | None = None,
) -> CommitInfo | Delayed:
    """Write a Bag of byte records as a dataset, one bin per partition.

    Parameters
    ----------
    bag
        A ``dask.bag.Bag`` whose items are bytes-like (``bytes``, ``bytearray``,
        ``memoryview`` or any C-contiguous buffer).
    urlpath
        Dataset root: local path or fsspec URL. Every worker must reach it (a local
        path on a multi-machine cluster must be a shared filesystem).
    storage_options
        Passed to fsspec, in the client and on the workers.
    append
        Add the records after the existing ones (or create the dataset). The bin
        count of an existing dataset never changes: partition ``p`` goes to the
        ``p % num_bins``-th bin in order of fill (fewest records first, ties by
        bin number), so with as many partitions as bins and balanced bins,
        partition ``p`` goes to bin ``p``; fewer partitions fill the emptiest bins;
        more partitions put several parts in one bin.
    overwrite
        Replace an existing dataset. Its data stays readable until the new manifest
        is committed; its parts are removed after that.
    compute
        Write now and return a :class:`~splitdask.CommitInfo`; with ``False``,
        return a ``dask.delayed.Delayed`` that writes and commits when computed.
        Nothing is visible before that; computing it again reports the same
        commit and adds nothing.
    metadata
        JSON-serialisable mapping stored in the manifest (merged over the existing
        metadata when appending).
    part_max_bytes
        A partition's records go to one part unless they exceed this size (checked
        at each few-MiB flush), then to several parts of the same bin.
    compute_kwargs
        Passed to ``compute`` with ``compute=True`` (``scheduler=...``,
        ``retries=...`` on a distributed client, ...). Without them the write runs
        on the active distributed client, else on Dask's threads.

    Returns
    -------
    CommitInfo or Delayed
        ``CommitInfo`` for this write (records, record bytes and parts added) and
        for the dataset after it (``num_records``, ``num_bins``, ``generation``);
        the ``Delayed`` computes to the same.

    Raises
    ------
    FileExistsError
        If a dataset exists at ``urlpath`` and neither ``append`` nor ``overwrite``
        is set; raised here, before any task runs.
    TypeError
        When computed, if an item is not bytes-like; the message names the
        partition, the item's position in it and its type. Nothing is committed.
    CommitConflictError
        If another writer committed to ``urlpath`` between this call and the
        commit; nothing of this write is committed.

    Notes
    -----
    Exactly once: a partition task that dies or fails and is run again writes new
    parts; only the parts returned by the run Dask hands to the commit are named
    by the manifest. After committing, the parts of this write that the manifest
    does not name (left by killed or duplicated task runs) are removed. A write
    that fails before its commit can leave unnamed parts behind, which readers
    never see.

    Examples
    --------
    >>> bag = db.read_text("raw/*.jsonl").map(json.loads).map(encode)  # doctest: +SKIP
    >>> to_split_bins(bag, "s3://bucket/train", storage_options=opts)  # doctest: +SKIP
    CommitInfo(urlpath='s3://bucket/train', generation=1, records_written=..., ...)
    >>> later = to_split_bins(bag2, "s3://b/train", append=True, compute=False)  # doctest: +SKIP
    >>> later.compute()  # doctest: +SKIP
    """
    if not isinstance(bag, db.Bag):
        raise TypeError(f"bag must be a dask.bag.Bag, not {type(bag).__name__}")
    if append and overwrite:
        raise ValueError("append and overwrite are mutually exclusive")
    if isinstance(part_max_bytes, bool) or not isinstance(part_max_bytes, int):
        raise TypeError(f"part_max_bytes must be an int, not {type(part_max_bytes).__name__}")
    if part_max_bytes < 1:
        raise ValueError(f"part_max_bytes must be positive, got {part_max_bytes}")
    nparts = bag.npartitions
    if nparts == 0 and not append:
        raise ValueError("the bag has no partitions; a new dataset needs at least one bin")
    mode: Literal["a", "w", "x"] = "a" if append else "w" if overwrite else "x"
    target = WriteTarget.open(Store(urlpath, storage_options), mode)
    base = target.base
    if base is not None and base.num_bins:
        num_bins = base.num_bins
        by_fill = target.bins_by_fill(num_bins)
        bin_of = tuple(by_fill[p % num_bins] for p in range(nparts))
    elif nparts == 0:
        raise ValueError("the bag has no partitions; a new dataset needs at least one bin")
    else:
        num_bins = nparts
        bin_of = tuple(range(nparts))

    # A fresh tag per call: it names this write's tasks and starts its part names.
    tag = secrets.token_hex(8)
    name = f"to-split-bins-{tokenize(bag.name, target.store.urlpath, mode, tag)}"
    write = _WritePartition(target.store, tag, part_max_bytes)
    layer: dict[Any, Any] = {(name, p): (write, (bag.name, p), p, bin_of[p]) for p in range(nparts)}
    deps: list[Any] = [bag]
    graph = HighLevelGraph.from_collections(name, layer, dependencies=deps)
    written: Any = db.Bag(graph, name, nparts)
    # Bag optimisation fuses each write with the tasks producing its partition.
    parts = written.to_delayed(optimize_graph=True)
    commit = _Commit(target, num_bins, bin_of, tag, dict(metadata or {}))
    out: Any = delayed(commit)(parts, dask_key_name=f"{name}-commit")
    if not compute:
        return cast(Delayed, out)
    return cast(CommitInfo, out.compute(**(compute_kwargs or {})))


@dataclass(frozen=True)
class _WritePartition:
    """Task: one partition's records -> new, uncommitted parts of its bin."""

    store: Store
    tag: str
    part_max_bytes: int

    def __call__(self, records: Iterable[Any], partition: int, bin_index: int) -> list[PartInfo]:
        return write_bin_part(
            self.store,
            bin_index,
            records,
            where=f"partition {partition}",
            part_max_bytes=self.part_max_bytes,
            tag=self.tag,
        )


def _tagged(path: str, tag: str) -> bool:
    """Whether a file name under ``bins/`` was written by the write tagged ``tag``."""
    name = path.rsplit("/", 1)[-1].lstrip(".")  # local temp files are ".<name>.tmp"
    return name.partition("-")[2].startswith(tag)


@dataclass(frozen=True)
class _Commit:
    """Task: name the parts every partition returned in a new manifest."""

    target: WriteTarget
    num_bins: int
    bin_of: tuple[int, ...]
    tag: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def __call__(self, results: Sequence[Sequence[PartInfo]]) -> CommitInfo:
        target = self.target
        base = target.base
        counts = target.base_counts(self.num_bins)
        start = base.num_records if base else 0
        new_parts: dict[int, list[PartInfo]] = {}
        segments: list[Segment] = []
        # Partition order is the global order; each partition is one contiguous run.
        for p, parts in enumerate(results):
            count = sum(x.count for x in parts)
            if not count:
                continue
            b = self.bin_of[p]
            segments.append(Segment(start, count, (b,), (counts[b],)))
            start += count
            counts[b] += count
            new_parts.setdefault(b, []).extend(parts)
        try:
            manifest = target.commit(self.num_bins, new_parts, segments, self.metadata)
        except CommitConflictError:
            earlier = self._committed_earlier()
            if earlier is None:
                target.abandon(x for xs in new_parts.values() for x in xs)
                raise
            manifest = earlier
            if target.mode == "w" and target.current is not None:
                # The earlier run may have died before removing the replaced parts.
                keep = {x.path for x in manifest.parts()}
                target.store.remove([x.path for x in target.current.parts() if x.path not in keep])
        self._collect(manifest)
        ours = [x for x in manifest.parts() if _tagged(x.path, self.tag)]
        return CommitInfo.of(target.store.urlpath, manifest, ours)

    def _committed_earlier(self) -> Manifest | None:
        """The manifest, if an earlier run of this very commit task committed it.

        A commit task whose worker dies after the manifest was replaced but before
        Dask got its result is run again; it must report that commit, not fail.
        Part names carry this write's tag, so the committed manifest shows it.
        """
        now = read_manifest(self.target.store)
        if now is not None and any(_tagged(x.path, self.tag) for x in now.parts()):
            return now
        return None

    def _collect(self, manifest: Manifest) -> None:
        """Remove what this write left unnamed: parts of killed or repeated task runs.

        A failure here loses nothing: the commit already happened.
        """
        store = self.target.store
        keep = {x.path for x in manifest.parts()}
        try:
            doomed = []
            root = store.full(BINS_DIR)
            store.fs.invalidate_cache(root)
            for full in store.fs.ls(root, detail=False):
                rel = f"{BINS_DIR}/{full.rstrip('/').rsplit('/', 1)[-1]}"
                if _tagged(rel, self.tag) and rel not in keep:
                    doomed.append(rel)
            store.remove(doomed)
        except Exception as exc:  # cleanup is best effort by design
            log.warning("to_split_bins: could not remove unreferenced parts: %r", exc)


# -- reading ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _ReadBin:
    """Task: the records of one bin, from its parts as the manifest listed them.

    It returns an iterator: the graph wraps it in ``reify`` (a list) when the
    partition itself is the result, and Bag optimisation drops that wrapper when
    the partition feeds a fused ``map``/``filter``/reduction, so records then
    stream through one at a time, as in ``iterate_binwise``.
    """

    store: Store
    bin_index: int
    parts: tuple[PartInfo, ...]
    seed: int | None

    def __call__(self) -> Iterator[bytes]:
        store = self.store
        datas: list[Any] = []
        starts: list[IntArray] = []
        ends: list[IntArray] = []
        try:
            for part, data in zip(self.parts, self._fetch(), strict=True):
                datas.append(data)
                where = f"{store.urlpath}/{part.path}"
                if len(data) != part.size:
                    raise CorruptDatasetError(
                        f"{where}: {len(data)} bytes, the manifest says {part.size} "
                        "(truncated or replaced?)"
                    )
                offsets = decode_footer(data, part.size, part.count, where).astype(np.int64)
                starts.append(offsets[:-1])
                ends.append(offsets[1:])
            yield from iter_records(datas, starts, ends, self.seed, self.bin_index)
        finally:
            for data in datas:
                _release(data)

    def _fetch(self) -> list[Any]:
        store = self.store
        try:
            if store.is_local:
                return [store.mmap(p.path) for p in self.parts]
            # Whole parts, fetched concurrently by async filesystems (s3fs).
            return store.read_ranges(
                [p.path for p in self.parts], [0] * len(self.parts), [p.size for p in self.parts]
            )
        except FileNotFoundError as exc:
            raise CorruptDatasetError(
                f"{store.urlpath}: bin {self.bin_index} has a part listed in the manifest "
                f"but missing ({exc}); was the dataset overwritten after the bag was built?"
            ) from None


@dataclass(frozen=True)
class _ReadLegacyBin:
    """Task: the records of one bin of a splitdataloader 0.0.1 dataset (an iterator)."""

    store: Store
    bin_index: int
    path: str
    starts: IntArray
    ends: IntArray
    seed: int | None

    def __call__(self) -> Iterator[bytes]:
        store = self.store
        try:
            data: Any = store.mmap(self.path) if store.is_local else store.read_file(self.path)
        except FileNotFoundError:
            raise CorruptDatasetError(f"{store.urlpath}/{self.path}: missing") from None
        try:
            if len(self.ends) and int(self.ends.max()) > len(data):
                raise CorruptDatasetError(
                    f"{store.urlpath}/{self.path}: {len(data)} bytes, but the index points "
                    f"up to byte {int(self.ends.max())} (truncated?)"
                )
            yield from iter_records([data], [self.starts], [self.ends], self.seed, self.bin_index)
        finally:
            _release(data)


def _release(data: Any) -> None:
    """Unmap a local part now if nothing still views it (else garbage collection will).

    A sampling profiler (Dask's worker has one) can briefly hold a frame whose locals
    view the map, which makes ``close`` refuse.
    """
    if isinstance(data, mmap.mmap):
        with contextlib.suppress(BufferError):
            data.close()


def read_split_bins(
    urlpath: UrlPath,
    *,
    shuffle: bool = False,
    seed: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
    bins: Sequence[int] | None = None,
) -> db.Bag:
    """A Dask Bag of a dataset's records with one partition per bin.

    Parameters
    ----------
    urlpath
        Dataset root: local path or fsspec URL. Datasets written by
        :func:`~splitdask.write_split_data`, :func:`to_split_bins` and
        splitdataloader 0.0.1 are read alike.
    shuffle
        Shuffle the records inside each partition. Partition ``k`` still holds bin
        ``k``'s records (``bins[k]``'s when ``bins`` is given); only their order
        changes.
    seed
        With ``shuffle``, bin ``b`` is shuffled with a generator derived from
        ``(seed, b)`` alone: the same seed gives the same partitions, in the same
        order as :meth:`~splitdask.SplitDataLoader.iterate_binwise` with that seed
        yields bin ``b``. ``None`` draws one seed now, shared by all partitions.
        Ignored without ``shuffle``.
    storage_options
        Passed to fsspec, in the client and on the workers.
    bins
        Read only these bins (distinct bin numbers), in this order; partition
        ``k`` is bin ``bins[k]``. Default: all bins.

    Returns
    -------
    dask.bag.Bag
        ``npartitions`` is the number of bins read; each partition is a list of
        ``bytes``. Task names are a token of the dataset's committed identity (its
        manifest's uid) and of the arguments, so the same call on the same
        dataset builds the same graph.

    Raises
    ------
    DatasetNotFoundError
        If there is no dataset at ``urlpath`` (raised here, not in a task).
    TypeError, IndexError, ValueError
        For a ``bins`` that is not a sequence of distinct in-range bin numbers.

    Notes
    -----
    The Bag reads the parts the manifest named when it was built (one snapshot):
    records committed later are not in it, and if the dataset is overwritten
    before the Bag is computed, its tasks fail with ``CorruptDatasetError``
    rather than mix two versions.

    Examples
    --------
    >>> bag = read_split_bins("data/train", shuffle=True, seed=epoch)  # doctest: +SKIP
    >>> bag.map(decode).map(augment).to_delayed()  # doctest: +SKIP
    >>> read_split_bins("data/train").map(len).sum().compute()  # doctest: +SKIP
    """
    store = Store(urlpath, storage_options)
    return _bag(store, read_manifest(store), shuffle, seed, bins)


def _loader_bag(
    loader: SplitDataLoader, shuffle: bool, seed: int | None, bins: Sequence[int] | None
) -> db.Bag:
    """``loader.to_bag``: a Bag of the loader's own manifest snapshot."""
    loader.num_bins  # noqa: B018  (opens a loader that was unpickled)
    store = Store(loader.urlpath, loader.storage_options)
    return _bag(store, loader.manifest, shuffle, seed, bins)


def _bag(
    store: Store,
    manifest: Manifest | None,
    shuffle: bool,
    seed: int | None,
    bins: Sequence[int] | None,
) -> db.Bag:
    s = resolve_seed(seed) if shuffle else None
    tasks: list[_ReadBin | _ReadLegacyBin]
    if manifest is not None:
        selected = _select(bins, manifest.num_bins)
        identity: Any = ("splitdask", store.urlpath, manifest.uid, manifest.generation)
        tasks = [_ReadBin(store, b, manifest.bins[b], s) for b in selected]
    elif legacy.is_legacy(store):
        layout = legacy.load(store)
        selected = _select(bins, len(layout.paths))
        identity = ("splitdataloader", store.urlpath, layout.paths, layout.sizes,
                    layout.starts, layout.ends)  # fmt: skip
        tasks = [
            _ReadLegacyBin(store, b, layout.paths[b], layout.starts[b], layout.ends[b], s)
            for b in selected
        ]
    else:
        raise DatasetNotFoundError(
            f"no splitdask dataset at {store.urlpath} (no {MANIFEST_NAME} and no "
            f"splitdataloader {legacy.INDEX_NAME})"
        )
    name = f"read-split-bins-{tokenize(identity, s, selected)}"
    graph: dict[Any, Any] = {(name, k): (reify, (task,)) for k, task in enumerate(tasks)}
    return db.Bag(graph, name, len(tasks))


def _select(bins: Sequence[int] | None, num_bins: int) -> list[int]:
    if bins is None:
        return list(range(num_bins))
    if isinstance(bins, str | bytes) or not isinstance(bins, Iterable):
        raise TypeError(f"bins must be a sequence of bin numbers, not {type(bins).__name__}")
    selected: list[int] = []
    for b in bins:
        if isinstance(b, bool) or not isinstance(b, int | np.integer):
            raise TypeError(f"bin numbers must be ints, not {type(b).__name__}")
        if not 0 <= b < num_bins:
            raise IndexError(f"bin {b} is out of range for a dataset of {num_bins} bins")
        selected.append(int(b))
    if len(set(selected)) != len(selected):
        dup = next(b for b in selected if selected.count(b) > 1)
        raise ValueError(f"bins lists bin {dup} more than once")
    if not selected:
        raise ValueError("bins is empty; select at least one bin")
    return selected

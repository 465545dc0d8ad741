"""Dask bags and datasets: :func:`to_split_bins` writes a Bag, :func:`read_split_bins` reads one.

One Dask partition is one bin. Writing, every partition's task writes its records
to new parts that nothing references yet, and one commit task, which depends on
all of them, names the parts it was handed in a new manifest (one atomic
replacement). Dask may run a partition task more than once (its worker died, the
task was retried); each run writes parts under fresh names and only the results
Dask hands to the commit become part of the dataset, so every record of the Bag is
stored exactly once. Reading, partition ``k`` reads bin ``k`` as the version the
Bag was built from listed it: each task carries its bin's parts, so every
partition, on any worker, reads that one version whatever was committed since.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast, overload

import dask.bag as db
from dask.bag.core import reify
from dask.base import tokenize
from dask.delayed import Delayed, delayed
from dask.highlevelgraph import HighLevelGraph

from splitdask._dataset._order import resolve_seed
from splitdask._dataset._parts import Part
from splitdask._dataset._snapshot import Snapshot, open_snapshot
from splitdask._format import MAX_BINS
from splitdask._format._compression import check_compression
from splitdask._read._batch import rebatch
from splitdask._read._bins import load_parts
from splitdask._read._decode import Decoder
from splitdask._read._engine import select_bins, snapshot_decoder
from splitdask._store import CacheDir, Store, UrlPath, open_store
from splitdask._store._glob import expand_urls
from splitdask._util._validate import check_int, check_metadata, check_version
from splitdask._write._changes import Mode
from splitdask._write._cleanup import new_tag
from splitdask._write._commit import DEFAULT_RETENTION, CommitInfo, Transaction
from splitdask._write._options import resolve_codec, resolve_mode, resolve_retries
from splitdask._write._parallel import TaskBins
from splitdask._write._tasks import CommitTask, PartitionWriter

__all__ = ["read_split_bins", "snapshot_bag", "to_split_bins"]


# -- writing ---------------------------------------------------------------------------


@overload
def to_split_bins(
    bag: db.Bag,
    urlpath: UrlPath,
    *,
    storage_options: Mapping[str, Any] | None = ...,
    mode: Mode | None = ...,
    append: bool = ...,
    overwrite: bool = ...,
    compute: Literal[True] = ...,
    metadata: Mapping[str, Any] | None = ...,
    part_max_bytes: int = ...,
    compute_kwargs: Mapping[str, Any] | None = ...,
    retention: float = ...,
    retries: int | None = ...,
    commit_retries: int | None = ...,
    compression: str | None = ...,
    compression_level: int | None = ...,
    codec: str | None = ...,
) -> CommitInfo: ...


@overload
def to_split_bins(
    bag: db.Bag,
    urlpath: UrlPath,
    *,
    storage_options: Mapping[str, Any] | None = ...,
    mode: Mode | None = ...,
    append: bool = ...,
    overwrite: bool = ...,
    compute: Literal[False],
    metadata: Mapping[str, Any] | None = ...,
    part_max_bytes: int = ...,
    compute_kwargs: Mapping[str, Any] | None = ...,
    retention: float = ...,
    retries: int | None = ...,
    commit_retries: int | None = ...,
    compression: str | None = ...,
    compression_level: int | None = ...,
    codec: str | None = ...,
) -> Delayed: ...


def to_split_bins(
    bag: db.Bag,
    urlpath: UrlPath,
    *,
    storage_options: Mapping[str, Any] | None = None,
    mode: Mode | None = None,
    append: bool = False,
    overwrite: bool = False,
    compute: bool = True,
    metadata: Mapping[str, Any] | None = None,
    part_max_bytes: int = 256 << 20,
    compute_kwargs: Mapping[str, Any] | None = None,
    retention: float = DEFAULT_RETENTION,
    retries: int | None = None,
    commit_retries: int | None = None,
    compression: str | None = None,
    compression_level: int | None = None,
    codec: str | None = None,
) -> CommitInfo | Delayed:
    """Write a Bag of records as a dataset, one bin per partition.

    Parameters
    ----------
    bag
        A ``dask.bag.Bag`` whose items are bytes-like (``bytes``, ``bytearray``,
        ``memoryview`` or any C-contiguous buffer), or values of ``codec``.
    urlpath
        Dataset root: local path or fsspec URL. Every worker must reach it (a local
        path on a multi-machine cluster must be a shared filesystem).
    storage_options
        Passed to fsspec, in the client and on the workers.
    mode
        As for :class:`~splitdask.SplitWriter`, but the default is ``"x"``: create
        the dataset, and raise ``FileExistsError`` if one exists. ``"a"`` adds the
        records after the existing ones (or creates the dataset); the bin count of
        an existing dataset never changes: partition ``p`` goes to the
        ``p % num_bins``-th bin in order of fill (fewest records first, ties by bin
        number), so with as many partitions as bins and balanced bins, partition
        ``p`` goes to bin ``p``; fewer partitions fill the emptiest bins; more
        partitions put several parts in one bin. ``"w"`` replaces an existing
        dataset: its data stays readable until the new manifest is committed, and
        its parts are removed after that.
    append, overwrite
        Aliases, as before ``mode=``: ``append=True`` is ``mode="a"``,
        ``overwrite=True`` is ``mode="w"``. Both true raises ``ValueError``; one
        that disagrees with ``mode`` raises ``TypeError``.
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
    retention, retries
        As for :class:`~splitdask.SplitWriter`: how long replaced parts stay
        readable, and how often the commit, having lost a race to another writer,
        re-bases and tries again (default 20). Dask's own task retries are
        ``compute_kwargs={"retries": n}``.
    commit_retries
        Alias of ``retries`` (its name before ``retries=``); a different value
        from ``retries`` raises ``TypeError``.
    compression, compression_level
        As for :class:`~splitdask.SplitWriter`: ``"zstd"`` compresses each record
        on its own, with a dictionary trained per partition.
    codec
        How items become stored bytes, as for :func:`~splitdask.write_split_data`:
        ``"msgpack"`` for dicts of arrays, text and numbers, ``"json"``, ``"npy"``,
        ``"pickle"`` or a name given to :func:`~splitdask.register_codec` (which
        every worker must have registered too). ``None``: the dataset's
        (``"bytes"`` for a new one); appending in another codec raises ``ValueError``.

    Returns
    -------
    CommitInfo or Delayed
        ``CommitInfo`` for this write (records, record bytes and parts added) and
        for the dataset after it (``num_records``, ``num_bins``, ``generation``);
        the ``Delayed`` computes to the same.

    Raises
    ------
    FileExistsError
        If a dataset exists at ``urlpath`` and the mode is ``"x"``; raised here,
        before any task runs.
    TypeError
        When computed, if an item is not bytes-like (the message says which
        ``codec=`` stores it) or ``codec`` cannot encode it; the message names the
        partition, the item's position in it and its type or field. Nothing is
        committed.
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
    >>> later = to_split_bins(bag2, "s3://b/train", mode="a", compute=False)  # doctest: +SKIP
    >>> later.compute()  # doctest: +SKIP
    """
    if not isinstance(bag, db.Bag):
        raise TypeError(f"bag must be a dask.bag.Bag, not {type(bag).__name__}")
    mode = resolve_mode(mode, "x", append=append, overwrite=overwrite)
    check_int(part_max_bytes, "part_max_bytes", minimum=1)
    compress = check_compression(compression, compression_level)
    nparts = bag.npartitions
    if nparts == 0 and mode != "a":
        raise ValueError("the bag has no partitions; a new dataset needs at least one bin")
    retries = resolve_retries(retries, commit_retries)
    store = open_store(urlpath, storage_options)
    meta = check_metadata(metadata)
    try:
        target = Transaction.begin(store, mode, retention=retention, retries=retries)
    except FileExistsError as exc:
        raise FileExistsError(
            f"{exc}: pass mode='a' (append=True) to add this bag's records to it, or "
            "mode='w' (overwrite=True) to replace it"
        ) from None
    encoder = resolve_codec(codec, target.base, store.urlpath)
    # Appending keeps the dataset's bins; a new dataset gets one per partition.
    bins = TaskBins.plan(target, nparts)
    if bins.num_bins == 0:
        raise ValueError("the bag has no partitions; a new dataset needs at least one bin")
    if nparts > MAX_BINS and bins.by_fill is None:
        raise ValueError(
            f"a new dataset of {nparts} partitions would have more bins than allowed "
            f"(MAX_BINS = {MAX_BINS}); repartition the bag first"
        )

    # A fresh tag per call: it names this write's tasks and starts its part names.
    tag = new_tag()
    name = f"to-split-bins-{tokenize(bag.name, target.store.urlpath, mode, tag)}"
    write = PartitionWriter(target.store, tag, part_max_bytes, compress, encoder)
    layer: dict[Any, Any] = {
        (name, p): (write, (bag.name, p), p, bins.bin_of(p)) for p in range(nparts)
    }
    deps: list[Any] = [bag]
    graph = HighLevelGraph.from_collections(name, layer, dependencies=deps)
    written: Any = db.Bag(graph, name, nparts)
    # Bag optimisation fuses each write with the tasks producing its partition.
    parts = written.to_delayed(optimize_graph=True)
    commit = CommitTask(target, bins, tag, meta, encoder.name)
    out: Any = delayed(commit)(parts, dask_key_name=f"{name}-commit")
    if not compute:
        return cast(Delayed, out)
    return cast(CommitInfo, out.compute(**(compute_kwargs or {})))


# -- reading ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _ReadBin:
    """Task: the records of one bin, from its parts as the snapshot listed them.

    An iterator: ``reify`` makes it a list when the partition is the result, and Bag
    optimisation drops ``reify`` before a fused ``map``/``filter``/reduction, so
    records then stream through one at a time, as in ``iterate_binwise``.
    """

    store: Store
    bin_index: int
    parts: tuple[Part, ...]
    seed: int | None
    generation: int | None
    batch_size: int | None = None
    """Hand out :class:`~splitdask.RecordBatch` es of this many records, not records."""
    decoder: Decoder = field(default_factory=lambda: Decoder(None))
    """Turns stored records (batches) into what the Bag holds."""

    def __call__(self) -> Iterator[Any]:
        dec = self.decoder
        with load_parts(self.store, self.parts, self.generation) as data:
            if self.batch_size is None:
                cut = data.views if dec.decodes else data.records
                yield from dec.iter(cut(self.seed, self.bin_index))
            else:
                batches = data.batches(self.seed, self.bin_index, self.batch_size)
                for batch in rebatch(batches, self.batch_size, drop_last=False):
                    yield dec.batch(batch)


def read_split_bins(
    urlpath: UrlPath | Sequence[UrlPath],
    *,
    shuffle: bool = False,
    seed: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
    bins: Sequence[int] | None = None,
    batch_size: int | None = None,
    cache_dir: CacheDir = None,
    cache_bytes: int | str | None = None,
    version: int | str | None = None,
    decode: bool = True,
    allow_pickle: bool = False,
    transform: Callable[[Any], Any] | None = None,
) -> db.Bag:
    """A Dask Bag of one or several datasets' records with one partition per bin.

    Parameters
    ----------
    urlpath
        Dataset root: local path or fsspec URL; or several, as a list of them or a
        glob (``"s3://bucket/train-*"``, matches sorted), as ``dask.bag.read_text``
        takes files. Every match must be a dataset. The Bag holds the first
        dataset's bins, then the next one's, and so on. Datasets written by
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
        Read only these bins (distinct bin numbers), in this order, of each dataset;
        partition ``k`` (of one dataset) is bin ``bins[k]``. Default: all bins.
    batch_size
        Make each partition a list of :class:`~splitdask.RecordBatch` es of this
        many records (the bin's last one shorter), in the same order, instead of
        a list of ``bytes``: no Python object per record, and columnar data for
        ``bag.map(lambda b: b.as_array(np.int32))`` or ``b.to_arrow()``.
    cache_dir, cache_bytes
        A local part cache on each worker's machine, shared by the workers there
        (see :class:`~splitdask.SplitDataLoader`); the settings travel with the tasks.
    version
        The version to read (of each dataset): its number, or the tag a writer gave
        it (the newest version with that tag); default the newest. See
        :func:`splitdask.versions`.
    decode, allow_pickle, transform
        As for :class:`~splitdask.SplitDataLoader`: items are the records decoded
        with each dataset's codec (dicts for ``"msgpack"``; ``decode=False``: the
        stored bytes), pickle only with ``allow_pickle=True``, then passed through
        ``transform`` (a picklable function: it runs on the workers). Batches
        become columns (a dict of arrays for dicts), as ``read_batch`` gives them.
        A Bag of flat dicts of scalars becomes a Dask DataFrame with
        ``bag.to_dataframe()``.

    Returns
    -------
    dask.bag.Bag
        ``npartitions`` is the number of bins read; each partition is a list of
        records (``bytes`` for a ``"bytes"`` dataset), or of batches with
        ``batch_size``. ``.compute()`` returns the partitions concatenated: dataset
        by dataset (in ``urlpath``'s order), bin by bin (in ``bins``' order), each
        bin's records in stored order (shuffled within the bin with ``shuffle``).
        Task names are a token of the datasets' committed identities (their
        manifests' uids) and of the arguments, so the same call on the same
        datasets builds the same graph.

    Raises
    ------
    DatasetNotFoundError, FileNotFoundError
        If there is no dataset at ``urlpath`` (at one of its URLs or matches), or a
        glob matches nothing; raised here, not in a task.
    SnapshotExpiredError
        If ``version`` was removed by ``gc`` (raised here); in a task, if ``gc``
        removed parts of the Bag's version after it was built. The error names the
        version and the oldest one kept.
    TypeError, IndexError, ValueError
        For a ``bins`` that is not a sequence of distinct in-range bin numbers, or a
        ``version`` that is not a version number (>= 1) or tag, or not there yet;
        for a dataset whose codec is not registered here, or pickle without
        ``allow_pickle`` (``ValueError``, naming the fix).

    Notes
    -----
    The Bag pins one version: each task carries the parts that version names, so
    records committed later are not in it, and appends, overwrites and compactions
    committed before it is computed change nothing it reads, for as long as the
    writers' ``retention`` (or ``keep_versions``) keeps that version's parts.

    Examples
    --------
    >>> bag = read_split_bins("data/train", shuffle=True, seed=epoch)  # doctest: +SKIP
    >>> bag.map(decode).map(augment).to_delayed()  # doctest: +SKIP
    >>> read_split_bins("data/train").map(len).sum().compute()  # doctest: +SKIP
    """
    opts, wanted = storage_options, check_version(version)
    stores = [
        open_store(u, opts, cache_dir=cache_dir, cache_bytes=cache_bytes)
        for u in expand_urls(urlpath, opts)
    ]
    snaps = [open_snapshot(store, wanted) for store in stores]
    decoders = [snapshot_decoder(snap, decode, allow_pickle, transform) for snap in snaps]
    return snapshot_bag(snaps, shuffle, seed, bins, batch_size, decoders)


def snapshot_bag(
    snapshots: Snapshot | Sequence[Snapshot],
    shuffle: bool,
    seed: int | None,
    bins: Sequence[int] | None,
    batch_size: int | None = None,
    decoders: Decoder | Sequence[Decoder] | None = None,
) -> db.Bag:
    """A Bag of the bins of snapshots, one after another (``read_split_bins``,
    ``to_bag``), each snapshot's records handed out by its decoder (``None``: as
    stored; one decoder serves every snapshot)."""
    snaps = [snapshots] if isinstance(snapshots, Snapshot) else list(snapshots)
    if decoders is None or isinstance(decoders, Decoder):
        decs = [decoders or Decoder(None)] * len(snaps)
    else:
        decs = list(decoders)
    s = resolve_seed(seed) if shuffle else None
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", minimum=1)
    tasks, keys = [], []
    for snap, dec in zip(snaps, decs, strict=True):
        selected = select_bins(bins, snap)
        tasks += [
            _ReadBin(snap.store, b, snap.bin(b), s, snap.generation, batch_size, dec)
            for b in selected
        ]
        how = (getattr(dec.codec, "name", None), dec.transform)
        keys.append((snap.identity, selected, how))
    name = f"read-split-bins-{tokenize(keys, s, batch_size)}"
    graph: dict[Any, Any] = {(name, k): (reify, (task,)) for k, task in enumerate(tasks)}
    return db.Bag(graph, name, len(tasks))

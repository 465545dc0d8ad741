"""Ray Data: :func:`read_split_bins_ray` reads a dataset, :func:`to_split_bins_ray` writes one.

Reading, :class:`SplitBinsDatasource` turns one version of the dataset into read tasks
of whole bins (one block per bin): it pickles as the location and that version, and
each task carries its bins' parts, so every task reads that version whatever was
committed since. Bins are shuffled by the same code as
``iterate_binwise`` and the Dask reader. Writing, :class:`SplitBinsDatasink`
(``splitdask._raysink``): every
write task writes its records to new parts of one bin that nothing names yet, and
``on_write_complete``, on the driver, names the parts of the results Ray hands it in
one manifest replacement, as ``to_split_bins`` does for Dask. A task that Ray runs
again (its worker died) writes under fresh names, and only the results Ray hands to
the commit count, so every row is stored exactly once. Ray is imported only here
(the ``ray`` extra: ``pip install ".[ray]"`` from a clone).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import ray.data
from ray.data.block import BlockAccessor, BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from splitdask._dataset._order import bin_order, resolve_seed
from splitdask._dataset._snapshot import Snapshot, open_snapshot
from splitdask._raysink import SplitBinsDatasink, check_column
from splitdask._read._arrowbins import RECORD, ReadBins, arrow_schema
from splitdask._read._engine import snapshot_decoder
from splitdask._store import CacheDir, UrlPath, open_store
from splitdask._util._validate import check_int, check_version
from splitdask._write._changes import Mode
from splitdask._write._commit import DEFAULT_RETENTION, CommitInfo
from splitdask._write._options import resolve_mode, resolve_retries

__all__ = ["SplitBinsDatasink", "SplitBinsDatasource", "read_split_bins_ray", "to_split_bins_ray"]

# -- reading ---------------------------------------------------------------------------


def read_split_bins_ray(
    urlpath: UrlPath,
    storage_options: Mapping[str, Any] | None = None,
    *,
    shuffle: bool = False,
    seed: int | None = None,
    override_num_blocks: int | None = None,
    include_index: bool = False,
    concurrency: int | None = None,
    ray_remote_args: Mapping[str, Any] | None = None,
    cache_dir: CacheDir = None,
    cache_bytes: int | str | None = None,
    version: int | str | None = None,
    decode: bool = True,
    allow_pickle: bool = False,
) -> ray.data.Dataset:
    """A Ray Dataset of a dataset's records, one read task per bin.

    Parameters
    ----------
    urlpath
        Dataset root: local path or fsspec URL, reachable from every Ray worker.
        Datasets written by any splitdask writer and by splitdataloader 0.0.1 read alike.
    storage_options
        Passed to fsspec, on the driver and in the read tasks.
    shuffle
        Shuffle each bin's records, and order the read tasks as ``iterate_binwise``
        visits bins: with ``seed``, the rows of bin ``b`` come in the order
        ``iterate_binwise(shuffle=True, seed=seed)`` yields them. ``None`` draws one
        seed now for all tasks.
    seed
        Non-negative integer; ignored without ``shuffle``.
    override_num_blocks
        Read tasks wanted. With fewer tasks than bins, each task reads several
        consecutive bins (still one block per bin); more tasks than bins is capped
        at one bin per task. Default: one task per bin (not Ray's estimate from
        the data size).
    include_index
        Add an ``"index"`` column (int64): each record's global index, as
        ``SplitDataLoader(urlpath)[index]`` addresses it.
    concurrency, ray_remote_args
        Passed to ``ray.data.read_datasource``.
    cache_dir, cache_bytes
        A local part cache on each node, shared by the read tasks there (see
        :class:`~splitdask.SplitDataLoader`).
    version
        The version to read: its number, or the tag a writer gave it (the newest
        version with that tag); default the newest. See :func:`splitdask.versions`.
    decode, allow_pickle
        As for :class:`~splitdask.SplitDataLoader`: a dataset written with a codec
        gives decoded rows, one column per field of its dict records (a fixed-shape
        array field is a tensor column), or an ``"item"`` column for records that
        are not dicts. ``decode=False`` (or a ``"bytes"`` dataset): ``"record"``.

    Returns
    -------
    ray.data.Dataset
        Rows ``{"record": bytes}`` or decoded (above), plus ``"index"``, read
        lazily from the version this call opened: records committed later are not
        in it, and appends, overwrites and compactions committed before it is read
        change nothing it reads, for as long as the writers' retention keeps that
        version.

    Raises
    ------
    DatasetNotFoundError
        If there is no dataset at ``urlpath`` (raised here, not in a task).
    SnapshotExpiredError
        If ``version`` was removed by ``gc`` (raised here); in a task, if ``gc``
        removed the version's parts since. The error names the version and the
        oldest one kept.
    """
    if override_num_blocks is not None:
        check_int(override_num_blocks, "override_num_blocks", minimum=1)
    source = SplitBinsDatasource(
        urlpath,
        storage_options,
        shuffle=shuffle,
        seed=seed,
        include_index=include_index,
        cache_dir=cache_dir,
        cache_bytes=cache_bytes,
        version=version,
        decode=decode,
        allow_pickle=allow_pickle,
    )
    return ray.data.read_datasource(
        source,
        # Ray's own default sizes tasks by bytes; a bin is the unit here.
        override_num_blocks=override_num_blocks or max(1, source.snapshot.num_bins),
        concurrency=concurrency,
        ray_remote_args=dict(ray_remote_args or {}),
    )


class SplitBinsDatasource(Datasource):  # type: ignore[misc]
    """The bins of one version as Ray read tasks, for ``ray.data.read_datasource``.

    ``ray.data.read_datasource(SplitBinsDatasource(url, shuffle=True, seed=0))`` is
    :func:`read_split_bins_ray` (the same arguments, which see) except that Ray picks
    the number of tasks (``override_num_blocks=`` sets it; never more than one task
    per bin). The version is opened here. It pickles as its location and version (a
    splitdataloader dataset, which has no versions, as its snapshot): a copy that Ray
    plans with elsewhere opens the same version, or raises ``SnapshotExpiredError``
    naming it once ``gc`` removed it.
    """

    def __init__(
        self,
        urlpath: UrlPath,
        storage_options: Mapping[str, Any] | None = None,
        *,
        shuffle: bool = False,
        seed: int | None = None,
        include_index: bool = False,
        cache_dir: CacheDir = None,
        cache_bytes: int | str | None = None,
        version: int | str | None = None,
        decode: bool = True,
        allow_pickle: bool = False,
    ) -> None:
        super().__init__()
        store = open_store(urlpath, storage_options, cache_dir=cache_dir, cache_bytes=cache_bytes)
        snapshot = open_snapshot(store, check_version(version))
        self._snapshot: Snapshot | None = snapshot
        self._store, self._version = snapshot.store, snapshot.version
        self.seed = resolve_seed(seed) if shuffle else None
        self.include_index = bool(include_index)
        self.decoder = snapshot_decoder(snapshot, decode, allow_pickle)

    @property
    def snapshot(self) -> Snapshot:
        """The version read (opened again on first use in an unpickled copy)."""
        if self._snapshot is None:
            self._snapshot = open_snapshot(self._store, self._version)
        return self._snapshot

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self._version is not None:
            state["_snapshot"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def get_name(self) -> str:
        return "SplitBins"

    def estimate_inmemory_data_size(self) -> int:
        extra = 8 * self.snapshot.num_records if self.include_index else 0
        return self.snapshot.nbytes + extra

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
    ) -> list[ReadTask]:
        snap = self.snapshot
        n = snap.num_bins
        bins = bin_order(self.seed, n) if self.seed is not None else list(range(n))
        groups = _split(bins, max(1, min(parallelism, n)))
        order = snap.locator.order if self.include_index else None
        schema = arrow_schema(self.include_index) if self.decoder.plain else None
        tasks = []
        for group in groups:
            parts = tuple(snap.bin(b) for b in group)
            rows = sum(p.count for ps in parts for p in ps)
            size = sum(p.payload for ps in parts for p in ps) + (8 * rows if order else 0)
            read = _ReadBins(
                snap.store, tuple(group), parts, self.seed, snap.generation, order, self.decoder
            )
            meta = BlockMetadata(num_rows=rows, size_bytes=size, input_files=None, exec_stats=None)
            tasks.append(ReadTask(read, meta, schema, per_task_row_limit))
        return tasks


class _ReadBins(ReadBins):
    def columns_block(self, columns: dict[str, Any]) -> Any:
        return BlockAccessor.batch_to_block(columns)  # tensor columns for (n, ...) arrays


def _split(items: list[int], k: int) -> list[list[int]]:
    """``items`` cut into ``k`` consecutive runs whose lengths differ by one at most."""
    q, r = divmod(len(items), k)
    out, pos = [], 0
    for i in range(k):
        size = q + (i < r)
        out.append(items[pos : pos + size])
        pos += size
    return out


# -- writing ---------------------------------------------------------------------------


def to_split_bins_ray(
    dataset: ray.data.Dataset,
    urlpath: UrlPath,
    storage_options: Mapping[str, Any] | None = None,
    *,
    column: str | None = None,
    mode: Mode | None = None,
    append: bool = False,
    overwrite: bool = False,
    metadata: Mapping[str, Any] | None = None,
    num_bins: int | None = None,
    part_max_bytes: int = 256 << 20,
    retention: float = DEFAULT_RETENTION,
    retries: int | None = None,
    commit_retries: int | None = None,
    concurrency: int | None = None,
    ray_remote_args: Mapping[str, Any] | None = None,
    compression: str | None = None,
    compression_level: int | None = None,
    codec: str | None = None,
) -> CommitInfo:
    """Write a Ray Dataset (one binary column, or whole rows) as a splitdask dataset,
    in one commit.

    Parameters
    ----------
    dataset
        A ``ray.data.Dataset`` with a binary ``column`` (bytes values, no nulls),
        or any rows with a ``codec``.
    urlpath
        Dataset root: local path or fsspec URL, reachable from every Ray worker.
    storage_options
        Passed to fsspec, on the driver and in the write tasks.
    column
        The column holding the records; other columns are ignored. Default
        ``"record"``, or with a codec other than ``"bytes"`` every row whole, as
        a dict of its columns (tensor columns as arrays).
    mode
        As for :func:`~splitdask.to_split_bins`: ``"x"`` (default) creates the
        dataset, and a dataset at ``urlpath`` raises ``FileExistsError`` here;
        ``"a"`` adds after the existing records (the bin count stays; write task
        ``t`` goes to the ``t % num_bins``-th least-filled bin); ``"w"`` replaces
        the dataset.
    append, overwrite
        Aliases: ``append=True`` is ``mode="a"``, ``overwrite=True`` is
        ``mode="w"``, as for :func:`~splitdask.to_split_bins`.
    metadata
        JSON-serialisable mapping stored in the manifest (merged when appending).
    num_bins
        Bins of a new dataset: write task ``t`` goes to bin ``t % num_bins``.
        Default: one bin per write task (Ray runs one per block, usually, so
        ``dataset.repartition(n)`` first gives ``n`` bins). Ignored when appending.
    part_max_bytes
        A task's records go to one part unless they exceed this size.
    retention, retries
        As for :class:`~splitdask.SplitWriter`.
    commit_retries
        Alias of ``retries``, as for :func:`~splitdask.to_split_bins`.
    concurrency, ray_remote_args
        Passed to ``Dataset.write_datasink``.
    compression, compression_level
        As for :class:`~splitdask.SplitWriter` (a dictionary trained per task).
    codec
        How records are stored, as for :func:`~splitdask.write_split_data`
        (``"msgpack"`` for rows); ``None``: the dataset's (``"bytes"`` for a new
        one). Each write task encodes its rows.

    Returns
    -------
    CommitInfo
        What the commit added, and the dataset's size after it.

    Raises
    ------
    FileExistsError
        As above, before any task runs.
    KeyError, TypeError
        In the write tasks (Ray re-raises them here), if ``column`` is missing or
        is not binary or holds nulls (with ``"bytes"``), or a value the codec
        cannot encode (naming the task, the record and the field). Nothing is
        committed.

    Notes
    -----
    Exactly once: a task that Ray runs again writes new parts; only those of the
    results handed to ``on_write_complete`` are named by the manifest, and after
    the commit the write's other parts (killed or repeated attempts) are removed.
    A failed write leaves the dataset as it was and removes the parts it can find.
    """
    if not isinstance(dataset, ray.data.Dataset):
        raise TypeError(f"dataset must be a ray.data.Dataset, not {type(dataset).__name__}")
    mode = resolve_mode(mode, "x", append=append, overwrite=overwrite)
    sink = SplitBinsDatasink(
        urlpath,
        storage_options,
        column=column,
        mode=mode,
        metadata=metadata,
        num_bins=num_bins,
        part_max_bytes=part_max_bytes,
        retention=retention,
        retries=resolve_retries(retries, commit_retries),
        compression=compression,
        compression_level=compression_level,
        codec=codec,
    )
    # A schema Ray knows without running anything (a read's, a materialised dataset's)
    # is checked now; otherwise each write task checks its blocks.
    schema = dataset.schema(fetch_if_missing=False)
    base = schema.base_schema if schema is not None else None
    if sink.plain and isinstance(base, pa.Schema):
        name = sink.column or RECORD
        check_column(base.names, base.field(name).type if name in base.names else None, name, "")
    dataset.write_datasink(
        sink, concurrency=concurrency, ray_remote_args=dict(ray_remote_args or {})
    )
    assert sink.info is not None  # write_datasink raises unless on_write_complete ran
    return sink.info

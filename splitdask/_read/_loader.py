"""Reading datasets: :class:`Loader`, everything :class:`~splitdask.SplitDataLoader` does
but hand a dataset to an engine (that is :mod:`splitdask._front`).

A loader holds one :class:`~splitdask._dataset._snapshot.Snapshot` (later commits are not
seen until a new loader is opened) and reads records through a
:class:`~splitdask._read._records.RecordReader`, which opens parts on first use.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from splitdask._dataset._index import IntArray
from splitdask._dataset._order import bin_order, resolve_seed
from splitdask._dataset._snapshot import Snapshot, open_snapshot
from splitdask._format._codec import DEFAULT_CODEC, Codec
from splitdask._read._batch import RecordBatch, rebatch
from splitdask._read._bins import BinData
from splitdask._read._binwise import NextBin, iterate_bins, iterate_gathered, iterate_write_order
from splitdask._read._decode import Decoder, open_decoder
from splitdask._read._facts import SnapshotFacts
from splitdask._read._records import RecordReader
from splitdask._store import CacheDir, Store, UrlPath, open_store
from splitdask._util._validate import check_int, check_version

__all__ = ["Loader"]

_PREVIEW_RECORDS = 5


class Loader(SnapshotFacts):
    """Random and bin-wise access to a dataset written by splitdask or splitdataloader.

    Parameters
    ----------
    urlpath
        Dataset root: local path, ``PathLike`` or any fsspec URL.
    storage_options
        Passed to fsspec.
    cache_dir
        A local directory caching the parts of a remote dataset whole, shared by
        every process on the machine (made if missing). ``None`` (default): the
        ``SPLITDASK_CACHE_DIR`` environment variable, else no cache; ``False``: no
        cache. Ignored for local datasets. See :meth:`cache_info`.
    cache_bytes
        The cache's limit (an int, or a string such as ``"20GiB"``); least recently
        used parts are evicted. Default: ``SPLITDASK_CACHE_BYTES``, else 10% of the
        free space or 50 GiB, whichever is less.
    version
        The version to read: its number, or the tag a writer gave it (the newest
        version with that tag). ``None`` (default): the newest. See
        :func:`splitdask.versions`.
    decode
        Hand out records decoded with the codec the dataset records (see
        :attr:`codec`; ``"bytes"`` datasets give ``bytes`` either way). ``False``:
        the stored bytes, as written by the codec.
    allow_pickle
        Decode a dataset written with ``codec="pickle"``. Decoding a pickle runs
        code the data names: allow it only for data you trust.
    transform
        A function applied to every decoded record (``loader[i]``, slices,
        iteration, bin-wise passes; batches are the columns of the transformed
        records). It is pickled with the loader, so it must be importable (a
        module-level function, not a lambda) to reach spawned processes.

    Raises
    ------
    DatasetNotFoundError
        If no dataset was ever committed at ``urlpath``.
    SnapshotExpiredError
        If ``version`` was removed by ``gc`` (the error names the oldest kept).
    ValueError
        If there is no such version yet; if ``decode`` and the dataset's codec is a
        user codec not registered in this process (register it first with
        :func:`splitdask.register_codec`, or pass ``decode=False``), or pickle
        without ``allow_pickle=True``.
    CorruptDatasetError, FormatVersionError
        If the manifest is damaged or from an unknown format version.

    Notes
    -----
    The loader reads one version of the dataset when it is opened and keeps it
    until it is garbage: :meth:`close` releases mapped files, and the next use maps
    them again from the same version. It pickles as its location and that version
    (:attr:`version`), so Dask workers and spawned processes read exactly what it
    reads, whatever was committed since, for as long as the version is retained.
    """

    def __init__(
        self,
        urlpath: UrlPath,
        storage_options: Mapping[str, Any] | None = None,
        *,
        cache_dir: CacheDir = None,
        cache_bytes: int | str | None = None,
        version: int | str | None = None,
        decode: bool = True,
        allow_pickle: bool = False,
        transform: Callable[[Any], Any] | None = None,
    ) -> None:
        version = check_version(version)
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable, not {type(transform).__name__}")
        self._decoding: tuple[bool, bool, Any] = (bool(decode), bool(allow_pickle), transform)
        self._carried: Codec | None = None  # a pickled loader's codec
        self._store: Store = open_store(
            urlpath, storage_options, cache_dir=cache_dir, cache_bytes=cache_bytes
        )
        self._version = version
        self._snap: Snapshot | None = None
        self._reader: RecordReader | None = None
        self._next_bin = NextBin()  # a remote read_bin(b) fetches bin b + 1 meanwhile
        self._n = 0  # records, once a reader is open (0: the next read opens one)
        self._get: Any = None  # the open reader's record(i), decoded
        self._dec = Decoder(None)
        self._open()

    # -- lifecycle ----------------------------------------------------------------------

    def _open(self) -> RecordReader:
        if self._snap is None:
            self._snap = open_snapshot(self._store, self._version)
            self._version = self._snap.version
            decode, allow_pickle, transform = self._decoding
            manifest = self._snap.manifest
            self._dec = open_decoder(
                manifest.codec if manifest is not None else DEFAULT_CODEC,
                self._store.urlpath,
                decode=decode,
                allow_pickle=allow_pickle,
                transform=transform,
                carried=self._carried,
            )
        self._reader = RecordReader(self._snap)
        self._n, self._get = self._reader.num_records, self._dec.getter(self._reader.record)
        return self._reader

    @property
    def snapshot(self) -> Snapshot:
        """The committed state this loader reads."""
        return (self._reader or self._open()).snapshot

    def __getstate__(self) -> dict[str, Any]:
        # Its location, cache settings and version: an unpickled copy reads the same.
        # It decodes the same too: the codec (a user's, unregistered in a spawned
        # process, pickles as its functions) and the transform travel with it.
        return {
            "store": self._store,
            "version": self._version,
            "decoding": self._decoding,
            "codec": self._dec.codec,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        store = state.get("store")  # else a state pickled before the cache existed
        self._store = store or open_store(state["urlpath"], state["storage_options"])
        self._version = state.get("version")
        self._decoding = state.get("decoding", (True, False, None))
        self._carried, self._dec = state.get("codec"), Decoder(None)
        self._snap = None  # opened on first use
        self._reader, self._n, self._get = None, 0, None
        self._next_bin = NextBin()

    def close(self) -> None:
        """Release mapped files; the snapshot stays, and parts are mapped again on use."""
        reader, self._reader, self._n, self._get = self._reader, None, 0, None
        self._next_bin.close()
        if reader is not None:
            reader.close()

    def _repr_html_(self) -> str:
        """The notebook view: facts, a bin-balance chart and the first records."""
        from splitdask._read._describe import sample_sizes
        from splitdask._read._html import dataset_html

        reader = self._reader or self._open()
        first = reader.records(np.arange(min(len(self), _PREVIEW_RECORDS), dtype=np.int64))
        values = self._dec.many(first) if self._dec.decodes else None
        return dataset_html(self.describe(), first, sample_sizes(reader), values)

    # -- random access ----------------------------------------------------------------

    def __getitem__(self, key: Any) -> Any:
        """``loader[i]`` -> a record; ``loader[a:b:c]`` or ``loader[[i, j, ...]]`` -> a list.

        Records are decoded (see ``decode``): ``bytes`` for a ``"bytes"`` dataset."""
        if type(key) is int and 0 <= key < self._n:  # the hot path: two tests
            return self._get(key)
        reader = self._reader or self._open()
        n = reader.num_records
        if type(key) is int:
            i = key + n if key < 0 else key
            if 0 <= i < n:
                return self._get(i)
            raise IndexError(f"index {key} is out of range for a dataset of {n} records")
        idx = _indices(key, n)
        if idx is not None:
            return self._dec.many(reader.records(idx))
        if isinstance(key, bool) or not hasattr(key, "__index__"):
            raise TypeError(
                f"dataset indices must be integers, slices or integer sequences, "
                f"not {type(key).__name__}"
            )
        return self[operator.index(key)]

    def view(self, i: int) -> memoryview:
        """Record ``i`` as stored (never decoded), as a read-only ``memoryview``: into the
        mapped file for a local dataset (no copy), over the fetched bytes for a remote one.

        The record is checked as ``loader[i]`` checks it. The view stays valid after
        :meth:`close` (the file stays mapped while a view of it exists), so holding
        many views holds their files' mappings.
        """
        check_int(i, "record index", error=TypeError)
        reader = self._reader or self._open()
        n = reader.num_records
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise IndexError(f"index {i} is out of range for a dataset of {n} records")
        return reader.view(j)

    def read_batch(self, indices: Any) -> Any:
        """The records at ``indices`` as one batch, in order.

        ``indices`` is a sequence or array of integers (negative ones count from the
        end) or a slice. Every record is checked as ``loader[i]`` checks it.

        Returns
        -------
        RecordBatch or dict or array or list
            A :class:`~splitdask.RecordBatch` of the stored bytes for a ``"bytes"``
            dataset (or ``decode=False``). Decoded, dicts of the same fields become
            a dict of columns: one NumPy array per field whose values agree in
            dtype and shape (``(n, *shape)``; numbers: ``(n,)``), a list otherwise;
            other records one such column (``npy``: one ``(n, *shape)`` array).
        """
        reader = self._reader or self._open()
        idx = _indices(indices, reader.num_records)
        if idx is None:
            raise TypeError(
                f"read_batch takes a sequence, array or slice of indices, not "
                f"{type(indices).__name__}"
            )
        return self._dec.batch(reader.batch(idx))

    def iterate_batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        seed: int | None = None,
        drop_last: bool = False,
    ) -> Iterator[Any]:
        """Every record, bin by bin, in batches of ``batch_size`` (as :meth:`read_batch`
        gives them: a :class:`~splitdask.RecordBatch`, or decoded columns).

        The records come in exactly the order of ``iterate_binwise(shuffle, seed)``,
        cut into batches (the last one shorter, unless ``drop_last``). A batch of
        records stored back to back is a read-only view of the mapped file; a
        shuffled batch of records of one length is gathered by one NumPy index.
        """
        size = check_int(batch_size, "batch_size", minimum=1)
        reader = self._reader or self._open()
        s, bins = _bin_plan(shuffle, seed, reader.snapshot.num_bins)

        def cut(data: BinData, seed: int | None, b: int) -> Iterator[RecordBatch]:
            return data.batches(seed, b, size)

        batches = rebatch(iterate_bins(reader, bins, s, cut), size, drop_last)
        return batches if self._dec.plain else map(self._dec.batch, batches)

    def __iter__(self) -> Iterator[Any]:
        """All records in write order (decoded, as ``loader[i]``)."""
        reader = self._reader or self._open()
        fast = iterate_write_order(reader)
        return self._dec.iter(iterate_gathered(reader) if fast is None else fast)

    # -- bins -------------------------------------------------------------------------

    def read_bin(self, bin_index: int) -> list[Any]:
        """Every record of one bin, in stored order (decoded, as ``loader[i]``)."""
        check_int(bin_index, "bin index", error=TypeError)
        if not 0 <= bin_index < self.num_bins:
            raise IndexError(f"bin {bin_index} is out of range for {self.num_bins} bins")
        reader = self._reader or self._open()
        if reader.store.is_local:
            return self._dec.many(list(iterate_bins(reader, [bin_index], None, BinData.records)))
        return self._dec.many(self._next_bin.read(reader, bin_index))

    def iterate_binwise(
        self, shuffle: bool = False, seed: int | None = None, copy: bool = True
    ) -> Iterator[Any]:
        """Every record, bin by bin.

        Parameters
        ----------
        shuffle
            Visit bins in a random order and the records of each bin in a random
            order. Memory stays at about one bin (two for remote datasets, which
            prefetch the next bin while the current one is consumed).
        seed
            With ``shuffle``, the same seed gives the same order. Bin ``b`` is
            shuffled with a generator derived from ``(seed, b)`` only, so this order
            matches ``read_split_bins(..., seed=seed)``'s partitions.
        copy
            ``False`` yields read-only ``memoryview`` s into the mapped files (or the
            fetched bytes) instead of ``bytes``: no copy per record. They stay valid
            after :meth:`close`; each holds its file's mapping while it lives.
            Decoded records are decoded from such views either way.
        """
        reader = self._reader or self._open()
        s, bins = _bin_plan(shuffle, seed, reader.snapshot.num_bins)
        cut = BinData.views if self._dec.decodes or not copy else BinData.records
        return self._dec.iter(iterate_bins(reader, bins, s, cut))


def _bin_plan(shuffle: bool, seed: int | None, num_bins: int) -> tuple[int | None, list[int]]:
    """The seed a bin-wise pass shuffles with (``None``: stored order) and its bins' order."""
    s = resolve_seed(seed) if shuffle else None
    return s, bin_order(s, num_bins) if s is not None else list(range(num_bins))


def _indices(key: Any, n: int) -> IntArray | None:
    """A slice or an index sequence as validated non-negative indices (``None`` if
    ``key`` is neither)."""
    if isinstance(key, slice):
        return np.arange(*key.indices(n), dtype=np.int64)
    if isinstance(key, Sequence | np.ndarray) and not isinstance(key, str | bytes):
        return _index_array(key, n)
    return None


def _index_array(key: Any, n: int) -> IntArray:
    """A validated int64 array of non-negative indices from an index sequence."""
    arr = np.asarray(key)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu" or arr.ndim != 1:
        raise TypeError(
            f"index arrays must be one-dimensional integers, not {arr.dtype} with "
            f"{arr.ndim} dimensions"
        )
    idx = arr.astype(np.int64, copy=False)
    if idx.min() >= 0 and idx.max() < n:  # the common case: two reductions, no copy
        return idx
    idx = np.where(idx < 0, idx + n, idx)
    bad = (idx < 0) | (idx >= n)
    if bad.any():
        first = int(arr[np.flatnonzero(bad)[0]])
        raise IndexError(f"index {first} is out of range for a dataset of {n} records")
    return idx

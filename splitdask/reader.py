"""Reading datasets: :class:`SplitDataLoader`.

A loader reads the manifest once (a snapshot: later commits are not seen until a
new loader is opened) and opens parts on first use. Local parts are mmapped and
their offsets are views into the mapping; remote parts cost one ranged request
for the footer, then one per record or per merged batch of records.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
import xxhash

from splitdask import legacy
from splitdask.errors import CorruptDatasetError, DatasetNotFoundError
from splitdask.format import (
    MANIFEST_NAME,
    Manifest,
    decode_footer,
    footer_size,
    payload_size,
)
from splitdask.index import (
    BinOrder,
    IntArray,
    Locator,
    bin_order,
    bin_permutation,
    resolve_seed,
)
from splitdask.storage import Store, UrlPath, read_manifest

__all__ = ["SplitDataLoader", "VerifyReport", "iter_records"]

# Ranges closer than this are fetched as one request; the bytes in between are
# cheaper than another round trip.
_MERGE_GAP = 1 << 20
_MERGE_MAX = 64 << 20
_ITER_CHUNK = 4096


@dataclass(frozen=True)
class VerifyReport:
    """What :meth:`SplitDataLoader.verify` checked."""

    parts: int
    bytes: int


class _Part:
    """A bin part: where it is, and once opened, where each record is in it."""

    __slots__ = ("checksum", "count", "data", "ends", "ends_np", "path", "ready", "size",
                 "starts", "starts_np")  # fmt: skip

    def __init__(self, path: str, size: int, count: int, checksum: str | None) -> None:
        self.path = path
        self.size = size
        self.count = count
        self.checksum = checksum
        self.ready = False  # extents known and, for local parts, the file mapped
        self.data: Any = None  # mmap for local parts
        self.starts: Any = None  # int-indexable record starts (memoryview)
        self.ends: Any = None
        self.starts_np: IntArray | Any = None
        self.ends_np: IntArray | Any = None

    def payload(self) -> int:
        """Bytes of record data in the part."""
        if self.checksum is None:  # legacy: records are framed, sum their lengths
            return int(self.ends_np.sum() - self.starts_np.sum())
        return payload_size(self.size, self.count)

    def set_extents(self, starts: Any, ends: Any) -> None:
        self.starts_np, self.ends_np = starts, ends
        # memoryview indexing returns Python ints and is several times faster than
        # indexing a NumPy array, which matters for single-record reads.
        if starts.dtype.isnative:
            # Unaligned arrays export as "=Q", which memoryview cannot index: recast.
            code = starts.dtype.char
            self.starts = memoryview(starts).cast("B").cast(code)
            self.ends = memoryview(ends).cast("B").cast(code)
        else:
            self.starts, self.ends = starts.tolist(), ends.tolist()


class SplitDataLoader:
    """Random and bin-wise access to a dataset written by splitdask or splitdataloader.

    Parameters
    ----------
    urlpath
        Dataset root: local path, ``PathLike`` or any fsspec URL.
    storage_options
        Passed to fsspec.

    Raises
    ------
    DatasetNotFoundError
        If no dataset was ever committed at ``urlpath``.
    CorruptDatasetError, FormatVersionError
        If the manifest is damaged or from an unknown format version.

    Notes
    -----
    The loader pickles as its location and reopens on first use after unpickling,
    so it can be passed to Dask workers and to spawned processes.
    """

    def __init__(self, urlpath: UrlPath, storage_options: Mapping[str, Any] | None = None) -> None:
        self._store = Store(urlpath, storage_options)
        self._open()

    # -- opening, pickling, closing -----------------------------------------------

    def _open(self) -> None:
        store = self._store
        manifest = read_manifest(store)
        self.manifest: Manifest | None = manifest
        if manifest is not None:
            self._parts = [_Part(p.path, p.size, p.count, p.checksum) for p in manifest.parts()]
            part_counts = [[p.count for p in parts] for parts in manifest.bins]
            self._locator = Locator(BinOrder(manifest.order), part_counts)
            self._n = manifest.num_records
        elif legacy.is_legacy(store):
            layout = legacy.load(store)
            self._parts = []
            for path, size, s, e in zip(
                layout.paths, layout.sizes, layout.starts, layout.ends, strict=True
            ):
                part = _Part(path, size, len(s), None)
                part.set_extents(s, e)
                self._parts.append(part)
            self._locator = Locator(layout.order, [[p.count] for p in self._parts])
            self._n = len(layout.order.bins)
        elif (bucket := store.missing_bucket()) is not None:
            raise DatasetNotFoundError(
                f"no splitdask dataset at {store.urlpath}: bucket {bucket!r} does not exist"
            )
        else:
            raise DatasetNotFoundError(
                f"no splitdask dataset at {store.urlpath} (no {MANIFEST_NAME} and no "
                f"splitdataloader {legacy.INDEX_NAME})"
            )
        self._bin_parts: list[list[int]] = [[] for _ in self._locator.bin_base]
        for pid, b in enumerate(self._locator.part_bin):
            self._bin_parts[b].append(pid)

    def __getstate__(self) -> dict[str, Any]:
        return {"urlpath": self._store.urlpath, "storage_options": self._store.storage_options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._store = Store(state["urlpath"], state["storage_options"])
        self._n = -1  # opened on first use

    def _ensure_open(self) -> None:
        if self._n < 0:
            self._open()

    def close(self) -> None:
        """Release mapped files; the loader reopens if used again."""
        for part in getattr(self, "_parts", ()):
            data, part.data = part.data, None
            if part.checksum is not None:
                part.starts = part.ends = part.starts_np = part.ends_np = None
            part.ready = False
            if data is not None:
                # A caller may still hold a view of the map; GC unmaps it then.
                with contextlib.suppress(BufferError):
                    data.close()
        self._n = -1

    def __enter__(self) -> SplitDataLoader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SplitDataLoader({self._store.urlpath!r})"

    # -- shape ----------------------------------------------------------------------

    @property
    def urlpath(self) -> str:
        return self._store.urlpath

    @property
    def storage_options(self) -> dict[str, Any]:
        return dict(self._store.storage_options)

    def __len__(self) -> int:
        self._ensure_open()
        return self._n

    @property
    def num_bins(self) -> int:
        self._ensure_open()
        return len(self._bin_parts)

    @property
    def bin_counts(self) -> list[int]:
        """Number of records in each bin."""
        self._ensure_open()
        return [sum(self._parts[p].count for p in pids) for pids in self._bin_parts]

    @property
    def nbytes(self) -> int:
        """Total size of the records (payload bytes, without framing)."""
        self._ensure_open()
        return sum(p.payload() for p in self._parts)

    @property
    def metadata(self) -> dict[str, Any]:
        """User metadata stored in the manifest (empty for legacy datasets)."""
        self._ensure_open()
        return dict(self.manifest.metadata) if self.manifest else {}

    # -- parts ----------------------------------------------------------------------

    def _where(self, part: _Part) -> str:
        return f"{self._store.urlpath}/{part.path}"

    def _missing(self, rel: str) -> CorruptDatasetError:
        return CorruptDatasetError(
            f"{self._store.urlpath}/{rel}: listed in the manifest but missing"
        )

    def _load(self, part: _Part) -> None:
        """Open a part: map it (local) or fetch its footer (remote), then validate."""
        where = self._where(part)
        try:
            if self._store.is_local:
                data: Any = self._store.mmap(part.path)
                if len(data) != part.size:
                    size = len(data)
                    data.close()
                    raise CorruptDatasetError(
                        f"{where}: {size} bytes, the manifest says {part.size} (truncated or "
                        "replaced?)"
                    )
                tail: Any = memoryview(data)
            else:
                data = None
                if part.checksum is not None:
                    fsize = footer_size(part.count)
                    tail = self._store.read_range(part.path, part.size - fsize, part.size)
        except FileNotFoundError:
            raise self._missing(part.path) from None
        if part.checksum is not None:  # legacy parts come with their extents
            offsets = decode_footer(tail, part.size, part.count, where)
            part.set_extents(offsets[:-1], offsets[1:])
        part.data = data
        part.ready = True

    def _load_footers(self, pids: Sequence[int]) -> None:
        """Open the remote parts among ``pids`` not open yet, fetching their footers
        concurrently (one ranged GET each)."""
        parts = [self._parts[p] for p in dict.fromkeys(pids)]
        parts = [p for p in parts if not p.ready and p.checksum is not None]
        if len(parts) < 2:
            for part in parts:
                self._load(part)
            return
        starts = [p.size - footer_size(p.count) for p in parts]
        try:
            tails = self._store.read_ranges(
                [p.path for p in parts], starts, [p.size for p in parts]
            )
        except FileNotFoundError as exc:
            raise self._missing(str(exc.filename)) from None
        for part, tail in zip(parts, tails, strict=True):
            offsets = decode_footer(tail, part.size, part.count, self._where(part))
            part.set_extents(offsets[:-1], offsets[1:])
            part.ready = True

    def _part(self, pid: int) -> _Part:
        part = self._parts[pid]
        if not part.ready:
            self._load(part)
        return part

    # -- random access ----------------------------------------------------------------

    def __getitem__(self, key: Any) -> Any:
        """``loader[i]`` -> bytes; ``loader[a:b:c]`` or ``loader[[i, j, ...]]`` -> list of bytes."""
        if self._n < 0:
            self._open()
        if type(key) is not int:
            if isinstance(key, slice):
                return self._read_many(np.arange(*key.indices(self._n), dtype=np.int64))
            if isinstance(key, Sequence | np.ndarray) and not isinstance(key, str | bytes):
                return self._read_many(self._index_array(key))
            if isinstance(key, bool) or not hasattr(key, "__index__"):
                raise TypeError(
                    f"dataset indices must be integers, slices or integer sequences, "
                    f"not {type(key).__name__}"
                )
            key = operator.index(key)
        i = key + self._n if key < 0 else key
        if not 0 <= i < self._n:
            raise IndexError(f"index {key} is out of range for a dataset of {self._n} records")
        pid, j = self._locator.locate(i)
        part = self._parts[pid]
        if not part.ready:
            self._load(part)
        start = part.starts[j]
        end = part.ends[j]
        if part.data is not None:
            return part.data[start:end]
        try:
            return self._store.read_range(part.path, start, end)
        except FileNotFoundError:
            raise self._missing(part.path) from None

    def _index_array(self, key: Any) -> IntArray:
        arr = np.asarray(key)
        if arr.size == 0:
            return np.zeros(0, dtype=np.int64)
        if arr.dtype.kind not in "iu" or arr.ndim != 1:
            raise TypeError(
                f"index arrays must be one-dimensional integers, not {arr.dtype} with "
                f"{arr.ndim} dimensions"
            )
        idx = arr.astype(np.int64)
        idx = np.where(idx < 0, idx + self._n, idx)
        bad = (idx < 0) | (idx >= self._n)
        if bad.any():
            first = int(arr[np.flatnonzero(bad)[0]])
            raise IndexError(f"index {first} is out of range for a dataset of {self._n} records")
        return idx

    def _read_many(self, idx: IntArray) -> list[bytes]:
        """Records at valid indices ``idx``, in that order; one pass per part."""
        out: list[Any] = [None] * len(idx)
        if not len(idx):
            return out
        pids, local = self._locator.locate_many(idx)
        if not self._store.is_local:
            self._load_footers(np.unique(pids).tolist())
        by_part = np.argsort(pids, kind="stable")
        pids_sorted = pids[by_part]
        bounds = np.flatnonzero(np.diff(pids_sorted)) + 1
        groups = np.split(by_part, bounds)
        fetch: list[tuple[_Part, IntArray, IntArray, IntArray]] = []
        for group in groups:
            part = self._part(int(pids[group[0]]))
            j = local[group]
            starts, ends = part.starts_np[j], part.ends_np[j]
            if part.data is not None:
                data = part.data
                for t, s, e in zip(group.tolist(), starts.tolist(), ends.tolist(), strict=True):
                    out[t] = data[s:e]
            else:
                fetch.append((part, group, starts.astype(np.int64), ends.astype(np.int64)))
        if fetch:
            self._fetch_remote(fetch, out)
        return out

    def _fetch_remote(
        self, fetch: list[tuple[_Part, IntArray, IntArray, IntArray]], out: list[Any]
    ) -> None:
        """Merge near ranges per part and fetch all of them in one concurrent call."""
        paths: list[str] = []
        r_start: list[int] = []
        r_end: list[int] = []
        pieces: list[tuple[int, list[tuple[int, int, int]]]] = []  # range -> (slot, s, e)
        for part, group, starts, ends in fetch:
            order = np.argsort(starts, kind="stable")
            cur: list[tuple[int, int, int]] = []
            lo = hi = -1
            for t, s, e in zip(
                group[order].tolist(), starts[order].tolist(), ends[order].tolist(), strict=True
            ):
                if cur and s - hi <= _MERGE_GAP and max(hi, e) - lo <= _MERGE_MAX:
                    hi = max(hi, e)
                else:
                    if cur:
                        paths.append(part.path)
                        r_start.append(lo)
                        r_end.append(hi)
                        pieces.append((lo, cur))
                    cur, lo, hi = [], s, e
                cur.append((t, s, e))
            paths.append(part.path)
            r_start.append(lo)
            r_end.append(hi)
            pieces.append((lo, cur))
        try:
            blobs = self._store.read_ranges(paths, r_start, r_end)
        except FileNotFoundError as exc:
            raise self._missing(str(exc.filename)) from None
        for blob, (lo, items) in zip(blobs, pieces, strict=True):
            for t, s, e in items:
                out[t] = blob[s - lo : e - lo]

    def __iter__(self) -> Iterator[bytes]:
        """All records in write order."""
        n = len(self)
        for lo in range(0, n, _ITER_CHUNK):
            yield from self._read_many(np.arange(lo, min(n, lo + _ITER_CHUNK), dtype=np.int64))

    # -- bins -------------------------------------------------------------------------

    def read_bin(self, bin_index: int) -> list[bytes]:
        """Every record of one bin, in stored order."""
        self._check_bin(bin_index)
        return list(self._iter_bin(bin_index, None, None))

    def _check_bin(self, bin_index: int) -> None:
        if isinstance(bin_index, bool) or not isinstance(bin_index, int | np.integer):
            raise TypeError(f"bin index must be an int, not {type(bin_index).__name__}")
        if not 0 <= bin_index < self.num_bins:
            raise IndexError(f"bin {bin_index} is out of range for {self.num_bins} bins")

    def _bin_blobs(self, bin_index: int) -> list[tuple[_Part, Any]]:
        """Each part of a bin with a buffer holding its records at their file offsets.

        Remote parts are fetched whole, concurrently, with one ranged GET each (the
        footer comes with the part, so no separate footer request is needed).
        """
        pids = self._bin_parts[bin_index]
        if self._store.is_local:
            return [(part, part.data) for part in map(self._part, pids)]
        parts = [self._parts[pid] for pid in pids]
        try:
            blobs = self._store.read_ranges(
                [p.path for p in parts], [0] * len(parts), [p.size for p in parts]
            )
        except FileNotFoundError as exc:
            raise self._missing(str(exc.filename)) from None
        for part, blob in zip(parts, blobs, strict=True):
            if not part.ready and part.checksum is not None:
                offsets = decode_footer(blob, part.size, part.count, self._where(part))
                part.set_extents(offsets[:-1].copy(), offsets[1:].copy())
                part.ready = True
        return list(zip(parts, blobs, strict=True))

    def _iter_bin(
        self, bin_index: int, seed: int | None, blobs: list[tuple[_Part, Any]] | None
    ) -> Iterator[bytes]:
        if blobs is None:
            blobs = self._bin_blobs(bin_index)
        yield from iter_records(
            [d for _, d in blobs],
            [p.starts_np for p, _ in blobs],
            [p.ends_np for p, _ in blobs],
            seed,
            bin_index,
        )

    def iterate_binwise(self, shuffle: bool = False, seed: int | None = None) -> Iterator[bytes]:
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
        """
        self._ensure_open()
        s = resolve_seed(seed) if shuffle else None
        bins = bin_order(s, self.num_bins) if s is not None else list(range(self.num_bins))
        if self._store.is_local:
            for b in bins:
                yield from self._iter_bin(b, s, None)
            return
        with ThreadPoolExecutor(1) as pool:
            nxt: Future[Any] | None = pool.submit(self._bin_blobs, bins[0]) if bins else None
            for t, b in enumerate(bins):
                assert nxt is not None
                blobs = nxt.result()
                nxt = pool.submit(self._bin_blobs, bins[t + 1]) if t + 1 < len(bins) else None
                yield from self._iter_bin(b, s, blobs)

    def to_bag(
        self, shuffle: bool = False, seed: int | None = None, bins: Sequence[int] | None = None
    ) -> Any:
        """This dataset as a ``dask.bag.Bag`` with one partition per bin.

        The same as :func:`splitdask.bag.read_split_bins` with this loader's
        location and storage options, except that the Bag reads the manifest
        snapshot this loader holds, so it agrees with ``len(self)`` and indexing.
        """
        from splitdask.bag import _loader_bag  # dask is imported only when used

        return _loader_bag(self, shuffle, seed, bins)

    # -- integrity ---------------------------------------------------------------------

    def verify(self) -> VerifyReport:
        """Read every part whole and check its size, checksum and footer.

        Raises
        ------
        CorruptDatasetError
            Naming every missing, truncated or altered file found.
        """
        self._ensure_open()
        problems: list[str] = []
        total = 0
        for part in self._parts:
            where = self._where(part)
            try:
                digest, size, tail = self._digest(part)
            except FileNotFoundError:
                problems.append(f"{where}: missing")
                continue
            total += size
            if size != part.size:
                problems.append(f"{where}: {size} bytes, expected {part.size} (truncated?)")
            elif part.checksum is None:
                if not legacy.check_prefixes(tail, part.starts_np, part.ends_np):
                    problems.append(f"{where}: record length prefixes disagree with the index")
            elif part.checksum != f"xxh3_64:{digest}":
                problems.append(f"{where}: checksum mismatch (content altered)")
            else:
                try:
                    decode_footer(tail, part.size, part.count, where)
                except CorruptDatasetError as exc:
                    problems.append(str(exc))
        if problems:
            raise CorruptDatasetError(
                f"verify found {len(problems)} problem(s):\n  " + "\n  ".join(problems)
            )
        return VerifyReport(parts=len(self._parts), bytes=total)

    def _digest(self, part: _Part) -> tuple[str, int, bytes]:
        """Checksum and size of a part as stored, and its tail (legacy: all of it)."""
        if part.checksum is None:
            data = self._store.read_file(part.path)
            return "", len(data), data
        h = xxhash.xxh3_64()
        size = 0
        keep = footer_size(part.count)
        tail = b""
        with self._store.open_read(part.path) as f:
            while chunk := f.read(8 << 20):
                h.update(chunk)
                size += len(chunk)
                tail = (tail + chunk)[-keep:]
        return h.hexdigest(), size, tail


def iter_records(
    datas: Sequence[Any],
    starts: Sequence[Any],
    ends: Sequence[Any],
    seed: int | None,
    bin_index: int,
) -> Iterator[bytes]:
    """One bin's records sliced out of its parts' buffers, stored or shuffled order.

    ``datas[k]`` holds part ``k`` at its file offsets and ``starts[k]``/``ends[k]``
    are its records' extents. With a ``seed`` the order is
    ``bin_permutation(seed, bin_index, n)``, shared by ``iterate_binwise`` and the
    Dask reader.
    """
    # map(slice) and map(__getitem__) keep the per-record loop in C.
    if seed is None:
        for data, ss, es in zip(datas, starts, ends, strict=True):
            yield from map(data.__getitem__, map(slice, ss.tolist(), es.tolist()))
        return
    # Offsets may be u64 (footers) or i64 (legacy): settle on i64 before mixing.
    s_all = np.concatenate([*starts, np.zeros(0, np.int64)], dtype=np.int64, casting="unsafe")
    e_all = np.concatenate([*ends, np.zeros(0, np.int64)], dtype=np.int64, casting="unsafe")
    perm = bin_permutation(seed, bin_index, len(s_all))
    spans = map(slice, s_all[perm].tolist(), e_all[perm].tolist())
    if len(datas) == 1:
        yield from map(datas[0].__getitem__, spans)
        return
    which = np.repeat(np.arange(len(datas)), [len(x) for x in starts])[perm]
    for w, span in zip(which.tolist(), spans, strict=True):
        yield datas[w][span]

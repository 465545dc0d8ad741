"""Seeded orders: which bin comes next and how a bin's records are permuted.

Every reader (``iterate_binwise``, the Dask bag, and the engines built on them)
takes a bin's order from here, so one seed gives one order on every path. No I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import chain
from operator import getitem
from typing import Any

import numpy as np

from splitdask._dataset._index import IntArray
from splitdask._util._validate import check_int

__all__ = ["bin_order", "bin_permutation", "flat_extents", "iter_records", "resolve_seed"]


def resolve_seed(seed: int | None) -> int:
    """A concrete seed: ``seed`` itself, or fresh entropy when it is ``None``."""
    if seed is None:
        return int(np.random.SeedSequence().entropy)  # type: ignore[arg-type]
    return check_int(seed, "seed", minimum=0)


def bin_order(seed: int, num_bins: int) -> list[int]:
    """The shuffled order in which bins are visited for ``seed``."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    return [int(b) for b in rng.permutation(num_bins)]


def bin_permutation(seed: int, bin_index: int, count: int) -> IntArray:
    """The shuffled order of the records inside bin ``bin_index`` for ``seed``.

    It depends only on ``(seed, bin_index)``, so a Dask partition and the
    single-process reader shuffle a bin the same way.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, bin_index)))
    return rng.permutation(count).astype(np.int64)


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
    # Iterators of iterators (map, chain), never a generator per record: the whole
    # per-record loop runs in C, with no Python frame resumed for each record.
    if seed is None:
        return chain.from_iterable(
            map(data.__getitem__, map(slice, ss.tolist(), es.tolist()))
            for data, ss, es in zip(datas, starts, ends, strict=True)
        )
    s_all, e_all, which = flat_extents(starts, ends)
    perm = bin_permutation(seed, bin_index, len(s_all))
    spans = map(slice, s_all[perm].tolist(), e_all[perm].tolist())
    if len(datas) == 1:
        return map(datas[0].__getitem__, spans)
    return map(getitem, map(datas.__getitem__, which[perm].tolist()), spans)


def flat_extents(starts: Sequence[Any], ends: Sequence[Any]) -> tuple[IntArray, IntArray, IntArray]:
    """A bin's record extents over all its parts as one array each, and the part of
    every record: what a permutation of the bin indexes."""
    # Offsets may be u64 (footers) or i64 (legacy): settle on i64 before mixing.
    s_all = np.concatenate([*starts, np.zeros(0, np.int64)], dtype=np.int64, casting="unsafe")
    e_all = np.concatenate([*ends, np.zeros(0, np.int64)], dtype=np.int64, casting="unsafe")
    which = np.repeat(np.arange(len(starts)), [len(x) for x in starts])
    return s_all, e_all, which

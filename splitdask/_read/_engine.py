"""What the engines' readers (Dask, Ray, torch) share: the decoder of one snapshot's
records, made on the driver so that a codec this process cannot decode fails there,
before any task runs, and carried to the tasks (it pickles)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from splitdask._dataset._snapshot import Snapshot
from splitdask._format._codec import DEFAULT_CODEC, column
from splitdask._read._decode import Decoder, open_decoder
from splitdask._util._validate import check_int

__all__ = ["ITEM", "select_bins", "snapshot_decoder", "value_columns"]

ITEM = "item"
"""The one column of records that are not dicts (Ray's name for such rows)."""


def snapshot_decoder(
    snapshot: Snapshot,
    decode: bool = True,
    allow_pickle: bool = False,
    transform: Callable[[Any], Any] | None = None,
) -> Decoder:
    """The decoder of ``snapshot``'s records (its manifest names their codec; a
    splitdataloader dataset's are bytes).

    Raises
    ------
    ValueError
        As :func:`~splitdask._read._decode.open_decoder`: an unregistered codec, or
        pickle without ``allow_pickle``.
    """
    manifest = snapshot.manifest
    codec = manifest.codec if manifest is not None else DEFAULT_CODEC
    return open_decoder(
        codec,
        snapshot.store.urlpath,
        decode=decode,
        allow_pickle=allow_pickle,
        transform=transform,
    )


def value_columns(decoded: Any, n: int) -> dict[str, npt.NDArray[Any]]:
    """A decoded batch of ``n`` records (``Decoder.batch``) as NumPy columns, one per
    field for dicts (records with other keys: the union of their keys, ``None``
    where one is missing), else one named :data:`ITEM`. A stacked array stays as it
    is; a list of values becomes an object array (strings, bytes, ragged arrays)."""
    if isinstance(decoded, list) and decoded and all(type(r) is dict for r in decoded):
        keys = list(dict.fromkeys(k for r in decoded for k in r))
        decoded = {k: column([r.get(k) for r in decoded]) for k in keys}
    if not isinstance(decoded, dict):
        decoded = {ITEM: decoded}
    out: dict[str, npt.NDArray[Any]] = {}
    for name, values in decoded.items():
        if isinstance(values, np.ndarray):
            out[str(name)] = values
        else:
            arr = np.empty(n, dtype=object)
            for i, v in enumerate(values):  # one by one: never broadcast arrays
                arr[i] = v
            out[str(name)] = arr
    return out


def select_bins(bins: Sequence[int] | None, snap: Snapshot) -> list[int]:
    """The bin numbers ``bins`` names (default: all of ``snap``'s), checked: a
    sequence of distinct, in-range bin numbers, not empty."""
    num_bins = snap.num_bins
    if bins is None:
        return list(range(num_bins))
    if isinstance(bins, str | bytes) or not isinstance(bins, Iterable):
        raise TypeError(f"bins must be a sequence of bin numbers, not {type(bins).__name__}")
    selected: list[int] = []
    for b in bins:
        b = check_int(b, "bin numbers", each=True)
        if not 0 <= b < num_bins:
            where = snap.store.urlpath
            raise IndexError(f"bin {b} is out of range for a dataset of {num_bins} bins ({where})")
        selected.append(int(b))
    if len(set(selected)) != len(selected):
        dup = next(b for b in selected if selected.count(b) > 1)
        raise ValueError(f"bins lists bin {dup} more than once")
    if not selected:
        raise ValueError("bins is empty; select at least one bin")
    return selected

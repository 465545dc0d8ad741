"""The record codec interface (:class:`Codec`) and what every codec shares: a batch's
records as columns (:func:`columns`), and where a value that cannot be encoded is
(:func:`find_field`). The codecs themselves are in ``_codec`` and ``_msgpack``. No I/O.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Codec", "column", "columns", "find_field", "fixed_rows", "split_records"]


class Codec(ABC):
    """How records of one kind are stored: ``encode`` on write, ``decode`` on read.

    Subclasses set :attr:`name` and implement :meth:`encode` and :meth:`decode`;
    :meth:`decode_many` and :meth:`decode_batch` are the hooks a codec overrides
    to decode many records faster than one at a time.
    """

    name: str = ""
    """The name the dataset records."""
    trusted_only: bool = False
    """Decoding may run code the data names (pickle): readers must opt in."""

    @abstractmethod
    def encode(self, obj: Any) -> Any:
        """``obj`` as a bytes-like object (raises ``TypeError`` or ``ValueError``)."""

    @abstractmethod
    def decode(self, buf: Any) -> Any:
        """The value of one stored record (``buf``: bytes or a ``memoryview``)."""

    def decode_many(self, bufs: Iterable[Any]) -> list[Any]:
        """The values of many records, in order."""
        return list(map(self.decode, bufs))

    def decode_batch(self, data: npt.NDArray[np.uint8], offsets: npt.NDArray[np.int64]) -> Any:
        """A batch's records (``data[offsets[k]:offsets[k + 1]]``) as columns: see
        :func:`columns`, whose result this must equal."""
        return columns(self.decode_many(split_records(data, offsets)))

    def bad_field(self, obj: Any) -> str | None:
        """Where in ``obj`` a value this codec cannot encode is (``['a'][2]``), if known."""
        return None

    hint = ""
    """Said after an encoding error: what to do instead."""

    def __repr__(self) -> str:
        return f"<codec {self.name!r}>"


def find_field(obj: Any, leaf: Callable[[Any], bool], path: str = "") -> str | None:
    """The path (``['a'][2]``) of the first value in ``obj`` that is neither a dict,
    a list or tuple, nor accepted by ``leaf``; ``None`` if there is none."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                return f"{path}[{k!r}] (a key of type {type(k).__name__})"
            if (found := find_field(v, leaf, f"{path}[{k!r}]")) is not None:
                return found
        return None
    if isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            if (found := find_field(v, leaf, f"{path}[{i}]")) is not None:
                return found
        return None
    return None if leaf(obj) else f"{path or '(the record)'} (of type {type(obj).__name__})"


# -- reading -------------------------------------------------------------------------


def split_records(data: npt.NDArray[np.uint8], offsets: npt.NDArray[np.int64]) -> list[memoryview]:
    """Each record of a batch as a read-only ``memoryview`` of ``data``."""
    view = data.data.cast("B")
    return [view[a:b] for a, b in pairwise(offsets.tolist())]


def fixed_rows(
    data: npt.NDArray[np.uint8], offsets: npt.NDArray[np.int64]
) -> npt.NDArray[np.uint8] | None:
    """The records as rows of one ``(n, width)`` view, if they all have one length and
    lie back to back; else ``None``."""
    n = len(offsets) - 1
    if n <= 0:
        return None
    width = int(offsets[1] - offsets[0])
    lo = int(offsets[0])
    if int(offsets[-1]) - lo != n * width or not bool((np.diff(offsets) == width).all()):
        return None
    return data[lo : lo + n * width].reshape(n, width)


def column(values: Sequence[Any]) -> Any:
    """One field of a batch: a stacked array when every value is an array of one dtype
    and shape, or a number of one type (bool, int, float, a NumPy scalar type); a
    list otherwise."""
    if not values:
        return []
    first = values[0]
    kind = type(first)
    if any(type(v) is not kind for v in values):
        return list(values)
    if kind is np.ndarray:
        if first.dtype.hasobject or any(
            v.dtype != first.dtype or v.shape != first.shape for v in values
        ):
            return list(values)
        # Native byte order, as np.stack makes it (the column-wise paths do the same).
        return np.stack(values).astype(first.dtype.newbyteorder("="), copy=False)
    if kind in (bool, float) or (isinstance(first, np.generic) and not first.dtype.hasobject):
        return np.array(values, dtype=first.dtype if isinstance(first, np.generic) else kind)
    if kind is int:
        try:
            return np.array(values, dtype=np.int64)
        except OverflowError:
            return list(values)
    return list(values)


def columns(records: Sequence[Any]) -> Any:
    """A batch of decoded records: dicts of the same fields become a dict of columns
    (:func:`column`), other records one column."""
    if records and type(records[0]) is dict:
        keys = records[0].keys()
        if all(type(r) is dict and r.keys() == keys for r in records):
            return {k: column([r[k] for r in records]) for k in keys}
        return list(records)
    return column(records)

"""Decoded records shown to people: their fields, dtypes and shapes
(:func:`summarize_fields`, for the notebook view and ``describe``), and one record
as a line of JSON (:func:`to_json`, for ``splitdask head``/``cat``/``sample``).
No I/O."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["FieldSummary", "summarize_fields", "to_json"]


# -- JSON lines ------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """``value`` in JSON's terms: arrays as (nested) lists, NumPy scalars as numbers,
    bytes as ``{"$base64": ...}``, tuples and sets as lists, anything else as its
    ``repr`` (a pickled object)."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "SV":  # bytes items: each base64, as bytes are
            return _plain(value.tolist())
        return value.tolist()
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float):
        return value
    return repr(value)


def to_json(value: Any) -> str:
    """One decoded record as one line of ASCII JSON (see :func:`_plain`; NaN and
    infinities as Python's ``json`` writes them: ``NaN``, ``Infinity``)."""
    return json.dumps(_plain(value), ensure_ascii=True, separators=(", ", ": "))


# -- fields of the first records -------------------------------------------------------


@dataclass(frozen=True)
class FieldSummary:
    """One field of the first records of a dataset.

    ``name`` is the dict key (``""`` for records that are not dicts); ``kind`` the
    type's name (``ndarray``, ``int``, ``str``, ``bytes``, ...), with several joined
    by ``" | "`` when the records disagree; ``dtype`` and ``shape`` for arrays
    (``None`` where records disagree: ``shape`` then has ``None`` for each axis
    whose length varies, when the arrays agree in rank); ``present`` how many of the
    records have it, of ``records``."""

    name: str
    kind: str
    dtype: str | None
    shape: tuple[int | None, ...] | None
    present: int
    records: int

    def describe(self) -> str:
        """``int32 (256,)``, ``str``, ``int | None``, ``float64 (None, 3)``: one cell."""
        if self.kind == "ndarray" and self.dtype is not None:
            shape = "?" if self.shape is None else str(self.shape).replace("None", "?")
            text = f"{self.dtype} {shape}"
        else:
            text = self.kind
        if self.present < self.records:
            text += f" (in {self.present} of {self.records})"
        return text


def _kind(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, np.generic):
        return str(value.dtype)
    return type(value).__name__


def _field(name: str, values: Sequence[Any], records: int) -> FieldSummary:
    kinds = list(dict.fromkeys(_kind(v) for v in values))
    arrays = [v for v in values if isinstance(v, np.ndarray)]
    dtype: str | None = None
    shape: tuple[int | None, ...] | None = None
    if arrays and len(kinds) == 1:
        dtypes = {str(a.dtype) for a in arrays}
        dtype = dtypes.pop() if len(dtypes) == 1 else None
        ranks = {a.ndim for a in arrays}
        if len(ranks) == 1:
            shape = tuple(
                lengths.pop() if len(lengths := {a.shape[d] for a in arrays}) == 1 else None
                for d in range(ranks.pop())
            )
    return FieldSummary(name, " | ".join(kinds), dtype, shape, len(values), records)


def summarize_fields(records: Sequence[Any]) -> list[FieldSummary]:
    """The fields of ``records`` (a dataset's first decoded records), in first-seen
    order: for dict records one :class:`FieldSummary` per key, for other records one
    named ``""``; empty for no records.

    Examples
    --------
    >>> import numpy as np
    >>> recs = [{"ids": np.zeros(4, np.int32), "y": 1}, {"ids": np.zeros(6, np.int32), "y": 2}]
    >>> [f.describe() for f in summarize_fields(recs)]
    ['int32 (?,)', 'int']
    """
    if not records:
        return []
    if all(isinstance(r, dict) for r in records):
        names = list(dict.fromkeys(str(k) for r in records for k in r))
        return [
            _field(name, [r[name] for r in records if name in r], len(records)) for name in names
        ]
    return [_field("", list(records), len(records))]

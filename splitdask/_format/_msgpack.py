"""The ``"msgpack"`` codec: dicts, lists, str, numbers, bool, None, bytes and NumPy arrays.

Arrays (and NumPy scalars, as 0-d arrays) are msgpack extension type 1 holding
``u8 len, dtype.str (ASCII), u8 ndim, u64[ndim] shape (little-endian), data (C
order)``; object and structured dtypes are refused, and nothing is ever pickled.
The int values of a dict (up to 15 fields) are written as int64, whatever their
size: any msgpack reader reads them, and records of one schema get one layout.

A batch decodes column-wise where it can (:func:`fast_columns`): records of one
length that are maps of one *layout* (the same keys, value types and array headers,
in the same places) differ only in their values' bytes, so one record is parsed,
the others are checked against its fixed bytes with NumPy, and each field is
gathered from all records at once. ``docs/decisions.md`` ("Typed samples") says why.
"""

from __future__ import annotations

import math
import struct
import threading
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt

from splitdask._format._codecbase import Codec, columns, find_field, fixed_rows, split_records

__all__ = ["ARRAY_EXT", "MsgpackCodec", "fast_columns"]

ARRAY_EXT = 1
"""The msgpack extension type code of a NumPy array."""
_MAX_GROUPS = 8  # record lengths in one batch decoded column-wise; beyond: one by one
_INT64 = (-(1 << 63), (1 << 64) - 1)  # what msgpack holds
_I64 = (-(1 << 63), (1 << 63) - 1)
_FIXMAP = [bytes([0x80 | n]) for n in range(16)]
_keys: dict[str, bytes] = {}  # field names as msgpack str, made once


_local = threading.local()  # a Packer per thread: making one costs more than packing a key


def _packb(obj: Any) -> bytes:
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(default=_default, use_bin_type=True)
    try:
        return packer.pack(obj)  # type: ignore[no-any-return]
    except BaseException:
        _local.packer = None  # a failed pack may leave its buffer half full
        raise


def _pack_array(arr: np.ndarray[Any, Any]) -> msgpack.ExtType:
    dt = arr.dtype
    if dt.hasobject or dt.kind == "V":
        raise TypeError(f"an array of dtype {dt} holds objects or records, not plain data")
    key = (dt, arr.shape)
    head = _heads.get(key)
    if head is None:
        ds = dt.str.encode("ascii")
        head = struct.pack(f"<B{len(ds)}sB{arr.ndim}Q", len(ds), ds, arr.ndim, *arr.shape)
        if len(_heads) < 4096:
            _heads[key] = head
    return msgpack.ExtType(ARRAY_EXT, head + np.ascontiguousarray(arr).tobytes())


_heads: dict[tuple[np.dtype[Any], tuple[int, ...]], bytes] = {}


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return _pack_array(obj)
    if isinstance(obj, np.generic):
        return _pack_array(np.asarray(obj))
    raise TypeError(f"cannot encode an object of type {type(obj).__name__}")


_headers: dict[bytes, tuple[np.dtype[Any], tuple[int, ...]]] = {}


def array_header(data: bytes | memoryview) -> tuple[np.dtype[Any], tuple[int, ...], int]:
    """``(dtype, shape, data offset)`` of an array extension's payload, checked."""
    try:
        n = data[0]
        ndim = data[1 + n]
        start = 2 + n + 8 * ndim
        key = bytes(data[:start])
        got = _headers.get(key)
        if got is None:
            dtype = np.dtype(key[1 : 1 + n].decode("ascii"))
            if dtype.hasobject or dtype.kind == "V" or len(key) != start:
                raise ValueError(f"dtype {dtype}")
            got = (dtype, struct.unpack_from(f"<{ndim}Q", key, 2 + n))
            if len(_headers) < 4096:
                _headers[key] = got
    except (IndexError, ValueError, TypeError, UnicodeDecodeError, struct.error) as exc:
        raise ValueError(f"malformed array in a msgpack record ({exc})") from None
    if len(data) != start + math.prod(got[1]) * got[0].itemsize:
        raise ValueError("malformed array in a msgpack record (its size disagrees with its shape)")
    return got[0], got[1], start


def _ext_hook(code: int, data: bytes) -> Any:
    if code != ARRAY_EXT:
        return msgpack.ExtType(code, data)
    dtype, shape, start = array_header(data)
    arr = np.frombuffer(data, dtype, math.prod(shape), start)
    # A copy: writable and owning its memory (torch refuses read-only arrays).
    return arr.reshape(shape).copy() if shape else arr[0]


def _msgpack_leaf(x: Any) -> bool:
    if x is None or type(x) in (str, bool, float, bytes, bytearray, memoryview):
        return True
    if type(x) is int:
        return _INT64[0] <= x <= _INT64[1]
    if isinstance(x, np.ndarray | np.generic):
        return not (x.dtype.hasobject or x.dtype.kind == "V")
    return False


class MsgpackCodec(Codec):
    """msgpack, with NumPy arrays as an extension type; see the module's docstring."""

    name = "msgpack"
    hint = (
        "msgpack holds dicts, lists, str, int, float, bool, None, bytes and NumPy arrays of "
        "numbers, bytes or str: convert other values, or register a codec "
        "(splitdask.register_codec)"
    )

    def encode(self, obj: Any) -> bytes:
        if type(obj) is not dict or len(obj) > 15:
            return _packb(obj)
        # A dict of up to 15 fields (a fixmap): its int values as int64 (0xd3), so that
        # records of one schema have one layout whatever their numbers, and a batch
        # decodes column-wise without grouping records by length (fast_columns).
        out = [_FIXMAP[len(obj)]]
        keys = _keys
        for k, v in obj.items():
            key = keys.get(k) if type(k) is str else None
            if key is None:
                key = _packb(k)
                if type(k) is str and len(keys) < 4096:
                    keys[k] = key
            out.append(key)
            if type(v) is int and _I64[0] <= v <= _I64[1]:
                out.append(b"\xd3" + v.to_bytes(8, "big", signed=True))
            else:
                out.append(_packb(v))
        return b"".join(out)

    def decode(self, buf: Any) -> Any:
        return msgpack.unpackb(buf, ext_hook=_ext_hook, raw=False, strict_map_key=False)

    def decode_batch(self, data: npt.NDArray[np.uint8], offsets: npt.NDArray[np.int64]) -> Any:
        cols = fast_columns(data, offsets)
        if cols is None:
            cols = columns(self.decode_many(split_records(data, offsets)))
        return cols

    def bad_field(self, obj: Any) -> str | None:
        return find_field(obj, _msgpack_leaf)


# -- batches, column-wise -------------------------------------------------------------

# Value kinds of a layout's field: how its bytes become a column.
_FIXINT, _INT, _UINT, _FLOAT, _BOOL, _NIL, _ARRAY, _STR, _BIN = range(9)
_FAMILY = {_FIXINT: "int", _INT: "int", _UINT: "int", _FLOAT: "float", _BOOL: "bool"}


@dataclass
class _Layout:
    """Where a map's keys and values lie in one record."""

    fixed: list[tuple[int, int]] = field(default_factory=list)
    """Byte ranges every record of the layout has exactly as the template has."""
    fields: list[tuple[str, int, int, int, Any]] = field(default_factory=list)
    """``(key, kind, start, stop, dtype and shape)``: a value's bytes."""

    def matches(self, rows: npt.NDArray[np.uint8], tmpl: npt.NDArray[np.uint8]) -> bool:
        # The fixed bytes (keys, type bytes, array headers: tens of bytes) in one gather.
        where = np.concatenate([np.arange(a, b) for a, b in self.fixed] or [np.zeros(0, int)])
        if not (rows[:, where] == tmpl[where]).all():
            return False
        for _, kind, a, _, _ in self.fields:
            if kind not in (_FIXINT, _BOOL):
                continue  # (an empty str or bin last in a record has no byte at a)
            col = rows[:, a]
            if kind == _FIXINT and not ((col < 0x80) | (col >= 0xE0)).all():
                return False
            if kind == _BOOL and not ((col | 1) == 0xC3).all():
                return False
        return True

    def columns(self, rows: npt.NDArray[np.uint8]) -> dict[str, Any]:
        n = len(rows)
        out: dict[str, Any] = {}
        for key, kind, a, b, extra in self.fields:
            if kind == _FIXINT:
                out[key] = rows[:, a].view(np.int8).astype(np.int64)
            elif kind == _BOOL:
                out[key] = rows[:, a] == 0xC3
            elif kind == _NIL:
                out[key] = [None] * n
            elif kind in (_INT, _UINT, _FLOAT):
                code = {_INT: "i", _UINT: "u", _FLOAT: "f"}[kind]
                big = np.ascontiguousarray(rows[:, a:b]).view(f">{code}{b - a}")[:, 0]
                out[key] = big.astype(np.float64 if kind == _FLOAT else np.int64)
            elif kind == _ARRAY:
                dtype, shape = extra
                if b == a:
                    out[key] = np.zeros((n, *shape), dtype)
                else:
                    body = np.ascontiguousarray(rows[:, a:b])
                    col = body.view(dtype).reshape((n, *shape))
                    out[key] = col.astype(dtype.newbyteorder("="), copy=False)
            else:
                raw, w = np.ascontiguousarray(rows[:, a:b]).tobytes(), b - a
                vals = [raw[i * w : (i + 1) * w] for i in range(n)]
                out[key] = [v.decode() for v in vals] if kind == _STR else vals
        return out


def _uint_at(rec: bytes, p: int, width: int) -> int:
    return int.from_bytes(rec[p : p + width], "big")


def _str_at(rec: bytes, p: int) -> tuple[int, int] | None:
    """``(data start, data end)`` of the str at ``p``, or ``None`` if it is none."""
    t = rec[p]
    if 0xA0 <= t <= 0xBF:
        return p + 1, p + 1 + (t & 0x1F)
    width = {0xD9: 1, 0xDA: 2, 0xDB: 4}.get(t)
    if width is None:
        return None
    start = p + 1 + width
    return start, start + _uint_at(rec, p + 1, width)


def layout(rec: bytes) -> _Layout | None:
    """The layout of ``rec`` if it is a map of str keys to scalars, str, bin and arrays;
    ``None`` for anything else (nested maps and lists are decoded one by one)."""
    try:
        return _parse(rec)
    except (IndexError, ValueError, KeyError, struct.error):
        return None


def _parse(rec: bytes) -> _Layout | None:
    t = rec[0]
    if 0x80 <= t <= 0x8F:
        count, p = t & 0x0F, 1
    elif t in (0xDE, 0xDF):
        width = 2 if t == 0xDE else 4
        count, p = _uint_at(rec, 1, width), 1 + width
    else:
        return None
    lay = _Layout()
    fixed_from = 0  # start of the fixed run not yet closed
    for _ in range(count):
        span = _str_at(rec, p)
        if span is None:
            return None
        key = rec[span[0] : span[1]].decode()
        p = span[1]
        t = rec[p]
        if t < 0x80 or t >= 0xE0 or t in (0xC2, 0xC3):
            kind = _FIXINT if t not in (0xC2, 0xC3) else _BOOL
            lay.fixed.append((fixed_from, p))
            lay.fields.append((key, kind, p, p + 1, None))
            p = fixed_from = p + 1
            continue
        if t == 0xC0:
            lay.fields.append((key, _NIL, p, p + 1, None))
            p += 1
            continue
        scalar = {0xCC: (_UINT, 1), 0xCD: (_UINT, 2), 0xCE: (_UINT, 4), 0xCA: (_FLOAT, 4)}
        scalar.update({0xCB: (_FLOAT, 8), 0xD0: (_INT, 1), 0xD1: (_INT, 2), 0xD2: (_INT, 4)})
        scalar[0xD3] = (_INT, 8)
        if t in scalar:
            kind, width = scalar[t]
            a, b, extra = p + 1, p + 1 + width, None
        elif (span := _str_at(rec, p)) is not None:
            kind, (a, b), extra = _STR, span, None
        elif t in (0xC4, 0xC5, 0xC6):
            width = {0xC4: 1, 0xC5: 2, 0xC6: 4}[t]
            kind, a = _BIN, p + 1 + width
            b, extra = a + _uint_at(rec, p + 1, width), None
        elif 0xD4 <= t <= 0xD8 or t in (0xC7, 0xC8, 0xC9):
            if t >= 0xD4:  # fixext 1 to 16
                size, code_at = 1 << (t - 0xD4), p + 1
            else:
                width = {0xC7: 1, 0xC8: 2, 0xC9: 4}[t]
                size, code_at = _uint_at(rec, p + 1, width), p + 1 + width
            if rec[code_at] != ARRAY_EXT:
                return None
            payload = rec[code_at + 1 : code_at + 1 + size]
            dtype, shape, start = array_header(payload)
            kind, a, b = _ARRAY, code_at + 1 + start, code_at + 1 + size
            extra = (dtype, shape)
        else:
            return None  # nested map or list, uint64, or a foreign extension
        lay.fixed.append((fixed_from, a))
        lay.fields.append((key, kind, a, b, extra))
        p = fixed_from = b
    if p != len(rec):
        return None
    lay.fixed.append((fixed_from, p))
    lay.fixed = [(a, b) for a, b in lay.fixed if b > a]
    return lay


def fast_columns(
    data: npt.NDArray[np.uint8], offsets: npt.NDArray[np.int64]
) -> dict[str, Any] | None:
    """A batch of msgpack maps as columns without decoding record by record, or
    ``None`` when the batch does not allow it (then it is decoded record by record,
    which gives the same columns).

    Records are grouped by length (at most ``_MAX_GROUPS`` lengths: a small integer
    takes one byte, a larger one more); each group must share one layout.
    """
    n = len(offsets) - 1
    if n <= 0:
        return None
    rows = fixed_rows(data, offsets)
    groups: list[tuple[Any, npt.NDArray[np.uint8]]]
    if rows is not None:
        groups = [(None, rows)]
    else:
        lengths = np.diff(offsets)
        widths, which = np.unique(lengths, return_inverse=True)
        if len(widths) > _MAX_GROUPS:
            return None
        groups = []
        view = data.data.cast("B")
        starts = offsets[:-1]
        for g, w in enumerate(widths.tolist()):
            idx = np.flatnonzero(which == g)
            # One join of the group's records (a memcpy each): far cheaper than a
            # NumPy gather by an index per byte.
            joined = b"".join([view[a : a + w] for a in starts[idx].tolist()])
            groups.append((idx, np.frombuffer(joined, np.uint8).reshape(len(idx), w)))
    done: list[tuple[Any, _Layout, dict[str, Any]]] = []
    for idx, rows in groups:
        tmpl = rows[0]
        lay = layout(tmpl.tobytes())
        if lay is None or not lay.matches(rows, tmpl):
            return None
        done.append((idx, lay, lay.columns(rows)))
    if len(done) == 1:
        return done[0][2]
    return _merge(done, n)


def _merge(done: list[tuple[Any, _Layout, dict[str, Any]]], n: int) -> dict[str, Any] | None:
    """The columns of groups of records (each ``(indices, layout, columns)``) as one
    batch's, in the batch's order; ``None`` where decoding record by record would
    give other columns (a field of differing types: a list of them)."""
    first = next(g for g in done if g[0][0] == 0)
    keys = list(first[2])
    kinds: dict[str, set[Any]] = {k: set() for k in keys}
    for _, lay, cols in done:
        if cols.keys() != first[2].keys():
            return None
        for key, kind, _, _, extra in lay.fields:
            kinds[key].add(_FAMILY.get(kind, kind) if kind != _ARRAY else (kind, str(extra)))
    out: dict[str, Any] = {}
    for key in keys:
        if len(kinds[key]) != 1:
            return None
        sample = first[2][key]
        if isinstance(sample, np.ndarray):
            merged: Any = np.empty((n, *sample.shape[1:]), sample.dtype)
            for idx, _, cols in done:
                merged[idx] = cols[key]
        else:
            merged = [None] * n
            for idx, _, cols in done:
                for i, v in zip(idx.tolist(), cols[key], strict=True):
                    merged[i] = v
        out[key] = merged
    return out

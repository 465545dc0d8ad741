"""A batch of msgpack maps as columns, without decoding record by record.

Records of one length that are maps of one *layout* (the same keys, value types and
array headers, in the same places) differ only in their values' bytes: one record
is parsed, the others are checked against its fixed bytes with NumPy, and each
field is gathered from all records at once. Records of differing lengths (strings
of many lengths, integers in fewer bytes) are walked field by field, for all records
at once (:func:`_aligned`). ``docs/decisions.md`` ("Typed samples") says why. The
array extension's layout (``_msgpack``) is read here too. No I/O.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from splitdask._format._codecbase import fixed_rows

__all__ = ["ARRAY_EXT", "array_header", "fast_columns", "read_header"]

ARRAY_EXT = 1
"""The msgpack extension type code of a NumPy array."""
_MAX_GROUPS = 8  # record lengths in one batch decoded column-wise; beyond: one by one


_headers: dict[bytes, tuple[np.dtype[Any], tuple[int, ...], int, int]] = {}


def array_header(data: bytes | memoryview) -> tuple[np.dtype[Any], tuple[int, ...], int]:
    """``(dtype, shape, data offset)`` of an array extension's payload, checked."""
    dtype, shape, start, _ = read_header(data)
    return dtype, shape, start


def read_header(data: bytes | memoryview) -> tuple[np.dtype[Any], tuple[int, ...], int, int]:
    """:func:`array_header` and the element count; parsed once per distinct header."""
    try:
        n = data[0]
        start = 2 + n + 8 * data[1 + n]
        key = bytes(data[:start])
        got = _headers.get(key)
        if got is None:
            dtype = np.dtype(key[1 : 1 + n].decode("ascii"))
            if dtype.hasobject or dtype.kind == "V" or len(key) != start:
                raise ValueError(f"dtype {dtype}")
            shape = struct.unpack_from(f"<{key[1 + n]}Q", key, 2 + n)
            got = (dtype, shape, start, math.prod(shape))
            if len(_headers) < 4096:
                _headers[key] = got
    except (IndexError, ValueError, TypeError, UnicodeDecodeError, struct.error) as exc:
        raise ValueError(f"malformed array in a msgpack record ({exc})") from None
    if len(data) != start + got[3] * got[0].itemsize:
        raise ValueError("malformed array in a msgpack record (its size disagrees with its shape)")
    return got


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
    keys: list[tuple[int, int]] = field(default_factory=list)
    """Each field's key (its header's first byte) and value (its type byte) offsets."""

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
        lay.keys.append((p, span[1]))
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

    Records of one length are one ``(n, length)`` view; records of several lengths
    are walked field by field (:func:`_aligned`: str and bin values of any length),
    else grouped by length (at most ``_MAX_GROUPS``: msgpack writes a small integer
    in fewer bytes), each group of one layout.
    """
    n = len(offsets) - 1
    if n <= 0:
        return None
    rows = fixed_rows(data, offsets)
    groups: list[tuple[Any, npt.NDArray[np.uint8]]]
    if rows is not None:
        groups = [(None, rows)]
    else:
        first = data[offsets[0] : offsets[1]].tobytes()
        lay = layout(first)
        cols = None if lay is None else _aligned(data, offsets, lay, first)
        if cols is not None:
            return cols
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


_STR_HEADS = {0xD9: 1, 0xDA: 2, 0xDB: 4}
_BIN_HEADS = {0xC4: 1, 0xC5: 2, 0xC6: 4}


def _aligned(
    data: npt.NDArray[np.uint8], offsets: npt.NDArray[np.int64], lay: _Layout, tmpl: bytes
) -> dict[str, Any] | None:
    """Records of differing lengths as columns, if they differ only in their str and
    bin values' lengths: the fields are walked in the template's order for all
    records at once, each record at its own position (``pos``); keys and value
    headers must be the template's, str and bin headers are read per record.
    ``None`` when a record does not follow the template."""
    pos = offsets[:-1].astype(np.int64)
    end = offsets[1:]
    t = np.frombuffer(tmpl, np.uint8)
    view = data.data.cast("B")
    last = len(data) - 1

    def fixed(k0: int, k1: int) -> bool:
        # The template's bytes [k0, k1) at every record's position, which is k0's.
        if k1 <= k0:
            return True
        if (pos + (k1 - k0) > end).any():
            return False
        got = data[pos[:, None] + np.arange(k1 - k0)]
        return bool((got == t[k0:k1]).all())

    def take(at: npt.NDArray[np.int64], width: int) -> npt.NDArray[np.uint8]:
        got: npt.NDArray[np.uint8] = data[np.minimum(at[:, None] + np.arange(width), last)]
        return got

    first = lay.keys[0][0] if lay.keys else len(tmpl)
    if not fixed(0, first):
        return None
    pos += first
    out: dict[str, Any] = {}
    for (key, kind, a, b, extra), (k0, v0) in zip(lay.fields, lay.keys, strict=True):
        head = a if kind in (_INT, _UINT, _FLOAT, _ARRAY) else v0 + (kind == _NIL)
        if not fixed(k0, head):
            return None
        if kind in (_STR, _BIN):
            q = pos + (v0 - k0)
            tb = data[np.minimum(q, last)]
            heads = _STR_HEADS if kind == _STR else _BIN_HEADS
            width = np.zeros(len(q), np.int64)
            for byte, w in heads.items():
                width[tb == byte] = w
            short = ((tb & 0xE0) == 0xA0) if kind == _STR else np.zeros(len(q), bool)
            if not (short | (width > 0)).all():
                return None
            raw = take(q + 1, 4).astype(np.int64)
            length = np.where(short, tb & 0x1F, 0).astype(np.int64)
            for w in (1, 2, 4):
                sel = width == w
                if sel.any():
                    be = np.zeros(int(sel.sum()), np.int64)
                    for j in range(w):
                        be = be * 256 + raw[sel, j]
                    length[sel] = be
            starts = q + 1 + width
            pos = starts + length
            if (pos > end).any():
                return None
            vals = [view[x:y].tobytes() for x, y in zip(starts.tolist(), pos.tolist(), strict=True)]
            out[key] = [v.decode() for v in vals] if kind == _STR else vals
            continue
        q = pos + (a - k0)
        if kind == _NIL:
            out[key] = [None] * len(q)
        elif kind in (_FIXINT, _BOOL):
            col = data[np.minimum(q, last)]
            if kind == _BOOL:
                if not ((col | 1) == 0xC3).all():
                    return None
                out[key] = col == 0xC3
            else:
                if not ((col < 0x80) | (col >= 0xE0)).all():
                    return None
                out[key] = col.view(np.int8).astype(np.int64)
        elif kind == _ARRAY:
            dtype, shape = extra
            if (q + (b - a) > end).any():
                return None
            # One copy, into a bytearray: the column is writable without another.
            body = bytearray().join([view[x : x + b - a] for x in q.tolist()])
            col = np.frombuffer(body, dtype).reshape((len(q), *shape))
            out[key] = col.astype(dtype.newbyteorder("="), copy=False)
        else:
            code = {_INT: "i", _UINT: "u", _FLOAT: "f"}[kind]
            big = np.ascontiguousarray(take(q, b - a)).view(f">{code}{b - a}")[:, 0]
            out[key] = big.astype(np.float64 if kind == _FLOAT else np.int64)
        pos = q + (b - a)
    return out if bool((pos == end).all()) else None

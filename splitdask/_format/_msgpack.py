"""The ``"msgpack"`` codec: dicts, lists, str, numbers, bool, None, bytes and NumPy arrays.

Arrays (and NumPy scalars, as 0-d arrays) are msgpack extension type 1 holding
``u8 len, dtype.str (ASCII), u8 ndim, u64[ndim] shape (little-endian), data (C
order)``; object and structured dtypes are refused, and nothing is ever pickled.
The int values of a dict (up to 15 fields) are written as int64, whatever their
size: any msgpack reader reads them, and records of one schema get one layout.

A batch decodes column-wise where it can (``_msgcols``).
"""

from __future__ import annotations

import struct
import threading
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt

from splitdask._format._codecbase import Codec, columns, find_field, split_records
from splitdask._format._msgcols import ARRAY_EXT, array_header, fast_columns, read_header

__all__ = ["ARRAY_EXT", "MsgpackCodec", "array_header", "fast_columns"]

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


def _ext_hook(code: int, data: bytes) -> Any:
    if code != ARRAY_EXT:
        return msgpack.ExtType(code, data)
    dtype, shape, start, count = read_header(data)
    arr = np.frombuffer(data, dtype, count, start)
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

    def __reduce__(self) -> Any:
        return (MsgpackCodec, ())  # stateless

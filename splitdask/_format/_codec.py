"""Record codecs: how a record's Python value becomes the bytes a part stores, and back.

A dataset records the name of its codec (the version log, ``docs/format.md``), so
readers decode without being told. Built in: ``"bytes"`` (records are stored as
given: the default), ``"json"``, ``"msgpack"`` (``_msgpack``: dicts, lists, scalars,
bytes and NumPy arrays), ``"npy"`` (one array per record) and ``"pickle"`` (decoded
only when the reader allows it). :func:`register_codec` adds a user's codec by name.
No I/O here.
"""

from __future__ import annotations

import io
import json
import math
import pickle
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from splitdask._format._codecbase import (
    Codec,
    column,
    columns,
    find_field,
    fixed_rows,
    split_records,
)

__all__ = [
    "DEFAULT_CODEC",
    "Codec",
    "check_codec_name",
    "column",
    "columns",
    "encode_records",
    "find_field",
    "get_codec",
    "known_codecs",
    "register_codec",
    "split_records",
    "fixed_rows",
    "type_hint",
]

DEFAULT_CODEC = "bytes"
"""The codec of a dataset that names none (every dataset written before codecs)."""
_NAME = re.compile(r"[a-z0-9][a-z0-9_.+-]{0,63}")


class _Builtin(Codec):
    def __reduce__(self) -> Any:
        return (get_codec, (self.name,))  # built-ins pickle by name


class _Bytes(_Builtin):
    """Records stored as given (any bytes-like object); read back as ``bytes``."""

    name = "bytes"

    def encode(self, obj: Any) -> Any:
        return obj

    def decode(self, buf: Any) -> Any:
        return buf if type(buf) is bytes else bytes(buf)

    def decode_batch(self, data: npt.NDArray[np.uint8], offsets: npt.NDArray[np.int64]) -> Any:
        return self.decode_many(split_records(data, offsets))


class _Json(_Builtin):
    """UTF-8 JSON (compact; NaN and infinities refused, as JSON has none)."""

    name = "json"
    hint = "JSON holds dicts, lists, str, finite numbers, bool and None: use codec='msgpack'"

    def encode(self, obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()

    def decode(self, buf: Any) -> Any:
        return json.loads(buf if type(buf) is bytes else bytes(buf))

    def bad_field(self, obj: Any) -> str | None:
        return find_field(obj, _json_leaf)


def _json_leaf(x: Any) -> bool:
    return x is None or type(x) in (str, int, bool) or (type(x) is float and math.isfinite(x))


class _Npy(_Builtin):
    """One NumPy array per record, as a ``.npy`` file (``numpy.save``'s format)."""

    name = "npy"
    hint = "codec='npy' stores one array of numbers, bytes or str per record"

    def encode(self, obj: Any) -> bytes:
        arr = np.asarray(obj)
        if arr.dtype.hasobject or arr.dtype.kind == "V":
            raise TypeError(f"an array of dtype {arr.dtype} holds objects, not data")
        out = io.BytesIO()
        np.lib.format.write_array(out, arr, allow_pickle=False)
        return out.getvalue()

    def decode(self, buf: Any) -> Any:
        dtype, shape, fortran, start = npy_header(buf)
        n = math.prod(shape)
        arr = np.frombuffer(buf, dtype=dtype, count=n, offset=start)
        return arr.reshape(shape, order="F" if fortran else "C").copy()

    def decode_batch(self, data: npt.NDArray[np.uint8], offsets: npt.NDArray[np.int64]) -> Any:
        rows = fixed_rows(data, offsets)
        if rows is not None and len(rows):
            dtype, shape, fortran, start = npy_header(rows[0].tobytes())
            if not fortran and (rows[:, :start] == rows[0, :start]).all():
                body = np.ascontiguousarray(rows[:, start:])
                col = body.view(dtype).reshape((len(rows), *shape))
                return col.astype(dtype.newbyteorder("="), copy=False)
        return columns(self.decode_many(split_records(data, offsets)))


_NPY_MAGIC = b"\x93NUMPY"
_npy_headers: dict[bytes, tuple[np.dtype[Any], tuple[int, ...], bool, int]] = {}


def npy_header(buf: Any) -> tuple[np.dtype[Any], tuple[int, ...], bool, int]:
    """``(dtype, shape, fortran_order, data offset)`` of a ``.npy`` record; parsed
    once per distinct header (records of one shape share it)."""
    view = memoryview(buf).cast("B")
    if bytes(view[:6]) != _NPY_MAGIC or len(view) < 10:
        raise ValueError("not a .npy record (no \\x93NUMPY magic)")
    major = view[6]
    size, hlen = (
        (2, view[8] | view[9] << 8) if major == 1 else (4, int.from_bytes(view[8:12], "little"))
    )
    start = 8 + size + hlen
    key = bytes(view[:start])
    got = _npy_headers.get(key)
    if got is None:
        reader = (
            np.lib.format.read_array_header_1_0
            if major == 1
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = reader(io.BytesIO(key[8:]))  # literal_eval: no code runs
        if dtype.hasobject:
            raise ValueError(f".npy record of dtype {dtype}: objects are never unpickled")
        got = (dtype, tuple(shape), bool(fortran), start)
        if len(_npy_headers) < 1024:
            _npy_headers[key] = got
    if len(view) != got[3] + math.prod(got[1]) * got[0].itemsize:
        raise ValueError(f".npy record of {len(view)} bytes, its header says otherwise")
    return got


class _Pickle(_Builtin):
    """Python's pickle (protocol 5): any picklable value. Decoding runs code the
    record names, so a reader decodes it only with ``allow_pickle=True``."""

    name = "pickle"
    trusted_only = True

    def encode(self, obj: Any) -> bytes:
        return pickle.dumps(obj, protocol=5)

    def decode(self, buf: Any) -> Any:
        return pickle.loads(buf)


class _Functions(Codec):
    """A user's codec: an ``encode`` and a ``decode`` function."""

    def __init__(
        self, name: str, encode: Callable[[Any], Any], decode: Callable[[Any], Any]
    ) -> None:
        self.name, self._encode, self._decode = name, encode, decode

    def encode(self, obj: Any) -> Any:
        return self._encode(obj)

    def decode(self, buf: Any) -> Any:
        return self._decode(buf)

    def __reduce__(self) -> Any:
        return (_Functions, (self.name, self._encode, self._decode))


def _msgpack() -> Codec:
    from splitdask._format._msgpack import MsgpackCodec  # msgpack is imported when used

    return MsgpackCodec()


_BUILTIN: dict[str, Callable[[], Codec]] = {
    "bytes": _Bytes,
    "json": _Json,
    "msgpack": _msgpack,
    "npy": _Npy,
    "pickle": _Pickle,
}
_made: dict[str, Codec] = {}
_user: dict[str, Codec] = {}


def check_codec_name(name: object, what: str = "codec") -> str:
    """``name`` if it can name a codec: 1 to 64 of ``a-z 0-9 _ . + -``."""
    if type(name) is not str or not _NAME.fullmatch(name):
        raise ValueError(
            f"{what} name must be 1 to 64 lowercase letters, digits or _.+- (starting with "
            f"a letter or digit), got {name!r:.80}"
        )
    return name


def known_codecs() -> list[str]:
    """The built-in codecs' names, then the registered ones'."""
    return [*_BUILTIN, *sorted(_user)]


def get_codec(name: str) -> Codec:
    """The codec called ``name``.

    Raises
    ------
    ValueError
        If no codec has that name; the message lists the known ones.
    """
    codec = _made.get(name) or _user.get(name)
    if codec is not None:
        return codec
    make = _BUILTIN.get(name)
    if make is None:
        raise ValueError(
            f"unknown codec {name!r}: known codecs are {', '.join(map(repr, known_codecs()))}; "
            "add your own with splitdask.register_codec(name, encode, decode)"
        )
    codec = _made[name] = make()
    return codec


def register_codec(name: str, encode: Callable[[Any], Any], decode: Callable[[Any], Any]) -> None:
    """Add a codec under ``name``, for writers (``codec=name``) and readers.

    A dataset records its codec's name; every process that decodes it must have
    registered the same name first (a pickled loader carries the functions
    themselves, so they must be importable: module-level functions, not lambdas).

    Parameters
    ----------
    name
        1 to 64 of ``a-z 0-9 _ . + -``; not a built-in codec's name. Registering a
        name again replaces its functions.
    encode
        A record's value -> a bytes-like object.
    decode
        A stored record (``bytes``, or a read-only ``memoryview``) -> its value.

    Raises
    ------
    ValueError
        If ``name`` is malformed or a built-in codec's.
    TypeError
        If ``encode`` or ``decode`` is not callable.
    """
    check_codec_name(name)
    if name in _BUILTIN:
        raise ValueError(f"{name!r} is a built-in codec: register yours under another name")
    for what, fn in (("encode", encode), ("decode", decode)):
        if not callable(fn):
            raise TypeError(f"register_codec: {what} must be callable, got {type(fn).__name__}")
    _user[name] = _Functions(name, encode, decode)


# -- writing -------------------------------------------------------------------------


def encode_records(codec: Codec, records: Iterable[Any], start: int) -> Iterator[Any]:
    """``records`` encoded, the first being record ``start`` of its write; a value the
    codec cannot encode raises ``TypeError`` naming its position and field."""
    encode = codec.encode
    for k, obj in enumerate(records, start):
        try:
            out = encode(obj)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            where = codec.bad_field(obj)
            field = f" at field {where}" if where else ""
            hint = f"; {codec.hint}" if codec.hint else ""
            raise TypeError(
                f"record {k}: codec {codec.name!r} cannot encode it{field} ({exc}){hint}"
            ) from None
        yield out


_CODEC_FOR = {"dict": "msgpack", "list": "msgpack", "tuple": "msgpack", "str": "msgpack"}
_TYPE_ERROR = re.compile(r"record (\d+) is of type (\w+);")


def type_hint(message: str) -> str | None:
    """For the writer's "record 3 is of type dict; expected a bytes-like object":
    the same, saying which ``codec=`` stores such records (``None``: no advice)."""
    m = _TYPE_ERROR.match(message)
    if m is None:
        return None
    kind = m.group(2)
    if kind == "ndarray":
        return None
    suggest = _CODEC_FOR.get(kind, "msgpack")
    return (
        f"{message}; the default codec='bytes' stores bytes as given: to store {kind} "
        f"values pass codec={suggest!r} (or codec='json', 'npy' for one array per record, "
        "'pickle', or your own: splitdask.register_codec)"
    )

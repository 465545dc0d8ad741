"""What readers hand out for stored records: their decoded values, or the stored bytes.

A dataset names its codec (``Manifest.codec``); :func:`open_decoder` finds it when a
reader opens the dataset, so that a dataset written with a user codec that this
process has not registered, or with pickle when the reader did not allow it, fails
at open rather than at the first record. A :class:`Decoder` then turns one record,
a list, a stream or a :class:`~splitdask.RecordBatch` into values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from splitdask._format._codec import DEFAULT_CODEC, Codec, columns, get_codec, known_codecs
from splitdask._read._batch import RecordBatch

__all__ = ["Decoder", "open_decoder"]

Transform = Callable[[Any], Any]


class Decoder:
    """Decodes records with ``codec`` (``None``: keeps the stored bytes), then applies
    ``transform``. Picklable when ``transform`` is (the codec pickles by name, or a
    user codec by its functions)."""

    __slots__ = ("codec", "plain", "transform")

    def __init__(self, codec: Codec | None, transform: Transform | None = None) -> None:
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable, not {type(transform).__name__}")
        self.codec = codec
        self.transform = transform
        self.plain = transform is None and (codec is None or codec.name == DEFAULT_CODEC)
        """Records are handed out as stored: nothing to do (the fast paths stay)."""

    def __getstate__(self) -> dict[str, Any]:
        return {"codec": self.codec, "transform": self.transform}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["codec"], state["transform"])  # type: ignore[misc]

    @property
    def decodes(self) -> bool:
        """Records go through a codec's ``decode`` (not ``"bytes"``, not stored bytes)."""
        return self._decode() is not None

    def _decode(self) -> Callable[[Any], Any] | None:
        codec = self.codec
        if codec is None or codec.name == DEFAULT_CODEC:
            return None
        return codec.decode

    def one(self, buf: Any) -> Any:
        """The value of one stored record."""
        dec, tf = self._decode(), self.transform
        value = buf if dec is None else dec(buf)
        return value if tf is None else tf(value)

    def getter(self, record: Callable[[int], Any]) -> Callable[[int], Any]:
        """``record`` (index -> stored bytes) composed with this decoder."""
        dec, tf = self._decode(), self.transform
        if dec is None and tf is None:
            return record
        if tf is None:
            assert dec is not None
            return lambda i: dec(record(i))
        if dec is None:
            return lambda i: tf(record(i))
        return lambda i: tf(dec(record(i)))

    def many(self, bufs: Iterable[Any]) -> list[Any]:
        """The values of many stored records, in order."""
        if self.plain:
            return bufs if isinstance(bufs, list) else list(bufs)
        codec, tf = self.codec, self.transform
        values = list(bufs) if codec is None else codec.decode_many(bufs)
        return values if tf is None else list(map(tf, values))

    def iter(self, records: Iterator[Any]) -> Iterator[Any]:
        """A stream of stored records as values."""
        if self.plain:
            return records
        dec, tf = self._decode(), self.transform
        if dec is not None:
            records = map(dec, records)
        return records if tf is None else map(tf, records)

    def batch(self, batch: RecordBatch) -> Any:
        """A batch as the codec's columns (a dict of columns for dicts: see
        :func:`~splitdask._format._codec.columns`); the batch itself when records are
        handed out as stored. With a ``transform``, records are decoded and
        transformed one by one, then made columns: a batch is always the columns of
        what ``loader[i]`` gives for its records."""
        if self.plain:
            return batch
        codec, tf = self.codec, self.transform
        if tf is None:
            assert codec is not None
            return codec.decode_batch(batch.data, batch.offsets)
        return columns(self.many(batch.to_pylist()))


def open_decoder(
    name: str,
    where: str,
    *,
    decode: bool = True,
    allow_pickle: bool = False,
    transform: Transform | None = None,
    carried: Codec | None = None,
) -> Decoder:
    """The decoder for a dataset at ``where`` whose records are in codec ``name``.

    ``carried`` is a codec a pickled reader brought along (a user codec works in a
    process that never registered it); it is used when its name is ``name``.

    Raises
    ------
    ValueError
        If ``decode`` and no codec of that name is registered in this process, or it
        is pickle and ``allow_pickle`` is false. Both name the fix.
    """
    if not decode:
        return Decoder(None, transform)
    if carried is not None and carried.name == name:
        codec = carried
    else:
        try:
            codec = get_codec(name)
        except ValueError:
            raise ValueError(
                f"{where}: the records are stored with codec {name!r}, which is not "
                f"registered in this process (known: {', '.join(map(repr, known_codecs()))}): "
                f"call splitdask.register_codec({name!r}, encode, decode) before opening it, "
                "or pass decode=False for the stored bytes"
            ) from None
    if codec.trusted_only and not allow_pickle:
        raise ValueError(
            f"{where}: the records are stored with codec {name!r}, and decoding them runs "
            "code the data names: pass allow_pickle=True only if you trust whoever wrote "
            "it, or decode=False for the stored bytes"
        )
    return Decoder(codec, transform)

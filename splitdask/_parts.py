"""Parts as a snapshot holds them: where a part is, how many records, how to find them.

Two kinds share one interface. A :class:`V1Part` (format v1) finds its records'
extents in its own footer; a legacy part (``_legacy.LegacyPart``) was given them by
the splitdataloader index. Readers ask a part for :attr:`~Part.tail_size` bytes of
its end and hand them to :meth:`~Part.extents`, never testing which kind it is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import xxhash

from splitdask._format import PartInfo, decode_footer, footer_size, payload_size
from splitdask._index import IntArray
from splitdask._store import Store
from splitdask._store._base import iter_chunks

__all__ = ["Part", "V1Part"]


@dataclass(frozen=True)
class Part(ABC):
    """One immutable file of a bin."""

    path: str
    """Relative to the dataset root."""
    size: int
    count: int

    @property
    @abstractmethod
    def tail_size(self) -> int:
        """Bytes at the end of the file that :meth:`extents` needs."""

    @abstractmethod
    def extents(self, tail: Any, where: str) -> tuple[IntArray | Any, IntArray | Any]:
        """Start and end offsets of every record, from the part's last bytes.

        ``tail`` holds at least :attr:`tail_size` bytes of the end of the part
        (a whole part or its map will do); ``where`` names the part in errors.
        """

    @property
    @abstractmethod
    def payload(self) -> int:
        """Bytes of record data in the part, without framing."""

    @abstractmethod
    def verify(self, store: Store) -> tuple[int, str | None]:
        """Read the part as stored: ``(bytes read, the problem found or None)``.

        Raises
        ------
        FileNotFoundError
            If the part is gone.
        """


@dataclass(frozen=True)
class V1Part(Part):
    """A format v1 part: records, then an offsets footer; checksummed in the manifest."""

    checksum: str

    @classmethod
    def of(cls, info: PartInfo) -> V1Part:
        return cls(info.path, info.size, info.count, info.checksum)

    @property
    def tail_size(self) -> int:
        return footer_size(self.count)

    def extents(self, tail: Any, where: str) -> tuple[Any, Any]:
        offsets = decode_footer(tail, self.size, self.count, where)
        return offsets[:-1], offsets[1:]

    @property
    def payload(self) -> int:
        return payload_size(self.size, self.count)

    def verify(self, store: Store) -> tuple[int, str | None]:
        where = store.where(self.path)
        h = xxhash.xxh3_64()
        size = 0
        keep = self.tail_size
        tail = b""
        with store.open_read(self.path) as f:
            for chunk in iter_chunks(f):
                h.update(chunk)
                size += len(chunk)
                tail = (tail + chunk)[-keep:]
        if size != self.size:
            return size, f"{where}: {size} bytes, expected {self.size} (truncated?)"
        if self.checksum != f"xxh3_64:{h.hexdigest()}":
            return size, f"{where}: checksum mismatch (content altered)"
        try:
            decode_footer(tail, self.size, self.count, where)
        except ValueError as exc:
            return size, str(exc)
        return size, None


def as_i64(a: Any) -> IntArray:
    """Offsets as native int64 (footers are little-endian u64, legacy tables int64)."""
    return np.asarray(a).astype(np.int64, copy=False)

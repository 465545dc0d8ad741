"""Parts as a snapshot holds them: where a part is, how many records, how to find them.

Four kinds share one interface. A :class:`V3Part` (compressed) finds its frames'
extents, checksums and dictionary in its own footer, which also names the part; a
:class:`V2Part` its records' extents and checksums, and its name; a :class:`V1Part`
only the extents; a legacy part (``_legacy.LegacyPart``) was given them by the
splitdataloader index. Readers ask a part for :attr:`~Part.tail_size` bytes of its
end and hand them to :meth:`~Part.footer`, whose
:class:`~splitdask._format._partcodec.Footer` says where each record lies and brings the
codec that checks (and decodes) them; a whole part is checked with
:meth:`~Part.check_whole`. No reader tests which kind a part is.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import xxhash

from splitdask._format import (
    COMPRESSED_PART_VERSION,
    GROUPED_PART_VERSION,
    Footer,
    PartInfo,
    decode_footer,
    decode_footer_v2,
    decode_footer_v3,
    decode_footer_v4,
    footer_hash,
    footer_size,
    payload_size,
)
from splitdask._format._partcodec import PLAIN, Summed, bad_record
from splitdask._store import Store
from splitdask.errors import CorruptDatasetError

__all__ = ["Part", "V1Part", "V2Part", "V3Part", "V4Part", "part_of"]

VERIFY_CHUNK = 8 << 20
"""Bytes ``verify`` reads at a time: its memory does not grow with a part's size."""


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
        """Bytes at the end of the file that :meth:`footer` needs."""

    @abstractmethod
    def footer(self, tail: Any, where: str) -> Footer:
        """Every record's start and end offset and the part's record codec, from the
        part's last bytes.

        ``tail`` holds at least :attr:`tail_size` bytes of the end of the part
        (a whole part or its map will do); ``where`` names the part in errors.

        Raises
        ------
        CorruptDatasetError
            If the footer does not match the part's size, count, name or itself.
        """

    @abstractmethod
    def check_whole(self, data: Any, where: str) -> None:
        """Check a whole part read at once (``data``: its bytes or map).

        Raises
        ------
        CorruptDatasetError
            Naming the part (and, where the kind can tell, the first bad record).
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

    def footer(self, tail: Any, where: str) -> Footer:
        offsets = decode_footer(tail, self.size, self.count, where)
        return Footer(offsets[:-1], offsets[1:], PLAIN)

    @property
    def payload(self) -> int:
        return payload_size(self.size, self.count)

    def check_whole(self, data: Any, where: str) -> None:
        if self.checksum != f"xxh3_64:{xxhash.xxh3_64_hexdigest(data)}":
            raise self._damage(data, where)

    def _damage(self, data: Any, where: str) -> CorruptDatasetError:
        """The error for the whole part ``data``, which failed its checksum."""
        return CorruptDatasetError(f"{where}: checksum mismatch (content altered)")

    def verify(self, store: Store) -> tuple[int, str | None]:
        where = store.where(self.path)
        h = xxhash.xxh3_64()
        size = 0
        tail = bytearray()
        with store.open_read(self.path) as f:
            # Never more than the manifest's size (plus one byte to see it is longer):
            # a device or an endless file cannot keep verify reading.
            while size <= self.size and (chunk := f.read(min(VERIFY_CHUNK, self.size + 1 - size))):
                h.update(chunk)
                size += len(chunk)
                tail += chunk
                del tail[: max(0, len(tail) - self.tail_size)]
        if size != self.size:
            return size, f"{where}: {size}{'+' if size > self.size else ''} bytes, " + (
                f"expected {self.size} (truncated or replaced?)"
            )
        if self.checksum != f"xxh3_64:{h.hexdigest()}":
            return size, f"{where}: checksum mismatch (content altered)"
        try:
            self.footer(bytes(tail), where)
        except ValueError as exc:
            return size, str(exc)
        return size, None


@dataclass(frozen=True)
class V2Part(V1Part):
    """A format v2 part: its footer adds a checksum per record and the part's uid."""

    uid: str
    footer_sum: int
    """The footer's hash the manifest recorded (``PartInfo.footer_sum``); 0: none."""

    @classmethod
    def of(cls, info: PartInfo) -> V2Part:
        return cls(info.path, info.size, info.count, info.checksum, info.uid, info.footer_sum)

    @property
    def tail_size(self) -> int:
        return footer_size(self.count, 2)

    def footer(self, tail: Any, where: str) -> Footer:
        offsets, sums = decode_footer_v2(tail, self.size, self.count, self.uid, where)
        self.check_footer_sum(footer_hash(tail), where)
        return Footer(offsets[:-1], offsets[1:], Summed(sums, where))

    def check_footer_sum(self, found: int, where: str) -> None:
        """Refuse a footer whose own hash, ``found``, is not the one the manifest
        recorded: a footer made consistent again after its records were swapped,
        say, passes every check of its own."""
        if self.footer_sum and found != self.footer_sum:
            raise CorruptDatasetError(
                f"{where}: the footer is not the one the commit wrote (its hash is "
                f"{found:016x}, the manifest records {self.footer_sum:016x}): the part "
                "was altered or replaced after it was committed"
            )

    @property
    def payload(self) -> int:
        return payload_size(self.size, self.count, 2)

    def _damage(self, data: Any, where: str) -> CorruptDatasetError:
        # Say which record is bad, if the footer is intact enough to tell.
        starts, ends, codec = self.footer(data, where)
        j = codec.first_bad(data, starts, ends)
        if j is None:
            return super()._damage(data, where)
        return bad_record(where, j, int(starts[j]), int(ends[j]))


@dataclass(frozen=True)
class V3Part(V2Part):
    """A format v3 part: each record a zstd frame; the footer holds the dictionary,
    the frames' lengths and a 32-bit checksum per frame. Its footer's codec is a
    :class:`~splitdask._format._compression.Decoder` (checks and decodes)."""

    footer_len: int
    raw: int

    @classmethod
    def of(cls, info: PartInfo) -> V3Part:
        i = info
        return cls(i.path, i.size, i.count, i.checksum, i.uid, i.footer_sum, i.footer, i.raw)

    @property
    def tail_size(self) -> int:
        return self.footer_len

    def footer(self, tail: Any, where: str) -> Footer:
        raw, uid = self.raw, self.uid
        footer = decode_footer_v3(tail, self.size, self.count, self.footer_len, uid, raw, where)
        self.check_footer_sum(footer_hash(tail), where)
        return footer

    @property
    def payload(self) -> int:
        return self.raw

    def verify(self, store: Store) -> tuple[int, str | None]:
        size, problem = super().verify(store)
        if problem is not None:
            return size, problem
        # The bytes are as written; now every record must also decode.
        where = store.where(self.path)
        try:
            data, tail = store.open_tail(self.path, self.size, self.tail_size)
            starts, ends, codec = self.footer(tail, where)
            s_all, e_all = starts.tolist(), ends.tolist()
            step = 4096
            for a in range(0, self.count, step):
                # The largest end, not the last: a v4 record's extent ends past its
                # frame by its place in it (_grouped).
                lo, hi = s_all[a], max(e_all[a : a + step])
                chunk = data[lo:hi] if data is not None else store.read_range(self.path, lo, hi)
                for j in range(a, min(self.count, a + step)):
                    codec(chunk[s_all[j] - lo : e_all[j] - lo], j)  # checked, then decoded
            del codec, tail
            if data is not None and hasattr(data, "close"):
                with contextlib.suppress(BufferError):
                    data.close()
        except CorruptDatasetError as exc:
            return size, str(exc)
        return size, None


@dataclass(frozen=True)
class V4Part(V3Part):
    """A format v4 part: small records share a zstd frame (``_grouped``); its
    footer's codec is a :class:`~splitdask._format._grouped.GroupDecoder`."""

    def footer(self, tail: Any, where: str) -> Footer:
        raw, uid = self.raw, self.uid
        footer = decode_footer_v4(tail, self.size, self.count, self.footer_len, uid, raw, where)
        self.check_footer_sum(footer_hash(tail), where)
        return footer


def part_of(info: PartInfo) -> V1Part:
    """The part kind a manifest entry names."""
    if info.version >= GROUPED_PART_VERSION:
        return V4Part.of(info)
    if info.version >= COMPRESSED_PART_VERSION:
        return V3Part.of(info)
    return V2Part.of(info) if info.version >= 2 else V1Part.of(info)

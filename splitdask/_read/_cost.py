"""What one epoch of each read path costs on a remote dataset: GET requests, bytes,
and the request bill at S3's list price.

The figures follow from the manifest alone (part sizes, record counts, footer sizes)
and from the network settings (:func:`~splitdask._store._net.net_settings`), so
``describe()`` and ``splitdask info`` give them without a request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from splitdask._dataset._parts import VERIFY_CHUNK, V2Part
from splitdask._dataset._snapshot import Snapshot
from splitdask._format import DATA_START
from splitdask._read._entries import SPARSE_MIN_FOOTER
from splitdask._store import Store
from splitdask._store._fetch import chunk_spans
from splitdask._store._net import NetSettings, net_settings

__all__ = [
    "GET_PRICE_PER_1000",
    "WHOLE_BIN_PATHS",
    "EpochCost",
    "PathCost",
    "dollars",
    "epoch_cost",
    "is_remote",
]

GET_PRICE_PER_1000 = 0.0004
"""US dollars per 1,000 GET requests: the list price of S3 Standard in us-east-1 when
this was written (December 2026). Other regions, storage classes and providers differ;
data transfer out of the region is billed on top, per byte."""

WHOLE_BIN_PATHS = (
    "iterate_binwise, iterate_batches, read_bin, iter(loader), "
    "Dask read_split_bins, Ray, torch SplitIterableDataset"
)
"""The read paths that fetch every part once, whole."""

# Protocols of fsspec filesystems that answer without network requests.
_LOCAL_PROTOCOLS = {"file", "local", "memory"}


@dataclass(frozen=True)
class PathCost:
    """Requests and bytes of one read path over one epoch."""

    requests: int
    """GET requests."""
    bytes: int
    """Bytes fetched."""

    @property
    def dollars(self) -> float:
        """The requests' bill at :data:`GET_PRICE_PER_1000` (bytes are not billed by
        S3 within its region)."""
        return self.requests * GET_PRICE_PER_1000 / 1000

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "bytes": self.bytes, "dollars": self.dollars}


@dataclass(frozen=True)
class EpochCost:
    """One epoch (every record read once) of each read path of a remote dataset.

    Attributes
    ----------
    chunk_bytes
        Bytes of one ranged GET when a part is fetched whole (``SPLITDASK_CHUNK_BYTES``).
    whole_bins
        Every part fetched once, in the engine's chunks while it reads ahead
        (``_store._fetch.chunk_spans``: at most ``chunk_bytes`` each, at least 4 MiB):
        the paths in :data:`WHOLE_BIN_PATHS` (a lone bin, as a Dask task's, may be
        cut finer).
    random_access
        ``loader[i]`` for every ``i`` once: one GET per record for its stored bytes
        once its part's footer is known (a record larger than a chunk: its chunks),
        plus :attr:`footers`.
    footers
        The footers of all parts (part of :attr:`random_access`): one GET each, and
        before it two 8- and 16-byte GETs for a part whose footer is fetched by the
        entry on its first read (``_read._entries``).
    verify
        ``verify()``: per part a HEAD and ``ceil(size / 8 MiB)`` ranged GETs.
    """

    chunk_bytes: int
    num_records: int
    whole_bins: PathCost
    random_access: PathCost
    footers: PathCost
    verify: PathCost

    @property
    def per_record(self) -> PathCost:
        """One ``loader[i]`` once its part's footer is known: one GET, the mean
        record's stored bytes."""
        n = self.num_records
        records = self.random_access.bytes - self.footers.bytes
        return PathCost(1 if n else 0, records // n if n else 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "chunk_bytes": self.chunk_bytes,
            "get_price_per_1000": GET_PRICE_PER_1000,
            "whole_bins": self.whole_bins.to_dict(),
            "random_access": self.random_access.to_dict(),
            "random_access_per_record": self.per_record.to_dict(),
            "footers": self.footers.to_dict(),
            "verify": self.verify.to_dict(),
        }


def dollars(x: float) -> str:
    """An amount for people: cents from a cent up, else two significant digits
    (``"$0.08"``, ``"$1,234.50"``, ``"$0.000026"``)."""
    if x >= 0.01 or x <= 0:
        return f"${x:,.2f}"
    digits = 1 - math.floor(math.log10(x))
    return f"${x:.{digits}f}"


def is_remote(store: Store) -> bool:
    """Whether reads of ``store`` are network requests."""
    if store.is_local:
        return False
    protocol = getattr(getattr(store, "direct", None), "protocol", "")
    protocols = protocol if isinstance(protocol, tuple) else (protocol,)
    return not _LOCAL_PROTOCOLS.intersection(protocols)


def epoch_cost(snapshot: Snapshot) -> EpochCost | None:
    """The :class:`EpochCost` of ``snapshot``, or ``None`` for a dataset that is
    read without requests (a local one)."""
    if not is_remote(snapshot.store):
        return None
    net = net_settings()
    chunk = net.chunk_bytes
    parts = snapshot.parts
    size = sum(p.size for p in parts)
    legacy = snapshot.manifest is None  # a legacy bin holds records and prefixes only
    records = sum(p.payload if legacy else p.size - DATA_START - p.tail_size for p in parts)
    # A part read at random more than once: its first record's entries (two ranges,
    # and the footer's hash where the manifest recorded it) where the footer is
    # fetched by the entry, then the whole footer in one GET.
    sparse = [p for p in parts if type(p) is V2Part and p.tail_size >= SPARSE_MIN_FOOTER]
    hashed = sum(1 for p in sparse if p.footer_sum)
    footers = PathCost(
        len(parts) + 2 * len(sparse) + hashed,
        sum(p.tail_size for p in parts) + 24 * len(sparse) + 8 * hashed,
    )
    n = snapshot.num_records
    return EpochCost(
        chunk_bytes=chunk,
        num_records=n,
        whole_bins=PathCost(sum(len(chunk_spans(p.size, net, busy=True)) for p in parts), size),
        random_access=PathCost(
            _record_gets(parts, net) + footers.requests, records + footers.bytes
        ),
        footers=footers,
        # a HEAD (the real size, billed as a GET) and the streamed reads, per part
        verify=PathCost(sum(1 - (-p.size // VERIFY_CHUNK) for p in parts), size),
    )


def _record_gets(parts: Any, net: NetSettings) -> int:
    """GETs of reading every record once at random: one each, or the engine's chunks
    for records larger than a chunk (estimated from each part's mean record)."""
    total = 0
    for p in parts:
        if p.count:
            total += p.count * max(1, len(chunk_spans(p.payload // p.count, net)))
    return total

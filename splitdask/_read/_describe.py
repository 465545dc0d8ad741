"""What a dataset holds, as numbers (:class:`Description`) and as one line of text.

``SplitDataLoader.describe()``, its ``__repr__``, its notebook view (``_html``)
and ``splitdask info`` all report these same facts, computed here once; for a
remote dataset they include what an epoch of each read path costs (``_cost``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from splitdask._dataset._index import IntArray
from splitdask._dataset._parts import V3Part
from splitdask._dataset._snapshot import Snapshot
from splitdask._dataset._versions import list_log
from splitdask._format._codec import DEFAULT_CODEC
from splitdask._format._log import LOG_FORMAT_VERSION
from splitdask._read._cost import (
    GET_PRICE_PER_1000,
    WHOLE_BIN_PATHS,
    EpochCost,
    PathCost,
    dollars,
    epoch_cost,
)
from splitdask._read._records import RecordReader

__all__ = [
    "Description",
    "SizeSample",
    "cost_rows",
    "describe",
    "preview",
    "sample_sizes",
    "sizeof",
]

PREVIEW_WIDTH = 60
SIZE_SAMPLE_PARTS = 64
"""Parts whose record sizes the notebook view's histogram reads (spread over the dataset)."""


@dataclass(frozen=True)
class Description:
    """The shape of one snapshot of a dataset.

    Attributes
    ----------
    urlpath
        Where the dataset is.
    format
        ``"splitdask"`` or ``"splitdataloader"`` (a 0.0.1 directory, read only).
    format_version
        Manifest format version: 4 for a version log (``None`` for splitdataloader
        datasets).
    generation
        The version this describes, which counts commits (``None`` for
        splitdataloader datasets); also :attr:`version`.
    num_records, num_bins, num_parts
        Counts.
    payload_bytes
        Size of the records themselves.
    stored_bytes
        Size of the parts on the store (records plus framing and footers).
    bin_counts
        Records in each bin.
    metadata
        The user metadata of the manifest.
    epoch
        For a remote dataset, the GET requests, bytes and request bill of one epoch of
        each read path (:class:`~splitdask._read._cost.EpochCost`); ``None`` for a
        local one, which is read without requests.
    compression, compressed_parts
        ``"zstd"`` when parts are compressed (``None`` when none is) and how many are.
    codec
        The name of the codec the records are stored with (``"bytes"``: as written).
    """

    urlpath: str
    format: str
    format_version: int | None
    generation: int | None
    num_records: int
    num_bins: int
    num_parts: int
    payload_bytes: int
    stored_bytes: int
    bin_counts: tuple[int, ...] = field(repr=False)
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)
    epoch: EpochCost | None = field(default=None, repr=False)
    compression: str | None = None
    compressed_parts: int = 0
    codec: str = DEFAULT_CODEC

    @property
    def bin_min(self) -> int:
        return min(self.bin_counts, default=0)

    @property
    def bin_max(self) -> int:
        return max(self.bin_counts, default=0)

    @property
    def bin_mean(self) -> float:
        return self.num_records / self.num_bins if self.num_bins else 0.0

    @property
    def imbalance(self) -> float:
        """Largest bin over the mean bin (1.0 is perfectly even)."""
        return self.bin_max / self.bin_mean if self.bin_mean else 1.0

    def to_dict(self) -> dict[str, Any]:
        """Every field and the bin balance figures, for JSON."""
        out = asdict(self)
        out["bin_counts"] = list(self.bin_counts)
        out["epoch"] = None if self.epoch is None else self.epoch.to_dict()
        out["bin_balance"] = {
            "min": self.bin_min,
            "mean": self.bin_mean,
            "max": self.bin_max,
            "imbalance": self.imbalance,
        }
        return out

    @property
    def version(self) -> int | None:
        return self.generation

    def summary(self) -> str:
        """The facts in one line (the loader's ``repr`` after its location)."""
        gen = (
            "legacy splitdataloader 0.0.1"
            if self.generation is None
            else (f"generation {self.generation}")
        )
        codec = "" if self.codec == DEFAULT_CODEC else f"codec {self.codec}, "
        return (
            f"{self.num_records:,} records, {self.num_bins:,} bins, "
            f"{sizeof(self.payload_bytes)} payload, {gen}, {codec}"
            f"bin balance {self.bin_min:,}/{self.bin_mean:,.1f}/{self.bin_max:,} "
            "min/mean/max"
        )


def describe(snapshot: Snapshot) -> Description:
    """The :class:`Description` of ``snapshot`` (no I/O: the snapshot holds it all)."""
    legacy = snapshot.manifest is None
    compressed = sum(isinstance(p, V3Part) for p in snapshot.parts)
    return Description(
        urlpath=snapshot.store.urlpath,
        format="splitdataloader" if legacy else "splitdask",
        format_version=_format_version(snapshot),
        generation=snapshot.generation,
        num_records=snapshot.num_records,
        num_bins=snapshot.num_bins,
        num_parts=len(snapshot.parts),
        payload_bytes=snapshot.nbytes,
        stored_bytes=sum(p.size for p in snapshot.parts),
        bin_counts=tuple(snapshot.bin_counts()),
        metadata=snapshot.metadata,
        epoch=epoch_cost(snapshot),
        compression="zstd" if compressed else None,
        compressed_parts=compressed,
        codec=DEFAULT_CODEC if legacy else snapshot.manifest.codec,  # type: ignore[union-attr]
    )


@dataclass(frozen=True)
class SizeSample:
    """Record sizes (stored bytes) of ``parts`` of the dataset's ``of_parts`` parts."""

    sizes: IntArray
    parts: int
    of_parts: int


def sample_sizes(reader: RecordReader, max_parts: int = SIZE_SAMPLE_PARTS) -> SizeSample | None:
    """Every record size of up to ``max_parts`` parts spread evenly over a local
    dataset, from their footers (no record is read): decoded sizes where the footer
    records them (v4 compressed parts), else stored sizes; ``None`` for a remote
    dataset, where each part's footer would cost a request."""
    snap = reader.snapshot
    if not reader.store.is_local or not snap.parts:
        return None
    n = len(snap.parts)
    pids = np.unique(np.linspace(0, n - 1, min(n, max_parts)).round().astype(np.int64))
    sizes = []
    for pid in pids.tolist():
        part = reader.part(pid)
        sizes.append(part.codec.record_sizes(part.starts_np, part.ends_np))
    return SizeSample(np.concatenate(sizes), len(pids), n)


def cost_rows(epoch: EpochCost | None) -> list[tuple[str, str]]:
    """``(read path, cost)`` lines of an epoch, for ``splitdask info`` and the
    notebook view; one ``("epoch", "local: no requests")`` for a local dataset."""
    if epoch is None:
        return [("epoch", "local: no requests")]
    head = (
        f"one epoch of each read path: GETs, bytes, bill at "
        f"{dollars(GET_PRICE_PER_1000 * 1000)} per million GETs (S3 list price); "
        f"parts in {sizeof(epoch.chunk_bytes)} ranged GETs"
    )

    def cost(c: PathCost) -> str:
        return f"{c.requests:,} GETs, {sizeof(c.bytes)}, {dollars(c.dollars)}"

    f, r = epoch.footers, epoch.per_record
    return [
        ("epoch", head),
        ("whole bins", f"{cost(epoch.whole_bins)} ({WHOLE_BIN_PATHS})"),
        (
            "random",
            f"{cost(epoch.random_access)} (loader[i] of every record: "
            f"{r.requests} GET and {sizeof(r.bytes)} a record, plus the footers: "
            f"{f.requests:,} GETs, {sizeof(f.bytes)})",
        ),
        ("verify", cost(epoch.verify)),
    ]


def sizeof(n: float) -> str:
    """``n`` bytes for people: ``"1.5 MiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def preview(record: bytes, width: int = PREVIEW_WIDTH) -> tuple[str, str]:
    """``(kind, text)``: the record as UTF-8 text where it decodes, else as Python
    writes bytes (``b'sample 00000|\\xcf…'``: its text parts readable), at most
    ``width`` characters (a cut ends in ``…``). ``kind`` is ``"text"`` or ``"bytes"``."""
    try:
        text, kind = bytes(record).decode("utf-8"), "text"
        if not text.isprintable():  # newlines and controls as escapes, one line per record
            text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    except UnicodeDecodeError:
        text, kind = repr(bytes(record[:width])), "bytes"
    return kind, text if len(text) <= width else text[: width - 1] + "…"


def _format_version(snapshot: Snapshot) -> int | None:
    """4 for a version log, else the JSON manifest's version (``None``: splitdataloader)."""
    if snapshot.manifest is None:
        return None
    if list_log(snapshot.store).versions:
        return LOG_FORMAT_VERSION
    return snapshot.manifest.version

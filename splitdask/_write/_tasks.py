"""The tasks of a parallel write (Dask partitions, Ray write tasks): one task's records,
encoded with the write's codec, to new parts of its bin (:class:`PartitionWriter`), and
the commit that names every kept task's parts (:class:`CommitTask`). Both pickle, so
an engine's tasks carry them to its workers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from splitdask._format import PartInfo
from splitdask._format._codec import DEFAULT_CODEC, Codec, encode_records, type_hint
from splitdask._format._compression import Compression
from splitdask._store import Store
from splitdask._write._binwrite import write_bin_part
from splitdask._write._commit import CommitInfo, Transaction
from splitdask._write._parallel import TaskBins, commit_results

__all__ = ["CommitTask", "PartitionWriter"]


@dataclass(frozen=True)
class PartitionWriter:
    """One task's records -> new, uncommitted parts of its bin."""

    store: Store
    tag: str
    part_max_bytes: int
    compression: Compression | None = None
    codec: Codec | None = None
    """Encodes the records (``None`` or ``"bytes"``: stored as given)."""

    def write(self, records: Iterable[Any], where: str, bin_index: int) -> list[PartInfo]:
        """Write ``records``; a ``TypeError`` (a record the codec cannot encode, or,
        with ``"bytes"``, that is not bytes-like) starts with ``where``."""
        codec = self.codec
        plain = codec is None or codec.name == DEFAULT_CODEC
        if codec is not None and not plain:
            records = encode_records(codec, records, 0)
        try:
            return write_bin_part(
                self.store,
                bin_index,
                records,
                part_max_bytes=self.part_max_bytes,
                tag=self.tag,
                compression=self.compression,
            )
        except TypeError as exc:
            # "record 3 is of type dict": say which codec= stores such records.
            message = (type_hint(str(exc)) if plain else None) or str(exc)
            raise TypeError(f"{where}: {message}") from None

    def __call__(self, records: Iterable[Any], partition: int, bin_index: int) -> list[PartInfo]:
        """The Dask task of partition ``partition``."""
        return self.write(records, f"partition {partition}", bin_index)


@dataclass(frozen=True)
class CommitTask:
    """Name the parts every task returned, in task order, in a new manifest."""

    target: Transaction
    bins: TaskBins
    tag: str
    metadata: dict[str, Any] = field(default_factory=dict)
    codec: str | None = None
    """The codec the tasks encoded with (``None``: the dataset's)."""

    def __call__(self, results: Sequence[Sequence[PartInfo]]) -> CommitInfo:
        # Task t's records are the t-th run of the global order.
        done = enumerate(results)
        return commit_results(
            self.target, self.bins, done, tag=self.tag, metadata=self.metadata, codec=self.codec
        )

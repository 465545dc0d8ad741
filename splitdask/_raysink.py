"""The Ray Datasink of :func:`splitdask.ray.to_split_bins_ray`: every write task
writes its records (one binary column, or whole rows encoded with the write's codec)
to new parts of one bin that nothing names yet, and ``on_write_complete``, on the
driver, names the parts of the results Ray hands it in one manifest replacement.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from ray.data.block import Block, BlockAccessor
from ray.data.datasource import Datasink, WriteResult

from splitdask._format import PartInfo
from splitdask._format._codec import DEFAULT_CODEC, Codec
from splitdask._format._compression import Compression
from splitdask._write._cleanup import new_tag
from splitdask._write._commit import CommitInfo, Transaction
from splitdask._write._parallel import TaskBins, commit_results
from splitdask._write._tasks import PartitionWriter

__all__ = ["RECORD", "SplitBinsDatasink", "check_column"]

RECORD = "record"
"""The column of stored records (bytes) that readers give and writers take."""


@dataclass(frozen=True)
class _TaskParts:
    """What one write task hands to the commit."""

    task: int
    parts: tuple[PartInfo, ...]


class SplitBinsDatasink(Datasink[_TaskParts]):  # type: ignore[misc]
    """Write tasks make uncommitted parts; the driver commits them all at once."""

    def __init__(
        self,
        target: Transaction,
        column: str | None,
        num_bins: int | None,
        part_max_bytes: int,
        metadata: dict[str, Any],
    ) -> None:
        self.target = target
        self.column = column
        self.part_max_bytes = part_max_bytes
        self.metadata = metadata
        self.compression: Compression | None = None
        self.codec: Codec | None = None
        """Encodes the records (``None``: stored as given); ``column`` ``None``: rows."""
        self.tag = new_tag()
        # Appending keeps the dataset's bins; else num_bins, or one bin per task.
        self.bins = TaskBins.plan(target, num_bins)
        self.info: CommitInfo | None = None

    def get_name(self) -> str:
        return "SplitBins"

    def write(self, blocks: Iterable[Block], ctx: Any) -> _TaskParts:
        task = int(ctx.task_idx)
        codec = self.codec
        if codec is None or codec.name == DEFAULT_CODEC:
            records = _column_records(blocks, self.column or RECORD, task)
        else:
            records = _row_values(blocks, self.column)
        writer = PartitionWriter(
            self.target.store, self.tag, self.part_max_bytes, self.compression, codec
        )
        parts = writer.write(records, f"write task {task}", self.bins.bin_of(task))
        return _TaskParts(task, tuple(parts))

    def on_write_complete(self, write_result: WriteResult[_TaskParts]) -> None:
        results = write_result.write_returns
        if self.bins.num_bins is None and not results:
            raise ValueError("the dataset has no blocks; a new dataset needs at least one bin")
        done = [(r.task, r.parts) for r in results]
        codec = self.codec.name if self.codec is not None else None
        self.info = commit_results(
            self.target, self.bins, done, tag=self.tag, metadata=self.metadata, codec=codec
        )

    def on_write_failed(self, error: Exception) -> None:
        # Whatever failed (a task, or the commit), the manifest is what decides: parts
        # of this write that it names stay, all others found under bins/ go.
        self.target.discard(self.tag)


def _column_records(blocks: Iterable[Block], column: str, task: int) -> Iterator[bytes]:
    """The ``column`` values of a write task's blocks, as bytes, checked per block."""
    for block in blocks:
        table = BlockAccessor.for_block(block).to_arrow()
        kind = table.schema.field(column).type if column in table.column_names else None
        check_column(table.column_names, kind, column, f"write task {task}: ")
        values = table.column(column)
        if values.null_count:
            first = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
            raise TypeError(
                f"write task {task}: column {column!r} holds {values.null_count} nulls "
                f"(the first at row {first} of a block); records must be bytes"
            )
        yield from values.to_pylist()


def _row_values(blocks: Iterable[Block], column: str | None) -> Iterator[Any]:
    """Each row of a write task's blocks as a dict (tensor columns as arrays), or
    its ``column``'s value."""
    for block in blocks:
        for row in BlockAccessor.for_block(block).iter_rows(public_row_format=True):
            yield dict(row) if column is None else row[column]


def check_column(names: list[str], kind: pa.DataType | None, column: str, where: str) -> None:
    if kind is None:
        raise ValueError(
            f"{where}the dataset has no column {column!r} (its columns: "
            f"{', '.join(map(repr, names))}); pass column= to name the one holding the records, "
            "or codec='msgpack' to store whole rows"
        )
    if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
        raise TypeError(
            f"{where}column {column!r} is of type {kind}; expected binary (bytes values): "
            "encode the records to bytes first, or pass codec= ('msgpack', 'npy', ...)"
        )

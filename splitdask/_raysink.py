"""The Ray Datasink of :func:`splitdask.ray.to_split_bins_ray`: every write task
writes its records (one binary column, or whole rows encoded with the write's codec)
to new parts of one bin that nothing names yet, and ``on_write_complete``, on the
driver, names the parts of the results Ray hands it in one manifest replacement.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from ray.data.block import Block, BlockAccessor
from ray.data.datasource import Datasink, WriteResult

from splitdask._format import PartInfo
from splitdask._format._codec import DEFAULT_CODEC, Codec
from splitdask._format._compression import Compression, check_compression
from splitdask._read._arrowbins import RECORD
from splitdask._store import UrlPath, open_store
from splitdask._util._validate import check_int
from splitdask._write._changes import Mode
from splitdask._write._cleanup import new_tag
from splitdask._write._commit import DEFAULT_RETENTION, CommitInfo, Transaction
from splitdask._write._options import resolve_codec, resolve_mode, resolve_retries
from splitdask._write._parallel import TaskBins, commit_results
from splitdask._write._tasks import PartitionWriter

__all__ = ["SplitBinsDatasink", "check_column"]


@dataclass(frozen=True)
class _TaskParts:
    """What one write task hands to the commit."""

    task: int
    parts: tuple[PartInfo, ...]


class SplitBinsDatasink(Datasink[_TaskParts]):  # type: ignore[misc]
    """Write tasks make uncommitted parts; the driver commits them all at once.

    ``dataset.write_datasink(sink := SplitBinsDatasink(url, mode="a"))`` is
    :func:`~splitdask.ray.to_split_bins_ray` (the same arguments, which see; ``mode``
    defaults to ``"x"``), except that a column that is missing or not binary is
    found by the write tasks, not before. The write begins here (``FileExistsError``
    here for ``mode="x"`` on an existing dataset, ``ValueError`` for a ``codec``
    other than the dataset's); :attr:`info` is the ``CommitInfo`` once
    ``write_datasink`` returns.
    """

    def __init__(
        self,
        urlpath: UrlPath,
        storage_options: Mapping[str, Any] | None = None,
        *,
        column: str | None = None,
        mode: Mode | None = None,
        metadata: Mapping[str, Any] | None = None,
        num_bins: int | None = None,
        part_max_bytes: int = 256 << 20,
        retention: float = DEFAULT_RETENTION,
        retries: int | None = None,
        compression: str | None = None,
        compression_level: int | None = None,
        codec: str | None = None,
    ) -> None:
        if column is not None and not isinstance(column, str):
            raise TypeError(f"column must be a column name (str), not {type(column).__name__}")
        check_int(part_max_bytes, "part_max_bytes", minimum=1)
        self.compression: Compression | None = check_compression(compression, compression_level)
        if num_bins is not None:
            check_int(num_bins, "num_bins", minimum=1)
        store = open_store(urlpath, storage_options)
        self.target = Transaction.begin(
            store,
            resolve_mode(mode, "x"),
            retention=retention,
            retries=resolve_retries(retries, None),
        )
        self.codec: Codec = resolve_codec(codec, self.target.base, store.urlpath)
        """Encodes the records; with a codec other than bytes and no ``column``: rows."""
        self.column = column or (RECORD if self.plain else None)
        self.part_max_bytes = part_max_bytes
        self.metadata = dict(metadata or {})
        self.tag = new_tag()
        # Appending keeps the dataset's bins; else num_bins, or one bin per task.
        self.bins = TaskBins.plan(self.target, num_bins)
        self.info: CommitInfo | None = None

    @property
    def plain(self) -> bool:
        """Records are a binary column, stored as given (the ``"bytes"`` codec)."""
        return self.codec.name == DEFAULT_CODEC

    def get_name(self) -> str:
        return "SplitBins"

    def write(self, blocks: Iterable[Block], ctx: Any) -> _TaskParts:
        task = int(ctx.task_idx)
        if self.plain:
            records = _column_records(blocks, self.column or RECORD, task)
        else:
            records = _row_values(blocks, self.column)
        writer = PartitionWriter(
            self.target.store, self.tag, self.part_max_bytes, self.compression, self.codec
        )
        parts = writer.write(records, f"write task {task}", self.bins.bin_of(task))
        return _TaskParts(task, tuple(parts))

    def on_write_complete(self, write_result: WriteResult[_TaskParts]) -> None:
        results = write_result.write_returns
        if self.bins.num_bins is None and not results:
            raise ValueError("the dataset has no blocks; a new dataset needs at least one bin")
        done = [(r.task, r.parts) for r in results]
        self.info = commit_results(
            self.target,
            self.bins,
            done,
            tag=self.tag,
            metadata=self.metadata,
            codec=self.codec.name,
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

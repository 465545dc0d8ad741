"""Whole bins as Arrow tables (``{"record": binary}``, plus ``"index"``): the body of
the Ray read tasks, which need nothing of Ray for it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from splitdask._dataset._index import Order
from splitdask._dataset._order import bin_permutation
from splitdask._dataset._parts import Part
from splitdask._read._batch import RecordBatch
from splitdask._read._bins import load_parts
from splitdask._store import Store

__all__ = ["INDEX", "RECORD", "ReadBins", "arrow_schema"]

RECORD = "record"
INDEX = "index"


def arrow_schema(include_index: bool) -> pa.Schema:
    fields = [pa.field(RECORD, pa.binary())]
    return pa.schema([*fields, pa.field(INDEX, pa.int64())] if include_index else fields)


@dataclass(frozen=True)
class ReadBins:
    """Read task body: one block per bin, each bin in stored or seeded order."""

    store: Store
    bins: tuple[int, ...]
    parts: tuple[tuple[Part, ...], ...]
    seed: int | None
    generation: int | None
    order: Order | None

    def __call__(self) -> Iterator[pa.Table]:
        for b, parts in zip(self.bins, self.parts, strict=True):
            yield self._bin(b, parts)

    def _bin(self, b: int, parts: tuple[Part, ...]) -> pa.Table:
        with load_parts(self.store, parts, self.generation) as data:
            # Columnar from the start: a bin's records as one buffer and offsets,
            # copied once out of the mapped parts, never one Python object each.
            whole = max(1, len(data))  # the bin as one batch: one gather
            batch = RecordBatch.concat(data.batches(self.seed, b, whole))
            if batch.nbytes < 1 << 31:
                records = batch.to_arrow(large=False)
            else:  # too big for one binary array: chunks (pa.array splits them)
                records = pa.array(list(batch), type=pa.binary())
        columns: dict[str, Any] = {RECORD: records}
        if self.order is not None:
            idx = self.order.indices_of(b)
            if self.seed is not None:
                idx = idx[bin_permutation(self.seed, b, len(idx))]
            columns[INDEX] = pa.array(idx, type=pa.int64())
        return pa.table(columns)

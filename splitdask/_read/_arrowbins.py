"""Whole bins as Arrow tables (``{"record": binary}``, plus ``"index"``), or as
columns of decoded records: the body of the Ray read tasks, which need nothing of
Ray for it but the conversion of tensor columns (:meth:`ReadBins.columns_block`)."""

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
from splitdask._read._decode import Decoder
from splitdask._read._engine import value_columns
from splitdask._store import Store

__all__ = ["INDEX", "RECORD", "ReadBins", "arrow_schema"]

RECORD = "record"
"""The column of stored records (bytes) that readers give and writers take."""
INDEX = "index"


def arrow_schema(include_index: bool) -> pa.Schema:
    fields = [pa.field(RECORD, pa.binary())]
    return pa.schema([*fields, pa.field(INDEX, pa.int64())] if include_index else fields)


@dataclass(frozen=True)
class ReadBins:
    """Read task body: one block per bin, each bin in stored or seeded order; its
    records as stored, or decoded by ``decoder`` into one column per field."""

    store: Store
    bins: tuple[int, ...]
    parts: tuple[tuple[Part, ...], ...]
    seed: int | None
    generation: int | None
    order: Order | None
    decoder: Decoder | None = None

    def __call__(self) -> Iterator[Any]:
        for b, parts in zip(self.bins, self.parts, strict=True):
            block = self._bin(b, parts)
            if block is not None:
                yield block

    def columns_block(self, columns: dict[str, Any]) -> Any:
        """A block of decoded columns (``(n, ...)`` arrays become tensor columns in
        the Ray subclass); here an Arrow table of them."""
        return pa.table(columns)

    def _bin(self, b: int, parts: tuple[Part, ...]) -> Any:
        dec = self.decoder
        decoded = dec is not None and not dec.plain
        with load_parts(self.store, parts, self.generation) as data:
            # Columnar from the start: a bin's records as one buffer and offsets,
            # copied once out of the mapped parts, never one Python object each.
            whole = max(1, len(data))  # the bin as one batch: one gather
            batch = RecordBatch.concat(data.batches(self.seed, b, whole))
            if decoded:
                assert dec is not None
                if not len(batch):  # no rows, and no fields to give them
                    return None
                columns: dict[str, Any] = value_columns(dec.batch(batch), len(batch))
            elif batch.nbytes < 1 << 31:
                columns = {RECORD: batch.to_arrow(large=False)}
            else:  # too big for one binary array: chunks (pa.array splits them)
                columns = {RECORD: pa.array(list(batch), type=pa.binary())}
        if self.order is not None:
            idx = self.order.indices_of(b)
            if self.seed is not None:
                idx = idx[bin_permutation(self.seed, b, len(idx))]
            columns[INDEX] = pa.array(idx, type=pa.int64())
        return self.columns_block(columns) if decoded else pa.table(columns)

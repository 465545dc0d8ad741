"""msgpack batches whose last field is empty (found through Ray's column-wise reads):
the fast path must not look past the end of a record."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from splitdask import SplitDataLoader, write_split_data


@pytest.mark.parametrize("empty", [b"", ""])
def test_an_empty_str_or_bin_last_in_the_record(tmp_path: Path, empty: bytes | str) -> None:
    recs = [{"a": i, "z": empty} for i in range(6)]
    write_split_data(tmp_path / "ds", recs, 1, codec="msgpack")
    batch = SplitDataLoader(tmp_path / "ds").read_batch(range(6))
    assert batch["a"].tolist() == list(range(6))
    assert batch["z"] == [empty] * 6
    # Mixed lengths of the last field, some empty: the same columns as one by one.
    mixed = [{"t": np.arange(2, dtype=np.int32), "z": empty * (i % 3)} for i in range(9)]
    write_split_data(tmp_path / "m", mixed, 1, codec="msgpack")
    loader = SplitDataLoader(tmp_path / "m")
    got = loader.read_batch(range(9))
    assert got["z"] == [r["z"] for r in loader]
    assert got["t"].shape == (9, 2)

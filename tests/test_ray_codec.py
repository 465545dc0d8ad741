"""Typed records through Ray Data on a real local Ray instance: the sink's ``codec=``
(whole rows, or one column), decoded reads with one column per field (tensor columns
for fixed-shape arrays), an ``item`` column for other records, and ``decode=False``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
import ray.data

from splitdask import SplitDataLoader, write_split_data
from splitdask.ray import read_split_bins_ray, to_split_bins_ray


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    """A local Ray instance: test_ray.py's session-wide one if it is up, else our own."""
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ours = not ray.is_initialized()
    if ours:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield
    finally:
        if ours:
            ray.shutdown()


def sample(i: int) -> dict[str, Any]:
    return {
        "tokens": np.arange(i, i + 6, dtype=np.int32),
        "label": i % 4,
        "score": i / 8,
        "text": f"t{i}",
        "blob": bytes([i % 256]) * (i % 3),
    }


def test_read_gives_one_column_per_field(ray_session: None, tmp_path: Path) -> None:
    ds_path = tmp_path / "ds"
    write_split_data(ds_path, [sample(i) for i in range(40)], 4, codec="msgpack")
    ds = read_split_bins_ray(ds_path, include_index=True)
    rows = sorted(ds.take_all(), key=lambda r: r["index"])
    assert len(rows) == 40
    assert set(rows[0]) == {"tokens", "label", "score", "text", "blob", "index"}
    loader = SplitDataLoader(ds_path)
    for row in rows:
        want = loader[row["index"]]
        assert row["tokens"].dtype == np.int32
        assert row["tokens"].tolist() == want["tokens"].tolist()
        assert (row["label"], row["score"], row["text"]) == (
            want["label"],
            want["score"],
            want["text"],
        )
        assert row["blob"] == want["blob"]
    batch = ds.take_batch(8, batch_format="numpy")
    assert batch["tokens"].shape == (8, 6)
    # decode=False: the stored bytes, as before.
    raw = read_split_bins_ray(ds_path, decode=False).take_all()
    assert sorted(r["record"] for r in raw) == sorted(SplitDataLoader(ds_path, decode=False))


def test_other_records_are_an_item_column(ray_session: None, tmp_path: Path) -> None:
    write_split_data(tmp_path / "j", [[i, "x"] if i % 2 else i for i in range(10)], 2, codec="json")
    got = read_split_bins_ray(tmp_path / "j").take_all()
    assert sorted(str(r["item"]) for r in got) == sorted(
        str([i, "x"] if i % 2 else i) for i in range(10)
    )
    write_split_data(
        tmp_path / "n", [np.full((2, 2), i, np.float32) for i in range(6)], 3, codec="npy"
    )
    arrays = read_split_bins_ray(tmp_path / "n").take_all()
    assert sorted(float(r["item"][0, 0]) for r in arrays) == [float(i) for i in range(6)]
    assert arrays[0]["item"].shape == (2, 2)
    # Dicts whose keys differ: the union of the fields, None where one is missing.
    write_split_data(tmp_path / "u", [{"a": 1}, {"b": "x"}], 1, codec="msgpack")
    rows = read_split_bins_ray(tmp_path / "u").take_all()
    assert rows == [{"a": 1, "b": None}, {"a": None, "b": "x"}]


def test_sink_writes_rows_with_a_codec(ray_session: None, tmp_path: Path) -> None:
    items = [sample(i) for i in range(30)]
    ds = ray.data.from_items(items).repartition(3)
    info = to_split_bins_ray(ds, tmp_path / "rows", codec="msgpack")
    assert info.records_written == 30
    loader = SplitDataLoader(tmp_path / "rows")
    assert loader.codec == "msgpack"
    assert loader.num_bins == 3
    got = sorted(loader, key=lambda r: r["text"])
    want = sorted(items, key=lambda r: r["text"])
    for g, w in zip(got, want, strict=True):
        assert g["tokens"].tolist() == w["tokens"].tolist()
        assert (int(g["label"]), g["text"], g["blob"]) == (w["label"], w["text"], w["blob"])
    # Read back through Ray and written again: the same records.
    again = to_split_bins_ray(
        read_split_bins_ray(tmp_path / "rows"), tmp_path / "again", codec="msgpack"
    )
    assert again.records_written == 30
    assert sorted(r["text"] for r in SplitDataLoader(tmp_path / "again")) == sorted(
        r["text"] for r in items
    )

    # One column with a codec: its values are the records (npy arrays here).
    to_split_bins_ray(ds, tmp_path / "col", column="tokens", codec="npy")
    col = SplitDataLoader(tmp_path / "col")
    assert sorted(int(a[0]) for a in col) == list(range(30))
    # Appending with the dataset's codec needs no codec=; another is refused.
    to_split_bins_ray(ray.data.from_items(items[:4]), tmp_path / "rows", mode="a")
    assert len(SplitDataLoader(tmp_path / "rows")) == 34
    with pytest.raises(ValueError, match="codec='msgpack'.*codec='json'"):
        to_split_bins_ray(ds, tmp_path / "rows", mode="a", codec="json")
    # Without a codec, rows of dicts are refused and told which codec= stores them.
    with pytest.raises(ValueError, match="no column 'record'.*codec='msgpack' to store whole rows"):
        to_split_bins_ray(ds, tmp_path / "bad")

"""Typed records through Dask, on a real LocalCluster with worker processes:
``to_split_bins(codec=)``, decoded Bags (records, batches, a transform, a user codec
carried to the workers), ``decode=False``, pickle's opt-in, and a DataFrame."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.bag as db
import numpy as np
import pandas as pd
import pytest
from _codec_helpers import CODEC, decode_point, encode_point, label_plus_one
from distributed import Client

from splitdask import SplitDataLoader, register_codec, write_split_data
from splitdask.bag import read_split_bins, to_split_bins


def sample(i: int) -> dict[str, Any]:
    """A typed training sample: token ids, a label, a score and a caption."""
    return {
        "tokens": np.arange(i, i + 8, dtype=np.int32),
        "label": i % 5,
        "score": i / 4,
        "text": f"sample {i}",
    }


def flat(i: int) -> dict[str, Any]:
    return {"id": i, "x": i * 0.5, "name": f"n{i}", "ok": i % 2 == 0}


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(
        np.array_equal(a[k], b[k]) if isinstance(a[k], np.ndarray) else a[k] == b[k] for k in a
    )


def by_label(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(recs, key=lambda r: r["text"])


@pytest.mark.timeout(120)
def test_write_msgpack_bag_and_read_it_back_decoded(client: Client, tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    bag = db.from_sequence(range(60), npartitions=4).map(sample)
    info = to_split_bins(bag, ds, codec="msgpack", compute_kwargs={"scheduler": client})
    assert info.records_written == 60
    loader = SplitDataLoader(ds)
    assert loader.codec == "msgpack"
    assert loader.num_bins == 4
    want = [sample(i) for i in range(60)]
    assert all(same(loader[i], want[i]) for i in range(60))

    got = read_split_bins(ds).compute(scheduler=client)
    assert len(got) == 60
    assert all(type(r) is dict for r in got)
    assert all(same(a, b) for a, b in zip(by_label(got), by_label(want), strict=True))
    assert got[0]["tokens"].dtype == np.int32
    # The partition of bin k holds bin k's records, decoded as read_bin decodes them.
    parts = client.compute(read_split_bins(ds).to_delayed(), sync=True)
    for b, part in enumerate(parts):
        assert all(same(x, y) for x, y in zip(part, loader.read_bin(b), strict=True))
    # A shuffled Bag decodes the same records in iterate_binwise's order per bin.
    shuffled = read_split_bins(ds, shuffle=True, seed=3).compute(scheduler=client)
    assert [r["text"] for r in shuffled] != [r["text"] for r in got]
    assert sorted(r["text"] for r in shuffled) == sorted(r["text"] for r in got)

    # decode=False: the stored msgpack bytes, as the loader's decode=False gives them.
    raw = read_split_bins(ds, decode=False).compute(scheduler=client)
    plain = SplitDataLoader(ds, decode=False)
    assert sorted(raw) == sorted(plain[i] for i in range(60))
    # The loader's Bag hands out records as the loader does.
    assert len(SplitDataLoader(ds, decode=False).to_bag().compute(scheduler=client)) == 60
    assert type(loader.to_bag().take(1)[0]) is dict


@pytest.mark.timeout(120)
def test_batches_are_columns_and_transform_runs_on_the_workers(
    client: Client, tmp_path: Path
) -> None:
    ds = tmp_path / "ds"
    write_split_data(ds, [sample(i) for i in range(50)], 3, codec="msgpack")
    batches = read_split_bins(ds, batch_size=8).compute(scheduler=client)
    assert sum(len(b["label"]) for b in batches) == 50
    first = batches[0]
    assert first["tokens"].shape == (8, 8)
    assert first["tokens"].dtype == np.int32
    assert first["label"].dtype == np.int64
    assert isinstance(first["text"], list)

    bumped = read_split_bins(ds, transform=label_plus_one).compute(scheduler=client)
    assert sorted(r["label"] for r in bumped) == sorted(i % 5 + 1 for i in range(50))
    # With batches, the transform runs per record and the batch is their columns.
    tb = read_split_bins(ds, transform=label_plus_one, batch_size=50).compute(scheduler=client)
    assert sorted(np.concatenate([b["label"] for b in tb]).tolist()) == sorted(
        i % 5 + 1 for i in range(50)
    )


@pytest.mark.timeout(120)
def test_user_codec_travels_to_the_workers(client: Client, tmp_path: Path) -> None:
    register_codec(CODEC, encode_point, decode_point)
    ds = tmp_path / "ds"
    points = [(float(i), i / 2, -float(i)) for i in range(30)]
    bag = db.from_sequence(points, npartitions=3)
    to_split_bins(bag, ds, codec=CODEC, compute_kwargs={"scheduler": client})
    assert SplitDataLoader(ds).codec == CODEC
    # The workers never registered it: the Bag's tasks carry the codec's functions.
    got = read_split_bins(ds).compute(scheduler=client)
    assert sorted(got) == sorted(points)


@pytest.mark.timeout(120)
def test_errors_name_the_partition_the_record_and_the_fix(client: Client, tmp_path: Path) -> None:
    bag = db.from_sequence([b"a", {"x": 1}, b"c"], npartitions=1)
    with pytest.raises(TypeError, match=r"partition 0: record 1 is of type dict.*codec='msgpack'"):
        to_split_bins(bag, tmp_path / "a", compute_kwargs={"scheduler": client})
    bad = db.from_sequence([{"x": 1}, {"x": object()}], npartitions=1)
    with pytest.raises(TypeError, match=r"partition 0: record 1: codec 'msgpack'.*\['x'\]"):
        to_split_bins(bad, tmp_path / "b", codec="msgpack", compute_kwargs={"scheduler": client})
    with pytest.raises(ValueError, match="unknown codec 'nope': known codecs are 'bytes'"):
        to_split_bins(bag, tmp_path / "c", codec="nope")
    assert not (tmp_path / "a").exists() or not list((tmp_path / "a").glob("_manifest*"))

    # Appending in another codec is refused before any task runs.
    ds = tmp_path / "ds"
    write_split_data(ds, [b"x", b"y"], 1)
    with pytest.raises(ValueError, match="codec='bytes'.*codec='json'"):
        to_split_bins(db.from_sequence([1, 2], npartitions=1), ds, mode="a", codec="json")
    # Appending with the dataset's codec (codec left unset) encodes with it.
    js = tmp_path / "js"
    write_split_data(js, [{"a": 1}], 1, codec="json")
    more = db.from_sequence([{"a": 2}, {"a": 3}], npartitions=2)
    to_split_bins(more, js, mode="a", compute_kwargs={"scheduler": client})
    assert sorted(r["a"] for r in SplitDataLoader(js)) == [1, 2, 3]

    # Pickle decodes only when the reader opts in; opening fails before any task runs.
    pk = tmp_path / "pk"
    write_split_data(pk, [{1, 2}, {3}], 1, codec="pickle")
    with pytest.raises(ValueError, match="allow_pickle=True"):
        read_split_bins(pk)
    assert read_split_bins(pk, allow_pickle=True).compute(scheduler=client) == [{1, 2}, {3}]
    assert len(read_split_bins(pk, decode=False).compute(scheduler=client)[0]) > 0


@pytest.mark.timeout(120)
def test_flat_dicts_become_a_dask_dataframe(client: Client, tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    write_split_data(ds, [flat(i) for i in range(40)], 4, codec="msgpack")
    df = read_split_bins(ds).to_dataframe()
    assert list(df.columns) == ["id", "x", "name", "ok"]
    assert df.npartitions == 4
    out = df.compute(scheduler=client).sort_values("id").reset_index(drop=True)
    want = pd.DataFrame([flat(i) for i in range(40)])
    pd.testing.assert_frame_equal(out, want, check_dtype=False)
    assert out["id"].dtype == np.int64
    assert out["x"].dtype == np.float64
    assert out["ok"].dtype == bool
    assert df["x"].sum().compute(scheduler=client) == sum(i * 0.5 for i in range(40))

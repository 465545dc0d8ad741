"""read_split_bins of several datasets (a list or a glob of URLs) into one Bag, on a real
LocalCluster with two worker processes, locally and on the S3 server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from distributed import Client

from splitdask import SplitDataLoader, write_split_data
from splitdask.bag import read_split_bins
from splitdask.errors import DatasetNotFoundError


def make(url: str, name: str, n: int, bins: int, **kw: Any) -> list[list[bytes]]:
    """Write ``n`` records named after the dataset; its bins' contents."""
    write_split_data(url, (b"%s:%d" % (name.encode(), i) for i in range(n)), splits=bins, **kw)
    loader = SplitDataLoader(url, **kw)
    return [[bytes(r) for r in loader.read_bin(b)] for b in range(loader.num_bins)]


def flat(parts: list[list[bytes]]) -> list[bytes]:
    return [r for p in parts for r in p]


def test_a_list_of_datasets_is_one_bag_in_list_order(tmp_path: Path, client: Client) -> None:
    b = make(str(tmp_path / "b"), "b", 50, 3)
    a = make(str(tmp_path / "a"), "a", 70, 4)
    bag = read_split_bins([tmp_path / "b", str(tmp_path / "a")])
    assert bag.npartitions == 7
    assert bag.compute(scheduler=client.get) == flat(b) + flat(a)  # the list's order
    two = read_split_bins([tmp_path / "b", tmp_path / "a"], bins=[2, 0])
    assert two.compute(scheduler=client.get) == b[2] + b[0] + a[2] + a[0]


def test_a_glob_reads_its_matches_sorted(tmp_path: Path, client: Client) -> None:
    parts = {}
    for name in ("ds-2", "ds-0", "ds-1"):  # written out of order
        parts[name] = make(str(tmp_path / name), name, 40, 2)
    make(str(tmp_path / "other"), "other", 10, 1)
    bag = read_split_bins(str(tmp_path / "ds-*"))
    assert bag.npartitions == 6
    want = flat(parts["ds-0"]) + flat(parts["ds-1"]) + flat(parts["ds-2"])
    assert bag.compute(scheduler=client.get) == want
    # The same call builds the same graph; another set of datasets another one.
    assert read_split_bins(str(tmp_path / "ds-*")).name == bag.name
    assert read_split_bins(str(tmp_path / "ds-[01]")).name != bag.name


def test_a_glob_on_s3(s3_url: str, s3_storage_options: dict[str, Any], client: Client) -> None:
    opts = s3_storage_options
    b = make(f"{s3_url}/shard-b", "b", 30, 2, storage_options=opts)
    a = make(f"{s3_url}/shard-a", "a", 30, 3, storage_options=opts)
    bag = read_split_bins(f"{s3_url}/shard-*", storage_options=opts)
    assert bag.npartitions == 5
    assert bag.compute(scheduler=client.get) == flat(a) + flat(b)


def test_errors_name_the_url(tmp_path: Path) -> None:
    make(str(tmp_path / "ds-0"), "x", 10, 2)
    (tmp_path / "ds-1").mkdir()  # not a dataset
    with pytest.raises(FileNotFoundError, match=r"nothing-\* matches no dataset"):
        read_split_bins(str(tmp_path / "nothing-*"))
    with pytest.raises(DatasetNotFoundError, match="ds-1"):
        read_split_bins(str(tmp_path / "ds-*"))
    with pytest.raises(IndexError, match=r"bin 2 is out of range .*ds-0"):
        read_split_bins([tmp_path / "ds-0"], bins=[2])
    with pytest.raises(ValueError, match="empty list"):
        read_split_bins([])

"""One spelling per write option (mode=, retries=), with the older names as aliases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dask
import dask.bag as db
import pytest

from splitdask import SplitDataLoader, write_split_data
from splitdask._write._commit import DEFAULT_RETRIES
from splitdask._write._options import resolve_mode, resolve_retries
from splitdask.bag import to_split_bins


@pytest.fixture(autouse=True)
def synchronous() -> Iterator[None]:
    with dask.config.set(scheduler="synchronous"):
        yield


def test_resolve_mode() -> None:
    assert resolve_mode(None, "x") == "x"
    assert resolve_mode("w", "x") == "w"
    assert resolve_mode(None, "x", append=True, overwrite=False) == "a"
    assert resolve_mode(None, "a", start_clean=True) == "w"
    assert resolve_mode("a", "x", append=True, overwrite=False) == "a"  # agreeing: fine
    assert resolve_mode("x", "a", start_clean=False) == "x"  # a false alias says nothing
    with pytest.raises(TypeError, match=r"append=True \(mode='a'\) and mode='w' disagree"):
        resolve_mode("w", "x", append=True, overwrite=False)
    with pytest.raises(TypeError, match=r"start_clean=True \(mode='w'\) and mode='x' disagree"):
        resolve_mode("x", "a", start_clean=True)
    with pytest.raises(ValueError, match="append and overwrite are mutually exclusive"):
        resolve_mode(None, "x", append=True, overwrite=True)
    with pytest.raises(ValueError, match="mode must be 'a', 'w' or 'x', got 'r'"):
        resolve_mode("r", "x")  # type: ignore[arg-type]


def test_resolve_retries() -> None:
    assert resolve_retries(None, None) == DEFAULT_RETRIES
    assert resolve_retries(3, None) == resolve_retries(None, 3) == resolve_retries(3, 3) == 3
    with pytest.raises(TypeError, match="retries=3 and commit_retries=4 disagree"):
        resolve_retries(3, 4)
    with pytest.raises(ValueError, match="commit_retries"):
        resolve_retries(None, -1)
    with pytest.raises(ValueError, match="retries"):
        resolve_retries(-1, None)


def test_to_split_bins_mode(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    first = [b"a%d" % i for i in range(6)]
    more = [b"b%d" % i for i in range(4)]
    info = to_split_bins(db.from_sequence(first, npartitions=3), root, mode="x", retries=2)
    assert (info.records_written, info.num_bins) == (6, 3)
    with pytest.raises(FileExistsError, match=r"mode='a' \(append=True\).*mode='w'"):
        to_split_bins(db.from_sequence(more, npartitions=2), root)
    info = to_split_bins(db.from_sequence(more, npartitions=2), root, mode="a")
    assert (info.records_written, info.num_records) == (4, 10)
    assert list(SplitDataLoader(root)) == first + more
    info = to_split_bins(db.from_sequence(more, npartitions=2), root, mode="w", commit_retries=1)
    assert (info.num_records, info.num_bins) == (4, 2)
    assert list(SplitDataLoader(root)) == more


def test_to_split_bins_conflicting_aliases_raise_before_any_task(tmp_path: Path) -> None:
    bag = db.from_sequence([b"a"])
    with pytest.raises(TypeError, match="overwrite=True.*mode='a'"):
        to_split_bins(bag, tmp_path / "ds", mode="a", overwrite=True)
    with pytest.raises(TypeError, match="retries=1 and commit_retries=2"):
        to_split_bins(bag, tmp_path / "ds", retries=1, commit_retries=2)
    assert not (tmp_path / "ds").exists()


def test_write_split_data_mode(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    write_split_data(root, [b"a", b"b"], splits=2, mode="x")
    with pytest.raises(FileExistsError):
        write_split_data(root, [b"c"], splits=2, mode="x")
    write_split_data(root, [b"c"], splits=2)  # appends, as the predecessor did
    assert list(SplitDataLoader(root)) == [b"a", b"b", b"c"]
    write_split_data(root, [b"d"], splits=2, mode="w")
    assert list(SplitDataLoader(root)) == [b"d"]
    write_split_data(root, [b"e"], splits=2, start_clean=True, mode="w")  # they agree
    assert list(SplitDataLoader(root)) == [b"e"]
    with pytest.raises(TypeError, match="start_clean=True"):
        write_split_data(root, [b"f"], splits=2, start_clean=True, mode="a")
    assert list(SplitDataLoader(root)) == [b"e"]

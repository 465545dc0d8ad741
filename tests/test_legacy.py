"""Datasets written by the real splitdataloader 0.0.1 read the same through splitdask."""

from __future__ import annotations

import os
import pickle
from collections import Counter
from pathlib import Path

import pytest
import splitdataloader
from dataset_suite import make_records

from splitdask import CorruptDatasetError, SplitDaskError, SplitDataLoader, write_split_data


@pytest.fixture
def legacy_dir(tmp_path: Path) -> tuple[str, list[bytes]]:
    path = str(tmp_path / "old")
    first, second = make_records(300, 1), make_records(41, 2)
    splitdataloader.write_split_data(path, first, splits=16)
    splitdataloader.write_split_data(path, second, splits=5, shuffle=True)
    return path, first + second


def test_same_results_as_predecessor(legacy_dir: tuple[str, list[bytes]]) -> None:
    path, records = legacy_dir
    old = splitdataloader.SplitDataLoader(path)
    new = SplitDataLoader(path)
    assert len(new) == len(old) == len(records)
    assert [new[i] for i in range(len(new))] == [old[i] for i in range(len(old))] == records
    assert new[-1] == records[-1]
    assert new[10:20] == records[10:20]
    assert new[[5, 300, 0]] == [records[5], records[300], records[0]]
    assert list(new.iterate_binwise()) == list(old.iterate_binwise())
    shuffled = list(new.iterate_binwise(shuffle=True, seed=4))
    assert shuffled == list(new.iterate_binwise(shuffle=True, seed=4))
    assert Counter(shuffled) == Counter(old.iterate_binwise(shuffle=True)) == Counter(records)
    assert new.num_bins == 16
    assert sum(new.bin_counts) == len(records)
    assert new.nbytes == sum(map(len, records))
    assert new.manifest is None
    assert new.verify().parts == 16
    assert pickle.loads(pickle.dumps(new))[3] == records[3]


def test_truncated_legacy_bin_is_named(legacy_dir: tuple[str, list[bytes]]) -> None:
    path, _ = legacy_dir
    victim = os.path.join(path, "bin00000003.dat")
    with open(victim, "r+b") as f:
        f.truncate(os.path.getsize(victim) - 3)
    with pytest.raises(CorruptDatasetError, match="bin00000003.dat"):
        SplitDataLoader(path)


def test_verify_checks_legacy_framing(legacy_dir: tuple[str, list[bytes]]) -> None:
    path, _ = legacy_dir
    victim = os.path.join(path, "bin00000002.dat")
    with open(victim, "r+b") as f:
        f.seek(0)
        f.write(b"\xff")  # first record's length prefix
    with pytest.raises(CorruptDatasetError, match="bin00000002.dat: record length prefixes"):
        SplitDataLoader(path).verify()


def test_legacy_is_read_only_until_replaced(legacy_dir: tuple[str, list[bytes]]) -> None:
    path, records = legacy_dir
    with pytest.raises(SplitDaskError, match="splitdataloader 0.0.1 dataset"):
        write_split_data(path, [b"more"])
    assert list(SplitDataLoader(path)) == records  # untouched
    write_split_data(path, [b"new"], splits=2, start_clean=True)
    assert list(SplitDataLoader(path)) == [b"new"]
    # (dot files are the writers' lock); splitdask.json is the log's stub
    names = sorted(n for n in os.listdir(path) if n[0] != ".")
    assert names == ["_log", "bins", "splitdask.json"]

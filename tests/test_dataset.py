"""The dataset suite on local disk (path, PathLike, file:// URL) and on memory://."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from dataset_suite import DatasetSuite

from splitdask import SplitDataLoader, write_split_data


class TestLocal(DatasetSuite):
    @pytest.fixture
    def url(self, tmp_path: Path) -> str:
        return str(tmp_path / "ds")


class TestFileURL(DatasetSuite):
    @pytest.fixture
    def url(self, tmp_path: Path) -> str:
        return f"file://{tmp_path}/ds"


class TestMemory(DatasetSuite):
    @pytest.fixture
    def url(self) -> Iterator[str]:
        name = f"memory://splitdask-tests/{uuid.uuid4().hex}"
        yield name
        fs = fsspec.filesystem("memory")
        if fs.exists(name):
            fs.rm(name, recursive=True)


def test_pathlike_and_mmap_fast_path(tmp_path: Path) -> None:
    target = tmp_path / "p"
    write_split_data(target, [b"a", b"bc"], splits=2)
    loader = SplitDataLoader(target)
    assert loader[1] == b"bc"
    assert loader._store.is_local
    loader[0]
    assert all(p.data is not None for p in loader._reader.open_parts())  # mmapped


def test_storage_options_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="storage_options must be a dict"):
        SplitDataLoader(tmp_path, storage_options="anon")  # type: ignore[arg-type]
    bad: Any = 3
    with pytest.raises(TypeError, match=r"urlpath must be a str or os\.PathLike"):
        SplitDataLoader(bad)

"""The store contract (``store_suite.StoreSuite``) on each backend: local disk,
``memory://`` and S3 through the moto server; plus the factory's choices."""

from __future__ import annotations

import multiprocessing
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from store_suite import StoreSuite

from splitdask._store import FsspecStore, LocalStore, Store, open_store


class TestLocalStore(StoreSuite):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Store:
        return open_store(tmp_path / "root")


class TestMemoryStore(StoreSuite):
    @pytest.fixture
    def store(self) -> Iterator[Store]:
        name = f"memory://store-{uuid.uuid4().hex}"
        yield open_store(name)
        fs = fsspec.filesystem("memory")
        if fs.exists(name):
            fs.rm(name, recursive=True)


_INHERITED: dict[str, Any] = {}


def _read_inherited(conn: Any) -> None:
    store, rel = _INHERITED["store"], _INHERITED["rel"]
    conn.send(store.read_range(rel, 0, 7))
    conn.close()


class TestS3Store(StoreSuite):
    @pytest.fixture
    def store(self, s3_url: str, s3_storage_options: dict[str, Any]) -> Store:
        return open_store(s3_url, s3_storage_options)

    def test_near_ranges_are_one_request(self, ready: Store, s3_requests: Any) -> None:
        rel = "bins/00000-0a0a0a0a.bin"
        sink = ready.create_part(rel)
        sink.write(bytes(100_000))
        sink.commit()
        mark = s3_requests.mark()
        ready.read_ranges([rel] * 3, [0, 500, 90_000], [10, 600, 90_010])
        assert s3_requests.count("GET", since=mark, contains=rel) == 1

    def test_a_forked_child_reads_through_the_parents_store(self, ready: Store) -> None:
        """A forked worker (DataLoader, MpQItr) inherits a store whose s3fs refuses to
        run outside the process that made it; the store makes its own there."""
        rel = "bins/00000-0b0b0b0b.bin"
        sink = ready.create_part(rel)
        sink.write(b"payload")
        sink.commit()
        assert ready.read_range(rel, 0, 7) == b"payload"  # the parent's filesystem is live
        _INHERITED.update(store=ready, rel=rel)
        ctx = multiprocessing.get_context("fork")
        here, there = ctx.Pipe()
        child = ctx.Process(target=_read_inherited, args=(there,))
        child.start()
        try:
            assert here.poll(60)
            assert here.recv() == b"payload"
        finally:
            child.join(60)
        assert child.exitcode == 0


def test_factory_picks_the_backend(tmp_path: Path) -> None:
    assert isinstance(open_store(tmp_path), LocalStore)
    assert isinstance(open_store(f"file://{tmp_path}"), LocalStore)
    assert isinstance(open_store(f"simplecache::file://{tmp_path}"), LocalStore)
    assert isinstance(open_store("memory://x"), FsspecStore)
    with pytest.raises(TypeError, match="urlpath must be a str"):
        open_store(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="storage_options must be a dict"):
        open_store(tmp_path, [("a", 1)])  # type: ignore[arg-type]

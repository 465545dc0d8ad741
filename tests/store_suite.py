"""The contract every :class:`~splitdask._store.Store` backend keeps.

``StoreSuite`` is subclassed once per backend (``tests/test_store.py``); a subclass
provides the ``store`` fixture, an empty dataset root, and nothing else.
"""

from __future__ import annotations

import pickle

import pytest

from splitdask._store import Store
from splitdask.errors import CorruptDatasetError


def _put(store: Store, rel: str, data: bytes) -> None:
    sink = store.create_part(rel)
    sink.write(data)
    sink.commit()


class StoreSuite:
    @pytest.fixture
    def store(self) -> Store:
        raise NotImplementedError

    @pytest.fixture
    def ready(self, store: Store) -> Store:
        store.makedirs("bins")
        return store

    def test_part_is_invisible_until_commit(self, ready: Store) -> None:
        sink = ready.create_part("bins/00000-aaaaaaaa.bin")
        sink.write(b"hello ")
        sink.write(b"world")
        assert not ready.exists("bins/00000-aaaaaaaa.bin")
        assert ready.list_dir("bins") in ([], [".00000-aaaaaaaa.bin.tmp"])
        sink.commit()
        assert ready.exists("bins/00000-aaaaaaaa.bin")
        assert ready.size("bins/00000-aaaaaaaa.bin") == 11
        assert ready.list_dir("bins") == ["00000-aaaaaaaa.bin"]

    def test_aborted_part_leaves_nothing(self, ready: Store) -> None:
        sink = ready.create_part("bins/00001-bbbbbbbb.bin")
        sink.write(b"x" * 1000)
        sink.abort()
        assert not ready.exists("bins/00001-bbbbbbbb.bin")
        assert ready.list_dir("bins") == []

    def test_ranges(self, ready: Store) -> None:
        data = bytes(range(256)) * 40
        _put(ready, "bins/00000-cccccccc.bin", data)
        rel = "bins/00000-cccccccc.bin"
        assert ready.read_range(rel, 10, 20) == data[10:20]
        assert ready.read_range(rel, 5, 5) == b""
        spans = [(0, 3), (4000, 4100), (7, 9), (100, 100), (10000, 10240)]
        got = ready.read_ranges([rel] * len(spans), [s for s, _ in spans], [e for _, e in spans])
        assert got == [data[s:e] for s, e in spans]
        assert [bytes(b) for b in ready.read_whole([rel], [len(data)])] == [data]

    def test_short_and_missing_reads_are_named(self, ready: Store) -> None:
        rel = "bins/00000-dddddddd.bin"
        _put(ready, rel, b"0123456789")
        with pytest.raises(CorruptDatasetError, match=r"00000-dddddddd\.bin.*shorter"):
            ready.read_range(rel, 5, 50)
        with pytest.raises(FileNotFoundError) as err:
            ready.read_range("bins/00000-eeeeeeee.bin", 0, 4)
        assert err.value.filename == "bins/00000-eeeeeeee.bin"
        with pytest.raises(FileNotFoundError) as err:
            ready.read_ranges(["bins/00000-eeeeeeee.bin", rel], [0, 0], [4, 4])
        assert err.value.filename == "bins/00000-eeeeeeee.bin"
        with pytest.raises(FileNotFoundError):
            ready.read_whole(["bins/00000-eeeeeeee.bin"], [4])

    def test_open_tail(self, ready: Store) -> None:
        rel = "bins/00002-ffffffff.bin"
        _put(ready, rel, b"abcdefghij")
        data, tail = ready.open_tail(rel, 10, 4)
        assert bytes(tail)[-4:] == b"ghij"
        assert data is None or bytes(data) == b"abcdefghij"
        [(_, tail2)] = ready.open_tails([rel], [10], [3])
        assert bytes(tail2)[-3:] == b"hij"

    def test_atomic_replace_and_read_file(self, ready: Store) -> None:
        with pytest.raises(FileNotFoundError):
            ready.read_file("splitdask.json")
        ready.write_atomic("splitdask.json", b"one")
        ready.write_atomic("splitdask.json", b"two")
        assert ready.read_file("splitdask.json") == b"two"
        assert "splitdask.json" in ready.list_dir("")

    def test_remove_ignores_missing(self, ready: Store) -> None:
        _put(ready, "bins/00000-01234567.bin", b"z")
        ready.remove(["bins/00000-01234567.bin", "bins/00000-76543210.bin"])
        assert ready.list_dir("bins") == []
        assert ready.list_dir("nowhere") == []

    def test_pickles_as_its_location(self, ready: Store) -> None:
        _put(ready, "bins/00000-abcdef01.bin", b"payload")
        clone = pickle.loads(pickle.dumps(ready))
        assert type(clone) is type(ready)
        assert clone.urlpath == ready.urlpath
        assert clone.read_range("bins/00000-abcdef01.bin", 0, 7) == b"payload"
        assert ready.where("bins/x") == f"{ready.urlpath}/bins/x"

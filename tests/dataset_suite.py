"""Dataset behaviour every storage backend must show.

``DatasetSuite`` is subclassed once per backend (local directory, ``memory://``,
S3 on a local moto server); a subclass provides the ``url`` and
``storage_options`` fixtures and nothing else.
"""

from __future__ import annotations

import itertools
import pickle
import random
from collections import Counter
from typing import Any

import fsspec
import numpy as np
import pytest
from _manifests import forget_versions, manifest_doc, write_manifest_doc

from splitdask import (
    CorruptDatasetError,
    DatasetNotFoundError,
    FormatVersionError,
    SnapshotExpiredError,
    SplitDataLoader,
    SplitWriter,
    gc,
    write_split_data,
)
from splitdask._format import MANIFEST_NAME
from splitdask._store import open_store


def make_records(n: int, seed: int = 0, max_len: int = 300) -> list[bytes]:
    """Distinct records of varied length (including empty ones)."""
    rng = random.Random(seed)
    return [i.to_bytes(4, "little") + rng.randbytes(rng.randrange(max_len)) for i in range(n)]


class DatasetSuite:
    @pytest.fixture
    def url(self) -> str:
        raise NotImplementedError

    @pytest.fixture
    def storage_options(self) -> dict[str, Any]:
        return {}

    # -- helpers ----------------------------------------------------------------------

    @staticmethod
    def fs_path(url: str, so: dict[str, Any], rel: str) -> tuple[Any, str]:
        fs, root = fsspec.core.url_to_fs(url, **so)
        return fs, f"{root.rstrip('/')}/{rel}"

    def write(self, url: str, so: dict[str, Any], records: Any, **kw: Any) -> Any:
        return write_split_data(url, records, storage_options=so, **kw)

    def open(self, url: str, so: dict[str, Any]) -> SplitDataLoader:
        return SplitDataLoader(url, storage_options=so)

    def part_paths(self, loader: SplitDataLoader) -> list[str]:
        assert loader.manifest is not None
        return [p.path for p in loader.manifest.parts()]

    def truncate_first_remove_second(self, url: str, so: dict[str, Any]) -> list[str]:
        """Damage a dataset: cut 10 bytes off its first part, delete its second."""
        parts = self.part_paths(self.open(url, so))
        fs, short = self.fs_path(url, so, parts[0])
        fs.pipe_file(short, fs.cat_file(short)[:-10])
        fs, gone = self.fs_path(url, so, parts[1])
        fs.rm_file(gone)
        return parts

    # -- write and read back ------------------------------------------------------------

    def test_roundtrip_len_and_index(self, url: str, storage_options: dict[str, Any]) -> None:
        records = make_records(500)
        info = self.write(url, storage_options, iter(records), splits=7)
        assert (info.records_written, info.num_records, info.num_bins) == (500, 500, 7)
        assert info.bytes_written == sum(map(len, records))
        loader = self.open(url, storage_options)
        assert len(loader) == 500
        assert [loader[i] for i in range(500)] == records
        assert loader[-1] == records[-1]
        assert loader[-500] == records[0]
        assert loader[np.int64(3)] == records[3]
        assert list(loader) == records

    def test_slices_and_batches(self, url: str, storage_options: dict[str, Any]) -> None:
        records = make_records(300)
        self.write(url, storage_options, records, splits=5)
        loader = self.open(url, storage_options)
        assert loader[10:20] == records[10:20]
        assert loader[::-7] == records[::-7]
        assert loader[400:] == []
        picks = [299, 0, 5, 5, -1, 150]
        assert loader[picks] == [records[i] for i in picks]
        arr = np.array(picks, dtype=np.int32)
        assert loader[arr] == [records[i] for i in picks]
        assert loader[[]] == []

    def test_batches_views_and_write_order(self, url: str, storage_options: dict[str, Any]) -> None:
        """read_batch, iterate_batches, view and copy=False hand out exactly what the
        per-record paths do, on every backend, also across appends (many segments)."""
        records = make_records(400)
        self.write(url, storage_options, records[:300], splits=5)
        self.write(url, storage_options, records[300:], splits=3)  # a second segment
        loader = self.open(url, storage_options)
        picks = [399, 0, 5, 5, -1, 150, 301]
        batch = loader.read_batch(picks)
        assert batch.to_pylist() == [records[i] for i in picks]
        assert batch.to_arrow().to_pylist() == [records[i] for i in picks]
        assert loader.read_batch(slice(10, 20)).to_pylist() == records[10:20]
        assert len(loader.read_batch([])) == 0
        assert list(loader) == records
        for shuffle in (False, True):
            ref = list(loader.iterate_binwise(shuffle=shuffle, seed=5))
            views = list(loader.iterate_binwise(shuffle=shuffle, seed=5, copy=False))
            assert all(isinstance(v, memoryview) for v in views)
            assert [bytes(v) for v in views] == ref
            for size in (1, 7, 1000):
                batches = list(loader.iterate_batches(size, shuffle=shuffle, seed=5))
                assert [len(b) for b in batches[:-1]] == [size] * (len(batches) - 1)
                assert [r for b in batches for r in b] == ref
            dropped = list(loader.iterate_batches(7, shuffle=shuffle, seed=5, drop_last=True))
            assert [r for b in dropped for r in b] == ref[: len(ref) // 7 * 7]
        assert bytes(loader.view(-1)) == records[-1]
        assert bytes(loader.view(3)) == records[3]
        with pytest.raises(IndexError, match="index 400 is out of range"):
            loader.view(400)
        with pytest.raises(IndexError, match="index 400 is out of range"):
            loader.read_batch([1, 400])
        with pytest.raises(TypeError, match="read_batch takes"):
            loader.read_batch(3)
        with pytest.raises(ValueError, match="batch_size must be at least 1"):
            loader.iterate_batches(0)
        with pytest.raises(TypeError, match="batch_size must be an int"):
            loader.iterate_batches("3")  # type: ignore[arg-type]

    def test_bad_keys(self, url: str, storage_options: dict[str, Any]) -> None:
        self.write(url, storage_options, make_records(10), splits=3)
        loader = self.open(url, storage_options)
        for bad in (10, -11, 2**40):
            with pytest.raises(IndexError, match=f"index {bad} is out of range"):
                loader[bad]
        with pytest.raises(IndexError, match="out of range"):
            loader[[1, 2, 10]]
        for bad_key in (1.5, "3", None, b"1", True):
            with pytest.raises(TypeError):
                loader[bad_key]
        with pytest.raises(TypeError, match="one-dimensional integers"):
            loader[np.array([0.5])]

    def test_accepts_buffers(self, url: str, storage_options: dict[str, Any]) -> None:
        arr = np.arange(12, dtype=np.int32).reshape(3, 4)
        inputs = [b"bytes", bytearray(b"ba"), memoryview(b"mv"), arr, np.float64(2.5), b""]
        self.write(url, storage_options, inputs, splits=2)
        loader = self.open(url, storage_options)
        expected = [b"bytes", b"ba", b"mv", arr.tobytes(), np.float64(2.5).tobytes(), b""]
        assert list(loader) == expected

    def test_empty_write_creates_dataset(self, url: str, storage_options: dict[str, Any]) -> None:
        info = self.write(url, storage_options, [], splits=4)
        assert info.num_records == 0
        loader = self.open(url, storage_options)
        assert len(loader) == 0
        assert loader.num_bins == 4
        assert list(loader.iterate_binwise(shuffle=True)) == []

    # -- append and overwrite -------------------------------------------------------------

    def test_append_keeps_write_order(self, url: str, storage_options: dict[str, Any]) -> None:
        first, second, third = make_records(100, 1), make_records(37, 2), make_records(64, 3)
        fourth = make_records(3, 4)
        self.write(url, storage_options, first, splits=8)
        self.write(url, storage_options, second, splits=8)
        self.write(url, storage_options, third, splits=8, shuffle=True, seed=5)
        info = self.write(url, storage_options, fourth, splits=3, shuffle=True)
        everything = first + second + third + fourth
        assert info.num_records == len(everything)
        loader = self.open(url, storage_options)
        assert list(loader) == everything
        assert loader[100] == second[0]
        assert loader[-1] == fourth[-1]
        # Appends go to the least-filled bins first, so bins stay balanced.
        counts = loader.bin_counts
        assert sum(counts) == len(everything)
        assert max(counts) - min(counts) <= 1

    def test_append_keeps_bin_count_by_default(
        self, url: str, storage_options: dict[str, Any]
    ) -> None:
        self.write(url, storage_options, make_records(10, 1), splits=3)
        self.write(url, storage_options, make_records(10, 2))
        assert self.open(url, storage_options).num_bins == 3
        fresh = url + "-fresh"
        self.write(fresh, storage_options, make_records(3))
        assert self.open(fresh, storage_options).num_bins == 256

    def test_append_with_more_splits_adds_bins(
        self, url: str, storage_options: dict[str, Any]
    ) -> None:
        self.write(url, storage_options, make_records(10, 1), splits=2)
        self.write(url, storage_options, make_records(10, 2), splits=5)
        loader = self.open(url, storage_options)
        assert loader.num_bins == 5
        assert list(loader) == make_records(10, 1) + make_records(10, 2)

    def test_overwrite_retires_old_parts_until_gc(
        self, url: str, storage_options: dict[str, Any]
    ) -> None:
        self.write(url, storage_options, make_records(50, 1), splits=4)
        before = self.open(url, storage_options)
        old_parts = self.part_paths(before)
        self.write(url, storage_options, make_records(20, 2), splits=3, start_clean=True)
        loader = self.open(url, storage_options)
        assert list(loader) == make_records(20, 2)
        assert loader.num_bins == 3
        # A loader of the replaced version keeps reading it, and so does a new one
        # opened on it: its parts are kept until its retention has passed.
        assert list(before.iterate_binwise()) == sorted(
            make_records(50, 1), key=lambda r: int.from_bytes(r[:4], "little") % 4
        )
        old = before.version
        assert old is not None
        assert loader.version == old + 1
        again = SplitDataLoader(url, storage_options=storage_options, version=old)
        assert list(again) == make_records(50, 1)
        assert gc(url, storage_options).removed == ()  # younger than the grace period
        report = gc(url, storage_options, older_than=0)
        assert set(report.retired) == set(old_parts)
        assert report.versions == (old,)
        for rel in old_parts:
            fs, path = self.fs_path(url, storage_options, rel)
            assert not fs.exists(path)
        assert list(self.open(url, storage_options)) == make_records(20, 2)
        with pytest.raises(SnapshotExpiredError, match=f"version {old} is no longer kept"):
            SplitDataLoader(url, storage_options=storage_options, version=old)

    def test_mode_x_refuses_existing(self, url: str, storage_options: dict[str, Any]) -> None:
        self.write(url, storage_options, [b"a"], splits=1)
        with pytest.raises(FileExistsError):
            SplitWriter(url, 2, mode="x", storage_options=storage_options)

    # -- SplitWriter -----------------------------------------------------------------------

    def test_writer_context_commits(self, url: str, storage_options: dict[str, Any]) -> None:
        with SplitWriter(url, 3, storage_options=storage_options, metadata={"k": 1}) as w:
            w.write(b"one")
            w.write_many([b"two", b"three"])
            assert w.info is None
        assert w.info is not None
        assert w.info.num_records == 3
        loader = self.open(url, storage_options)
        assert list(loader) == [b"one", b"two", b"three"]
        assert loader.metadata == {"k": 1}
        with pytest.raises(ValueError, match="already committed"):
            w.write(b"late")

    def test_writer_exception_commits_nothing(
        self, url: str, storage_options: dict[str, Any]
    ) -> None:
        self.write(url, storage_options, make_records(30), splits=3)
        before = self.open(url, storage_options)
        parts_before = set(self.part_paths(before))
        with (  # noqa: PT012
            pytest.raises(RuntimeError, match="boom"),
            SplitWriter(url, storage_options=storage_options) as w,
        ):
            w.write_many(make_records(100, 9))
            raise RuntimeError("boom")
        after = self.open(url, storage_options)
        assert list(after) == make_records(30)
        assert set(self.part_paths(after)) == parts_before
        fs, bins = self.fs_path(url, storage_options, "bins")
        # Parts of the aborted write were cleaned up, not just left unreferenced.
        assert {p.rsplit("/", 1)[-1] for p in fs.ls(bins, detail=False)} == {
            p.rsplit("/", 1)[-1] for p in parts_before
        }

    def test_bad_record_type_names_position(
        self, url: str, storage_options: dict[str, Any]
    ) -> None:
        self.write(url, storage_options, make_records(20), splits=2)

        def records() -> Any:
            yield from make_records(7, 4)
            yield "a string"

        with pytest.raises(TypeError, match="record 7 is of type str"):
            self.write(url, storage_options, records(), splits=2)
        with pytest.raises(TypeError, match="record 0 is a non-contiguous ndarray"):
            self.write(url, storage_options, [np.zeros((4, 4))[:, 1]], splits=2)
        assert list(self.open(url, storage_options)) == make_records(20)

    def test_bad_writer_arguments(self, url: str, storage_options: dict[str, Any]) -> None:
        with pytest.raises(ValueError, match="splits must be at least 1"):
            SplitWriter(url, 0, storage_options=storage_options)
        with pytest.raises(TypeError, match="splits must be an int"):
            SplitWriter(url, 2.0, storage_options=storage_options)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="mode must be"):
            SplitWriter(url, 2, mode="r", storage_options=storage_options)  # type: ignore[arg-type]

    # -- bins and shuffling ----------------------------------------------------------------

    def test_bins(self, url: str, storage_options: dict[str, Any]) -> None:
        records = make_records(103)
        self.write(url, storage_options, records, splits=10)
        loader = self.open(url, storage_options)
        assert loader.num_bins == 10
        assert loader.bin_counts == [11, 11, 11, 10, 10, 10, 10, 10, 10, 10]
        assert loader.read_bin(3) == records[3::10]
        assert loader.nbytes == sum(map(len, records))
        with pytest.raises(IndexError, match="bin 10 is out of range"):
            loader.read_bin(10)
        with pytest.raises(TypeError):
            loader.read_bin("1")  # type: ignore[arg-type]

    def test_iterate_binwise_plain(self, url: str, storage_options: dict[str, Any]) -> None:
        records = make_records(103)
        self.write(url, storage_options, records, splits=10)
        loader = self.open(url, storage_options)
        expected = [r for b in range(10) for r in records[b::10]]
        assert list(loader.iterate_binwise()) == expected

    def test_iterate_binwise_shuffle(self, url: str, storage_options: dict[str, Any]) -> None:
        records = make_records(400)
        self.write(url, storage_options, records, splits=8)
        loader = self.open(url, storage_options)
        a = list(loader.iterate_binwise(shuffle=True, seed=1))
        b = list(loader.iterate_binwise(shuffle=True, seed=1))
        c = list(loader.iterate_binwise(shuffle=True, seed=2))
        d = list(loader.iterate_binwise(shuffle=True))
        assert a == b
        assert a != c
        for order in (a, c, d):
            assert Counter(order) == Counter(records)
        # Bin-wise: each bin's records come out together, in a shuffled order.
        bin_of = {r: i % 8 for i, r in enumerate(records)}
        runs = [bin_of[r] for r in a]
        changes = sum(1 for x, y in itertools.pairwise(runs) if x != y)
        assert changes == 7
        first_bin = runs[0]
        assert a[:50] != records[first_bin::8]
        assert sorted(runs[:50]) == [first_bin] * 50

    # -- pickling, context manager ---------------------------------------------------------

    def test_pickle_reopens(self, url: str, storage_options: dict[str, Any]) -> None:
        records = make_records(50)
        self.write(url, storage_options, records, splits=4)
        loader = self.open(url, storage_options)
        assert loader[3] == records[3]
        blob = pickle.dumps(loader)
        assert len(blob) < 1000  # its location, not its data
        clone = pickle.loads(blob)
        assert len(clone) == 50
        assert clone[49] == records[49]
        with self.open(url, storage_options) as ctx:
            assert ctx[0] == records[0]
        assert ctx[1] == records[1]  # reopens on use after close

    # -- integrity and errors --------------------------------------------------------------

    def test_no_dataset(self, url: str, storage_options: dict[str, Any]) -> None:
        with pytest.raises(DatasetNotFoundError, match="no splitdask dataset at"):
            self.open(url, storage_options)

    def test_verify_ok(self, url: str, storage_options: dict[str, Any]) -> None:
        records = make_records(200)
        self.write(url, storage_options, records, splits=4)
        report = self.open(url, storage_options).verify()
        assert report.parts == 4
        assert report.bytes > sum(map(len, records))

    @pytest.mark.parametrize("where", ["start", "middle", "footer", "end"])
    def test_verify_finds_flipped_byte(
        self, url: str, storage_options: dict[str, Any], where: str
    ) -> None:
        self.write(url, storage_options, make_records(200), splits=4)
        victim = self.part_paths(self.open(url, storage_options))[2]
        fs, path = self.fs_path(url, storage_options, victim)
        data = bytearray(fs.cat_file(path))
        pos = {"start": 0, "middle": len(data) // 3, "footer": len(data) - 30, "end": -1}[where]
        data[pos] ^= 0x01
        fs.pipe_file(path, bytes(data))
        with pytest.raises(CorruptDatasetError, match=victim):
            self.open(url, storage_options).verify()

    def test_verify_finds_truncated_and_missing(
        self, url: str, storage_options: dict[str, Any]
    ) -> None:
        self.write(url, storage_options, make_records(200), splits=4)
        parts = self.truncate_first_remove_second(url, storage_options)
        with pytest.raises(CorruptDatasetError) as err:
            self.open(url, storage_options).verify()
        message = str(err.value)
        assert "2 problem(s)" in message
        assert f"{parts[0]}: " in message
        assert "truncated" in message
        assert f"{parts[1]}: missing" in message

    def test_read_truncated_or_missing_part(
        self, url: str, storage_options: dict[str, Any]
    ) -> None:
        self.write(url, storage_options, make_records(40), splits=2)
        parts = self.truncate_first_remove_second(url, storage_options)
        loader = self.open(url, storage_options)
        with pytest.raises(CorruptDatasetError, match=parts[0]):
            loader[0]
        with pytest.raises(CorruptDatasetError, match=f"{parts[1]}: listed in the manifest"):
            loader[1]

    def test_unknown_manifest_version(self, url: str, storage_options: dict[str, Any]) -> None:
        self.write(url, storage_options, [b"x"], splits=1)
        # The newest version's log entry, of a later format (read afresh: this process
        # keeps the versions it wrote).
        store = open_store(url, storage_options)
        (name,) = [n for n in store.list_dir("_log") if n.endswith(".json")]
        entry = store.read_file(f"_log/{name}")
        store.write_atomic(f"_log/{name}", entry.replace(b'"version":4', b'"version":7', 1))
        forget_versions()
        with pytest.raises(FormatVersionError, match=r"log entry format version 7"):
            self.open(url, storage_options)
        # A manifest from before versions, of a version this library does not know.
        store.write_atomic(f"_log/{name}", entry)
        forget_versions()
        doc = manifest_doc(url, storage_options)
        doc["version"] = 7
        write_manifest_doc(url, doc, storage_options)
        with pytest.raises(FormatVersionError, match=r"version 7.*reads versions 1, 2"):
            self.open(url, storage_options)
        # A log's stub of a later version (no entry yet): refused by its number.
        fs, path = self.fs_path(url, storage_options, MANIFEST_NAME)
        fs.pipe_file(path, b'{"format":"splitdask","version":7,"log":"_log7"}')
        with pytest.raises(FormatVersionError, match=r"version 7.*reads versions 1, 2, 3, 4"):
            self.open(url, storage_options)

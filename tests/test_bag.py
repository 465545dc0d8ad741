"""to_split_bins and read_split_bins on real Dask schedulers.

Most tests share one ``LocalCluster`` with two worker processes; the test that kills
a worker mid-write has its own cluster, since it takes a worker down.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import dask.bag as db
import numpy as np
import pytest
import splitdataloader
from conftest import wait_for
from dask.delayed import Delayed
from distributed import Client, LocalCluster

from splitdask import (
    CommitInfo,
    RecordBatch,
    SnapshotExpiredError,
    SplitDataLoader,
    gc,
    write_split_data,
)
from splitdask._dataset._order import bin_order
from splitdask._dataset._snapshot import read_manifest
from splitdask._store import open_store
from splitdask.bag import read_split_bins, to_split_bins
from splitdask.errors import CommitConflictError, DatasetNotFoundError

# -- helpers -----------------------------------------------------------------------------


def records(n: int, seed: int = 0) -> list[bytes]:
    """``n`` distinct records of varied length (0 to ~300 bytes)."""
    rng = np.random.default_rng(seed)
    return [b"%d:" % i + rng.bytes(int(rng.integers(0, 300))) for i in range(n)]


def partitions_of(bag: db.Bag) -> list[list[Any]]:
    """The contents of each partition of ``bag``, computed in this process."""
    return [list(p) for p in dask.compute(*bag.to_delayed(), scheduler="sync")]


def bin_contents(urlpath: str | Path, **kw: Any) -> list[list[bytes]]:
    loader = SplitDataLoader(urlpath, **kw)
    return [[bytes(r) for r in loader.read_bin(b)] for b in range(loader.num_bins)]


def shuffled_bins(loader: SplitDataLoader, seed: int) -> list[list[bytes]]:
    """Each bin's records in the order ``iterate_binwise(shuffle=True, seed=seed)``
    reads them (it visits the bins in ``bin_order``)."""
    stream = iter(loader.iterate_binwise(shuffle=True, seed=seed))
    got = {
        b: [bytes(next(stream)) for _ in range(loader.bin_counts[b])]
        for b in bin_order(seed, loader.num_bins)
    }
    return [got[b] for b in range(loader.num_bins)]


def all_records(urlpath: str | Path, **kw: Any) -> list[bytes]:
    return [bytes(r) for r in SplitDataLoader(urlpath, **kw)]


def files_in_bins(root: Path) -> set[str]:
    return {f"bins/{name}" for name in os.listdir(root / "bins")}


def current_version(urlpath: str | Path, **kw: Any) -> int:
    manifest = read_manifest(open_store(urlpath, kw.get("storage_options")))
    assert manifest is not None
    return manifest.generation


def manifest_parts(urlpath: str | Path, version: int | None = None, **kw: Any) -> set[str]:
    manifest = read_manifest(open_store(urlpath, kw.get("storage_options")), version)
    assert manifest is not None
    return {p.path for p in manifest.parts()}


def on(client: Client) -> dict[str, Any]:
    return {"scheduler": client}


# -- writing -----------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_write_one_bin_per_partition(client: Client, tmp_path: Path) -> None:
    recs = records(500)
    bag = db.from_sequence(recs, partition_size=70)  # 8 partitions, the last one short
    expected = partitions_of(bag)
    info = to_split_bins(bag, tmp_path / "ds", compute_kwargs=on(client))
    assert isinstance(info, CommitInfo)
    assert info.num_bins == len(expected) == bag.npartitions
    assert info.records_written == info.num_records == len(recs)
    assert info.bytes_written == sum(map(len, recs))
    assert info.parts_written == len(expected)
    assert info.generation == 1
    assert info.urlpath == str(tmp_path / "ds")
    # Global order is partition order, and bin k holds partition k.
    assert all_records(tmp_path / "ds") == recs
    assert bin_contents(tmp_path / "ds") == expected
    SplitDataLoader(tmp_path / "ds").verify()
    # The files under bins/ are exactly the committed parts: no leftovers.
    assert files_in_bins(tmp_path / "ds") == manifest_parts(tmp_path / "ds")


@pytest.mark.timeout(60)
def test_write_accepts_bytes_like_and_splits_large_partitions(tmp_path: Path) -> None:
    items: list[Any] = [b"a" * 100, bytearray(b"b" * 100), memoryview(b"c" * 100)]
    items += [np.full(25 << 10, i, dtype=np.int32) for i in range(97)]  # 100 KiB each
    bag = db.from_sequence(items, npartitions=2)
    # Parts are closed past part_max_bytes, checked at each 4 MiB the writer flushes.
    info = to_split_bins(bag, tmp_path / "ds", part_max_bytes=1 << 20)
    want = [bytes(memoryview(x).cast("B")) for x in items]
    assert all_records(tmp_path / "ds") == want
    # part_max_bytes splits a partition over several parts of the same bin.
    assert info.parts_written > 2
    assert bin_contents(tmp_path / "ds") == [
        [bytes(memoryview(x).cast("B")) for x in p] for p in partitions_of(bag)
    ]
    SplitDataLoader(tmp_path / "ds").verify()


@pytest.mark.timeout(60)
def test_item_not_bytes_fails_naming_partition_and_type(client: Client, tmp_path: Path) -> None:
    bag = db.from_sequence([b"x", b"y", b"z", "oops", b"w"], partition_size=2)
    with pytest.raises(TypeError, match=r"partition 1: record 1 is of type str"):
        to_split_bins(bag, tmp_path / "new", compute_kwargs=on(client))
    with pytest.raises(DatasetNotFoundError):
        SplitDataLoader(tmp_path / "new")

    # Appending bad items to an existing dataset leaves it exactly as it was.
    write_split_data(tmp_path / "old", records(50), splits=3)
    before = all_records(tmp_path / "old")
    bad = db.from_sequence([b"ok", 7, b"ok"], npartitions=3)
    with pytest.raises(TypeError, match=r"partition 1: record 0 is of type int"):
        to_split_bins(bad, tmp_path / "old", append=True, compute_kwargs=on(client))
    assert all_records(tmp_path / "old") == before
    SplitDataLoader(tmp_path / "old").verify()


def test_bad_arguments_raise_before_any_task(tmp_path: Path) -> None:
    bag = db.from_sequence([b"a"])
    with pytest.raises(TypeError, match=r"dask\.bag\.Bag"):
        to_split_bins([b"a"], tmp_path / "ds")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="mutually exclusive"):
        to_split_bins(bag, tmp_path / "ds", append=True, overwrite=True)
    with pytest.raises(ValueError, match="part_max_bytes"):
        to_split_bins(bag, tmp_path / "ds", part_max_bytes=0)
    with pytest.raises(ValueError, match="no partitions"):
        to_split_bins(db.Bag({}, "empty-bag", 0), tmp_path / "ds")
    assert not (tmp_path / "ds" / "splitdask.json").exists()


def test_existing_dataset_raises_file_exists(tmp_path: Path) -> None:
    write_split_data(tmp_path / "ds", records(10), splits=2)
    bag = db.from_sequence([b"new"])
    # Raised when the graph is built, even when computing is deferred.
    with pytest.raises(FileExistsError, match="already exists"):
        to_split_bins(bag, tmp_path / "ds", compute=False)
    splitdataloader.write_split_data(str(tmp_path / "legacy"), records(10), splits=2)
    with pytest.raises(FileExistsError, match="already exists"):
        to_split_bins(bag, tmp_path / "legacy")
    assert all_records(tmp_path / "ds") == records(10)


@pytest.mark.timeout(60)
def test_append_same_partition_count(client: Client, tmp_path: Path) -> None:
    first = db.from_sequence(records(40, seed=1), npartitions=4)
    second = db.from_sequence(records(40, seed=2), npartitions=4)
    to_split_bins(first, tmp_path / "ds", metadata={"a": 1, "b": 1}, compute_kwargs=on(client))
    info = to_split_bins(
        second, tmp_path / "ds", append=True, metadata={"b": 2}, compute_kwargs=on(client)
    )
    assert SplitDataLoader(tmp_path / "ds").metadata == {"a": 1, "b": 2}
    assert (info.records_written, info.num_records, info.num_bins) == (40, 80, 4)
    assert info.generation == 2
    assert all_records(tmp_path / "ds") == records(40, seed=1) + records(40, seed=2)
    # Balanced bins: partition p of the append lands in bin p, after bin p's records.
    assert bin_contents(tmp_path / "ds") == [
        a + b for a, b in zip(partitions_of(first), partitions_of(second), strict=True)
    ]


@pytest.mark.timeout(60)
def test_append_partition_count_differs_keeps_bins(client: Client, tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    to_split_bins(db.from_sequence(records(40), npartitions=4), ds, compute_kwargs=on(client))
    bins = bin_contents(ds)  # 10 records each
    # Fewer partitions than bins: the bin count stays 4, the emptiest bins fill first
    # (all equal here, so bins 0 and 1 by number).
    few = db.from_sequence([b"f%d" % i for i in range(6)], npartitions=2)
    info = to_split_bins(few, ds, append=True, compute_kwargs=on(client))
    assert info.num_bins == 4
    for p, part in enumerate(partitions_of(few)):
        bins[p] += part
    assert bin_contents(ds) == bins
    # Next, bins 2 and 3 are the emptiest: a 6-partition bag goes to bins 2, 3, 0, 1, 2, 3
    # (p % 4-th bin by fill: counts are 10, 10, 13, 13 -> order 2, 3, 0, 1).
    many = db.from_sequence([b"m%d" % i for i in range(12)], npartitions=6)
    counts_before = [len(b) for b in bins]
    order = sorted(range(4), key=lambda b: (counts_before[b], b))
    assert order == [2, 3, 0, 1]
    info = to_split_bins(many, ds, append=True, compute_kwargs=on(client))
    assert info.num_bins == 4
    for p, part in enumerate(partitions_of(many)):
        bins[order[p % 4]] += part
    assert bin_contents(ds) == bins
    # The global order is still the order things were written in.
    assert all_records(ds) == records(40) + [b"f%d" % i for i in range(6)] + [
        b"m%d" % i for i in range(12)
    ]
    SplitDataLoader(ds).verify()
    assert files_in_bins(ds) == manifest_parts(ds)


def test_append_creates_missing_dataset(tmp_path: Path) -> None:
    info = to_split_bins(db.from_sequence(records(9), npartitions=3), tmp_path / "ds", append=True)
    assert (info.num_bins, info.num_records, info.generation) == (3, 9, 1)
    assert all_records(tmp_path / "ds") == records(9)


def test_empty_partitions_give_empty_bins(tmp_path: Path) -> None:
    bag = db.from_sequence(range(12), npartitions=4).filter(lambda i: i < 3 or i >= 9)
    bag = bag.map(lambda i: b"r%d" % i)
    info = to_split_bins(bag, tmp_path / "ds")
    assert info.num_bins == 4
    assert SplitDataLoader(tmp_path / "ds").bin_counts == [3, 0, 0, 3]
    assert all_records(tmp_path / "ds") == [b"r0", b"r1", b"r2", b"r9", b"r10", b"r11"]
    # Appending only empty partitions commits nothing new.
    nothing = to_split_bins(
        db.from_sequence([b"x"], npartitions=1).filter(bool).filter(lambda x: False),
        tmp_path / "ds",
        append=True,
    )
    assert (nothing.records_written, nothing.generation) == (0, 1)


@pytest.mark.timeout(60)
def test_overwrite_keeps_old_data_readable_until_commit(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    old = records(30, seed=5)
    write_split_data(ds, old, splits=3)
    old_parts = manifest_parts(ds)
    old_version = current_version(ds)
    started, release = threading.Event(), threading.Event()

    def slow(part: list[bytes]) -> Iterator[bytes]:
        yield from part
        started.set()
        if not release.wait(30):
            raise TimeoutError("the test never released the write")

    new = records(20, seed=6)
    bag = db.from_sequence(new, npartitions=2).map_partitions(slow)
    result: dict[str, Any] = {}
    writer = threading.Thread(
        target=lambda: result.setdefault(
            "info", to_split_bins(bag, ds, overwrite=True, compute_kwargs={"scheduler": "threads"})
        )
    )
    writer.start()
    try:
        assert started.wait(30)
        # Mid-write, the old dataset is whole and readable.
        assert all_records(ds) == old
        SplitDataLoader(ds).verify()
    finally:
        release.set()
        writer.join(30)
    assert result["info"].num_bins == 2
    assert all_records(ds) == new
    # The replaced version stays readable (its parts are kept for its readers),
    # and is gone, with its parts, after gc past its retention.
    assert manifest_parts(ds, old_version) == old_parts
    assert all_records(ds, version=old_version) == old
    assert files_in_bins(ds) == manifest_parts(ds) | old_parts
    gc(ds, older_than=0)
    assert files_in_bins(ds) == manifest_parts(ds)
    assert not old_parts & files_in_bins(ds)
    with pytest.raises(SnapshotExpiredError, match=f"version {old_version} "):
        SplitDataLoader(ds, version=old_version)


@pytest.mark.timeout(60)
def test_overwrite_replaces_legacy_dataset(tmp_path: Path) -> None:
    splitdataloader.write_split_data(str(tmp_path / "ds"), records(10), splits=2)
    info = to_split_bins(db.from_sequence([b"new"]), tmp_path / "ds", overwrite=True)
    assert info.num_records == 1
    assert all_records(tmp_path / "ds") == [b"new"]
    assert not (tmp_path / "ds" / "index.dat").exists()


@pytest.mark.timeout(60)
def test_compute_false_returns_delayed_that_commits_once(client: Client, tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    bag = db.from_sequence(records(60), npartitions=3)
    out = to_split_bins(bag, ds, compute=False)
    assert isinstance(out, Delayed)
    # Nothing is visible before compute.
    with pytest.raises(DatasetNotFoundError):
        SplitDataLoader(ds)
    info = out.compute(scheduler=client)
    assert isinstance(info, CommitInfo)
    assert (info.records_written, info.num_bins) == (60, 3)
    assert all_records(ds) == records(60)
    # Computing it again (a retried commit task does the same) reports the commit that
    # was made and adds nothing.
    again = out.compute(scheduler=client)
    assert again == info
    assert all_records(ds) == records(60)
    assert files_in_bins(ds) == manifest_parts(ds)


def test_rerun_commit_finishes_an_interrupted_overwrite(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    write_split_data(ds, records(20), splits=2)
    saved = {rel: (ds / rel).read_bytes() for rel in manifest_parts(ds)}
    old_version = current_version(ds)
    out = to_split_bins(
        db.from_sequence([b"new"] * 4, npartitions=2), ds, overwrite=True, compute=False
    )
    info = out.compute()
    # As if the commit's worker died after replacing the manifest: Dask runs the
    # commit task again, which reports that commit instead of committing twice.
    assert out.compute() == info
    assert all_records(ds) == [b"new"] * 4
    # One overwrite, not two: the version before it is the one right before, still
    # readable, and its parts are kept.
    assert info.generation == old_version + 1
    assert manifest_parts(ds, old_version) == set(saved)
    assert all_records(ds, version=old_version) == records(20)
    assert files_in_bins(ds) == manifest_parts(ds) | set(saved)


def test_append_that_lost_the_race_is_rebased(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    write_split_data(ds, records(10), splits=2)
    out = to_split_bins(
        db.from_sequence([b"mine"] * 5, npartitions=2), ds, append=True, compute=False
    )
    write_split_data(ds, [b"theirs"] * 3, splits=2)  # another writer commits first
    info = out.compute()
    assert info.records_written == 5
    assert info.num_records == 18
    assert all_records(ds) == records(10) + [b"theirs"] * 3 + [b"mine"] * 5
    assert files_in_bins(ds) == manifest_parts(ds)


def test_conflicting_create_is_refused_and_cleaned_up(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    out = to_split_bins(db.from_sequence([b"mine"] * 5, npartitions=2), ds, compute=False)
    write_split_data(ds, [b"theirs"] * 3, splits=2)  # another writer creates it first
    with pytest.raises(CommitConflictError, match="another writer created"):
        out.compute()
    assert all_records(ds) == [b"theirs"] * 3
    assert files_in_bins(ds) == manifest_parts(ds)


def _fail_once(part: list[bytes], marker: str) -> Iterator[bytes]:
    """Yield a partition; the first run of the partition holding b"boom" fails midway."""
    yield from part
    if b"boom" in part:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        raise RuntimeError("injected failure after writing the partition's records")


@pytest.mark.timeout(90)
def test_task_retry_neither_duplicates_nor_loses(client: Client, tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    recs = records(200)
    recs[120] = b"boom"
    marker = tmp_path / "failed-once"
    bag = db.from_sequence(recs, npartitions=4).map_partitions(_fail_once, str(marker))
    info = to_split_bins(bag, ds, compute_kwargs={"scheduler": client, "retries": 1})
    assert marker.exists()  # the first run did fail
    assert info.records_written == len(recs)
    got = all_records(ds)
    assert collections.Counter(got) == collections.Counter(recs)
    assert got == recs
    assert files_in_bins(ds) == manifest_parts(ds)


def _stall_once(seq: list[int], signals: str, nrec: int, size: int) -> Iterator[bytes]:
    """Records of the partitions in ``seq``; partition 1's first run stalls mid-write.

    The stalled run first yields enough to complete one part on disk and start the
    next, records its process id in ``signals/stalled`` and waits, to be killed.
    """
    for p in seq:
        for i in range(nrec):
            if p == 1 and i == nrec * 3 // 4:
                try:
                    fd = os.open(f"{signals}/stalled", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    open(f"{signals}/rerun", "w").close()
                else:
                    os.write(fd, str(os.getpid()).encode())
                    os.close(fd)
                    deadline = time.monotonic() + 60
                    while not os.path.exists(f"{signals}/never"):
                        if time.monotonic() > deadline:
                            raise TimeoutError("this worker was supposed to be killed")
                        time.sleep(0.01)
            yield (b"p%d-r%d:" % (p, i)).ljust(size, b".")


@pytest.mark.timeout(180)
def test_killed_worker_neither_duplicates_nor_loses(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    signals = tmp_path / "signals"
    signals.mkdir()
    nparts, nrec, size = 4, 160, 64 << 10  # partition 1 is 10 MiB: > one 4 MiB flush
    expected = [
        (b"p%d-r%d:" % (p, i)).ljust(size, b".") for p in range(nparts) for i in range(nrec)
    ]
    bag = db.from_sequence(range(nparts), npartitions=nparts).map_partitions(
        _stall_once, str(signals), nrec, size
    )
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        future = client.compute(to_split_bins(bag, ds, compute=False, part_max_bytes=1 << 20))
        wait_for((signals / "stalled").exists, "the part task to stall")
        pid = int((signals / "stalled").read_text())
        assert pid in client.run(os.getpid).values()  # a worker process, behind a nanny
        # The doomed run has already completed a part of bin 1 (and is writing another).
        assert any(f.startswith("bins/00001-") for f in files_in_bins(ds))
        os.kill(pid, signal.SIGKILL)
        info = future.result(timeout=120)
    assert (signals / "rerun").exists()  # partition 1 ran again elsewhere
    assert info.records_written == len(expected)
    got = all_records(ds)
    assert collections.Counter(got) == collections.Counter(expected)
    assert got == expected
    SplitDataLoader(ds).verify()
    # What the killed run wrote was never committed, and the commit removed it.
    assert files_in_bins(ds) == manifest_parts(ds)


# -- reading -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """7 bins, some with several parts (written by write_split_data, then appended)."""
    root = tmp_path_factory.mktemp("read") / "ds"
    write_split_data(root, records(300, seed=1), splits=7)
    write_split_data(root, records(50, seed=2), splits=5)
    return root


@pytest.mark.timeout(60)
def test_read_one_partition_per_bin_in_stored_order(client: Client, dataset: Path) -> None:
    bag = read_split_bins(dataset)
    assert bag.npartitions == 7
    parts = [list(p) for p in client.compute(bag.to_delayed(), sync=True)]
    assert parts == bin_contents(dataset)
    assert bag.map(len).sum().compute(scheduler=client) == SplitDataLoader(dataset).nbytes
    # A partition that is a result is a list; one feeding a fused step streams through it.
    assert isinstance(client.compute(bag.to_delayed()[0]).result(), list)
    kinds = bag.map_partitions(lambda recs: [isinstance(recs, list)]).compute(scheduler=client)
    assert kinds == [False] * 7


@pytest.mark.timeout(60)
def test_read_shuffled_matches_iterate_binwise(client: Client, dataset: Path) -> None:
    loader = SplitDataLoader(dataset)
    bag = read_split_bins(dataset, shuffle=True, seed=42)
    parts = [list(p) for p in client.compute(bag.to_delayed(), sync=True)]
    # Cut iterate_binwise's stream into bins: it visits bins in a seeded order.
    stream = [bytes(r) for r in loader.iterate_binwise(shuffle=True, seed=42)]
    counts = loader.bin_counts
    pos = 0
    for b in bin_order(42, 7):
        assert parts[b] == stream[pos : pos + counts[b]]
        pos += counts[b]
    assert pos == len(stream) == len(loader)
    # Shuffled, not stored order; same seed, same partitions and the same graph.
    assert parts != bin_contents(dataset)
    again = read_split_bins(dataset, shuffle=True, seed=42)
    assert again.name == bag.name
    assert again.__dask_keys__() == bag.__dask_keys__()
    assert [list(p) for p in client.compute(again.to_delayed(), sync=True)] == parts
    other = read_split_bins(dataset, shuffle=True, seed=43)
    assert other.name != bag.name
    assert other.compute(scheduler=client) != bag.compute(scheduler=client)


@pytest.mark.timeout(60)
def test_read_batches_hold_each_bins_records_in_order(client: Client, dataset: Path) -> None:
    for shuffle in (False, True):
        plain = read_split_bins(dataset, shuffle=shuffle, seed=4)
        batched = read_split_bins(dataset, shuffle=shuffle, seed=4, batch_size=16)
        assert batched.name != plain.name  # batch_size is part of the graph's token
        want = [list(p) for p in client.compute(plain.to_delayed(), sync=True)]
        got = client.compute(batched.to_delayed(), sync=True)
        assert all(isinstance(b, RecordBatch) for p in got for b in p)
        assert all(len(b) == 16 for p in got for b in p[:-1])
        assert [[r for b in p for r in b] for p in got] == want
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        read_split_bins(dataset, batch_size=0)


def test_read_shuffle_without_seed_is_one_consistent_draw(dataset: Path) -> None:
    bag = read_split_bins(dataset, shuffle=True)
    first = bag.compute(scheduler="sync")
    assert bag.compute(scheduler="threads") == first  # the seed is part of the graph
    assert sorted(first) == sorted(all_records(dataset))
    assert read_split_bins(dataset, shuffle=True).name != bag.name  # a fresh draw


def test_read_seed_ignored_without_shuffle(dataset: Path) -> None:
    assert read_split_bins(dataset, seed=1).name == read_split_bins(dataset).name


def test_read_bins_subset(dataset: Path) -> None:
    bag = read_split_bins(dataset, bins=[5, 0, 2])
    assert bag.npartitions == 3
    full = bin_contents(dataset)
    assert partitions_of(bag) == [full[5], full[0], full[2]]
    # A bin is shuffled by its own number, whatever partition it lands in.
    shuffled = partitions_of(read_split_bins(dataset, shuffle=True, seed=7, bins=np.array([5])))
    assert shuffled[0] == partitions_of(read_split_bins(dataset, shuffle=True, seed=7))[5]


def test_read_bad_arguments(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(IndexError, match="bin 7 is out of range for a dataset of 7 bins"):
        read_split_bins(dataset, bins=[0, 7])
    with pytest.raises(IndexError, match="out of range"):
        read_split_bins(dataset, bins=[-1])
    with pytest.raises(ValueError, match="bin 3 more than once"):
        read_split_bins(dataset, bins=[3, 1, 3])
    with pytest.raises(ValueError, match="empty"):
        read_split_bins(dataset, bins=[])
    with pytest.raises(TypeError, match="ints"):
        read_split_bins(dataset, bins=[1.0])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="sequence"):
        read_split_bins(dataset, bins=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed must be at least 0"):
        read_split_bins(dataset, shuffle=True, seed=-1)
    with pytest.raises(DatasetNotFoundError, match="no splitdask dataset"):
        read_split_bins(tmp_path / "nothing")


def test_read_names_are_deterministic_across_processes(dataset: Path) -> None:
    code = (
        "import sys; from splitdask.bag import read_split_bins; "
        "print(read_split_bins(sys.argv[1], shuffle=True, seed=9, bins=[1, 2]).name)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(dataset)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert out.stdout.strip() == read_split_bins(dataset, shuffle=True, seed=9, bins=[1, 2]).name
    assert read_split_bins(dataset, shuffle=True, seed=9, bins=[2, 1]).name != out.stdout.strip()


@pytest.mark.timeout(60)
def test_read_is_a_snapshot(client: Client, tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    write_split_data(ds, records(20), splits=2)
    before = [r for b in bin_contents(ds) for r in b]
    bag = read_split_bins(ds)
    write_split_data(ds, records(5, seed=3), splits=2)  # appended after the bag was built
    assert len(SplitDataLoader(ds)) == 25
    assert bag.compute(scheduler=client) == before
    assert read_split_bins(ds).name != bag.name  # a new commit, a new graph
    write_split_data(ds, records(5, seed=4), splits=2, start_clean=True)
    # The replaced parts are retired, not removed: the bag still reads its snapshot,
    assert bag.compute(scheduler=client) == before
    # until gc removes them; then the bag says its snapshot expired.
    gc(ds, older_than=0)
    with pytest.raises(SnapshotExpiredError, match=r"this reader.s version \(1\) has expired"):
        bag.compute(scheduler=client)


@pytest.mark.timeout(60)
def test_read_legacy_dataset(client: Client, tmp_path: Path) -> None:
    ds = tmp_path / "legacy"
    splitdataloader.write_split_data(str(ds), records(120), splits=5)
    loader = SplitDataLoader(ds)
    bag = read_split_bins(ds)
    assert bag.npartitions == loader.num_bins == 5
    assert [list(p) for p in client.compute(bag.to_delayed(), sync=True)] == bin_contents(ds)
    shuffled = read_split_bins(ds, shuffle=True, seed=1)
    want = shuffled_bins(loader, 1)
    assert [list(p) for p in client.compute(shuffled.to_delayed(), sync=True)] == want


@pytest.mark.timeout(60)
def test_read_what_to_split_bins_wrote(client: Client, tmp_path: Path) -> None:
    bag = db.from_sequence(records(90), npartitions=3)
    to_split_bins(bag, tmp_path / "ds", compute_kwargs=on(client))
    back = read_split_bins(tmp_path / "ds")
    assert partitions_of(back) == partitions_of(bag)
    assert back.compute(scheduler=client) == records(90)


def test_loader_to_bag(dataset: Path, tmp_path: Path) -> None:
    loader = SplitDataLoader(dataset)
    assert loader.to_bag().name == read_split_bins(dataset).name
    assert (
        loader.to_bag(shuffle=True, seed=3, bins=[4]).name
        == read_split_bins(dataset, shuffle=True, seed=3, bins=[4]).name
    )
    # The bag is the loader's snapshot, even after a later commit.
    ds = tmp_path / "ds"
    write_split_data(ds, records(10), splits=2)
    before = [r for b in bin_contents(ds) for r in b]
    snap = SplitDataLoader(ds)
    write_split_data(ds, records(10, seed=8), splits=2)
    assert snap.to_bag().compute(scheduler="sync") == before
    assert SplitDataLoader(ds).to_bag().name != snap.to_bag().name
    # It works on a loader that was pickled and not yet reopened.
    import pickle

    clone = pickle.loads(pickle.dumps(SplitDataLoader(ds)))
    assert clone.to_bag().npartitions == 2


# -- S3 ------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_s3_write_and_read_on_cluster(
    client: Client, s3_url: str, s3_storage_options: dict[str, Any]
) -> None:
    so = s3_storage_options
    bag = db.from_sequence(records(400), npartitions=4)
    info = to_split_bins(bag, s3_url, storage_options=so, compute_kwargs=on(client))
    assert (info.num_bins, info.records_written) == (4, 400)
    assert all_records(s3_url, storage_options=so) == records(400)
    back = read_split_bins(s3_url, storage_options=so)
    assert [list(p) for p in client.compute(back.to_delayed(), sync=True)] == partitions_of(bag)
    loader = SplitDataLoader(s3_url, storage_options=so)
    shuffled = read_split_bins(s3_url, storage_options=so, shuffle=True, seed=5)
    want = shuffled_bins(loader, 5)
    assert [list(p) for p in client.compute(shuffled.to_delayed(), sync=True)] == want
    # Append from the cluster, then the unreferenced-part cleanup ran on S3 too.
    more = db.from_sequence(records(40, seed=9), npartitions=2)
    to_split_bins(more, s3_url, storage_options=so, append=True, compute_kwargs=on(client))
    assert all_records(s3_url, storage_options=so) == records(400) + records(40, seed=9)
    fs = open_store(s3_url, so).fs  # type: ignore[attr-defined]
    fs.invalidate_cache()
    listed = {f"bins/{p.rsplit('/', 1)[-1]}" for p in fs.ls(f"{s3_url[5:]}/bins", detail=False)}
    assert listed == manifest_parts(s3_url, storage_options=so)


@pytest.mark.timeout(120)
def test_s3_read_write_split_data_on_cluster(
    client: Client, s3_url: str, s3_storage_options: dict[str, Any]
) -> None:
    so = s3_storage_options
    write_split_data(s3_url, records(150), splits=6, storage_options=so)
    write_split_data(s3_url, records(30, seed=4), splits=6, storage_options=so)
    bag = read_split_bins(s3_url, storage_options=so)
    assert bag.npartitions == 6
    got = [list(p) for p in client.compute(bag.to_delayed(), sync=True)]
    assert got == bin_contents(s3_url, storage_options=so)
    assert bag.map(len).sum().compute(scheduler=client) == sum(
        map(len, records(150) + records(30, seed=4))
    )

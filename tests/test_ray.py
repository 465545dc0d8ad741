"""read_split_bins_ray and to_split_bins_ray on a real local Ray instance.

One Ray instance (2 CPUs, no dashboard) serves the whole session; it is started on
first use and shut down at the end.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import ray
import ray.data
from _manifests import manifest_doc
from conftest import RequestLog, wait_for

from splitdask import CommitInfo, SplitDataLoader, write_split_data
from splitdask._dataset._snapshot import open_snapshot, read_manifest
from splitdask._store import open_store
from splitdask.bag import read_split_bins, to_split_bins
from splitdask.ray import (
    SplitBinsDatasink,
    SplitBinsDatasource,
    read_split_bins_ray,
    to_split_bins_ray,
)


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # its DEBUG records are huge
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture
def ordered(ray_session: None) -> Iterator[None]:
    """Rows come back in the order of the read tasks (and of their blocks)."""
    ctx = ray.data.DataContext.get_current()
    old = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True
    try:
        yield
    finally:
        ctx.execution_options.preserve_order = old


def records(n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [b"%d:%d:" % (seed, i) + rng.bytes(int(rng.integers(0, 40))) for i in range(n)]


def rows_of(recs: list[bytes], blocks: int) -> ray.data.Dataset:
    return ray.data.from_items([{"record": r, "n": i} for i, r in enumerate(recs)]).repartition(
        blocks
    )


def files_in_bins(root: Path) -> set[str]:
    # bins/ appears with a write's first part (issue 20): none before, or after a failed one.
    if not (root / "bins").exists():
        return set()
    return {f"bins/{n}" for n in os.listdir(root / "bins")}


def manifest_parts(root: Path) -> set[str]:
    manifest = read_manifest(open_store(root))
    assert manifest is not None
    return {p.path for p in manifest.parts()}


# -- reading -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """7 bins, some with two parts (written, then appended over 5 bins)."""
    root = tmp_path_factory.mktemp("read") / "ds"
    write_split_data(root, records(300, seed=1), splits=7)
    write_split_data(root, records(50, seed=2), splits=5)
    return root


def test_bin_indices_invert_the_locator(dataset: Path) -> None:
    snap = open_snapshot(open_store(dataset))
    loc = snap.locator
    for b, count in enumerate(snap.bin_counts()):
        idx = loc.order.indices_of(b)
        assert len(idx) == count
        pid, local = loc.locate_many(idx)
        assert [loc.part_bin[p] for p in pid] == [b] * count
        assert (np.asarray(loc.part_start)[pid] + local - loc.bin_base[b]).tolist() == list(
            range(count)
        )


def test_read_tasks_are_bins_with_global_index(ordered: None, dataset: Path) -> None:
    loader = SplitDataLoader(dataset)
    ds = read_split_bins_ray(dataset, include_index=True)
    assert ds.schema().names == ["record", "index"]
    rows = ds.take_all()
    expected = [rec for b in range(loader.num_bins) for rec in loader.read_bin(b)]
    assert [r["record"] for r in rows] == expected
    assert all(loader[r["index"]] == r["record"] for r in rows)
    assert sorted(r["index"] for r in rows) == list(range(len(loader)))
    assert ds.materialize().num_blocks() == loader.num_bins  # one block per bin
    source = SplitBinsDatasource(dataset, include_index=True)
    assert source.estimate_inmemory_data_size() == loader.nbytes + 8 * len(loader)
    tasks = source.get_read_tasks(3)  # fewer tasks than bins: 3, 2 and 2 bins each
    assert [t.metadata.num_rows for t in tasks] == [
        sum(loader.bin_counts[b] for b in group) for group in ([0, 1, 2], [3, 4], [5, 6])
    ]
    assert sum(t.metadata.size_bytes for t in tasks) == source.estimate_inmemory_data_size()


def test_shuffled_read_matches_iterate_binwise_and_dask(ordered: None, dataset: Path) -> None:
    loader = SplitDataLoader(dataset)
    expected = list(loader.iterate_binwise(shuffle=True, seed=11))
    for blocks in (None, 3):  # a task per bin, or three tasks of several bins each
        ds = read_split_bins_ray(
            dataset, shuffle=True, seed=11, override_num_blocks=blocks, include_index=True
        )
        rows = ds.take_all()
        assert [r["record"] for r in rows] == expected
        assert all(loader[r["index"]] == r["record"] for r in rows)
    bag = read_split_bins(dataset, shuffle=True, seed=11)
    dask_bins = bag.to_delayed()
    by_bin = [list(d.compute(scheduler="sync")) for d in dask_bins]
    assert collections.Counter(map(bytes, expected)) == collections.Counter(
        rec for part in by_bin for rec in part
    )
    assert read_split_bins_ray(dataset, shuffle=True, seed=12).take_all() != rows


def test_reads_datasets_written_by_write_split_data_and_dask(
    ray_session: None, tmp_path: Path
) -> None:
    import dask.bag as db

    recs = records(400, seed=3)
    write_split_data(tmp_path / "w", recs, splits=6)
    to_split_bins(
        db.from_sequence(recs, npartitions=6),
        tmp_path / "d",
        compute_kwargs={"scheduler": "processes", "num_workers": 2},
    )
    got_w = [r["record"] for r in read_split_bins_ray(tmp_path / "w").take_all()]
    got_d = [r["record"] for r in read_split_bins_ray(tmp_path / "d").take_all()]
    assert sorted(got_w) == sorted(got_d) == sorted(recs)


# -- writing -----------------------------------------------------------------------------


def test_round_trip_local_and_append(ordered: None, tmp_path: Path) -> None:
    recs = records(500, seed=4)
    info = to_split_bins_ray(rows_of(recs, 4), tmp_path / "ds", metadata={"v": 1})
    assert isinstance(info, CommitInfo)
    assert (info.records_written, info.num_bins, info.generation) == (500, 4, 1)
    loader = SplitDataLoader(tmp_path / "ds")
    assert list(loader) == recs  # task order is the global order
    assert loader.metadata == {"v": 1}
    before = loader.bin_counts
    more = records(90, seed=5)
    info = to_split_bins_ray(rows_of(more, 2), tmp_path / "ds", append=True)
    assert (info.records_written, info.num_records, info.num_bins) == (90, 590, 4)
    loader = SplitDataLoader(tmp_path / "ds")
    assert list(loader) == recs + more
    loader.verify()
    # The two appended tasks went to the two least-filled bins (ties by number).
    fill = sorted(range(4), key=lambda b: before[b])[:2]
    grown = [b for b in range(4) if loader.bin_counts[b] > before[b]]
    assert grown == sorted(fill)
    assert files_in_bins(tmp_path / "ds") == manifest_parts(tmp_path / "ds")
    again = to_split_bins_ray(rows_of(more, 3), tmp_path / "ds", overwrite=True, num_bins=2)
    assert (again.num_records, again.num_bins) == (90, 2)
    assert list(SplitDataLoader(tmp_path / "ds")) == more


def test_round_trip_s3(ordered: None, s3_url: str, s3_storage_options: dict[str, Any]) -> None:
    recs = records(300, seed=6)
    info = to_split_bins_ray(rows_of(recs, 3), s3_url, s3_storage_options)
    assert (info.records_written, info.num_bins) == (300, 3)
    ds = read_split_bins_ray(s3_url, s3_storage_options, include_index=True)
    rows = ds.take_all()
    assert sorted(r["index"] for r in rows) == list(range(300))
    assert all(recs[r["index"]] == r["record"] for r in rows)
    loader = SplitDataLoader(s3_url, storage_options=s3_storage_options)
    assert list(loader) == recs


def test_datasource_and_datasink_in_ray_s_own_forms(ordered: None, tmp_path: Path) -> None:
    """``ray.data.read_datasource(SplitBinsDatasource(...))`` and
    ``Dataset.write_datasink(SplitBinsDatasink(...))`` do what the helpers do."""
    url = str(tmp_path / "ds")
    recs, more = records(400, seed=8), records(60, seed=9)
    sink = SplitBinsDatasink(url, metadata={"by": "sink"})
    rows_of(recs, 4).write_datasink(sink)
    assert sink.info is not None
    assert (sink.info.records_written, sink.info.num_bins, sink.info.generation) == (400, 4, 1)
    with pytest.raises(FileExistsError, match="ds"):  # mode="x", before any task
        SplitBinsDatasink(url)
    rows_of(more, 2).write_datasink(appended := SplitBinsDatasink(url, mode="a"))
    assert appended.info is not None
    assert appended.info.num_records == 460
    loader = SplitDataLoader(url)
    assert list(loader) == recs + more
    assert loader.metadata == {"by": "sink"}

    source = SplitBinsDatasource(url, shuffle=True, seed=5, include_index=True)
    rows = ray.data.read_datasource(source).take_all()
    assert [r["record"] for r in rows] == list(loader.iterate_binwise(shuffle=True, seed=5))
    assert all(loader[r["index"]] == r["record"] for r in rows)
    helper = read_split_bins_ray(url, shuffle=True, seed=5, include_index=True).take_all()
    assert rows == helper
    three = ray.data.read_datasource(SplitBinsDatasource(url), override_num_blocks=3)
    assert [r["record"] for r in three.take_all()] == list(loader.iterate_binwise())


def test_read_tasks_share_the_part_cache(
    ordered: None,
    s3_url: str,
    s3_storage_options: dict[str, Any],
    s3_requests: RequestLog,
    tmp_path: Path,
) -> None:
    recs = records(300, seed=8)
    write_split_data(s3_url, recs, splits=3, storage_options=s3_storage_options)
    ds = read_split_bins_ray(s3_url, s3_storage_options, cache_dir=tmp_path)
    assert sorted(r["record"] for r in ds.take_all()) == sorted(recs)
    assert len(list(tmp_path.glob("*.part"))) == 3  # filled by the read tasks
    mark = s3_requests.mark()
    again = read_split_bins_ray(s3_url, s3_storage_options, cache_dir=tmp_path)
    assert sorted(r["record"] for r in again.take_all()) == sorted(recs)
    assert s3_requests.count("GET", since=mark, contains="/bins/") == 0


def _fail_on(marker: int) -> Any:
    def fn(batch: dict[str, Any]) -> dict[str, Any]:
        if marker in batch["n"].tolist():
            raise RuntimeError("this write task fails")
        return batch

    return fn


def test_failing_write_task_keeps_previous_dataset(ray_session: None, tmp_path: Path) -> None:
    root = tmp_path / "ds"
    recs = records(200, seed=7)
    write_split_data(root, recs, splits=4)
    before = manifest_parts(root)
    for kwargs in ({"append": True}, {"overwrite": True}):
        bad = rows_of(records(300, seed=8), 4).map_batches(_fail_on(250))
        with pytest.raises(ray.exceptions.RayTaskError, match="this write task fails"):
            to_split_bins_ray(bad, root, **kwargs)
        assert manifest_parts(root) == before
        loader = SplitDataLoader(root)
        assert list(loader) == recs
        loader.verify()


def _stall_once(signals: str) -> Any:
    def fn(batch: dict[str, Any]) -> dict[str, Any]:
        # The 2nd batch of the task holding row 0: by then its 1st batch is in a part.
        if 5000 in batch["id"].tolist() and not os.path.exists(f"{signals}/stalled"):
            with open(f"{signals}/stalled.tmp", "w") as f:
                f.write(str(os.getpid()))
            os.rename(f"{signals}/stalled.tmp", f"{signals}/stalled")
            threading.Event().wait(120)  # SIGKILLed long before this
        return {"record": [b"%08d" % i + b"." * 24 for i in batch["id"].tolist()]}

    return fn


@pytest.mark.timeout(180)
def test_killed_worker_neither_duplicates_nor_loses(ray_session: None, tmp_path: Path) -> None:
    root, signals = tmp_path / "ds", tmp_path / "signals"
    signals.mkdir()
    n = 4 * 10_000
    ds = ray.data.range(n, override_num_blocks=4).map_batches(
        _stall_once(str(signals)), batch_size=5000
    )
    out: list[Any] = []
    writer = threading.Thread(target=lambda: out.append(to_split_bins_ray(ds, root)))
    ctx = ray.data.DataContext.get_current()
    old = ctx.target_max_block_size
    ctx.target_max_block_size = 64 << 10  # hand each batch's rows to the write at once
    try:
        writer.start()
        wait_for((signals / "stalled").exists, "the write task to stall")
    finally:
        ctx.target_max_block_size = old
    pid = int((signals / "stalled").read_text())
    assert pid != os.getpid()
    # The doomed attempt has started a part (5000 records > one 4096-record batch).
    wait_for(lambda: bool(files_in_bins(root)), "the doomed attempt to start a part")
    os.kill(pid, signal.SIGKILL)
    writer.join(timeout=150)
    assert not writer.is_alive()
    assert len(out) == 1
    info = out[0]
    assert info.records_written == n
    got = list(SplitDataLoader(root))
    expected = [b"%08d" % i + b"." * 24 for i in range(n)]
    assert collections.Counter(got) == collections.Counter(expected)
    assert files_in_bins(root) == manifest_parts(root)  # the killed attempt's part is gone
    SplitDataLoader(root).verify()


def test_bad_input_errors_before_commit(ray_session: None, tmp_path: Path) -> None:
    root = tmp_path / "ds"
    with pytest.raises(ValueError, match="no column 'record'.*'x'"):
        to_split_bins_ray(ray.data.from_items([{"x": b"a"}]), root)
    with pytest.raises(TypeError, match="column 'record' is of type string"):
        to_split_bins_ray(ray.data.from_items([{"record": "text"}]), root)
    with pytest.raises(TypeError, match="column 'v' is of type int64"):
        to_split_bins_ray(ray.data.range(10).rename_columns({"id": "v"}), root, column="v")
    nulls = ray.data.from_arrow(pa.table({"record": pa.array([b"a", None], pa.binary())}))
    with pytest.raises(TypeError, match="1 nulls"):
        to_split_bins_ray(nulls, root)
    assert read_manifest(open_store(root)) is None  # nothing was committed
    assert not files_in_bins(root)
    write_split_data(root, [b"a", b"b"], splits=2)
    with pytest.raises(FileExistsError):
        to_split_bins_ray(rows_of([b"c"], 1), root)
    with pytest.raises(ValueError, match="mutually exclusive"):
        to_split_bins_ray(rows_of([b"c"], 1), root, append=True, overwrite=True)
    with pytest.raises(TypeError, match="ray.data.Dataset"):
        to_split_bins_ray([b"c"], root)  # type: ignore[arg-type]
    assert list(SplitDataLoader(root)) == [b"a", b"b"]


def test_mode_and_retries_spell_the_aliases(ordered: None, tmp_path: Path) -> None:
    root = tmp_path / "ds"
    recs, more = records(40, seed=15), records(10, seed=16)
    to_split_bins_ray(rows_of(recs, 2), root, mode="x", retries=3)
    info = to_split_bins_ray(rows_of(more, 1), root, mode="a", commit_retries=3)
    assert (info.records_written, info.num_records, info.num_bins) == (10, 50, 2)
    assert list(SplitDataLoader(root)) == recs + more
    with pytest.raises(TypeError, match=r"append=True \(mode='a'\) and mode='w' disagree"):
        to_split_bins_ray(rows_of(more, 1), root, mode="w", append=True)
    with pytest.raises(TypeError, match="retries=1 and commit_retries=2 disagree"):
        to_split_bins_ray(rows_of(more, 1), root, mode="w", retries=1, commit_retries=2)
    info = to_split_bins_ray(rows_of(more, 1), root, mode="w", overwrite=True)
    assert (info.num_records, info.num_bins) == (10, 1)
    assert list(SplitDataLoader(root)) == more


def test_compressed_write_and_read(ordered: None, tmp_path: Path) -> None:
    recs = records(400, seed=14)
    info = to_split_bins_ray(
        rows_of(recs, 2), tmp_path / "z", compression="zstd", compression_level=2
    )
    assert info.records_written == 400
    doc = manifest_doc(tmp_path / "z")
    assert {(p["compression"], p["level"]) for b in doc["bins"] for p in b} == {("zstd", 2)}
    assert list(SplitDataLoader(tmp_path / "z")) == recs
    rows = read_split_bins_ray(tmp_path / "z").take_all()
    assert [r["record"] for r in rows] == recs

"""Engines pin a version: torch DataLoader workers (fork, spawn), Dask tasks on a real
``LocalCluster`` and Ray tasks read exactly the version the driver opened, whatever is
committed between pickling and reading; resume states name their version.

Every dataset here holds 8-byte record ids (``struct``), so what was read is checked
record by record against the version it should be.
"""

from __future__ import annotations

import json
import pickle
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch.utils.data as tud
from distributed import Client

from splitdask import SnapshotExpiredError, SplitDataLoader, compact, gc, write_split_data
from splitdask.bag import read_split_bins
from splitdask.errors import ResumeStateError
from splitdask.torch import SplitIterableDataset, SplitMapDataset

N = 600
BINS = 6


def add(path: Path, start: int, n: int, **kw: Any) -> int:
    """Commit records ``start .. start + n`` (by default appended); the new version."""
    kw.setdefault("mode", "a")
    recs = (struct.pack("<q", i) + b"." * (i % 13) for i in range(start, start + n))
    write_split_data(path, recs, splits=BINS, **kw)
    version = SplitDataLoader(path).version
    assert version is not None
    return version


def ident(record: bytes) -> int:
    return int(struct.unpack_from("<q", record)[0])


def run(ds: Any, workers: int = 0, ctx: str | None = None, **kw: Any) -> list[int]:
    loader = tud.DataLoader(
        ds, batch_size=16, num_workers=workers, collate_fn=list, multiprocessing_context=ctx, **kw
    )
    return [ident(r) for batch in loader for r in batch]


@pytest.fixture
def ds(tmp_path: Path) -> Path:
    path = tmp_path / "ds"
    assert add(path, 0, N, mode="x") == 1
    return path


# -- torch: pickling pins the version ---------------------------------------------------


@pytest.mark.parametrize("ctx", ["fork", "spawn"])
def test_workers_read_the_version_the_main_process_opened(ds: Path, ctx: str) -> None:
    it = SplitIterableDataset(ds, batch_size=16, seed=3)
    mp = SplitMapDataset(ds, transform=ident)
    blob = pickle.dumps(it)
    epoch0 = run(SplitIterableDataset(ds, batch_size=16, seed=3))
    epoch1 = run(SplitIterableDataset(ds, batch_size=16, seed=4))  # epoch 1 of seed 3
    assert add(ds, N, 100) == 2  # between pickling and reading
    assert len(SplitDataLoader(ds)) == N + 100
    assert run(it, 2, ctx) == epoch0
    # The repro: spawn, an append between epochs, the next epoch must not die.
    assert add(ds, N + 100, 50) == 3
    assert run(it, 2, ctx) == epoch1
    assert it.version == 1
    again = pickle.loads(blob)
    assert again.version == 1
    assert len(again) == N
    loader = tud.DataLoader(
        mp, batch_size=50, num_workers=2, collate_fn=list, multiprocessing_context=ctx
    )
    assert [i for batch in loader for i in batch] == list(range(N))


def test_version_argument_and_overwrite_between_pickling_and_reading(ds: Path) -> None:
    add(ds, N, 100, tag="nightly")
    add(ds, N + 100, 5)
    tagged = SplitIterableDataset(ds, batch_size=16, version="nightly", shuffle=None)
    assert tagged.version == 2
    bag = read_split_bins(ds, version="nightly")
    assert sorted(map(ident, bag.compute(scheduler="sync"))) == list(range(N + 100))
    old = SplitIterableDataset(ds, batch_size=16, version=1, shuffle=None)
    assert len(old) == N
    assert old.version == 1
    add(ds, 5000, 10, mode="w")  # the parts of version 1 stay for the retention period
    assert sorted(run(old, 2, "spawn")) == list(range(N))
    m = SplitMapDataset(ds, version="nightly", transform=ident)
    assert len(m) == N + 100
    assert m[N + 99] == N + 99
    with pytest.raises(ValueError, match="no version tagged 'daily'"):
        SplitMapDataset(ds, version="daily")
    with pytest.raises(ValueError, match="no version 9"):
        SplitMapDataset(ds, version=9)
    with pytest.raises(TypeError, match="version must be"):
        SplitIterableDataset(ds, version=True)


def test_expired_version_names_itself_and_the_oldest_kept(ds: Path) -> None:
    it = SplitIterableDataset(ds, batch_size=16, shuffle=None)
    state = it.state_dict(32)
    blob = pickle.dumps(it)
    add(ds, 5000, 10, mode="w")
    add(ds, 6000, 10)
    gc(ds, older_than=0, keep_versions=1)
    with pytest.raises(SnapshotExpiredError, match=r"version 1 .*oldest version kept is 3"):
        list(pickle.loads(blob))
    with pytest.raises(SnapshotExpiredError, match=r"version 1 .*oldest version kept is 3"):
        SplitIterableDataset(ds, batch_size=16, shuffle=None).load_state_dict(state)
    with pytest.raises(SnapshotExpiredError, match=r"version 1 .*oldest version kept is 3"):
        SplitMapDataset(ds, version=1)


# -- torch: resume on a growing dataset ------------------------------------------------


def _interrupt(ds: SplitIterableDataset, seen: int, workers: int = 2) -> dict[str, Any]:
    """Run the next epoch until ``seen`` samples, then save (through JSON) its state."""
    got = 0
    for batch in tud.DataLoader(ds, batch_size=16, num_workers=workers, collate_fn=list):
        got += len(batch)
        if got == seen:
            break
    return dict(json.loads(json.dumps(ds.state_dict(seen))))


def test_resume_after_appends_is_the_uninterrupted_tail(ds: Path) -> None:
    ref = SplitIterableDataset(ds, batch_size=16, seed=5)
    epochs = [run(ref, 2) for _ in range(2)]
    state = _interrupt(SplitIterableDataset(ds, batch_size=16, seed=5), 320)
    assert state["dataset_version"] == 1
    assert state["epoch"] == 0
    assert len(json.dumps(state)) < 400
    add(ds, N, 100)
    add(ds, N + 100, 100)
    resumed = SplitIterableDataset(ds, batch_size=16, seed=5)  # opens version 3
    resumed.load_state_dict(state)
    assert resumed.version == 1
    assert len(resumed) == N - 320
    assert run(resumed, 2, "spawn") == epochs[0][320:]
    assert run(resumed, 2) == epochs[1]  # the run stays on its version
    assert resumed.state_dict(0)["dataset_version"] == 1


def test_follow_takes_new_data_at_the_next_epoch(ds: Path) -> None:
    ref1 = SplitIterableDataset(ds, batch_size=16, seed=5)
    epoch0 = run(ref1, 2)
    f = SplitIterableDataset(ds, batch_size=16, seed=5, follow=True)
    loader = tud.DataLoader(f, batch_size=16, num_workers=2, collate_fn=list)
    got, state = [], None
    for batch in loader:
        got += [ident(r) for r in batch]
        if len(got) == 160:
            add(ds, N, 100)  # during epoch 0: it stays on version 1
            state = f.state_dict(160)
    assert got == epoch0
    assert state is not None
    assert (state["epoch"], state["dataset_version"]) == (0, 1)
    assert f.version == 1
    # The next epoch starts on the newest version, and its state says so.
    ref2 = SplitIterableDataset(ds, batch_size=16, seed=5, version=2)
    ref2.set_epoch(1)
    epoch1 = run(ref2, 2)
    assert sorted(epoch1) == list(range(N + 100))
    assert run(f, 2, "spawn") == epoch1
    assert f.state_dict(0)["dataset_version"] == 2
    assert f.epoch == 1
    # A resume of epoch 0 after more appends: its tail on version 1, then the newest.
    add(ds, N + 100, 50)
    resumed = SplitIterableDataset(ds, batch_size=16, seed=5, follow=True)
    resumed.load_state_dict(state)
    assert run(resumed, 2) == epoch0[160:]
    ref3 = SplitIterableDataset(ds, batch_size=16, seed=5, version=3)
    ref3.set_epoch(1)
    assert run(resumed, 2, "spawn") == run(ref3)
    assert resumed.state_dict(0)["dataset_version"] == 3


def test_next_epoch_version_is_fixed_once_asked(ds: Path) -> None:
    f = SplitIterableDataset(ds, batch_size=16, follow=True, shuffle=None)
    assert len(f) == N  # fixes epoch 0 on version 1
    add(ds, N, 100)
    assert f.version == 1
    assert f.state_dict(0)["dataset_version"] == 1
    assert sorted(run(f, 2)) == list(range(N))
    assert len(f) == N + 100  # epoch 1: the newest, fixed now
    add(ds, N + 100, 100)
    assert sorted(run(f, 2, "spawn")) == list(range(N + 100))


def test_states_before_versions_still_load(ds: Path) -> None:
    it = SplitIterableDataset(ds, batch_size=16, seed=2)
    epoch0 = run(SplitIterableDataset(ds, batch_size=16, seed=2))
    new = it.state_dict(64)
    old = {k: v for k, v in new.items() if k != "dataset_version"} | {"version": 1}
    again = SplitIterableDataset(ds, batch_size=16, seed=2)
    again.load_state_dict(old)
    assert run(again) == epoch0[64:]
    add(ds, N, 10)  # a state without a version resumes only the dataset as it was
    with pytest.raises(ResumeStateError, match="another dataset"):
        SplitIterableDataset(ds, batch_size=16, seed=2).load_state_dict(old)
    with pytest.raises(ResumeStateError, match="damaged"):
        again.load_state_dict({**new, "dataset_version": "1"})
    with pytest.raises(ResumeStateError, match="another dataset"):
        again.load_state_dict({**new, "dataset_version": 7})


# -- Dask: a bag's tasks on worker processes -------------------------------------------


def _ids(bag: Any, client: Client) -> list[int]:
    return sorted(map(ident, bag.compute(scheduler=client)))


def test_bag_reads_its_version_whatever_is_committed(client: Client, ds: Path) -> None:
    bag = read_split_bins(ds)
    add(ds, N, 100)
    assert _ids(bag, client) == list(range(N))
    add(ds, 5000, 10, mode="w", retention=0, keep_versions=10)
    assert _ids(bag, client) == list(range(N))
    add(ds, 6000, 10, retention=0, keep_versions=10)  # two parts a bin: something to compact
    assert compact(ds, retention=0, keep_versions=10).generation == 5
    gc(ds, older_than=0, keep_versions=10)
    assert _ids(bag, client) == list(range(N))
    assert _ids(read_split_bins(ds, version=2), client) == list(range(N + 100))
    loader_bag = SplitDataLoader(ds, version=2).to_bag()
    assert _ids(loader_bag, client) == list(range(N + 100))
    now = [*range(5000, 5010), *range(6000, 6010)]
    assert _ids(read_split_bins(ds), client) == now
    gc(ds, older_than=0, keep_versions=1)  # versions 1 to 4 go, and their parts
    with pytest.raises(SnapshotExpiredError, match=r"version \(?1\)? .*oldest version kept is 5"):
        bag.compute(scheduler=client)
    with pytest.raises(SnapshotExpiredError, match=r"version 2 .*oldest version kept is 5"):
        read_split_bins(ds, version=2)


# -- Ray: a dataset's read tasks -------------------------------------------------------


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    """A local Ray instance (2 CPUs), or the one another test module started."""
    import ray
    import ray.data

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def test_ray_reads_its_version_whatever_is_committed(ray_session: None, ds: Path) -> None:
    from splitdask.ray import SplitBinsDatasource, read_split_bins_ray

    def ids(dataset: Any) -> list[int]:
        return sorted(ident(row["record"]) for row in dataset.take_all())

    data = read_split_bins_ray(ds, shuffle=True, seed=1)
    source = SplitBinsDatasource(ds)  # opens the newest: version 1
    add(ds, N, 100)  # between creating the dataset and reading it
    assert ids(data) == list(range(N))
    add(ds, 5000, 10, mode="w")  # version 1's parts stay for the retention period
    assert ids(data) == list(range(N))
    assert ids(read_split_bins_ray(ds, version=2)) == list(range(N + 100))
    copy = pickle.loads(pickle.dumps(source))  # as Ray ships it: location and version
    assert copy.snapshot.version == 1
    assert copy.snapshot.num_records == N
    assert len(pickle.dumps(source)) < len(pickle.dumps(source.snapshot))
    gc(ds, older_than=0, keep_versions=1)
    with pytest.raises(SnapshotExpiredError, match=r"version 1 .*oldest version kept is 3"):
        pickle.loads(pickle.dumps(source)).get_read_tasks(2)
    with pytest.raises(SnapshotExpiredError, match=r"version 2 .*oldest version kept is 3"):
        read_split_bins_ray(ds, version=2)


def test_fixing_the_next_version_does_not_start_a_new_pass() -> None:
    from splitdask._read._epochs import EpochClock

    clock = EpochClock()
    assert clock.claim(7, lambda: 3) == (0, 3)
    assert clock.fix_next(lambda: 4) == 4  # len() of the next epoch, mid-pass
    assert clock.fix_next(lambda: 5) == 4  # fixed once
    assert clock.claim(7, lambda: 6) == (0, 3)  # a late worker of the same pass joins it
    copy = pickle.loads(pickle.dumps(clock))  # a private copy keeps what was fixed
    assert copy.claim(8) == (1, 4)
    assert clock.claim(8, lambda: 6) == (1, 4)
    clock.set_next(1)
    assert clock.claim(9, lambda: 6) == (1, 6)  # fixed for an epoch that already ran


def test_follow_with_persistent_workers(ds: Path) -> None:
    f = SplitIterableDataset(ds, batch_size=16, shuffle=None, follow=True)
    loader = tud.DataLoader(
        f, batch_size=16, num_workers=2, collate_fn=list, persistent_workers=True
    )
    assert sorted(ident(r) for b in loader for r in b) == list(range(N))
    add(ds, N, 40)
    assert f.version == 1  # the epoch that ran
    assert sorted(ident(r) for b in loader for r in b) == list(range(N + 40))
    assert f.version == 2  # picked by a worker, known to the main process
    assert f.epoch == 1
    assert f.state_dict(0)["dataset_version"] == 2


def test_s3_spawned_workers_pin_and_follow(s3_url: str, s3_storage_options: dict[str, Any]) -> None:
    opts = {"storage_options": s3_storage_options}
    recs = [struct.pack("<q", i) for i in range(200)]
    write_split_data(s3_url, recs, splits=4, **opts)
    pinned = SplitIterableDataset(s3_url, s3_storage_options, batch_size=16, shuffle=None)
    f = SplitIterableDataset(s3_url, s3_storage_options, batch_size=16, follow=True)
    assert len(f) == 200  # epoch 0 fixed on version 1
    write_split_data(s3_url, [struct.pack("<q", i) for i in range(200, 230)], mode="a", **opts)
    assert sorted(run(pinned, 2, "spawn")) == list(range(200))
    assert sorted(run(f, 2, "spawn")) == list(range(200))
    assert sorted(run(f, 2, "spawn")) == list(range(230))  # epoch 1: the newest at its start
    assert f.state_dict(0)["dataset_version"] == 2

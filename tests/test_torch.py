"""splitdask.torch with real DataLoader workers (fork and spawn), on disk and on S3."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import torch.utils.data as tud
from conftest import RequestLog

from splitdask import CorruptDatasetError, ResumeStateError, SplitDataLoader, write_split_data
from splitdask.torch import SplitIterableDataset, SplitMapDataset

N = 6000
BINS = 12


def make(path: Any, n: int = N, bins: int = BINS, size: int = 24, **kw: Any) -> str:
    pad = b"." * (size - 8)
    write_split_data(path, (struct.pack("<q", i) + pad for i in range(n)), splits=bins, **kw)
    return str(path)


def ident(record: bytes) -> int:
    return int(struct.unpack_from("<q", record)[0])


def ids(loader: Any) -> list[int]:
    return [ident(r) for batch in loader for r in batch]


def run(ds: Any, workers: int = 0, batch: int = 32, **kw: Any) -> list[int]:
    return ids(tud.DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=list, **kw))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make(tmp_path_factory.mktemp("torch") / "ds")


@pytest.mark.filterwarnings("ignore:This DataLoader will create 4 worker processes")
def test_order_is_the_same_for_any_worker_count(data: str) -> None:
    orders = {}
    for workers, ctx in ((0, None), (1, "fork"), (2, "fork"), (4, "fork")):
        ds = SplitIterableDataset(data, batch_size=32, seed=4)
        orders[workers] = run(ds, workers, multiprocessing_context=ctx)
    assert sorted(orders[0]) == list(range(N))
    assert orders[0] != sorted(orders[0])
    assert orders[1] == orders[0]
    assert orders[2] == orders[0]
    assert orders[4] == orders[0]


def test_bins_mode_is_iterate_binwise(data: str) -> None:
    ds = SplitIterableDataset(data, shuffle="bins", seed=9, batch_size=16)
    ref = [ident(r) for r in SplitDataLoader(data).iterate_binwise(shuffle=True, seed=9)]
    assert run(ds, 2, batch=16) == ref
    ds.set_epoch(2)
    ref2 = [ident(r) for r in SplitDataLoader(data).iterate_binwise(shuffle=True, seed=11)]
    assert run(ds, batch=16) == ref2


def test_epochs_advance_with_persistent_and_fresh_workers(data: str) -> None:
    ref = SplitIterableDataset(data, batch_size=32)
    expected = [run(ref) for _ in range(3)]  # epochs 0, 1, 2 in the main process
    assert len({tuple(e) for e in expected}) == 3
    persistent = SplitIterableDataset(data, batch_size=32)
    loader = tud.DataLoader(
        persistent, batch_size=32, num_workers=2, collate_fn=list, persistent_workers=True
    )
    assert [ids(loader) for _ in range(3)] == expected
    assert persistent.epoch == 2
    fresh = SplitIterableDataset(data, batch_size=32)
    assert [run(fresh, 2) for _ in range(3)] == expected
    fresh.set_epoch(1)
    assert run(fresh, 2) == expected[1]
    # set_epoch reaches persistent workers too, and passes count on from it.
    persistent.set_epoch(0)
    assert ids(loader) == expected[0]
    assert ids(loader) == expected[1]


def test_resume_is_the_rest_of_the_epoch_then_continues(data: str) -> None:
    ds = SplitIterableDataset(data, batch_size=32, seed=2)
    epoch0, epoch1 = run(ds, 2), run(ds, 2)
    ds.set_epoch(0)
    loader = tud.DataLoader(ds, batch_size=32, num_workers=2, collate_fn=list)
    seen = []
    for batch in loader:
        seen += [ident(r) for r in batch]
        if len(seen) == 3200:
            break
    state = json.loads(json.dumps(ds.state_dict(len(seen))))
    assert len(json.dumps(state)) < 1024
    again = SplitIterableDataset(data, batch_size=32, seed=2)
    again.load_state_dict(state)
    assert len(again) == N - 3200
    assert run(again, 2) == epoch0[3200:]
    assert run(again, 2) == epoch1


def test_elastic_resume_through_dataloaders(data: str) -> None:
    def share(w: int, r: int, **kw: Any) -> SplitIterableDataset:
        return SplitIterableDataset(data, world_size=w, rank=r, seed=1, drop_last=True, **kw)

    firsts = [run(share(3, r, batch_size=8), 2, batch=8)[:800] for r in range(3)]
    state = share(3, 0, batch_size=8).state_dict(800)
    rests = []
    for r in range(2):
        ds = share(2, r, batch_size=50)
        ds.load_state_dict(state)
        rests.append(run(ds, 1, batch=50))
    assert len(rests[0]) == len(rests[1])
    done = [i for f in firsts for i in f]
    rest = [i for f in rests for i in f]
    assert not set(done) & set(rest)
    assert len(set(rest)) == len(rest)
    assert len(set(done) | set(rest)) == N  # N=6000: nothing dropped, nothing lost


def test_states_of_other_data_are_refused(data: str, tmp_path: Path) -> None:
    ds = SplitIterableDataset(data, seed=1)
    state = ds.state_dict(0)
    for other, what in (
        (SplitIterableDataset(data, seed=2), "seed"),
        (SplitIterableDataset(data, seed=1, shuffle="global"), "shuffle"),
        (SplitIterableDataset(make(tmp_path / "other"), seed=1), "dataset"),
    ):
        with pytest.raises(ResumeStateError, match=f"another {what}"):
            other.load_state_dict(state)
    with pytest.raises(ResumeStateError, match="damaged"):
        ds.load_state_dict({**state, "remaining": [5]})
    with pytest.raises(ResumeStateError, match="not a SplitIterableDataset state"):
        ds.load_state_dict({"epoch": 3})
    with pytest.raises(ValueError, match="samples_seen"):
        ds.state_dict(N + 1)
    with pytest.raises(ValueError, match="shuffle must be one of"):
        SplitIterableDataset(data, shuffle="yes")
    with pytest.raises(ValueError, match="batch_size"):
        SplitIterableDataset(data, batch_size=0)
    with pytest.raises(ValueError, match="rank"):
        SplitIterableDataset(data, rank=2, world_size=2)


def test_spawn_pickles_location_and_transform(data: str) -> None:
    ds = SplitIterableDataset(data, batch_size=32, transform=ident)
    blob = pickle.dumps(ds)
    assert len(blob) < 2000
    assert b"." * 16 not in blob
    got = [
        i
        for b in tud.DataLoader(
            ds, batch_size=32, num_workers=2, collate_fn=list, multiprocessing_context="spawn"
        )
        for i in b
    ]
    assert got == run(SplitIterableDataset(data, batch_size=32))  # epoch 0's order
    assert ds.epoch == 0
    m = pickle.loads(pickle.dumps(SplitMapDataset(data, transform=ident)))
    assert len(m) == N
    assert m[17] == 17
    assert m.__getitems__([5, 3, 5999]) == [5, 3, 5999]


def test_map_dataset_with_distributed_sampler(data: str) -> None:
    ds = SplitMapDataset(data)
    got = []
    for r in range(2):
        sampler = tud.DistributedSampler(ds, num_replicas=2, rank=r, seed=3)
        got.append(
            ids(tud.DataLoader(ds, batch_size=64, sampler=sampler, num_workers=2, collate_fn=list))
        )
    assert sorted(got[0] + got[1]) == list(range(N))
    with pytest.raises(IndexError, match="out of range"):
        ds[N]


def test_worker_rss_does_not_grow_over_epochs(tmp_path: Path) -> None:
    data = make(tmp_path / "big", n=20000, bins=8, size=1024)
    ds = SplitIterableDataset(data, batch_size=64)
    loader = tud.DataLoader(
        ds, batch_size=64, num_workers=2, collate_fn=len, persistent_workers=True
    )
    rss = []
    for _ in range(6):
        assert sum(loader) == 20000
        rss.append(sum(c.memory_info().rss for c in psutil.Process().children()))
    assert rss[-1] - rss[1] < 8 << 20, rss


def part_bytes(s3_requests: RequestLog, mark: int, parts: dict[str, int]) -> int:
    """Bytes of parts the server sent since ``mark``."""
    fetched = 0
    for req in s3_requests.since(mark):
        if req.method == "GET" and req.path in parts:
            if req.range is None:
                fetched += parts[req.path]
            else:
                lo, hi = map(int, req.range.split("=")[1].split("-"))
                fetched += hi - lo + 1
    return fetched


def test_s3_bytes_within_amplification_and_resume_skips_reading(
    s3_url: str, s3_storage_options: dict[str, Any], s3_requests: RequestLog, s3_fs: Any
) -> None:
    make(s3_url, n=4000, bins=16, size=1024, storage_options=s3_storage_options)
    files = [p for p in s3_fs.find(s3_url) if p.endswith(".bin")]
    parts = {"/" + p: s3_fs.info(p)["size"] for p in files}
    total = sum(parts.values())
    mark = s3_requests.mark()
    got = []
    for r in range(2):
        ds = SplitIterableDataset(s3_url, s3_storage_options, world_size=2, rank=r, window=2)
        got += run(ds)
    assert sorted(got) == list(range(4000))
    assert part_bytes(s3_requests, mark, parts) <= 1.25 * total
    # Resuming at 75% fetches the rest (and the window it starts in), not the skipped.
    ds = SplitIterableDataset(s3_url, s3_storage_options, window=2)
    state = ds.state_dict(3000)
    ds.load_state_dict(state)
    mark = s3_requests.mark()
    assert len(run(ds)) == 1000
    assert part_bytes(s3_requests, mark, parts) <= (0.25 + 2 / 16) * total


def test_s3_getitems_one_request_per_part(
    s3_url: str, s3_storage_options: dict[str, Any], s3_requests: RequestLog
) -> None:
    make(s3_url, n=2000, bins=8, size=64, storage_options=s3_storage_options)
    ds = SplitMapDataset(s3_url, s3_storage_options)
    ds.__getitems__(list(range(16)))  # opens every part (fetches the footers)
    rng = np.random.default_rng(0)
    for k in (1, 3, 8):
        idx = rng.choice(2000, 64, replace=False)
        idx = idx[np.isin(ds.snapshot.locator.locate_many(idx)[0], np.arange(k))]
        mark = s3_requests.mark()
        assert [ident(r) for r in ds.__getitems__(idx.tolist())] == idx.tolist()
        touched = len(np.unique(ds.snapshot.locator.locate_many(idx)[0]))
        assert s3_requests.count("GET", since=mark) == touched == k


def test_compressed_dataset_through_both_datasets_and_workers(tmp_path: Path) -> None:
    records = [b"rec %05d " % i * (1 + i % 5) for i in range(600)]
    write_split_data(tmp_path / "z", records, splits=3, compression="zstd")
    url = str(tmp_path / "z")
    mapped = SplitMapDataset(url)
    assert [mapped[i] for i in (0, 599, 17)] == [records[i] for i in (0, 599, 17)]
    for shuffle in ("bins", "global"):
        ds = SplitIterableDataset(url, shuffle=shuffle, seed=2, batch_size=16)
        got = [
            r
            for batch in tud.DataLoader(
                ds, batch_size=16, num_workers=2, multiprocessing_context="fork", collate_fn=list
            )
            for r in batch
        ]
        assert sorted(got) == sorted(records)


@pytest.mark.parametrize("shuffle", ["window", "global", None])
def test_local_altered_record_is_refused_by_the_iterable_dataset(
    tmp_path: Path, shuffle: str | None
) -> None:
    """Records read where they lie are checked as loader[i] checks them."""
    records = [bytes([i]) * 300 for i in range(60)]
    write_split_data(tmp_path / "d", records, splits=3)
    loader = SplitDataLoader(tmp_path / "d")
    reader = loader._open()
    pid, j = reader.snapshot.locator.locate(10)
    path = tmp_path / "d" / reader.snapshot.parts[pid].path
    start = int(reader.part(pid).starts[j])
    loader.close()
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(b"\xff")
    ds = SplitIterableDataset(tmp_path / "d", shuffle=shuffle, seed=1)
    with pytest.raises(CorruptDatasetError, match="does not match its checksum"):
        list(tud.DataLoader(ds, batch_size=None, num_workers=0))

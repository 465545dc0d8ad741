"""The bounded local part cache (``cache_dir=``) against the real S3 server: hits,
the bound, processes sharing downloads, killed processes, damaged copies, torch
workers and the ``splitdask cache`` command."""

from __future__ import annotations

import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch.utils.data as tud
from _cli_helpers import ENV, run
from conftest import RequestLog

from splitdask import CorruptDatasetError, SplitDataLoader, write_split_data
from splitdask._store import cache_report, open_store
from splitdask._store._cache import PartCache, cacheable
from splitdask._store._cachesettings import parse_bytes
from splitdask.bag import read_split_bins
from splitdask.torch import SplitIterableDataset, SplitMapDataset

BINS = 6


def make(url: str, options: dict[str, Any], n: int = 3000, size: int = 200) -> list[bytes]:
    records = [struct.pack("<q", i) + bytes([i % 251]) * (size - 8) for i in range(n)]
    write_split_data(url, records, splits=BINS, storage_options=options)
    return records


def fetched(log: RequestLog, since: int) -> tuple[int, int]:
    """``(GETs, bytes)`` of part reads (ranged GETs under ``/bins/``) since ``since``."""
    gets = [r for r in log.since(since, contains="/bins/") if r.method == "GET"]
    total = 0
    for r in gets:
        assert r.range is not None, "every part read is a ranged GET"
        lo, hi = r.range.removeprefix("bytes=").split("-")
        total += int(hi) - int(lo) + 1
    return len(gets), total


def part_bytes(loader: SplitDataLoader) -> int:
    return sum(p.size for p in loader.snapshot.parts)


def test_second_epoch_is_served_from_the_cache(
    s3_url: str, s3_storage_options: dict[str, Any], s3_requests: RequestLog, tmp_path: Path
) -> None:
    records = make(s3_url, s3_storage_options)
    loader = SplitDataLoader(s3_url, s3_storage_options, cache_dir=tmp_path / "c")
    parts = len(loader.snapshot.parts)
    mark = s3_requests.mark()
    first = list(loader.iterate_binwise(shuffle=True, seed=3))
    _, size = fetched(s3_requests, mark)
    assert size == part_bytes(loader)  # every part fetched once, whole
    info = loader.cache_info()
    assert info is not None
    assert (info["misses"], info["hits"], info["entries"]) == (parts, 0, parts)
    assert info["bytes_downloaded"] == info["bytes"] == part_bytes(loader)

    mark = s3_requests.mark()
    second = list(loader.iterate_binwise(shuffle=True, seed=3))
    assert fetched(s3_requests, mark) == (0, 0)
    assert second == first
    assert sorted(second) == sorted(records)
    info = loader.cache_info()
    assert info is not None
    assert (info["hits"], info["misses"], info["bytes_from_cache"]) == (
        parts,
        parts,
        part_bytes(loader),
    )

    # A new loader (another process would do the same) reads from the cache too,
    # random reads of cached parts included.
    other = SplitDataLoader(s3_url, s3_storage_options, cache_dir=tmp_path / "c")
    mark = s3_requests.mark()
    assert other[[5, 2999, 1500]] == [records[5], records[2999], records[1500]]
    assert list(other) == records
    assert fetched(s3_requests, mark) == (0, 0)


def test_the_bound_holds_and_the_least_recently_used_part_goes(
    s3_url: str, s3_storage_options: dict[str, Any], tmp_path: Path
) -> None:
    make(s3_url, s3_storage_options)
    snap = SplitDataLoader(s3_url, s3_storage_options).snapshot
    sizes = [sum(snap.parts[p].size for p in b) for b in snap.bin_parts]
    limit = sizes[0] + sizes[1] + max(sizes) // 2  # room for two bins, not three
    # Whole bins through the store itself: a loader's read_bin also reads ahead,
    # which would touch the cache on its own schedule.
    store = open_store(s3_url, s3_storage_options, cache_dir=tmp_path, cache_bytes=limit)

    def read_bin(b: int) -> None:
        parts = [snap.parts[p] for p in snap.bin_parts[b]]
        store.read_whole([p.path for p in parts], [p.size for p in parts])

    def info() -> dict[str, Any]:
        got = cache_report(store.cache)
        assert got is not None
        return got

    read_bin(0)
    read_bin(1)
    read_bin(0)  # a hit: bin 0 is now the most recently used
    read_bin(2)  # evicts bin 1
    assert info()["bytes"] <= limit
    assert info()["entries"] == 2
    assert (info()["hits"], info()["misses"]) == (1, 3)
    read_bin(0)
    assert info()["hits"] == 2
    read_bin(1)
    assert info()["misses"] == 4
    assert info()["bytes"] <= limit


def test_a_part_larger_than_the_cache_is_served_not_kept(
    s3_url: str, s3_storage_options: dict[str, Any], tmp_path: Path
) -> None:
    records = make(s3_url, s3_storage_options)
    loader = SplitDataLoader(s3_url, s3_storage_options, cache_dir=tmp_path, cache_bytes=1000)
    assert list(loader.iterate_binwise()) == [r for b in range(BINS) for r in records[b::BINS]]
    assert loader.cache_info()["entries"] == 0  # type: ignore[index]


_READER = """
import sys
from splitdask import SplitDataLoader
url, endpoint, cache = sys.argv[1:4]
opts = {"key": "testing", "secret": "testing", "endpoint_url": endpoint,
        "client_kwargs": {"region_name": "us-east-1"}}
loader = SplitDataLoader(url, opts, cache_dir=cache)
sys.stdin.readline()  # start together
n = sum(1 for _ in loader.iterate_binwise())
print(n, loader.cache_info()["misses"], loader.cache_info()["hits"], flush=True)
"""


def test_two_processes_download_each_part_once(
    s3_url: str,
    s3_storage_options: dict[str, Any],
    s3_endpoint: str,
    s3_requests: RequestLog,
    tmp_path: Path,
) -> None:
    make(s3_url, s3_storage_options)
    loader = SplitDataLoader(s3_url, s3_storage_options)
    parts = len(loader.snapshot.parts)
    args = [sys.executable, "-c", _READER, s3_url, s3_endpoint, str(tmp_path / "c")]
    procs = [
        subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=ENV)
        for _ in range(2)
    ]
    for p in procs:  # both are started (and imported) before either reads
        assert p.stdin is not None
    mark = s3_requests.mark()
    outs = [p.communicate(b"go\n", timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert [int(o[0]) for o in outs] == [3000, 3000]
    assert sum(int(o[1]) for o in outs) == parts  # misses: one download per part
    assert sum(int(o[2]) for o in outs) == parts  # the rest were hits
    assert fetched(s3_requests, mark)[1] == part_bytes(loader)


_HOLDER = """
import os, sys
from splitdask._store._cache import PartCache, _flock
cache = PartCache(sys.argv[1], 1 << 30)
key = cache.key(sys.argv[2], sys.argv[3])
with _flock(os.path.join(sys.argv[1], key + ".lock")):
    with open(os.path.join(sys.argv[1], key + ".%d-0badf00d.tmp" % os.getpid()), "wb") as f:
        f.write(b"half a part")
    print("holding", flush=True)
    sys.stdin.readline()  # killed here, mid-download
"""


def test_a_process_killed_mid_download_blocks_nothing(
    s3_url: str, s3_storage_options: dict[str, Any], tmp_path: Path
) -> None:
    records = make(s3_url, s3_storage_options)
    loader = SplitDataLoader(s3_url, s3_storage_options, cache_dir=tmp_path)
    rel = loader.snapshot.parts[loader.snapshot.bin_parts[0][0]].path
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path), s3_url, rel],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=ENV,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline() == b"holding\n"
    os.kill(holder.pid, signal.SIGKILL)
    assert holder.wait(timeout=60) == -signal.SIGKILL
    temps = list(tmp_path.glob("*.tmp"))
    assert len(temps) == 1  # left behind, never read
    # One bin at a time (read_bin would also fetch the next bin meanwhile).
    assert list(loader.iterate_binwise())[: len(records[0::BINS])] == records[0::BINS]
    assert loader.cache_info()["misses"] == BINS  # type: ignore[index]
    assert len(list(tmp_path.glob("*.tmp"))) == 1  # still there: young
    # Once old enough, the next addition (here: a part of another dataset) removes it.
    os.utime(temps[0], (0, 0))
    other = s3_url + "-other"
    write_split_data(other, [b"x"], splits=1, storage_options=s3_storage_options)
    assert SplitDataLoader(other, s3_storage_options, cache_dir=tmp_path).read_bin(0) == [b"x"]
    assert not list(tmp_path.glob("*.tmp"))


def test_a_damaged_cached_copy_is_fetched_again(
    s3_url: str, s3_storage_options: dict[str, Any], s3_requests: RequestLog, tmp_path: Path
) -> None:
    records = make(s3_url, s3_storage_options)
    loader = SplitDataLoader(s3_url, s3_storage_options, cache_dir=tmp_path)
    first = list(loader.iterate_binwise())
    victim = sorted(tmp_path.glob("*.part"))[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 3] ^= 0xFF
    victim.write_bytes(bytes(data))
    mark = s3_requests.mark()
    assert list(loader.iterate_binwise()) == first  # whole-part reads: checked, re-fetched
    info = loader.cache_info()
    assert info is not None
    assert info["damaged"] == 1
    assert fetched(s3_requests, mark) == (1, victim.stat().st_size)
    assert victim.read_bytes() != bytes(data)  # the good copy replaced it

    # A random read of a damaged copy is refused by the per-record check.
    victim.write_bytes(bytes(data))
    fresh = SplitDataLoader(s3_url, s3_storage_options, cache_dir=tmp_path)
    with pytest.raises(CorruptDatasetError, match="checksum|damaged|altered"):
        _ = [fresh[i] for i in range(len(records))]


@pytest.mark.parametrize("compression", [None, "zstd"])
def test_verify_checks_the_stored_parts_not_the_cached_copies(
    s3_url: str, s3_storage_options: dict[str, Any], tmp_path: Path, compression: str | None
) -> None:
    records = [b"record %d " % i * 5 for i in range(400)]
    write_split_data(
        s3_url, records, splits=2, storage_options=s3_storage_options, compression=compression
    )
    loader = SplitDataLoader(s3_url, s3_storage_options, cache_dir=tmp_path)
    list(loader.iterate_binwise())
    for victim in tmp_path.glob("*.part"):
        data = bytearray(victim.read_bytes())
        data[8] ^= 0xFF
        victim.write_bytes(bytes(data))
    assert loader.verify().parts == 2  # the stored parts are sound


def test_pickled_stores_and_loaders_keep_the_cache(
    s3_url: str, s3_storage_options: dict[str, Any], tmp_path: Path
) -> None:
    make(s3_url, s3_storage_options, n=60)
    store = open_store(s3_url, s3_storage_options, cache_dir=tmp_path, cache_bytes="20MiB")
    again = pickle.loads(pickle.dumps(store))
    assert again.cache is not None
    assert (again.cache.directory, again.cache.limit) == (str(tmp_path), 20 << 20)
    loader = pickle.loads(
        pickle.dumps(SplitDataLoader(s3_url, s3_storage_options, cache_dir=tmp_path))
    )
    assert loader.cache_info()["directory"] == str(tmp_path)  # type: ignore[index]
    assert pickle.loads(pickle.dumps(open_store(s3_url, s3_storage_options))).cache is None
    mapped = SplitMapDataset(s3_url, s3_storage_options, cache_dir=tmp_path, cache_bytes=10**7)
    info = pickle.loads(pickle.dumps(mapped)).cache_info()
    assert info is not None
    assert (info["directory"], info["limit"]) == (str(tmp_path), 10**7)


def test_settings_from_the_environment_and_errors(
    s3_url: str,
    s3_storage_options: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make(s3_url, s3_storage_options, n=60)
    monkeypatch.setenv("SPLITDASK_CACHE_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("SPLITDASK_CACHE_BYTES", "3M")
    info = SplitDataLoader(s3_url, s3_storage_options).cache_info()
    assert info is not None
    assert (info["directory"], info["limit"]) == (
        str(tmp_path / "env"),
        3 << 20,
    )
    assert SplitDataLoader(s3_url, s3_storage_options, cache_dir=False).cache_info() is None
    monkeypatch.delenv("SPLITDASK_CACHE_BYTES")
    limit = SplitDataLoader(s3_url, s3_storage_options).cache_info()["limit"]  # type: ignore[index]
    assert 1 << 20 <= limit <= 50 << 30
    monkeypatch.delenv("SPLITDASK_CACHE_DIR")
    assert SplitDataLoader(s3_url, s3_storage_options).cache_info() is None

    for bad in (0, -5, "lots", "0G"):
        with pytest.raises(ValueError, match="cache_bytes"):
            SplitDataLoader(s3_url, s3_storage_options, cache_dir=tmp_path, cache_bytes=bad)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(NotADirectoryError, match=f"cache_dir {a_file} is a file"):
        SplitDataLoader(s3_url, s3_storage_options, cache_dir=a_file)
    with pytest.raises(OSError, match=f"cannot create cache_dir {a_file}/sub"):
        SplitDataLoader(s3_url, s3_storage_options, cache_dir=a_file / "sub")
    assert parse_bytes("1.5k", "x") == 1536
    assert parse_bytes("2GiB", "x") == 2 << 30


def test_local_datasets_ignore_the_cache(tmp_path: Path) -> None:
    write_split_data(tmp_path / "ds", [b"a", b"b"], splits=2)
    loader = SplitDataLoader(tmp_path / "ds", cache_dir=tmp_path / "c")
    assert list(loader) == [b"a", b"b"]
    assert loader.cache_info() is None
    with pytest.raises(ValueError, match="cache_bytes"):
        SplitDataLoader(tmp_path / "ds", cache_bytes=0)


def test_lru_order_of_the_cache_itself(tmp_path: Path) -> None:
    cache = PartCache(str(tmp_path), 250)
    keys = [cache.key("s3://b/ds", f"bins/0000{i}-{'ab' * 8}.bin") for i in range(3)]

    def get(k: int) -> bytes:
        return bytes(cache.get_many([keys[k]], [100], lambda _: [bytes([k]) * 100])[0])

    assert get(0) == b"\0" * 100
    assert get(1) == b"\1" * 100
    assert get(0) == b"\0" * 100  # a hit, touched
    get(2)
    assert (cache.stats.hits, cache.stats.misses) == (1, 3)
    assert cache.lookup(keys[1], 100) is None  # the least recently used went
    assert cache.lookup(keys[0], 100) is not None
    assert cache.info().bytes == 200
    assert len(list(tmp_path.glob("[0-9a-f]*.lock"))) == 2  # its lock went with it


def test_only_parts_with_a_uid_are_cached() -> None:
    assert cacheable("bins/00003-0123456789abcdef.bin")
    assert not cacheable("bin00000003.dat")  # splitdataloader: rewritable names
    assert not cacheable(".00003-0123456789abcdef.bin.tmp")
    assert not cacheable("splitdask.json")


def test_dask_workers_share_the_cache(
    s3_url: str, s3_storage_options: dict[str, Any], s3_requests: RequestLog, tmp_path: Path
) -> None:
    records = make(s3_url, s3_storage_options)
    bag = read_split_bins(s3_url, storage_options=s3_storage_options, cache_dir=tmp_path)
    mark = s3_requests.mark()
    assert sorted(bag.compute(scheduler="processes", num_workers=2)) == sorted(records)
    assert fetched(s3_requests, mark)[1] == part_bytes(SplitDataLoader(s3_url, s3_storage_options))
    mark = s3_requests.mark()
    assert sorted(bag.compute(scheduler="processes", num_workers=2)) == sorted(records)
    assert fetched(s3_requests, mark) == (0, 0)  # the worker processes read the cache


@pytest.mark.parametrize("cache", [None, False, True])
def test_two_torch_workers_fetch_the_dataset_once(
    s3_url: str,
    s3_storage_options: dict[str, Any],
    s3_requests: RequestLog,
    tmp_path: Path,
    cache: bool | None,
) -> None:
    """Without a cache_dir the workers share a private one; ``cache_dir=False``
    (no cache at all) shows what that saves: each worker fetches every part."""
    records = make(s3_url, s3_storage_options, n=6000)
    kw: dict[str, Any] = {"cache_dir": tmp_path / "c" if cache else cache}
    ds = SplitIterableDataset(s3_url, s3_storage_options, window=2, batch_size=32, **kw)
    total = part_bytes(SplitDataLoader(s3_url, s3_storage_options))
    for epoch in range(2):
        mark = s3_requests.mark()
        got = [
            r
            for b in tud.DataLoader(
                ds, batch_size=32, num_workers=2, collate_fn=list, multiprocessing_context="fork"
            )
            for r in b
        ]
        assert sorted(got) == sorted(records)
        size = fetched(s3_requests, mark)[1]
        if cache and epoch == 1:
            assert size == 0  # the second epoch is read from the cache
        elif cache is False:
            assert size >= 1.9 * total, f"epoch {epoch}: fetched {size / total:.2f}x"
        else:
            assert size <= 1.1 * total, f"epoch {epoch}: fetched {size / total:.2f}x"
    # The workers' private cache is gone when they are.
    assert not list(Path(tempfile.gettempdir()).glob(f"splitdask-workers-{os.getpid()}-*"))


def test_cache_command(s3_url: str, s3_storage_options: dict[str, Any], tmp_path: Path) -> None:
    make(s3_url, s3_storage_options, n=120)
    loader = SplitDataLoader(s3_url, s3_storage_options, cache_dir=tmp_path)
    list(loader.iterate_binwise())
    (tmp_path / "mine.txt").write_text("not the cache's")
    parts = len(loader.snapshot.parts)
    out = run("cache", "info", "--cache-dir", str(tmp_path), "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert (doc["entries"], doc["bytes"]) == (parts, part_bytes(loader))
    out = run("cache", "info", "--cache-dir", str(tmp_path))
    assert out.stdout.decode().startswith(f"{tmp_path}: {parts:,} parts, ")
    out = run("cache", "clear", "--cache-dir", str(tmp_path))
    assert out.returncode == 0
    assert (
        out.stdout.decode()
        == f"removed {parts} parts ({part_bytes(loader):,} bytes) from {tmp_path}\n"
    )
    assert not list(tmp_path.glob("*.part"))
    assert (tmp_path / "mine.txt").exists()
    assert loader.read_bin(0)  # readers go on: the part is fetched again
    missing = run("cache", "info", "--cache-dir", str(tmp_path / "nope"))
    assert missing.returncode == 3  # not found
    assert missing.stderr.decode() == (
        f"splitdask: error: no cache at {tmp_path / 'nope'}: it is not a directory "
        "(a cache is made on first use)\n"
    )
    env = {k: v for k, v in ENV.items() if k != "SPLITDASK_CACHE_DIR"}
    none = subprocess.run(
        [sys.executable, "-m", "splitdask", "cache", "clear"], capture_output=True, env=env
    )
    assert none.returncode == 2  # usage
    assert b"--cache-dir" in none.stderr

"""Dask bags: read_split_bins and to_split_bins on 1 and 2 worker processes vs one process.

Run: ``python benchmarks/dask_bag.py [--records N] [--size BYTES] [--bins N] [--quick]``

Reading: ``read_split_bins(shuffle=True).map(f).sum()`` on a ``LocalCluster`` of 1
and of 2 single-threaded worker processes, against single-process
``sum(map(f, SplitDataLoader.iterate_binwise(shuffle=True)))`` over the same
dataset, for ``f = len`` (the bytes are only moved: the cost of reading) and
``f = zlib.crc32`` (every byte is processed, as a decoder would). The limit rows
do the same work straight from the part files (``readinto`` a reused 8 MiB
buffer, page cache warm) in one process and in two processes each taking half of
the files: the second one is this machine's own ceiling for a 2-worker speed-up.

Writing: ``to_split_bins`` of a bag whose partitions are generated on the workers,
against single-process ``write_split_data`` of the same records, and against one
plain file written in 1 MiB blocks and fsynced.

Targets: 2 workers >= 1.6x 1 worker for records of 64 KiB or more, and Dask's
overhead on 1 worker below 20% of the single-process time. Every figure is the
best of ``--repeat`` runs, all measured in one run of this script, so the ratios
are comparable even on a noisy machine. Cluster start-up is not timed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import dask.bag as db
from distributed import Client, LocalCluster

from splitdask import SplitDataLoader, write_split_data
from splitdask.bag import read_split_bins, to_split_bins

WORK: dict[str, Callable[[Any], int]] = {"len": len, "crc32": zlib.crc32}


def row(name: str, records: int, nbytes: int, seconds: float, ref: float | None = None) -> float:
    rate = records / seconds
    extra = f"  {rate / ref:5.2f}x" if ref else ""
    print(f"  {name:<52} {rate:>9,.0f} rec/s {nbytes / seconds / 1e6:>7,.0f} MB/s{extra}")
    return rate


def records_of(parts: list[int], per_part: int, size: int) -> Iterator[bytes]:
    """The records of some partitions: made where they are consumed, at no cost."""
    block = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    for _ in parts:
        for _ in range(per_part):
            yield block


def raw_write(path: str, nbytes: int) -> None:
    block = b"\0" * (1 << 20)
    with open(path, "wb") as f:
        left = nbytes
        while left > 0:
            f.write(block[: min(left, len(block))])
            left -= len(block)
        f.flush()
        os.fsync(f.fileno())


def raw_scan(files: list[str], work: str = "len", size: int = 1 << 20) -> int:
    """Read files into a reused buffer and apply ``work`` to each ``size``-byte slice."""
    fn = WORK[work]
    buf = bytearray(max(8 << 20, size))
    view = memoryview(buf)
    total = 0
    for p in files:
        with open(p, "rb", buffering=0) as f:
            while k := f.readinto(buf):
                total += sum(fn(view[i : min(i + size, k)]) for i in range(0, k, size))
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=32768)
    ap.add_argument("--size", type=int, default=64 << 10, help="bytes per record")
    ap.add_argument("--bins", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="256 MiB, 8 bins, one repeat")
    args = ap.parse_args()
    if args.quick:
        args.records, args.bins, args.repeat = (256 << 20) // args.size, 8, 1
    size, bins, repeat = args.size, args.bins, args.repeat
    per_bin = args.records // bins
    n = per_bin * bins
    nbytes = n * size
    print(
        f"{n:,} records of {size:,} B ({nbytes / 2**20:,.0f} MiB) in {bins} bins, "
        f"best of {repeat}, {os.cpu_count()} CPUs"
    )
    tmp = tempfile.mkdtemp(prefix="splitdask-bench-")
    try:
        ds = os.path.join(tmp, "ds")

        def bag() -> db.Bag:
            seq = db.from_sequence(range(bins), npartitions=bins)
            return seq.map_partitions(records_of, per_bin, size)

        write_split_data(ds, records_of(list(range(bins)), per_bin, size), splits=bins)
        loader = SplitDataLoader(ds)
        assert len(loader) == n
        assert loader.manifest is not None
        files = [os.path.join(ds, p.path) for p in loader.manifest.parts()]
        halves = [files[0::2], files[1::2]]

        # Every measurement runs once per round, rounds repeat, and each keeps its best
        # time: a burst of load from elsewhere then hurts one round, not one row.
        runs: dict[str, Callable[[], Any]] = {}
        for work, fn in WORK.items():

            def iterate(fn: Callable[[Any], int] = fn) -> None:
                sum(map(fn, loader.iterate_binwise(shuffle=True, seed=1)))

            def new_loader(fn: Callable[[Any], int] = fn) -> None:
                with SplitDataLoader(ds) as fresh:  # maps every part afresh, as a task does
                    sum(map(fn, fresh.iterate_binwise(shuffle=True, seed=1)))

            runs[f"limit {work} 1"] = lambda w=work: raw_scan(files, w, size)
            jobs = [(h, work, size) for h in halves]
            runs[f"limit {work} 2"] = lambda j=jobs: pool.starmap(raw_scan, j)
            runs[f"iterate {work}"] = iterate
            runs[f"new loader {work}"] = new_loader
            for workers in (1, 2):
                # Bound at call time: the client of the cluster with `workers` workers.
                def read(fn: Callable[[Any], int] = fn, workers: int = workers) -> None:
                    b = read_split_bins(ds, shuffle=True, seed=1).map(fn).sum()
                    assert b.compute(scheduler=clients[workers]) >= 0

                runs[f"read {work} {workers}"] = read
        for workers in (1, 2):

            def empty(workers: int = workers) -> None:
                b = db.from_sequence(range(bins), npartitions=bins).map(int).sum()
                b.compute(scheduler=clients[workers])

            def write(workers: int = workers) -> None:
                out = os.path.join(tmp, f"bag{workers}")
                info = to_split_bins(
                    bag(), out, overwrite=True, compute_kwargs={"scheduler": clients[workers]}
                )
                assert info.records_written == n

            runs[f"empty {workers}"] = empty
            runs[f"write {workers}"] = write
        runs["limit write"] = lambda: raw_write(os.path.join(tmp, "raw"), nbytes)
        runs["write_split_data"] = lambda: write_split_data(
            os.path.join(tmp, "wsd"),
            records_of(list(range(bins)), per_bin, size),
            splits=bins,
            start_clean=True,
        )

        clients: dict[int, Client] = {}
        times: dict[str, float] = {}
        with (
            multiprocessing.get_context("spawn").Pool(2) as pool,
            LocalCluster(
                n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"
            ) as cluster1,
            LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
            ) as cluster2,
            Client(cluster1, set_as_default=False) as clients[1],
            Client(cluster2, set_as_default=False) as clients[2],
        ):
            for name, fn in runs.items():  # warm-up: page cache, imports on the workers
                if not name.startswith(("limit write", "write")):
                    fn()
            for _ in range(repeat):
                for name, fn in runs.items():
                    t0 = time.perf_counter()
                    fn()
                    elapsed = time.perf_counter() - t0
                    times[name] = min(times.get(name, elapsed), elapsed)

        t_limit = {(w, k): times[f"limit {w} {k}"] for w in WORK for k in (1, 2)}
        t_iter = {w: times[f"iterate {w}"] for w in WORK}
        t_fresh = {w: times[f"new loader {w}"] for w in WORK}
        t_read = {(w, k): times[f"read {w} {k}"] for w in WORK for k in (1, 2)}
        t_empty = {k: times[f"empty {k}"] for k in (1, 2)}
        t_write = {k: times[f"write {k}"] for k in (1, 2)}
        t_raw_w, t_wsd = times["limit write"], times["write_split_data"]

        ratios = []
        for work in WORK:
            print(f"read, map({work}).sum(), shuffle=True, page cache warm")
            lim1 = row("limit: part files, readinto, 1 process", n, nbytes, t_limit[work, 1])
            lim2 = row(
                "limit: part files, readinto, 2 processes", n, nbytes, t_limit[work, 2], lim1
            )
            it = row("iterate_binwise, 1 process", n, nbytes, t_iter[work], lim1)
            row("iterate_binwise, 1 process, new loader", n, nbytes, t_fresh[work], lim1)
            r1 = row("read_split_bins, 1 worker", n, nbytes, t_read[work, 1], lim1)
            r2 = row("read_split_bins, 2 workers", n, nbytes, t_read[work, 2], lim1)
            ratios.append((work, r2 / r1, lim2 / lim1, t_read[work, 1] / t_iter[work] - 1, r1 / it))
        print(
            f"Dask alone: a {bins}-partition bag doing nothing takes {t_empty[1] * 1000:.0f} ms "
            f"on 1 worker, {t_empty[2] * 1000:.0f} ms on 2"
        )
        print("write")
        wlimit = row("limit: one file, 1 MiB writes + fsync", n, nbytes, t_raw_w)
        wsd = row("write_split_data, 1 process", n, nbytes, t_wsd, wlimit)
        w1 = row("to_split_bins, 1 worker", n, nbytes, t_write[1], wlimit)
        w2 = row("to_split_bins, 2 workers", n, nbytes, t_write[2], wlimit)
        print("ratios")
        for work, speedup, ceiling, overhead, _ in ratios:
            print(
                f"  read {work:>5}: 2 workers / 1 worker {speedup:5.2f}x (target >= 1.6x; "
                f"this machine, 2 / 1 process: {ceiling:4.2f}x); Dask overhead on 1 worker "
                f"{overhead:+.0%} (target < 20%)"
            )
        print(
            f"  write: 2 workers / 1 worker {w2 / w1:5.2f}x; 1 worker / write_split_data "
            f"{w1 / wsd:4.2f}x"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

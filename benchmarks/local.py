"""Local-disk hot paths against the physical limit and the predecessor.

Run: ``python benchmarks/local.py [--records N] [--size BYTES] [--quick]``

Prints records/s and MB/s for writing, random ``loader[i]``, batched
``loader[indices]`` and ``iterate_binwise(shuffle=True)``, each next to

* the physical limit on this machine: the same bytes written to / read from one
  plain file in large blocks, or sliced out of a plain ``mmap`` at the same
  random offsets;
* splitdataloader 0.0.1, the predecessor (if installed), on a subset where it is
  slow.

Everything is measured in one run, page cache warm, so ratios are comparable even
on a noisy machine.

Open + ``len()`` is timed on the dataset written, on 10M records of 8 B, and on a
dataset after 300 small appends (median and best of 21 opens in this process).

Last, the cost of integrity checks (per-record checksums of v2 parts, whole-part
checksums on whole-part reads): the same dataset read with and without them, on
256 B random reads and on 1 MiB records read in order, alternating runs and keeping
the best of each (``--integrity-only`` runs just that).
"""

from __future__ import annotations

import argparse
import mmap
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from splitdask import SplitDataLoader, write_split_data


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def row(name: str, records: int, nbytes: int, seconds: float, ref: float | None = None) -> float:
    rate = records / seconds
    extra = f"  {rate / ref:6.2f}x" if ref else ""
    print(f"  {name:<44} {rate:>12,.0f} rec/s {nbytes / seconds / 1e6:>9.1f} MB/s{extra}")
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=256, help="bytes per record")
    ap.add_argument("--splits", type=int, default=256)
    ap.add_argument("--quick", action="store_true", help="200k records")
    ap.add_argument("--integrity-only", action="store_true", help="only the integrity costs")
    args = ap.parse_args()
    if args.integrity_only:
        integrity(200_000 if args.quick else args.records)
        return
    n = 200_000 if args.quick else args.records
    size, splits = args.size, args.splits
    rng = np.random.default_rng(0)
    pool = rng.integers(0, 256, size=size * 1024, dtype=np.uint8).tobytes()
    records = [pool[(i % 1000) * size : (i % 1000) * size + size] for i in range(n)]
    total = n * size
    tmp = tempfile.mkdtemp(prefix="splitdask-bench-")
    try:
        print(f"{n:,} records of {size} B ({total / 1e6:.0f} MB), {splits} bins, in {tmp}")
        ds = os.path.join(tmp, "ds")

        print("write")
        raw_path = os.path.join(tmp, "raw.bin")
        blob = b"".join(records)

        def raw_write() -> None:
            with open(raw_path, "wb") as f:
                for lo in range(0, len(blob), 1 << 20):
                    f.write(blob[lo : lo + (1 << 20)])
                f.flush()
                os.fsync(f.fileno())

        raw = row("raw file, 1 MiB writes + fsync (limit)", n, total, timed(raw_write))
        row(
            "splitdask write_split_data",
            n,
            total,
            timed(lambda: write_split_data(ds, iter(records), splits=splits)),
            raw,
        )
        _write_rows(tmp, records, splits, raw)
        old_n = min(n, 50_000)
        old = _predecessor()
        if old:
            old_dir = os.path.join(tmp, "old")
            t = timed(lambda: old.write_split_data(old_dir, records[:old_n], splits=splits))
            row(f"splitdataloader 0.0.1 ({old_n:,} records)", old_n, old_n * size, t, raw)

        loader = SplitDataLoader(ds)
        picks = [random.randrange(n) for _ in range(min(n, 300_000))]
        print(f"random loader[i] ({len(picks):,} reads)")
        with open(raw_path, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        offsets = [i * size for i in picks]
        limit = row(
            "plain mmap slice at known offsets (limit)",
            len(picks),
            len(picks) * size,
            timed(lambda: [mm[o : o + size] for o in offsets]),
        )
        loader[0]
        row(
            "splitdask loader[i]",
            len(picks),
            len(picks) * size,
            timed(lambda: [loader[i] for i in picks]),
            limit,
        )
        if old:
            old_loader = old.SplitDataLoader(old_dir)
            few = [i % old_n for i in picks[:20_000]]
            t = timed(lambda: [old_loader[i] for i in few])
            row("splitdataloader 0.0.1 loader[i]", len(few), len(few) * size, t, limit)

        print("batched loader[indices]")
        idx = np.array(picks, dtype=np.int64)
        row(
            "splitdask loader[array of indices]",
            len(picks),
            len(picks) * size,
            timed(lambda: loader[idx]),
            limit,
        )

        print("iterate_binwise(shuffle=True)")
        parts = [os.path.join(ds, p.path) for p in loader.manifest.parts()]  # type: ignore[union-attr]

        def raw_read() -> None:
            for p in parts:
                with open(p, "rb") as f:
                    while f.read(8 << 20):
                        pass

        row("raw read of every part file (bytes limit)", n, total, timed(raw_read))
        seq = range(0, total, size)
        limit = row(
            "plain mmap slices in file order (record limit)",
            n,
            total,
            timed(lambda: _drain(mm[o : o + size] for o in seq)),
        )
        row(
            "splitdask iterate_binwise(shuffle=True)",
            n,
            total,
            timed(lambda: _drain(loader.iterate_binwise(shuffle=True, seed=1))),
            limit,
        )
        row(
            "splitdask iterate_binwise()",
            n,
            total,
            timed(lambda: _drain(loader.iterate_binwise())),
            limit,
        )
        if old:
            t = timed(lambda: _drain(old_loader.iterate_binwise(shuffle=True)))
            row(f"splitdataloader 0.0.1 ({old_n:,} records)", old_n, old_n * size, t, limit)
        print("open + len()")
        _open_row(f"SplitDataLoader(path) + len(), {n:,} records", ds)
        _open_rows(tmp, splits)
        mm.close()
        loader.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    integrity(n)


def _write_rows(tmp: str, records: list[bytes], splits: int, raw: float) -> None:
    """The other write paths, on the same records, against the same raw limit."""
    n, total = len(records), sum(map(len, records))
    from splitdask import SplitWriter
    from splitdask._binwrite import write_bin_part
    from splitdask._store import open_store

    def many() -> None:
        with SplitWriter(os.path.join(tmp, "many"), splits) as w:
            for lo in range(0, n, 1000):
                w.write_many(records[lo : lo + 1000])

    row("splitdask SplitWriter.write_many(1,000 at a time)", n, total, timed(many), raw)
    few = records[: n // 4]

    def one_by_one() -> None:
        with SplitWriter(os.path.join(tmp, "one"), splits) as w:
            for r in few:
                w.write(r)

    t = timed(one_by_one)
    row(f"splitdask SplitWriter.write() ({len(few):,})", len(few), sum(map(len, few)), t, raw)
    store = open_store(os.path.join(tmp, "part"))
    store.makedirs("bins")
    t = timed(lambda: write_bin_part(store, 0, iter(records)))
    row("splitdask write_bin_part (a Dask partition)", n, total, t, raw)
    for name in ("many", "one", "part"):
        shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)


def _open_row(name: str, path: str, runs: int = 21) -> None:
    """Open + len() in this process, median and best of ``runs`` (after one open)."""
    len(SplitDataLoader(path))
    times = sorted(timed(lambda: len(SplitDataLoader(path))) for _ in range(runs))
    print(f"  {name:<56} median {times[runs // 2] * 1e3:6.2f} ms  best {times[0] * 1e3:6.2f} ms")


def _open_rows(tmp: str, splits: int) -> None:
    """Open + len() of 10M tiny records, and of a dataset after 300 small appends."""
    big = os.path.join(tmp, "10m")
    t = timed(lambda: write_split_data(big, (i.to_bytes(8, "little") for i in range(10**7)),
                                       splits=splits))  # fmt: skip
    row("(writing 10M records of 8 B)", 10**7, 8 * 10**7, t)
    _open_row(f"SplitDataLoader(path) + len(), 10M records, {splits} bins", big)
    appended = os.path.join(tmp, "appends")
    write_split_data(appended, (i.to_bytes(8, "little") for i in range(10**6)), splits=splits)
    for a in range(300):
        write_split_data(appended, [b"%d" % a] * 50)
    loader = SplitDataLoader(appended)
    assert loader.manifest is not None
    parts, segments = len(loader.manifest.parts()), len(loader.manifest.order)
    _open_row(
        f"... 1M records after 300 appends ({parts:,} parts, {segments:,} segments)", appended
    )
    shutil.rmtree(big, ignore_errors=True)
    shutil.rmtree(appended, ignore_errors=True)


class _Checks:
    """Switches the integrity checks of one loader's open parts off and on again, so
    both runs read through the same maps (no difference but the checks)."""

    def __init__(self, loader: SplitDataLoader) -> None:
        reader = loader._open()
        self.parts = [reader.part(pid) for pid in range(len(reader.snapshot.parts))]
        self.saved = [(p.sums, p.sums_np) for p in self.parts]

    def set(self, on: bool) -> None:
        for part, (sums, sums_np) in zip(self.parts, self.saved, strict=True):
            part.sums, part.sums_np = (sums, sums_np) if on else (None, None)
            part.whole = not on


def _cost(name: str, runs: int, checks: _Checks, run: Callable[[], Any]) -> None:
    """Best of ``runs`` alternating runs with and without checks."""
    best = {True: float("inf"), False: float("inf")}
    for r in range(runs):
        for on in (r % 2 == 0, r % 2 == 1):  # alternate which goes first
            checks.set(on)
            best[on] = min(best[on], timed(run))
    checks.set(True)
    cost = best[True] / best[False] - 1
    print(
        f"  {name:<44} unchecked {best[False] * 1e3:8.1f} ms  checked "
        f"{best[True] * 1e3:8.1f} ms  cost {cost * 100:+5.1f}%"
    )


def integrity(n: int) -> None:
    tmp = tempfile.mkdtemp(prefix="splitdask-bench-")
    try:
        print("integrity checks: cost (same data, with / without checks, best of 5 to 15)")
        rng = np.random.default_rng(1)
        pool = rng.integers(0, 256, size=256 * 1024, dtype=np.uint8).tobytes()
        small = os.path.join(tmp, "small")
        write_split_data(small, (pool[(i % 1000) * 256 :][:256] for i in range(n)), splits=256)
        loader = SplitDataLoader(small)
        checks = _Checks(loader)
        picks = [random.randrange(n) for _ in range(min(n, 100_000))]
        _drain(loader[i] for i in picks)  # fault the pages in: every run sees a warm map
        _cost(f"256 B random loader[i] ({len(picks):,})", 15, checks,
              lambda: [loader[i] for i in picks])  # fmt: skip
        big = os.path.join(tmp, "big")
        blobs = [rng.integers(0, 256, size=1 << 20, dtype=np.uint8).tobytes() for _ in range(16)]
        write_split_data(big, blobs * 16, splits=4)  # 256 MiB
        big_loader = SplitDataLoader(big)
        big_checks = _Checks(big_loader)
        _drain(iter(big_loader))
        _cost("1 MiB sequential loader[i] (256 MiB)", 15, big_checks,
              lambda: _drain(big_loader[i] for i in range(len(big_loader))))  # fmt: skip
        # Whole-part reads check each map once (then set .whole), so every run here
        # pays the whole-part checksum: the cost of a first pass.
        _cost("1 MiB iterate_binwise, first pass", 15, big_checks,
              lambda: _drain(big_loader.iterate_binwise()))  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _drain(it: Iterator[bytes]) -> None:
    for _ in it:
        pass


def _predecessor() -> Any:
    try:
        import splitdataloader
    except ImportError:
        print("  (splitdataloader 0.0.1 not installed: predecessor rows skipped)")
        return None
    return splitdataloader


if __name__ == "__main__":
    main()

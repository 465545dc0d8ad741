"""splitdask against its peers on the same records, in one run, beside the raw limits.

Run (in a venv of its own: the peers are not splitdask dependencies)::

    python3 -m venv /work/peers-venv
    /work/peers-venv/bin/pip install -e . numpy datasets pylance array_record grain \\
        splitdataloader==0.0.1
    /work/peers-venv/bin/python benchmarks/peers.py [--records N] [--size BYTES] [--quick]
        [--only raw,splitdask,hf,lance,arrayrecord,grain,splitdataloader] [--budget S]

Versions it was run with (Python 3.11): numpy 2.4.6, pyarrow 26.0.1, datasets 5.2.0,
pylance 14.0.2, array_record 0.8.6, grain 0.2.18, splitdataloader 0.0.1. A peer that is
not installed is skipped with a printed note.

N records (default 1,000,000) of ``--size`` (256) random bytes are written by every
system and read back in the same process, page cache warm. Every row prints records/s,
MB/s and its ratio to the limit of its path, measured in the same run:

* write: the bytes as one flat file plus an int64 offsets file, 1 MiB writes, fsync.
  Peers that do not fsync get their output fsynced inside their timing (splitdask does
  its own), so every write row is durable;
* seq / shuffled / batches: ``mmap`` slices of the flat file in file order, one
  ``bytes`` per record, consumed by a plain ``for`` loop;
* random: the same slices at random offsets;
* b64 / b1024: numpy fancy-index gather of 64 / 1,024 random rows of the flat file as
  an (N, size) array: memory bandwidth for batched random reads of fixed-size records.

The Python floor (a ``for`` loop over an in-memory list of the same ``bytes``) is printed
as its own row: no per-record Python path can beat it. Each measurement stops after
``--budget`` seconds (random reads use at most 300,000 indices), so slow paths cost
seconds, not minutes. Figures are only comparable within one run: quote ratios.
"""

from __future__ import annotations

import argparse
import mmap
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import islice, pairwise
from typing import Any, ClassVar

import numpy as np

CHUNK = 4096  # at most this many records (or calls) between two looks at the clock
RANDOM_CAP = 300_000
# Column of the final table -> the limit row its ratio is taken against.
LIMIT_OF = {
    "write": "write",
    "seq": "seq",
    "shuffled": "seq",
    "batches": "seq",
    "random": "random",
    "b64": "b64",
    "b1024": "b1024",
}
NOTES: list[str] = []  # what was skipped, repeated under the final table
SYSTEMS = ("raw", "splitdask", "hf", "lance", "arrayrecord", "grain", "splitdataloader")


@dataclass(frozen=True)
class Row:
    system: str
    path: str
    label: str
    records: int
    seconds: float
    ratio: float | None = None  # to its path's limit, filled in when reported

    @property
    def rate(self) -> float:
        return self.records / self.seconds


@dataclass
class Setup:
    n: int
    size: int
    records: list[bytes]
    picks: list[int]  # random indices for the random rows
    tmp: str
    budget: float

    def batches(self, k: int) -> list[np.ndarray]:
        usable = len(self.picks) // k * k
        return list(np.array(self.picks[:usable], dtype=np.int64).reshape(-1, k))

    def dir(self, name: str) -> str:
        return os.path.join(self.tmp, name)


def note(text: str) -> None:
    print(f"  ({text})", flush=True)
    NOTES.append(text)


# --- measuring ------------------------------------------------------------------------


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def chunks(total: int) -> Iterator[tuple[int, int]]:
    """(lo, hi) spans over ``total`` items, doubling from 16 to CHUNK: a slow path looks
    at the clock soon enough to stop near its budget, a fast one rarely."""
    lo, step = 0, 16
    while lo < total:
        yield lo, min(lo + step, total)
        lo, step = lo + step, min(step * 2, CHUNK)


def loop_records(it: Iterator[object], total: int, budget: float) -> tuple[int, float]:
    """Consume ``it`` (``total`` items) with a plain loop, in chunks, until the budget."""
    done, t0 = 0, time.perf_counter()
    for lo, hi in chunks(total):
        for _ in islice(it, hi - lo):
            pass
        done = hi
        if time.perf_counter() - t0 > budget:
            break
    return done, time.perf_counter() - t0


def loop_calls(
    get: Callable[[Any], object], keys: Sequence[Any], per: int, budget: float
) -> tuple[int, float]:
    """``get(key)`` for each key (``per`` records each) until done or the budget."""
    done, t0 = 0, time.perf_counter()
    for lo, hi in chunks(len(keys)):
        for key in keys[lo:hi]:
            get(key)
        done = hi * per
        if time.perf_counter() - t0 > budget:
            break
    return done, time.perf_counter() - t0


def loop_batches(
    it: Iterable[Any], count: Callable[[Any], int], budget: float
) -> tuple[int, float]:
    """Consume batches, adding up ``count(batch)`` records, until exhausted or the budget."""
    done, t0 = 0, time.perf_counter()
    for batch in it:
        done += count(batch)
        if time.perf_counter() - t0 > budget:
            break
    return done, time.perf_counter() - t0


def fsync_tree(root: str) -> None:
    """fsync every file under ``root`` and the directories holding them."""
    for here, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(here, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(here, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def batch_rows(
    system: str, s: Setup, label: str, get: Callable[[Any], object], *, lists: bool = False
) -> Iterator[Row]:
    """The b64 and b1024 rows of one batched random read (``lists``: keys as lists)."""
    for k in (64, 1024):
        keys: list[Any] = s.batches(k)
        if lists:
            keys = [b.tolist() for b in keys]
        yield Row(system, f"b{k}", label.format(k=k), *loop_calls(get, keys, k, s.budget))


# --- the systems: each yields its rows as it measures them -----------------------------


class Raw:
    """The raw limits: the records as one flat file plus int64 offsets, read by mmap.

    Measured again before each system's rows (best of three for each read), so every
    ratio is to a limit taken moments before it on this shared, noisy machine."""

    def __init__(self, s: Setup) -> None:
        self.s = s
        self.path = s.dir("raw.bin")
        self.blob = b"".join(s.records)
        self.write()
        offs = np.fromfile(self.path + ".offsets", dtype=np.int64).tolist()
        self.slices = [slice(a, b) for a, b in pairwise(offs)]
        self.keys = [self.slices[i] for i in s.picks]
        with open(self.path, "rb") as f:
            self.mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.table = np.frombuffer(self.mm, dtype=np.uint8).reshape(s.n, s.size)
        self.batch_keys = {k: s.batches(k) for k in (64, 1024)}

    def write(self) -> None:
        with open(self.path, "wb") as f:
            for lo in range(0, len(self.blob), 1 << 20):
                f.write(self.blob[lo : lo + (1 << 20)])
            f.flush()
            os.fsync(f.fileno())
        lengths = np.fromiter(map(len, self.s.records), dtype=np.int64, count=self.s.n)
        np.concatenate(([0], np.cumsum(lengths))).tofile(self.path + ".offsets")
        fd = os.open(self.path + ".offsets", os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)

    LABELS: ClassVar[dict[str, str]] = {
        "seq": "mmap slices in file order",
        "random": "mmap slices at random offsets",
        "b64": "numpy gather of 64 random rows",
        "b1024": "numpy gather of 1024 random rows",
    }

    def rows(self) -> Iterator[Row]:
        label = "flat file + int64 offsets, 1 MiB writes + fsync"
        yield Row("raw limit", "write", label, self.s.n, timed(self.write))
        for path, label in self.LABELS.items():
            best = max((self.read(path) for _ in range(3)), key=lambda r: r[0] / r[1])
            yield Row("raw limit", path, label, *best)

    def read(self, path: str) -> tuple[int, float]:
        s, get = self.s, self.mm.__getitem__
        if path == "seq":
            return loop_records(map(get, self.slices), s.n, s.budget)
        if path == "random":
            return loop_calls(get, self.keys, 1, s.budget)
        k = int(path[1:])
        return loop_calls(self.table.__getitem__, self.batch_keys[k], k, s.budget)

    def floor_rows(self) -> Iterator[Row]:
        s = self.s
        got = s.records.__getitem__
        label = "for loop over an in-memory list"
        yield Row("python floor", "seq", label, *loop_records(iter(s.records), s.n, s.budget))
        label = "list[i] in a for loop"
        yield Row("python floor", "random", label, *loop_calls(got, s.picks, 1, s.budget))

    def close(self) -> None:
        del self.table
        self.mm.close()


def splitdask_rows(s: Setup) -> Iterator[Row]:
    from splitdask import SplitDataLoader, write_split_data

    ds = s.dir("splitdask")
    t = timed(lambda: write_split_data(ds, iter(s.records), splits=256))
    yield Row("splitdask", "write", "write_split_data(splits=256)", s.n, t)
    with SplitDataLoader(ds) as loader:
        it = loader.iterate_binwise()
        yield Row("splitdask", "seq", "iterate_binwise()", *loop_records(it, s.n, s.budget))
        it = loader.iterate_binwise(shuffle=True, seed=1)
        yield Row(
            "splitdask",
            "shuffled",
            "iterate_binwise(shuffle=True)",
            *loop_records(it, s.n, s.budget),
        )
        loader[0]
        get = loader.__getitem__
        yield Row("splitdask", "random", "loader[i]", *loop_calls(get, s.picks, 1, s.budget))
        yield from batch_rows("splitdask", s, "loader[array of {k}]", get)
        yield from splitdask_batch_rows(s, loader)


def splitdask_batch_rows(s: Setup, loader: Any) -> Iterator[Row]:
    """The columnar batch API (``read_batch``, ``iterate_batches``), where it exists."""
    name = "splitdask batch"
    if hasattr(loader, "iterate_batches"):
        batches = loader.iterate_batches(1000)
        yield Row(name, "batches", "iterate_batches(1000)", *loop_batches(batches, len, s.budget))
        batches = loader.iterate_batches(1000, shuffle=True, seed=1)
        yield Row(
            name,
            "shuffled",
            "iterate_batches(1000, shuffle=True)",
            *loop_batches(batches, len, s.budget),
        )
    else:
        note("loader.iterate_batches absent in this splitdask: its rows skipped")
    if hasattr(loader, "read_batch"):
        yield from batch_rows(name, s, "read_batch(array of {k})", loader.read_batch)
    else:
        note("loader.read_batch absent in this splitdask: its rows skipped")


def hf_rows(s: Setup) -> Iterator[Row]:
    import datasets
    from datasets import Dataset, Features, Value, load_from_disk

    datasets.disable_progress_bars()
    features = Features({"data": Value("binary")})
    path = s.dir("hf")

    def write() -> None:
        Dataset.from_dict({"data": s.records}, features=features).save_to_disk(path)
        fsync_tree(path)

    yield Row("HF datasets", "write", "from_dict + save_to_disk (+ fsync)", s.n, timed(write))
    sub = min(s.n, 200_000)
    gen_path = s.dir("hf-gen")

    def write_gen() -> None:
        def gen() -> Iterator[dict[str, bytes]]:
            for r in s.records[:sub]:
                yield {"data": r}

        d = Dataset.from_generator(gen, features=features, cache_dir=s.dir("hf-cache"))
        d.save_to_disk(gen_path)
        fsync_tree(gen_path)

    t = timed(write_gen)
    yield Row("HF generator", "write", f"from_generator + save_to_disk ({sub:,})", sub, t)
    ds = load_from_disk(path)
    yield Row("HF datasets", "seq", "for row in ds", *loop_records(iter(ds), s.n, s.budget))

    def count(b: dict[str, Any]) -> int:
        return len(b["data"])

    it = ds.iter(batch_size=1000)
    yield Row(
        "HF datasets", "batches", "ds.iter(batch_size=1000)", *loop_batches(it, count, s.budget)
    )

    def shuffled() -> Iterator[dict[str, Any]]:
        yield from ds.shuffle(seed=1, keep_in_memory=True).iter(batch_size=1000)

    yield Row(
        "HF datasets",
        "shuffled",
        "ds.shuffle().iter(1000)",
        *loop_batches(shuffled(), count, s.budget),
    )
    yield Row("HF datasets", "random", "ds[i]", *loop_calls(ds.__getitem__, s.picks, 1, s.budget))
    yield from batch_rows("HF datasets", s, "ds[list of {k}]", ds.__getitem__, lists=True)
    for fmt in ("numpy", "arrow"):
        d = ds.with_format(fmt)
        size = count if fmt == "numpy" else len
        it = d.iter(batch_size=1000)
        name = f"HF {fmt}"
        label = f'with_format("{fmt}").iter(1000)' + (" zero-copy" if fmt == "arrow" else "")
        yield Row(name, "batches", label, *loop_batches(it, size, s.budget))
        yield from batch_rows(
            name, s, f'with_format("{fmt}")[list of {{k}}]', d.__getitem__, lists=True
        )


def lance_rows(s: Setup) -> Iterator[Row]:
    import lance
    import pyarrow as pa

    path = s.dir("lance")

    def write() -> None:
        table = pa.table({"data": pa.array(s.records, type=pa.binary())})
        lance.write_dataset(table, path)
        fsync_tree(path)

    yield Row("Lance", "write", "write_dataset(pyarrow table) (+ fsync)", s.n, timed(write))
    ds = lance.dataset(path)
    it = ds.to_batches(columns=["data"])
    yield Row("Lance", "batches", "to_batches()", *loop_batches(it, len, s.budget))
    yield Row(
        "Lance", "random", "take([i])", *loop_calls(lambda i: ds.take([i]), s.picks, 1, s.budget)
    )
    yield from batch_rows("Lance", s, "take(list of {k})", ds.take, lists=True)


def array_record_file(s: Setup) -> str:
    return s.dir("data.array_record")


def array_record_rows(s: Setup) -> Iterator[Row]:
    from array_record.python.array_record_data_source import ArrayRecordDataSource
    from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

    path = array_record_file(s)

    def write() -> None:
        # group_size:1 is what its random-access data source asks for; random bytes do
        # not compress, so no compressor either.
        writer = ArrayRecordWriter(path, "group_size:1,uncompressed")
        for r in s.records:
            writer.write(r)
        writer.close()
        fsync_tree(path)

    yield Row("ArrayRecord", "write", "ArrayRecordWriter(group_size:1)", s.n, timed(write))
    # Readahead kept, no thread pool: on this 2-core machine both read() and read(lo, hi)
    # in order measured faster than with the default options (6x and 1.5x).
    reader = ArrayRecordReader(path, "max_parallelism:0")

    def one_by_one() -> Iterator[bytes]:
        read = reader.read
        for _ in range(s.n):
            yield read()

    yield Row(
        "ArrayRecord", "seq", "reader.read() in order", *loop_records(one_by_one(), s.n, s.budget)
    )

    def ranges() -> Iterator[list[bytes]]:
        for lo in range(0, s.n, 1000):
            yield reader.read(lo, min(lo + 1000, s.n))

    yield Row(
        "ArrayRecord",
        "batches",
        "reader.read(lo, lo + 1000)",
        *loop_batches(ranges(), len, s.budget),
    )
    reader.close()
    # The reader's documented random-access options. Its read([i]) costs time in
    # proportion to the file's record count (about 5 ms a call at 1M records here), so
    # one record is fastest as seek(i) + read().
    random_reader = ArrayRecordReader(path, "readahead_buffer_size:0,max_parallelism:0")
    seek, read = random_reader.seek, random_reader.read

    def one(i: int) -> bytes:
        seek(i)
        return read()

    yield Row("ArrayRecord", "random", "seek(i) + read()", *loop_calls(one, s.picks, 1, s.budget))
    label = "reader.read(list of {k})"
    yield from batch_rows("ArrayRecord", s, label, random_reader.read, lists=True)
    random_reader.close()
    source = ArrayRecordDataSource([path])  # what grain and PyTorch users are pointed to
    get = source.__getitem__
    yield Row(
        "AR DataSource",
        "random",
        "ArrayRecordDataSource[i]",
        *loop_calls(get, s.picks, 1, s.budget),
    )
    label = "ArrayRecordDataSource.__getitems__({k})"
    yield from batch_rows("AR DataSource", s, label, source.__getitems__, lists=True)


def grain_rows(s: Setup) -> Iterator[Row]:
    import grain

    path = array_record_file(s)
    if not os.path.exists(path):
        from array_record.python.array_record_module import ArrayRecordWriter

        writer = ArrayRecordWriter(path, "group_size:1,uncompressed")
        for r in s.records:
            writer.write(r)
        writer.close()
    source = grain.MapDataset.source(grain.sources.ArrayRecordDataSource([path]))
    yield Row(
        "grain",
        "random",
        "MapDataset.source(ArrayRecord)[i]",
        *loop_calls(source.__getitem__, s.picks, 1, s.budget),
    )
    it = iter(source.shuffle(seed=1).to_iter_dataset())
    yield Row(
        "grain",
        "shuffled",
        "MapDataset.shuffle().to_iter_dataset()",
        *loop_records(it, s.n, s.budget),
    )


def splitdataloader_rows(s: Setup) -> Iterator[Row]:
    import splitdataloader

    sub = min(s.n, 50_000)
    path = s.dir("splitdataloader")
    t = timed(lambda: splitdataloader.write_split_data(path, s.records[:sub], splits=256))
    yield Row("splitdataloader", "write", f"write_split_data ({sub:,})", sub, t)
    loader = splitdataloader.SplitDataLoader(path)
    picks = [i % sub for i in s.picks]
    yield Row(
        "splitdataloader",
        "random",
        "loader[i]",
        *loop_calls(loader.__getitem__, picks, 1, s.budget),
    )
    it = loader.iterate_binwise(shuffle=True)
    yield Row(
        "splitdataloader",
        "shuffled",
        "iterate_binwise(shuffle=True)",
        *loop_records(it, sub, s.budget),
    )


RUNNERS: dict[str, tuple[str, Callable[[Setup], Iterator[Row]]]] = {
    "splitdask": ("splitdask", splitdask_rows),
    "hf": ("datasets", hf_rows),
    "lance": ("lance", lance_rows),
    "arrayrecord": ("array_record", array_record_rows),
    "grain": ("grain", grain_rows),
    "splitdataloader": ("splitdataloader", splitdataloader_rows),
}


# --- reporting ------------------------------------------------------------------------


def report(row: Row, size: int, limits: dict[str, float]) -> Row:
    """Print ``row`` beside its limit; return it with its ratio."""
    limit = limits.get(LIMIT_OF[row.path])
    if row.system != "raw limit" and limit:
        row = replace(row, ratio=row.rate / limit)
    ratio = "  limit" if row.system == "raw limit" else f"{row.ratio:7.2f}x" if row.ratio else ""
    print(
        f"  {row.system:<16} {row.path:<8} {row.label:<48} {row.rate:>12,.0f} rec/s "
        f"{row.rate * size / 1e6:>8.1f} MB/s {ratio}",
        flush=True,
    )
    return row


def table(rows: list[Row]) -> str:
    """system x path, each cell the row's ratio to its path's limit."""
    paths = list(LIMIT_OF)
    systems = list(dict.fromkeys(r.system for r in rows if r.ratio is not None))
    cells = {(r.system, r.path): r.ratio for r in rows if r.ratio is not None}
    lines = ["| system | " + " | ".join(paths) + " |", "|---|" + "---:|" * len(paths)]
    for system in systems:
        got = [_ratio(cells[system, p]) if (system, p) in cells else "-" for p in paths]
        lines.append(f"| {system} | " + " | ".join(got) + " |")
    return "\n".join(lines)


def measure_limits(raw: Raw, size: int, *, show: bool) -> dict[str, float]:
    limits: dict[str, float] = {}
    for row in raw.rows():
        limits[row.path] = row.rate
        if show:
            report(row, size, limits)
    return limits


def run_system(key: str, s: Setup, raw: Raw) -> Iterator[Row]:
    module, run = RUNNERS[key]
    try:
        __import__(module)
    except ImportError as exc:
        note(f"{module} not installed ({exc}): its rows skipped")
        return
    limits = measure_limits(raw, s.size, show=False)
    now = ", ".join(f"{p} {r / 1e6:.2f}M" for p, r in limits.items())
    print(f"{key}: (limits now, rec/s: {now})", flush=True)
    for row in run(s):
        yield report(row, s.size, limits)


def _ratio(x: float) -> str:
    return f"{x:.2f}" if x >= 0.1 else f"{x:.2g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=256, help="bytes per record")
    ap.add_argument("--quick", action="store_true", help="200,000 records")
    ap.add_argument(
        "--only", default=",".join(SYSTEMS), help="comma-separated: " + ",".join(SYSTEMS)
    )
    ap.add_argument("--budget", type=float, default=3.0, help="seconds per measurement, at most")
    ap.add_argument("--dir", default=None, help="where to write (default: a temporary directory)")
    args = ap.parse_args()
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = sorted(set(only) - set(SYSTEMS))
    if unknown:
        ap.error(
            f"--only: unknown system(s) {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}"
        )
    n = 200_000 if args.quick else args.records
    rng = np.random.default_rng(0)
    buf = rng.integers(0, 256, size=n * args.size, dtype=np.uint8).tobytes()
    records = [buf[i : i + args.size] for i in range(0, len(buf), args.size)]
    del buf
    picks = rng.integers(0, n, size=min(n, RANDOM_CAP)).tolist()
    tmp = tempfile.mkdtemp(prefix="splitdask-peers-", dir=args.dir)
    s = Setup(n, args.size, records, picks, tmp, args.budget)
    print(
        f"{n:,} random records of {args.size} B ({n * args.size / 1e6:.0f} MB) in {tmp}; "
        f"Python {sys.version.split()[0]}"
    )
    rows: list[Row] = []
    raw = Raw(s)
    try:
        print("raw limits (reads: best of 3; all measured again before each system)")
        limits = measure_limits(raw, s.size, show=True)
        rows.extend(report(row, s.size, limits) for row in raw.floor_rows())
        for key in only:
            if key != "raw":
                rows.extend(run_system(key, s, raw))
    finally:
        raw.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        "\nratio to each path's limit (write: raw write; seq/shuffled/batches: mmap in file order;"
    )
    print("random: mmap at random offsets; b64/b1024: numpy gather of as many random rows)")
    print(table(rows))
    for text in NOTES:
        print(f"absent: {text}")


if __name__ == "__main__":
    main()

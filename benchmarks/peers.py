"""splitdask against its peers on the same records, in one run, beside the raw limits.

Run (in a venv of its own: the peers are not splitdask dependencies)::

    python3 -m venv /work/peers-venv
    /work/peers-venv/bin/pip install -e . numpy datasets pylance array_record grain \\
        splitdataloader==0.0.1
    /work/peers-venv/bin/python benchmarks/peers.py [--records N] [--size BYTES] [--quick]
        [--only splitdask,hf,lance,arrayrecord,grain,splitdataloader] [--budget S]
        [--rounds R] [--dir PATH]

Versions it was run with (Python 3.11): numpy 2.4.6, pyarrow 26.0.1, datasets 5.2.0,
pylance 14.0.2, array_record 0.8.6, grain 0.2.18, splitdataloader 0.0.1. A peer that is
not installed is skipped with a printed note.

N records (default 1,000,000) of ``--size`` (256) random bytes are written by every
system and read back in the same process, page cache warm. Every row prints records/s,
MB/s and its ratio to the limit of its path, measured right beside it: each read path
runs ``--rounds`` (2) times alternating with a run of its limit, best of each kept,
because on a shared machine a limit taken minutes earlier is no reference. The limits:

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
``--budget`` seconds (2; random reads use at most 300,000 indices), so slow paths cost
seconds, not minutes. Absolute figures are only comparable within one run: quote ratios.
docs/benchmarks.md says what each path measures and gives one run's table.
"""

from __future__ import annotations

import argparse
import inspect
import mmap
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice, pairwise
from typing import Any, ClassVar

import numpy as np

CHUNK = 4096  # at most this many records (or calls) between two looks at the clock
RANDOM_CAP = 300_000
# Column of the final table -> the limit its ratio is taken against.
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
SYSTEMS = ("splitdask", "hf", "lance", "arrayrecord", "grain", "splitdataloader")

Measure = Callable[[], tuple[int, float]]  # -> (records, seconds)


@dataclass(frozen=True)
class Job:
    """One path of one system, measured by ``run`` (which may run more than once)."""

    system: str
    path: str
    label: str
    run: Measure


@dataclass(frozen=True)
class Row:
    system: str
    path: str
    label: str
    rate: float  # records/s, best round
    limit: float  # the path's limit, best of the rounds alternating with it


@dataclass
class Setup:
    n: int
    size: int
    records: list[bytes]
    picks: list[int]  # random indices for the random rows
    tmp: str
    budget: float
    rounds: int

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


def written(count: int, fn: Callable[[], object]) -> Measure:
    """A write job's measure: ``fn`` writes ``count`` records, once."""
    return lambda: (count, timed(fn))


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


def batch_jobs(
    system: str, s: Setup, label: str, get: Callable[[Any], object], *, lists: bool = False
) -> Iterator[Job]:
    """The b64 and b1024 jobs of one batched random read (``lists``: keys as lists)."""
    for k in (64, 1024):
        keys: list[Any] = s.batches(k)
        if lists:
            keys = [b.tolist() for b in keys]
        yield Job(
            system,
            f"b{k}",
            label.format(k=k),
            lambda keys=keys, k=k: loop_calls(get, keys, k, s.budget),
        )


class Raw:
    """The raw limits: the records as one flat file plus int64 offsets, read by mmap."""

    LABELS: ClassVar[dict[str, str]] = {
        "write": "flat file + int64 offsets, 1 MiB writes + fsync",
        "seq": "mmap slices in file order",
        "random": "mmap slices at random offsets",
        "b64": "numpy gather of 64 random rows",
        "b1024": "numpy gather of 1024 random rows",
    }

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

    def rate(self, path: str) -> float:
        """One measurement of the limit ``path`` (a LIMIT_OF value), in records/s."""
        s, get = self.s, self.mm.__getitem__
        if path == "write":
            done, seconds = s.n, timed(self.write)
        elif path == "seq":
            done, seconds = loop_records(map(get, self.slices), s.n, s.budget)
        elif path == "random":
            done, seconds = loop_calls(get, self.keys, 1, s.budget)
        else:
            k = int(path[1:])
            done, seconds = loop_calls(self.table.__getitem__, self.batch_keys[k], k, s.budget)
        return done / seconds

    def floor_jobs(self) -> Iterator[Job]:
        s = self.s
        yield Job(
            "python floor",
            "seq",
            "for loop over an in-memory list",
            lambda: loop_records(iter(s.records), s.n, s.budget),
        )
        yield Job(
            "python floor",
            "random",
            "list[i] in a for loop",
            lambda: loop_calls(s.records.__getitem__, s.picks, 1, s.budget),
        )

    def close(self) -> None:
        del self.table
        self.mm.close()


def measure(job: Job, raw: Raw, rounds: int) -> Row:
    """Best of ``rounds`` runs of ``job``, alternating with runs of its limit (which goes
    first swaps each round), so both see the same moments of a shared machine's load.
    Writes run once, right after their limit."""
    limit_path = LIMIT_OF[job.path]
    rate = limit = 0.0
    for r in range(1 if job.path == "write" else rounds):
        for which in ("limit", "job") if r % 2 == 0 else ("job", "limit"):
            if which == "limit":
                limit = max(limit, raw.rate(limit_path))
            else:
                done, seconds = job.run()
                rate = max(rate, done / seconds)
    return Row(job.system, job.path, job.label, rate, limit)


# --- the systems: each yields its jobs; those after a write run once it is done --------


def splitdask_jobs(s: Setup) -> Iterator[Job]:
    from splitdask import SplitDataLoader, write_split_data

    ds = s.dir("splitdask")
    write = written(s.n, lambda: write_split_data(ds, iter(s.records), splits=256))
    yield Job("splitdask", "write", "write_split_data(splits=256)", write)
    with SplitDataLoader(ds) as loader:
        yield Job(
            "splitdask",
            "seq",
            "iterate_binwise()",
            lambda: loop_records(loader.iterate_binwise(), s.n, s.budget),
        )
        shuffled = loader.iterate_binwise
        yield Job(
            "splitdask",
            "shuffled",
            "iterate_binwise(shuffle=True)",
            lambda: loop_records(shuffled(shuffle=True, seed=1), s.n, s.budget),
        )
        loader[0]
        get = loader.__getitem__
        yield Job("splitdask", "random", "loader[i]", lambda: loop_calls(get, s.picks, 1, s.budget))
        yield from batch_jobs("splitdask", s, "loader[array of {k}]", get)
        yield from splitdask_batch_jobs(s, loader)
        yield from splitdask_view_jobs(s, loader)


def splitdask_view_jobs(s: Setup, loader: Any) -> Iterator[Job]:
    """The zero-copy paths (``view(i)``, ``iterate_binwise(copy=False)``), where they exist:
    memoryviews into the mapping, to set beside the peers' zero-copy rows."""
    name = "splitdask view"
    if "copy" in inspect.signature(loader.iterate_binwise).parameters:
        binwise = loader.iterate_binwise
        yield Job(
            name,
            "seq",
            "iterate_binwise(copy=False)",
            lambda: loop_records(binwise(copy=False), s.n, s.budget),
        )
    else:
        note("iterate_binwise(copy=False) absent in this splitdask: its row skipped")
    if hasattr(loader, "view"):
        yield Job(
            name, "random", "loader.view(i)", lambda: loop_calls(loader.view, s.picks, 1, s.budget)
        )
    else:
        note("loader.view absent in this splitdask: its row skipped")


def splitdask_batch_jobs(s: Setup, loader: Any) -> Iterator[Job]:
    """The columnar batch API (``read_batch``, ``iterate_batches``), where it exists."""
    name = "splitdask batch"
    if hasattr(loader, "iterate_batches"):
        batches = loader.iterate_batches
        yield Job(
            name,
            "batches",
            "iterate_batches(1000) views",  # unshuffled: views of the map (its docs)
            lambda: loop_batches(batches(1000), len, s.budget),
        )
        yield Job(
            name,
            "shuffled",
            "iterate_batches(1000, shuffle=True)",
            lambda: loop_batches(batches(1000, shuffle=True, seed=1), len, s.budget),
        )
    else:
        note("loader.iterate_batches absent in this splitdask: its rows skipped")
    if hasattr(loader, "read_batch"):
        yield from batch_jobs(name, s, "read_batch(array of {k})", loader.read_batch)
    else:
        note("loader.read_batch absent in this splitdask: its rows skipped")


def hf_jobs(s: Setup) -> Iterator[Job]:
    import datasets
    from datasets import Dataset, Features, Value, load_from_disk

    datasets.disable_progress_bars()
    features = Features({"data": Value("binary")})
    path = s.dir("hf")

    def write() -> None:
        Dataset.from_dict({"data": s.records}, features=features).save_to_disk(path)
        fsync_tree(path)

    yield Job("HF datasets", "write", "from_dict + save_to_disk (+ fsync)", written(s.n, write))
    sub = min(s.n, 200_000)
    gen_path = s.dir("hf-gen")

    def write_gen() -> None:
        def gen() -> Iterator[dict[str, bytes]]:
            for r in s.records[:sub]:
                yield {"data": r}

        d = Dataset.from_generator(gen, features=features, cache_dir=s.dir("hf-cache"))
        d.save_to_disk(gen_path)
        fsync_tree(gen_path)

    label = f"from_generator + save_to_disk ({sub:,})"
    yield Job("HF generator", "write", label, written(sub, write_gen))
    ds = load_from_disk(path)

    def count(b: dict[str, Any]) -> int:
        return len(b["data"])

    def shuffled() -> Iterator[dict[str, Any]]:
        yield from ds.shuffle(seed=1, keep_in_memory=True).iter(batch_size=1000)

    yield Job("HF datasets", "seq", "for row in ds", lambda: loop_records(iter(ds), s.n, s.budget))
    yield Job(
        "HF datasets",
        "batches",
        "ds.iter(batch_size=1000)",
        lambda: loop_batches(ds.iter(batch_size=1000), count, s.budget),
    )
    yield Job(
        "HF datasets",
        "shuffled",
        "ds.shuffle().iter(1000)",
        lambda: loop_batches(shuffled(), count, s.budget),
    )
    yield Job(
        "HF datasets", "random", "ds[i]", lambda: loop_calls(ds.__getitem__, s.picks, 1, s.budget)
    )
    yield from batch_jobs("HF datasets", s, "ds[list of {k}]", ds.__getitem__, lists=True)
    for fmt in ("numpy", "arrow"):
        d = ds.with_format(fmt)
        size = count if fmt == "numpy" else len
        name = f"HF {fmt}"
        label = f'with_format("{fmt}").iter(1000)' + (" zero-copy" if fmt == "arrow" else "")
        yield Job(
            name,
            "batches",
            label,
            lambda d=d, size=size: loop_batches(d.iter(batch_size=1000), size, s.budget),
        )
        label = f'with_format("{fmt}")[list of {{k}}]'
        yield from batch_jobs(name, s, label, d.__getitem__, lists=True)


def lance_jobs(s: Setup) -> Iterator[Job]:
    import lance
    import pyarrow as pa

    path = s.dir("lance")

    def write() -> None:
        table = pa.table({"data": pa.array(s.records, type=pa.binary())})
        lance.write_dataset(table, path)
        fsync_tree(path)

    yield Job("Lance", "write", "write_dataset(pyarrow table) (+ fsync)", written(s.n, write))
    ds = lance.dataset(path)
    yield Job(
        "Lance",
        "batches",
        "to_batches()",
        lambda: loop_batches(ds.to_batches(columns=["data"]), len, s.budget),
    )
    yield Job(
        "Lance",
        "random",
        "take([i])",
        lambda: loop_calls(lambda i: ds.take([i]), s.picks, 1, s.budget),
    )
    yield from batch_jobs("Lance", s, "take(list of {k})", ds.take, lists=True)


def array_record_file(s: Setup) -> str:
    return s.dir("data.array_record")


def write_array_record(s: Setup) -> None:
    from array_record.python.array_record_module import ArrayRecordWriter

    # group_size:1 is what its random-access data source asks for; random bytes do not
    # compress, so no compressor either.
    writer = ArrayRecordWriter(array_record_file(s), "group_size:1,uncompressed")
    for r in s.records:
        writer.write(r)
    writer.close()


def array_record_jobs(s: Setup) -> Iterator[Job]:
    from array_record.python.array_record_data_source import ArrayRecordDataSource
    from array_record.python.array_record_module import ArrayRecordReader

    path = array_record_file(s)

    def write() -> None:
        write_array_record(s)
        fsync_tree(path)

    yield Job("ArrayRecord", "write", "ArrayRecordWriter(group_size:1)", written(s.n, write))
    # Readahead kept, no thread pool: on this 2-core machine both read() and read(lo, hi)
    # in order measured faster than with the default options (6x and 1.5x).
    reader = ArrayRecordReader(path, "max_parallelism:0")

    def one_by_one() -> Iterator[bytes]:
        reader.seek(0)
        read = reader.read
        for _ in range(s.n):
            yield read()

    def ranges() -> Iterator[list[bytes]]:
        for lo in range(0, s.n, 1000):
            yield reader.read(lo, min(lo + 1000, s.n))

    yield Job(
        "ArrayRecord",
        "seq",
        "reader.read() in order",
        lambda: loop_records(one_by_one(), s.n, s.budget),
    )
    yield Job(
        "ArrayRecord",
        "batches",
        "reader.read(lo, lo + 1000)",
        lambda: loop_batches(ranges(), len, s.budget),
    )
    # The reader's documented random-access options. Its read([i]) costs time in
    # proportion to the file's record count (about 5 ms a call at 1M records here), so
    # one record is fastest as seek(i) + read().
    random_reader = ArrayRecordReader(path, "readahead_buffer_size:0,max_parallelism:0")
    seek, read = random_reader.seek, random_reader.read

    def one(i: int) -> bytes:
        seek(i)
        return read()

    yield Job(
        "ArrayRecord", "random", "seek(i) + read()", lambda: loop_calls(one, s.picks, 1, s.budget)
    )
    yield from batch_jobs("ArrayRecord", s, "read(list of {k})", random_reader.read, lists=True)
    source = ArrayRecordDataSource([path])  # what grain and PyTorch users are pointed to
    yield Job(
        "AR DataSource",
        "random",
        "ArrayRecordDataSource[i]",
        lambda: loop_calls(source.__getitem__, s.picks, 1, s.budget),
    )
    label = "ArrayRecordDataSource.__getitems__({k})"
    yield from batch_jobs("AR DataSource", s, label, source.__getitems__, lists=True)
    reader.close()
    random_reader.close()


def grain_jobs(s: Setup) -> Iterator[Job]:
    import grain

    if not os.path.exists(array_record_file(s)):
        write_array_record(s)
    source = grain.MapDataset.source(grain.sources.ArrayRecordDataSource([array_record_file(s)]))
    yield Job(
        "grain",
        "random",
        "MapDataset.source(ArrayRecord)[i]",
        lambda: loop_calls(source.__getitem__, s.picks, 1, s.budget),
    )
    shuffled = source.shuffle(seed=1)
    yield Job(
        "grain",
        "shuffled",
        "MapDataset.shuffle().to_iter_dataset()",
        lambda: loop_records(iter(shuffled.to_iter_dataset()), s.n, s.budget),
    )


def splitdataloader_jobs(s: Setup) -> Iterator[Job]:
    import splitdataloader

    sub = min(s.n, 50_000)
    path = s.dir("splitdataloader")
    write = written(
        sub, lambda: splitdataloader.write_split_data(path, s.records[:sub], splits=256)
    )
    yield Job("splitdataloader", "write", f"write_split_data ({sub:,})", write)
    loader = splitdataloader.SplitDataLoader(path)
    picks = [i % sub for i in s.picks]
    yield Job(
        "splitdataloader",
        "random",
        "loader[i]",
        lambda: loop_calls(loader.__getitem__, picks, 1, s.budget),
    )
    yield Job(
        "splitdataloader",
        "shuffled",
        "iterate_binwise(shuffle=True)",
        lambda: loop_records(loader.iterate_binwise(shuffle=True), sub, s.budget),
    )


RUNNERS: dict[str, tuple[str, Callable[[Setup], Iterator[Job]]]] = {
    "splitdask": ("splitdask", splitdask_jobs),
    "hf": ("datasets", hf_jobs),
    "lance": ("lance", lance_jobs),
    "arrayrecord": ("array_record", array_record_jobs),
    "grain": ("grain", grain_jobs),
    "splitdataloader": ("splitdataloader", splitdataloader_jobs),
}


# --- reporting ------------------------------------------------------------------------


def report(row: Row, size: int) -> Row:
    if row.system == "raw limit":
        versus = "  limit"
    else:
        versus = f"{row.rate / row.limit:7.2f}x (limit {row.limit:,.0f})"
    print(
        f"  {row.system:<16} {row.path:<8} {row.label:<44} {row.rate:>12,.0f} rec/s "
        f"{row.rate * size / 1e6:>8.1f} MB/s {versus}",
        flush=True,
    )
    return row


def table(rows: list[Row]) -> str:
    """system x path, each cell the row's ratio to its path's limit."""
    paths = list(LIMIT_OF)
    systems = list(dict.fromkeys(r.system for r in rows))
    cells = {(r.system, r.path): r.rate / r.limit for r in rows}
    lines = ["| system | " + " | ".join(paths) + " |", "|---|" + "---:|" * len(paths)]
    for system in systems:
        got = [_ratio(cells[system, p]) if (system, p) in cells else "-" for p in paths]
        lines.append(f"| {system} | " + " | ".join(got) + " |")
    return "\n".join(lines)


def _ratio(x: float) -> str:
    return f"{x:.2f}" if x >= 0.1 else f"{x:.3f}" if x >= 0.01 else f"{x:.1e}"


def run_system(key: str, s: Setup, raw: Raw) -> Iterator[Row]:
    module, jobs = RUNNERS[key]
    print(f"{key}:", flush=True)
    try:
        __import__(module)
    except ImportError as exc:
        note(f"{module} not installed ({exc}): its rows skipped")
        return
    for job in jobs(s):
        yield report(measure(job, raw, s.rounds), s.size)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=256, help="bytes per record")
    ap.add_argument("--quick", action="store_true", help="200,000 records")
    ap.add_argument(
        "--only", default=",".join(SYSTEMS), help="comma-separated subset of: " + ",".join(SYSTEMS)
    )
    ap.add_argument("--budget", type=float, default=2.0, help="seconds per run, at most")
    ap.add_argument("--rounds", type=int, default=2, help="runs per read path (best kept)")
    ap.add_argument("--dir", default=None, help="where to write (default: a temporary dir)")
    args = ap.parse_args()
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = sorted(set(only) - set(SYSTEMS))
    if unknown:
        ap.error(f"--only: unknown {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}")
    if args.records < 1024 or args.size < 1 or args.rounds < 1 or args.budget <= 0:
        ap.error("need --records >= 1024, --size >= 1, --rounds >= 1, --budget > 0")
    n = 200_000 if args.quick else args.records
    rng = np.random.default_rng(0)
    buf = rng.integers(0, 256, size=n * args.size, dtype=np.uint8).tobytes()
    records = [buf[i : i + args.size] for i in range(0, len(buf), args.size)]
    del buf
    picks = rng.integers(0, n, size=min(n, RANDOM_CAP)).tolist()
    tmp = tempfile.mkdtemp(prefix="splitdask-peers-", dir=args.dir)
    s = Setup(n, args.size, records, picks, tmp, args.budget, args.rounds)
    print(
        f"{n:,} random records of {args.size} B ({n * args.size / 1e6:.0f} MB) in {tmp}; "
        f"Python {sys.version.split()[0]}; best of {s.rounds} rounds per read path"
    )
    rows: list[Row] = []
    raw = Raw(s)
    try:
        print("raw limits and the Python floor:")
        for path, label in Raw.LABELS.items():
            rate = max(raw.rate(path) for _ in range(3 if path != "write" else 1))
            report(Row("raw limit", path, label, rate, rate), s.size)
        rows.extend(report(measure(job, raw, s.rounds), s.size) for job in raw.floor_jobs())
        for key in only:
            rows.extend(run_system(key, s, raw))
    finally:
        raw.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print("\nratio to each path's limit, measured beside it (write: raw write; seq, shuffled,")
    print("batches: mmap in file order; random: mmap at random offsets; b64/b1024: numpy gather)")
    print(table(rows))
    for text in NOTES:
        print(f"absent: {text}")


if __name__ == "__main__":
    main()

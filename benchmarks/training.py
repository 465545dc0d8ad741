"""Training input pipelines: records/s through a PyTorch DataLoader, and resume time.

Run: ``python benchmarks/training.py [--quick] [--peers]``

For 256 B and 64 KiB records, prints records/s and MB/s of

* the raw limit: slicing the same bytes out of one plain ``mmap`` in file order;
* ``SplitDataLoader.iterate_binwise(shuffle=True)`` (plain, and through a DataLoader);
* ``SplitIterableDataset`` in every shuffle mode, ``num_workers`` 0 and 2, with the
  shuffle quality of its order (correlation with write order, distinct bins per 64,
  longest run from one bin) and the process's RSS beside the rate;
* ``SplitMixtureDataset`` over the same records written as three sources (50, 30
  and 20%) mixed by those weights, against the single dataset (``"window"``);
* with ``--peers`` (needs ``pip install -r benchmarks/requirements-training.txt`` in a
  separate venv), mosaicml-streaming's and litdata's ``StreamingDataset`` with
  shuffling on, on the same records;

then the time to the first sample after ``load_state_dict`` deep (90%) into an epoch
of 10M records. All DataLoaders use ``batch_size=64`` and ``collate_fn=list`` (records
stay ``bytes``). Everything is measured in one run, page cache warm, so ratios are
comparable on a noisy machine.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import itertools
import mmap
import os
import shutil
import struct
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import psutil
import torch.utils.data as tud

from splitdask import SplitDataLoader, shuffle_quality, write_split_data
from splitdask.plan import Mixture
from splitdask.torch import SplitIterableDataset, SplitMixtureDataset

BATCH = 64
SPLITS = 64


def drain(batches: Iterable[Any]) -> int:
    """Samples in the batches of a DataLoader."""
    return sum(map(len, batches))


def count(items: Iterable[Any]) -> int:
    return sum(1 for _ in items)


def rate(
    name: str, n: int, nbytes: int, fn: Callable[[], int], ref: float | None, note: str = ""
) -> float:
    t0 = time.perf_counter()
    got = fn()
    dt = time.perf_counter() - t0
    assert got == n, (name, got, n)
    r = n / dt
    vs = f"{r / ref:6.2f}x" if ref else "      "
    rss = psutil.Process().memory_info().rss / 2**20
    print(
        f"  {name:<40} {r:>11,.0f} rec/s {nbytes / dt / 1e6:>8.1f} MB/s {vs} "
        f"rss {rss:5.0f} MB  {note}"
    )
    return r


class _Binwise(tud.IterableDataset[bytes]):
    def __init__(self, path: str) -> None:
        self.path = path

    def __iter__(self) -> Iterator[bytes]:
        return SplitDataLoader(self.path).iterate_binwise(shuffle=True, seed=0)


class _List(tud.IterableDataset[bytes]):
    def __init__(self, recs: list[bytes]) -> None:
        self.recs = recs

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.recs)


def loader(
    ds: Any, workers: int, collate: Callable[[list[Any]], Any] = list
) -> tud.DataLoader[Any]:
    return tud.DataLoader(ds, batch_size=BATCH, num_workers=workers, collate_fn=collate)


def _as_bytes(batch: list[Any]) -> list[bytes]:
    """litdata yields memoryviews, which cannot cross from a worker: copy them."""
    return [bytes(x) for x in batch]


def quality(ds: SplitIterableDataset, n: int) -> str:
    """Shuffle quality of epoch 0's order (write index of key: round-robin writes)."""
    keys = ds.plan(0).keys(np.arange(min(n, 1_000_000)))
    per_bin = -(-n // SPLITS)
    bins, local = keys // per_bin, keys % per_bin  # every bin holds per_bin (n % 64 == 0)
    q = shuffle_quality(local * SPLITS + bins, np.arange(n) % SPLITS)
    return (
        f"corr {q.correlation:+.3f} bins/64 {q.distinct_bins_per_64:5.1f} run {q.longest_bin_run}"
    )


def bench_size(root: str, n: int, size: int, peers: set[str] | None) -> None:
    print(f"\n{n:,} records of {size} B over {SPLITS} bins ({n * size / 1e6:,.0f} MB)")
    pool = np.random.default_rng(0).integers(0, 256, size=size + 4096, dtype=np.uint8).tobytes()
    recs = [struct.pack("<q", i) + pool[i % 4096 : i % 4096 + size - 8] for i in range(n)]
    total = n * size
    path = os.path.join(root, f"sd-{size}")
    write_split_data(path, recs, splits=SPLITS)
    raw = os.path.join(root, f"raw-{size}")
    with open(raw, "wb") as f:
        for r in recs:
            f.write(r)

    def raw_read() -> int:
        with open(raw, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            offs = range(0, total, size)
            return sum(
                1 for _ in map(mm.__getitem__, map(slice, offs, range(size, total + 1, size)))
            )

    limit = rate("plain mmap slices (limit)", n, total, raw_read, None)
    sdl = SplitDataLoader(path)
    base = rate(
        "iterate_binwise(shuffle=True)",
        n,
        total,
        lambda: count(sdl.iterate_binwise(shuffle=True, seed=0)),
        limit,
    )
    rate(
        "  ... through DataLoader, 0 workers",
        n,
        total,
        lambda: drain(loader(_Binwise(path), 0)),
        base,
    )
    rate(
        "  a Python list through DataLoader (ceiling)",
        n,
        total,
        lambda: drain(loader(_List(recs), 0)),
        base,
    )
    print("  (x: vs iterate_binwise(shuffle=True))")
    for mode in ("window", "bins", "global", None):
        for workers in (0, 2):
            ds = SplitIterableDataset(path, shuffle=mode, batch_size=BATCH)
            rate(
                f"SplitIterableDataset {mode!s:>6} w={workers}",
                n,
                total,
                lambda ds=ds, w=workers: drain(loader(ds, w)),
                base,
                quality(ds, n) if workers == 0 else "",
            )
    bench_mixture(root, recs, size, path)
    if peers:
        _peers(root, recs, n, total, base, peers)


def bench_mixture(root: str, recs: list[bytes], size: int, path: str) -> None:
    """The same records as three sources (50/30/20%) mixed by those weights, against the
    one dataset at ``path`` (``"window"``), with as many workers. The two alternate,
    three runs each, and the best of each is kept: the machine is shared and noisy."""
    n = len(recs)
    cuts = [0, n // 2, n // 2 + n * 3 // 10, n]
    paths = []
    for j, (lo, hi) in enumerate(itertools.pairwise(cuts)):
        paths.append(os.path.join(root, f"mix-{size}-{j}"))
        write_split_data(paths[-1], recs[lo:hi], splits=max(1, SPLITS * (hi - lo) // n))
    mix = Mixture(paths, [0.5, 0.3, 0.2], stopping="all_exhausted")
    m = mix.epoch_length
    for workers in (0, 2):
        best = {"single": 0.0, "mixture": 0.0}
        for _ in range(3):
            for name, ds, count_ in (
                ("single", SplitIterableDataset(path, batch_size=BATCH), n),
                ("mixture", SplitMixtureDataset(mix, batch_size=BATCH), m),
            ):
                t0 = time.perf_counter()
                got = drain(loader(ds, workers))
                assert got == count_, (name, got, count_)
                best[name] = max(best[name], count_ / (time.perf_counter() - t0))
        ratio = best["mixture"] / best["single"]
        print(
            f"  SplitMixtureDataset 3 sources w={workers}  {best['mixture']:>11,.0f} rec/s "
            f"{best['mixture'] * size / 1e6:>8.1f} MB/s {ratio:6.2f}x  "
            f"(single window w={workers}: {best['single']:,.0f} rec/s; best of 3 each)"
        )


class _TorchvisionStub(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Empty ``torchvision.*`` modules whose every public name is ``object``."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec: Any) -> Any:
        mod = types.ModuleType(spec.name)
        mod.__path__ = []

        def attr(name: str) -> Any:
            if name.startswith("__"):
                raise AttributeError(name)
            return object

        mod.__getattr__ = attr  # type: ignore[method-assign]
        return mod

    def exec_module(self, module: Any) -> None:
        pass


def _stub_torchvision() -> None:
    """mosaicml-streaming imports torchvision at import time (for its image datasets,
    unused here); PyPI's torchvision wheel for torch 2.13 cannot load its operators
    next to the CPU build of torch. A stand-in lets ``import streaming`` succeed."""
    try:
        import torchvision  # noqa: F401
    except Exception:
        for name in list(sys.modules):
            if name.startswith("torchvision"):
                del sys.modules[name]
        sys.meta_path.insert(0, _TorchvisionStub())


def _peers(root: str, recs: list[bytes], n: int, total: int, base: float, which: set[str]) -> None:
    _stub_torchvision()
    if "mosaic" in which:
        _mosaic(root, recs, n, total, base)
    if "litdata" in which:
        _litdata(root, recs, n, total, base)


def _mosaic(root: str, recs: list[bytes], n: int, total: int, base: float) -> None:
    try:
        from streaming import MDSWriter, StreamingDataset
    except Exception as exc:
        print(f"  mosaicml-streaming not importable: {exc!r}")
    else:
        out = os.path.join(root, f"mds-{len(recs[0])}")
        with MDSWriter(out=out, columns={"x": "bytes"}, size_limit=1 << 26) as w:
            for r in recs:
                w.write({"x": r})
        for workers in (0, 2):
            ds = StreamingDataset(local=out, shuffle=True, batch_size=BATCH, shuffle_seed=0)
            rate(
                f"mosaic StreamingDataset w={workers}",
                n,
                total,
                lambda ds=ds, w=workers: drain(loader(ds, w)),
                base,
            )
            del ds
            _clean_mosaic_shm()


def _litdata(root: str, recs: list[bytes], n: int, total: int, base: float) -> None:
    try:
        import litdata
    except Exception as exc:
        print(f"  litdata not importable: {exc!r}")
    else:
        out = os.path.join(root, f"lit-{len(recs[0])}")
        size = len(recs[0])
        spans = [
            (os.path.join(root, f"raw-{size}"), lo, min(lo + 10_000, n), size)
            for lo in range(0, n, 10_000)
        ]
        litdata.optimize(
            fn=_lit_items,
            inputs=spans,
            output_dir=out,
            chunk_bytes="64MB",
            num_workers=1,
            mode="overwrite",
            item_loader=None,
            reorder_files=False,
        )
        for workers in (0, 2):
            ds = litdata.StreamingDataset(out, shuffle=True, seed=0)
            rate(
                f"litdata StreamingDataset w={workers}",
                n,
                total,
                lambda ds=ds, w=workers: drain(loader(ds, w, _as_bytes)),
                base,
            )


def _lit_items(span: tuple[str, int, int, int]) -> Iterator[bytes]:
    """Records ``lo:hi`` of the raw file (optimize runs this in its own processes)."""
    raw, lo, hi, size = span
    with open(raw, "rb") as f:
        f.seek(lo * size)
        for _ in range(lo, hi):
            yield f.read(size)


def _clean_mosaic_shm() -> None:
    try:
        from streaming.base.util import clean_stale_shared_memory

        clean_stale_shared_memory()
    except Exception:
        pass


def bench_resume(root: str, n: int) -> None:
    print(f"\nresume: {n:,} records of 16 B, state at 90% of epoch 0")
    path = os.path.join(root, "resume")
    write_split_data(path, (struct.pack("<qq", i, i) for i in range(n)), splits=256)
    for mode in ("window", "bins", "global"):
        ds = SplitIterableDataset(path, shuffle=mode, batch_size=BATCH)
        state = ds.state_dict(len(ds) * 9 // 10)
        t0 = time.perf_counter()
        again = SplitIterableDataset(path, shuffle=mode, batch_size=BATCH)
        again.load_state_dict(state)
        first = next(iter(loader(again, 0)))
        dt = time.perf_counter() - t0
        assert len(first) == BATCH
        print(
            f"  {mode:>6}: open + load_state_dict + first batch {dt * 1e3:7.1f} ms "
            f"(state {len(str(state))} B)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer records")
    ap.add_argument(
        "--peers",
        nargs="*",
        choices=("mosaic", "litdata"),
        help="also mosaicml-streaming and/or litdata (default both)",
    )
    ap.add_argument("--resume-records", type=int, default=10_000_000)
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="splitdask-bench-training-")
    try:
        for n, size in (
            ((200_000, 256), (2_048, 65_536)) if args.quick else ((1_000_000, 256), (8_192, 65_536))
        ):
            peers = None if args.peers is None else set(args.peers or ("mosaic", "litdata"))
            bench_size(root, n, size, peers)
        bench_resume(root, 1_000_000 if args.quick else args.resume_records)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

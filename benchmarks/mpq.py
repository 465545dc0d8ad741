"""Throughput and overlap of ``splitdask.mpq.MpQItr``; a script, not a test.

Usage::

    python benchmarks/mpq.py [--quick] [--start-method fork|spawn|forkserver] [--repeat N]

Prints one table:

* 1 KiB ``bytes`` items (items/s): the plain in-process generator, ``MpQItr``, and
  ``torch.utils.data.DataLoader`` over an ``IterableDataset`` with one worker and
  ``batch_size=None`` (the anchor a user would otherwise pick).
* 8 MiB NumPy arrays (MB/s): the plain generator, a raw ``multiprocessing.Queue``,
  ``MpQItr`` with shared memory, ``MpQItr`` without it, and the torch DataLoader
  (which turns the arrays into tensors and ships them in its own shared memory).
* Overlap: a producer that sleeps ``p`` s per item and a consumer that sleeps ``c``
  s per item; a pipeline that overlaps them takes about ``max(p, c) * n``.
* Time to the first item for each start method (process start-up included).

Every timed figure includes starting the worker processes; with ``--repeat N``
the best of N runs is shown. Each producer builds a fresh item per step, so the
plain generator's figure is the cost of making the items.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import numpy as np

from splitdask.mpq import MpQItr, MpQOptions

SMALL = 1024
BIG = 8 << 20


# ------------------------------------------------------------------ producers


def small_items(n: int) -> Iterator[bytes]:
    for i in range(n):
        yield i.to_bytes(8, "little") * (SMALL // 8)


def big_arrays(n: int) -> Iterator[np.ndarray[Any, Any]]:
    for i in range(n):
        yield np.full(BIG, i % 256, dtype=np.uint8)


def slow_items(n: int, produce_s: float) -> Iterator[int]:
    for i in range(n):
        time.sleep(produce_s)
        yield i


def _queue_producer(q: Any, n: int) -> None:
    for arr in big_arrays(n):
        q.put(arr)
    q.put(None)


def raw_queue(n: int, method: str) -> Iterator[np.ndarray[Any, Any]]:
    ctx = multiprocessing.get_context(method)
    q = ctx.Queue(16)
    proc = ctx.Process(target=_queue_producer, args=(q, n), daemon=True)
    proc.start()
    try:
        while (item := q.get()) is not None:
            yield item
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()


class _TorchSource:
    """An ``IterableDataset`` factory; torch is imported only when it is used."""

    @staticmethod
    def loader(kind: str, n: int, method: str) -> Iterable[Any] | None:
        try:
            import torch.utils.data as tud
        except ImportError:
            return None

        class Source(tud.IterableDataset):  # type: ignore[type-arg]
            def __iter__(self) -> Iterator[Any]:
                return small_items(n) if kind == "small" else big_arrays(n)

        return tud.DataLoader(
            Source(), num_workers=1, batch_size=None, multiprocessing_context=method
        )


# ------------------------------------------------------------------- timing


def best_time(make: Callable[[], Iterable[Any] | None], repeat: int) -> float | None:
    """Best wall time to build the iterable and consume it; None if unavailable."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        source = make()
        if source is None:
            return None
        for _item in source:
            pass
        best = min(best, time.perf_counter() - t0)
    return best


def time_to_first(opts: MpQOptions) -> float:
    t0 = time.perf_counter()
    run = iter(opts(small_items, 1))
    next(run)
    dt = time.perf_counter() - t0
    run.close()
    return dt


def overlap(opts: MpQOptions, n: int, produce_s: float, consume_s: float) -> float:
    t0 = time.perf_counter()
    for _item in opts(slow_items, n, produce_s):
        time.sleep(consume_s)
    return time.perf_counter() - t0


# ------------------------------------------------------------------- report


def fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.2f}"


def row(label: str, value: float | None, unit: str, ref: float | None) -> str:
    if value is None:
        return f"  {label:<44} {'torch not installed':>14}"
    ratio = f"{value / ref:8.2f}x" if ref else ""
    return f"  {label:<44} {fmt(value):>14} {unit:<8} {ratio}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer items, one repeat")
    parser.add_argument("--start-method", default="fork", choices=["fork", "spawn", "forkserver"])
    parser.add_argument("--repeat", type=int, default=None, help="runs per figure (best shown)")
    args = parser.parse_args()
    method: str = args.start_method
    quick: bool = args.quick
    repeat = args.repeat or (1 if quick else 2)
    n_small = 20_000 if quick else 100_000
    n_big = 30 if quick else 150
    n_slow = 30 if quick else 100
    opts = MpQItr.configure(start_method=method)

    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = "not installed"
    print(
        f"MpQItr benchmark: Python {platform.python_version()}, NumPy {np.__version__}, "
        f"torch {torch_version}, {os.cpu_count()} CPUs, start method {method}, "
        f"best of {repeat}{', --quick' if quick else ''}"
    )

    print(f"\n1 KiB bytes items, n={n_small:,}{'':<17} items/s           vs torch")
    plain = best_time(lambda: small_items(n_small), repeat)
    mpq = best_time(lambda: opts(small_items, n_small), repeat)
    tch = best_time(lambda: _TorchSource.loader("small", n_small, method), repeat)
    ref = n_small / tch if tch else None
    print(row("plain generator (in-process)", n_small / plain if plain else None, "", ref))
    print(row("MpQItr", n_small / mpq if mpq else None, "", ref))
    print(row("torch DataLoader(IterableDataset, 1 worker)", ref, "", ref))

    mb = n_big * BIG / 1e6
    print(f"\n8 MiB NumPy arrays, n={n_big}{'':<24} MB/s        vs mp.Queue")
    t_plain = best_time(lambda: big_arrays(n_big), repeat)
    t_queue = best_time(lambda: raw_queue(n_big, method), repeat)
    t_shm = best_time(lambda: opts(big_arrays, n_big), repeat)
    t_pipe = best_time(lambda: opts.replace(shm_threshold=None)(big_arrays, n_big), repeat)
    t_torch = best_time(lambda: _TorchSource.loader("big", n_big, method), repeat)
    ref = mb / t_queue if t_queue else None
    print(row("plain generator (in-process)", mb / t_plain if t_plain else None, "", ref))
    print(row("multiprocessing.Queue(16), raw", ref, "", ref))
    print(row("MpQItr (shared memory)", mb / t_shm if t_shm else None, "", ref))
    print(row("MpQItr, shm_threshold=None (pipe)", mb / t_pipe if t_pipe else None, "", ref))
    print(
        row(
            "torch DataLoader(IterableDataset, 1 worker)",
            mb / t_torch if t_torch else None,
            "",
            ref,
        )
    )

    print(
        f"\nOverlap, n={n_slow}: producer sleeps p, consumer sleeps c per item"
        "\n  p (ms)  c (ms)   measured (s)  max(p,c)*n  (p+c)*n  measured/max"
    )
    for p, c in ((0.010, 0.010), (0.004, 0.010), (0.010, 0.004)):
        took = overlap(opts, n_slow, p, c)
        longest, total = max(p, c) * n_slow, (p + c) * n_slow
        print(
            f"  {p * 1e3:6.0f}  {c * 1e3:6.0f}   {took:12.2f}  {longest:10.2f}  "
            f"{total:7.2f}  {took / longest:12.2f}"
        )

    firsts = ", ".join(
        f"{m} {time_to_first(MpQItr.configure(start_method=m)) * 1e3:.0f} ms"
        for m in ("fork", "spawn", "forkserver")
    )
    print(f"\nTime to first item (process start included): {firsts}")


if __name__ == "__main__":
    main()

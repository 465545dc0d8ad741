"""Typed records (issue 19): msgpack dicts against the same bytes, on the local read paths.

Run: ``python benchmarks/local.py --codec-only [--quick]`` (``benchmarks/local.py`` runs
it last).

Each record is ``{"tokens": int32[256], "label": int, "score": float}`` (1,079 B
as msgpack); the bytes rows store the same values as 1,032 raw bytes (tokens, then
``<if`` label and score). Rows: writing, ``loader[i]`` at random indices,
``iterate_binwise`` (one decode per record) and ``iterate_batches(256)`` (columns;
msgpack decoded column-wise), each as a ratio to its bytes row, plus
``iterate_batches`` decoded record by record (the column-wise path switched off),
to which the column-wise path is compared.
"""

from __future__ import annotations

import os
import random
import struct
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from splitdask import SplitDataLoader, write_split_data
from splitdask._format import _msgpack

__all__ = ["codec_rows"]


def _best(fn: Callable[[], Any], runs: int = 3) -> float:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def _row(name: str, n: int, seconds: float, ref: float | None = None, note: str = "") -> float:
    rate = n / seconds
    ratio = f"  {rate / ref:6.2f}x of bytes" if ref else ""
    print(f"  {name:<52} {rate:>12,.0f} rec/s{ratio}{note}")
    return rate


def _drain(it: Any) -> int:
    k = 0
    for _ in it:
        k += 1
    return k


def codec_rows(tmp: str, n: int = 200_000, splits: int = 64) -> None:
    """Print the codec rows for ``n`` records written under ``tmp``."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 50_000, size=(n, 256), dtype=np.int32)
    labels = rng.integers(0, 1000, size=n).tolist()
    scores = rng.random(n).tolist()
    dicts = [{"tokens": tokens[i], "label": labels[i], "score": scores[i]} for i in range(n)]
    tail = struct.Struct("<if")
    raw = [tokens[i].tobytes() + tail.pack(labels[i], scores[i]) for i in range(n)]
    print(f"codecs: {n:,} records of a 256-token int32 array and two scalars, {splits} bins")
    paths = {"bytes": os.path.join(tmp, "codec-bytes"), "msgpack": os.path.join(tmp, "codec-mp")}
    w_bytes = _row(
        "write, codec='bytes' (the same values as raw bytes)",
        n,
        _best(lambda: write_split_data(paths["bytes"], raw, splits=splits, mode="w"), 2),
    )
    _row(
        "write, codec='msgpack' (dicts)",
        n,
        _best(
            lambda: write_split_data(
                paths["msgpack"], dicts, splits=splits, mode="w", codec="msgpack"
            ),
            2,
        ),
        w_bytes,
    )
    lb, lm = SplitDataLoader(paths["bytes"]), SplitDataLoader(paths["msgpack"])
    assert lm.codec == "msgpack"
    assert lm[5]["label"] == labels[5]
    k = min(n, 100_000)
    idx = random.Random(0).sample(range(n), k)

    def one_by_one(loader: SplitDataLoader) -> Callable[[], None]:
        return lambda: _drain(map(loader.__getitem__, idx))

    r = _row("loader[i], random, bytes", k, _best(one_by_one(lb)))
    _row("loader[i], random, msgpack -> dict", k, _best(one_by_one(lm)), r)
    r = _row("iterate_binwise(), bytes", n, _best(lambda: _drain(lb.iterate_binwise())))
    per_record = _row(
        "iterate_binwise(), msgpack (a decode per record)",
        n,
        _best(lambda: _drain(lm.iterate_binwise())),
        r,
    )
    r = _row(
        "iterate_batches(256), bytes (RecordBatch)",
        n,
        _best(lambda: _drain(lb.iterate_batches(256))),
    )
    batches = _row(
        "iterate_batches(256), msgpack (columns)",
        n,
        _best(lambda: _drain(lm.iterate_batches(256))),
        r,
    )
    fast = _msgpack.fast_columns
    _msgpack.fast_columns = lambda data, offsets: None  # type: ignore[assignment]
    try:
        slow = _row(
            "iterate_batches(256), msgpack, decoded record by record",
            n,
            _best(lambda: _drain(lm.iterate_batches(256))),
            r,
        )
    finally:
        _msgpack.fast_columns = fast
    print(
        f"  column-wise batches: {batches / per_record:.2f}x the per-record decode path "
        f"(iterate_binwise), {batches / slow:.2f}x batches decoded record by record"
    )
    b = next(iter(lm.iterate_batches(256)))
    assert b["tokens"].shape == (256, 256)
    assert b["label"].dtype == np.int64
    lb.close()
    lm.close()

"""Single-machine import: a folder of many small files -> a dataset of N bins, with a progress bar.

Every file becomes one record (its bytes). Files are dealt over the bins in a
seeded random order, so each bin is a random sample of the folder, which is what a
shuffled bin-wise reader wants. The import runs on Dask's local thread pool (file
reads release the GIL) with Dask's progress bar; nothing becomes visible until the
final commit, and the dataset's manifest records where the files came from.

Run: ``python examples/single_machine_import.py [SRC] [--out URLPATH] [--bins N]``.
Without ``SRC`` a demo folder of small files is generated first; without ``--out``
the dataset goes to a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Iterator

import dask.bag as db
import numpy as np
from dask.diagnostics import ProgressBar

from splitdask import SplitDataLoader
from splitdask.bag import to_split_bins


def make_demo_folder(folder: str, files: int = 3000, seed: int = 0) -> None:
    """Small files of 100 B to 4 KiB in a few subfolders, like a scraped corpus."""
    rng = np.random.default_rng(seed)
    for i in range(files):
        sub = os.path.join(folder, f"shard-{i % 10}")
        os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, f"doc-{i:06d}.txt"), "wb") as f:
            f.write(b"doc %d\n" % i + rng.bytes(int(rng.integers(100, 4096))))


def list_files(src: str) -> list[str]:
    paths = [os.path.join(d, name) for d, _, names in os.walk(src) for name in names]
    return sorted(paths)


def read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def read_files(groups: list[list[str]]) -> Iterator[bytes]:
    """A partition's records: its files' bytes, read one at a time (memory stays small)."""
    for group in groups:
        for path in group:
            yield read_file(path)


def import_folder(src: str, out: str, bins: int, seed: int = 0) -> None:
    paths = list_files(src)
    if not paths:
        raise SystemExit(f"no files under {src}")
    order = np.random.default_rng(seed).permutation(len(paths))
    shuffled = [paths[i] for i in order]
    # Exactly `bins` partitions (one bin each), dealt round-robin so they differ by at
    # most one file.
    groups = [shuffled[k::bins] for k in range(bins)]
    records = db.from_sequence(groups, partition_size=1).map_partitions(read_files)
    print(f"importing {len(paths)} files from {src} into {bins} bins at {out}")
    with ProgressBar(dt=0.2):
        info = to_split_bins(
            records,
            out,
            overwrite=True,
            metadata={"source": os.path.abspath(src), "files": len(paths), "seed": seed},
            compute_kwargs={"scheduler": "threads"},
        )
    loader = SplitDataLoader(out)
    counts = loader.bin_counts
    print(
        f"imported {info.records_written} files, {info.bytes_written / 1e6:.1f} MB, "
        f"{info.num_bins} bins of {min(counts)}-{max(counts)} records"
    )
    # Spot check: records are in partition order, so bin k's files come k-th.
    in_order = [path for group in groups for path in group]
    for i in (0, len(paths) // 2, len(paths) - 1):
        assert bytes(loader[i]) == read_file(in_order[i])
    assert len(loader) == len(paths)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", nargs="?", help="folder to import (default: a generated demo)")
    ap.add_argument("--out", help="dataset urlpath (default: a temp dir)")
    ap.add_argument("--bins", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="splitdask-import-") as tmp:
        src = args.src
        if src is None:
            src = os.path.join(tmp, "docs")
            make_demo_folder(src)
        import_folder(src, args.out or os.path.join(tmp, "dataset"), args.bins, args.seed)


if __name__ == "__main__":
    main()

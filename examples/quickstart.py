"""Quickstart: write a dataset, read it back, then read it as a Dask bag on a local cluster.

Run: ``python examples/quickstart.py [--dir DIR]`` (default: a temporary directory,
removed at the end). ``bash ci/quickstart.sh`` installs splitdask and runs this.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from itertools import islice

from distributed import Client, LocalCluster

from splitdask import SplitDataLoader, write_split_data
from splitdask.bag import read_split_bins


def run(root: str) -> None:
    path = os.path.join(root, "train")

    # 1. Write 10,000 records over 8 bins (record k goes to bin k % 8).
    records = [b"record %05d " % i + b"x" * (i % 50) for i in range(10_000)]
    info = write_split_data(path, records, splits=8, start_clean=True)
    print(f"wrote {info.records_written} records ({info.bytes_written} bytes) to {path}")

    # 2. Read it back: len, random access, bin-wise shuffled iteration.
    loader = SplitDataLoader(path)
    print(f"len={len(loader)} bins={loader.num_bins} bin_counts={loader.bin_counts}")
    print("loader[0] =", bytes(loader[0]))
    print("loader[-1] =", bytes(loader[-1]))
    print("loader[10:13] =", [bytes(r) for r in loader[10:13]])
    first = [bytes(r) for r in islice(loader.iterate_binwise(shuffle=True, seed=0), 3)]
    print("iterate_binwise(shuffle=True, seed=0) starts with", first)
    assert bytes(loader[1234]) == records[1234]
    assert sorted(bytes(r) for r in loader.iterate_binwise(shuffle=True, seed=0)) == sorted(records)

    # 3. The same dataset as a Dask bag: one partition per bin, on worker processes.
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        bag = read_split_bins(path, shuffle=True, seed=0)
        total = bag.map(len).sum().compute()
        print(f"read_split_bins: {bag.npartitions} partitions, {total} bytes on {client}")
        assert total == loader.nbytes == info.bytes_written
        assert bag.count().compute() == len(loader)
    print("quickstart OK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", help="where to write the dataset (default: a temp dir)")
    args = ap.parse_args()
    # The command next to this interpreter (.venv/bin/splitdask after ci/quickstart.sh).
    cmd = os.path.join(os.path.dirname(sys.executable), "splitdask")
    if args.dir:
        run(args.dir)
        train = os.path.join(args.dir, "train")
        print(f"next: {cmd} info {train}   (then: head {train} -n 3 --text, verify {train})")
    else:
        with tempfile.TemporaryDirectory(prefix="splitdask-quickstart-") as tmp:
            run(tmp)
        print(
            "next: that dataset was in a temporary directory, now removed; keep one with "
            f"`bash ci/quickstart.sh --dir DIR`, then try `{cmd} info DIR/train`"
        )


if __name__ == "__main__":
    main()

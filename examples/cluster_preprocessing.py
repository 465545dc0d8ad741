"""Cluster preprocessing: raw files -> bag.map -> to_split_bins, then read_split_bins -> training.

A preprocessing job reads raw JSON-lines files, turns each sample into a compact
binary record (token ids as int32 plus a label) on a Dask cluster, and writes the
records as a splitdask dataset with ``to_split_bins``: one bin per partition,
committed once all partitions are written. Training then reads it back with
``read_split_bins``: every epoch visits the bins in a new random order and each
bin's records in a new random order, with a cluster worker preparing the next bin
while the current one is consumed.

Run: ``python examples/cluster_preprocessing.py [--out URLPATH] [--files N]
[--samples-per-file N] [--bins N] [--workers N]``. By default everything lives in
a temporary directory and the job is small enough to run in seconds. Pass an fsspec
URL (``s3://bucket/train``) as ``--out`` to write to object storage.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import dask.bag as db
import numpy as np
from distributed import Client, LocalCluster

from splitdask.bag import read_split_bins, to_split_bins

VOCAB = ["the", "a", "cat", "dog", "sat", "ran", "on", "under", "mat", "tree", "fast", "slow"]


def make_raw_inputs(folder: str, files: int, per_file: int, seed: int = 0) -> int:
    """Raw data as it might arrive: JSON lines ``{"id", "text", "label"}``."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    n = 0
    for f in range(files):
        with open(os.path.join(folder, f"part-{f:04d}.jsonl"), "w") as out:
            for _ in range(per_file):
                words = rng.choice(VOCAB, size=int(rng.integers(3, 40)))
                sample = {"id": n, "text": " ".join(words), "label": int(rng.integers(0, 2))}
                out.write(json.dumps(sample) + "\n")
                n += 1
    return n


def encode(sample: dict[str, Any]) -> bytes:
    """Preprocessing: tokenize and pack one sample as ``label (u8) | token ids (i32)``."""
    ids = np.array([VOCAB.index(w) for w in sample["text"].split()], dtype="<i4")
    return bytes([sample["label"]]) + ids.tobytes()


def decode(record: bytes) -> tuple[int, np.ndarray]:
    return record[0], np.frombuffer(record, dtype="<i4", offset=1)


def training_batches(
    client: Client, urlpath: str, epoch: int, batch_size: int
) -> Iterator[list[bytes]]:
    """One epoch: bins in a seeded random order, each shuffled, one bin prefetched."""
    bag = read_split_bins(urlpath, shuffle=True, seed=epoch)
    parts = bag.to_delayed()
    order = np.random.default_rng(epoch).permutation(len(parts))
    nxt = client.compute(parts[order[0]])
    batch: list[bytes] = []
    for i in range(len(order)):
        records = nxt.result()
        if i + 1 < len(order):
            nxt = client.compute(parts[order[i + 1]])  # the cluster reads ahead
        for rec in records:
            batch.append(rec)
            if len(batch) == batch_size:
                yield batch
                batch = []
    if batch:
        yield batch


def run(out: str, files: int, per_file: int, bins: int, workers: int) -> None:
    with tempfile.TemporaryDirectory(prefix="splitdask-raw-") as raw:
        total = make_raw_inputs(raw, files, per_file)
        with (
            LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
            ) as cluster,
            Client(cluster) as client,
        ):
            # Preprocess on the cluster: one bin per partition of the bag.
            raw_bag = db.read_text(os.path.join(raw, "*.jsonl"))
            records = raw_bag.map(json.loads).map(encode).repartition(npartitions=bins)
            info = to_split_bins(records, out, overwrite=True, metadata={"vocab": VOCAB})
            print(
                f"preprocessed {info.records_written} samples into {info.num_bins} bins "
                f"({info.bytes_written / 1e6:.2f} MB) at {out}"
            )
            assert info.records_written == total

            # Train: two epochs of shuffled batches read through the cluster.
            for epoch in range(2):
                seen = positives = tokens = 0
                for batch in training_batches(client, out, epoch, batch_size=256):
                    for rec in batch:  # a stand-in for a training step
                        label, ids = decode(rec)
                        positives += label
                        tokens += len(ids)
                    seen += len(batch)
                print(
                    f"epoch {epoch}: {seen} samples, {tokens} tokens, "
                    f"{positives / seen:.3f} positive"
                )
                assert seen == total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="dataset urlpath (default: a temp dir)")
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--samples-per-file", type=int, default=2000)
    ap.add_argument("--bins", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    if args.out:
        run(args.out, args.files, args.samples_per_file, args.bins, args.workers)
        return
    with tempfile.TemporaryDirectory(prefix="splitdask-train-") as tmp:
        run(os.path.join(tmp, "train"), args.files, args.samples_per_file, args.bins, args.workers)


if __name__ == "__main__":
    main()

"""Train a tiny PyTorch model from a splitdask dataset, interrupted and resumed mid-epoch.

Run: ``python examples/train_torch.py`` (needs the ``torch`` extra: README, "Install").
It writes 4,096 (x, y) samples of a noisy line to a temporary directory, trains two epochs with
``num_workers=2``, stops half-way through epoch 0 as if the job were killed, saves a
checkpoint (model, optimiser and the dataset's resume state), restarts from it in a new
DataLoader and checks that the resumed run saw exactly the samples an uninterrupted
run would have seen, in the same order.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import tempfile

import torch
import torch.utils.data as tud

from splitdask import write_split_data
from splitdask.torch import SplitIterableDataset

BATCH = 64


def decode(record: bytes) -> torch.Tensor:
    """A record is (id, x, y); the id lets the example check what it trained on."""
    i, x, y = struct.unpack("<qff", record)
    return torch.tensor([float(i), x, y])


def dataset(path: str) -> SplitIterableDataset:
    return SplitIterableDataset(path, shuffle="window", seed=7, batch_size=BATCH, transform=decode)


def loader(ds: SplitIterableDataset) -> tud.DataLoader[torch.Tensor]:
    return tud.DataLoader(ds, batch_size=BATCH, num_workers=2, persistent_workers=True)


def train(path: str, ckpt: str, stop_after: int | None) -> list[int]:
    """Train until the end of epoch 1, or stop after ``stop_after`` batches (a crash)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ds = dataset(path)
    start_epoch, seen = 0, 0
    if os.path.exists(ckpt):
        saved = torch.load(ckpt)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        ds.load_state_dict(json.loads(saved["data"]))
        start_epoch = saved["epoch"]
        print(f"resumed epoch {start_epoch} after {saved['samples_seen']} samples")
    ids: list[int] = []
    batches = 0
    dl = loader(ds)
    for epoch in range(start_epoch, 2):
        seen = 0
        loss = torch.tensor(0.0)
        for batch in dl:
            ids += batch[:, 0].long().tolist()
            x, y = batch[:, 1:2], batch[:, 2:3]
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(batch)
            batches += 1
            if stop_after is not None and batches == stop_after:
                state = {
                    "model": model.state_dict(),
                    "opt": opt.state_dict(),
                    "epoch": epoch,
                    "samples_seen": seen,
                    "data": json.dumps(ds.state_dict(seen)),
                }
                torch.save(state, ckpt)
                print(f"interrupted in epoch {epoch} after {seen} samples")
                return ids
        print(f"epoch {epoch}: {seen} samples, loss {loss.item():.4f}")
    w, b = model.weight.item(), model.bias.item()
    print(f"fitted y = {w:.2f} x + {b:.2f}")
    assert abs(w - 3) < 0.3, w
    assert abs(b - 1) < 0.3, b
    return ids


def run(root: str, n: int = 4096) -> None:
    path, ckpt = os.path.join(root, "line"), os.path.join(root, "ckpt.pt")
    g = torch.Generator().manual_seed(1)
    xs = torch.rand(n, generator=g) * 2 - 1
    ys = 3 * xs + 1 + 0.05 * torch.randn(n, generator=g)
    records = (
        struct.pack("<qff", i, x, y)
        for i, (x, y) in enumerate(zip(xs.tolist(), ys.tolist(), strict=True))
    )
    write_split_data(path, records, splits=16)
    uninterrupted = train(path, os.path.join(root, "none.pt"), None)
    before = train(path, ckpt, stop_after=n // BATCH // 2)
    after = train(path, ckpt, None)
    assert before + after == uninterrupted, "the resumed run differs from the uninterrupted one"
    assert sorted(uninterrupted[:n]) == list(range(n))
    print(f"resumed run matches the uninterrupted one ({len(uninterrupted)} samples)")
    print("train_torch OK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", help="where to write the dataset (default: a temp dir)")
    args = ap.parse_args()
    if args.dir:
        run(args.dir)
    else:
        with tempfile.TemporaryDirectory(prefix="splitdask-train-") as tmp:
            run(tmp)


if __name__ == "__main__":
    main()

"""One rank of a real torch.distributed (gloo, 127.0.0.1) job, run by test_torch_dist.py.

    python _dist_job.py DATA OUT full     # epoch 0 whole, then epoch 1 up to SEEN, save state
    python _dist_job.py DATA OUT resume   # load the saved state, read the rest of epoch 1

Rank and world size come from the environment (RANK, WORLD_SIZE, MASTER_ADDR/PORT), and
the datasets are built without them. Rank 0 writes what all ranks read to OUT/<phase>.json.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import torch.distributed as dist
import torch.utils.data as tud

from splitdask.torch import SplitIterableDataset

SEEN = 480


def ids(loader: tud.DataLoader, limit: int | None = None) -> list[int]:
    out: list[int] = []
    for batch in loader:
        out += [struct.unpack_from("<q", r)[0] for r in batch]
        if limit is not None and len(out) >= limit:
            break
    return out


def main() -> None:
    data, out, phase = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    dist.init_process_group("gloo")
    ds = SplitIterableDataset(data, batch_size=16, seed=5)
    loader = tud.DataLoader(ds, batch_size=16, num_workers=2, collate_fn=list)
    result: dict[str, object] = {"rank": ds.rank, "world_size": ds.world_size, "len": len(ds)}
    if phase == "full":
        result["epoch0"] = ids(loader)
        result["epoch1_seen"] = ids(loader, SEEN)
        state = ds.state_dict(SEEN)
    else:
        ds.load_state_dict(json.loads((out / "state.json").read_text()))
        result["len"] = len(ds)
        result["rest"] = ids(loader)
        result["epoch"] = ds.epoch
    everyone: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, result)
    if dist.get_rank() == 0:
        if phase == "full":
            (out / "state.json").write_text(json.dumps(state))
        (out / f"{phase}.json").write_text(json.dumps(everyone))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

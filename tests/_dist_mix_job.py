"""One rank of a real torch.distributed (gloo, 127.0.0.1) job over a mixture, run by
test_torch_dist.py.

    python _dist_mix_job.py ROOT OUT full     # the mixture's epoch 0 up to SEEN, save state
    python _dist_mix_job.py ROOT OUT resume   # load the saved state, read the rest of epoch 0

ROOT holds the sources ``a``, ``b`` and ``c``. Rank and world size come from the
environment, and the datasets are built without them. Rank 0 writes what all ranks
read to OUT/mix_<phase>.json.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import torch.distributed as dist
import torch.utils.data as tud

from splitdask.plan import Mixture
from splitdask.torch import SplitMixtureDataset

SEEN = 240
WEIGHTS = [0.6, 0.3, 0.1]


def main() -> None:
    root, out, phase = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    dist.init_process_group("gloo")
    mix = Mixture([str(root / x) for x in "abc"], WEIGHTS, seed=5)
    ds = SplitMixtureDataset(mix, batch_size=16, sample_source=True)
    loader = tud.DataLoader(ds, batch_size=16, num_workers=2, collate_fn=list)
    result: dict[str, object] = {"rank": ds.rank, "world_size": ds.world_size}
    if phase == "resume":
        ds.load_state_dict(json.loads((out / "mix_state.json").read_text()))
    result["len"] = len(ds)
    got: list[list[int]] = []
    for batch in loader:
        got += [[src, *struct.unpack_from("<q", rec)] for rec, src in batch]
        if phase == "full" and len(got) >= SEEN:
            break
    result["read"] = got
    everyone: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, result)
    if dist.get_rank() == 0:
        if phase == "full":
            (out / "mix_state.json").write_text(json.dumps(ds.state_dict(SEEN)))
        (out / f"mix_{phase}.json").write_text(json.dumps(everyone))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

"""SplitIterableDataset's Stateful protocol: state_dict() with no argument, through
torchdata's StatefulDataLoader (2 workers, fork and spawn), torch.distributed.checkpoint,
and the DataLoader's batch size taken from the DataLoader."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
import torch.utils.data as tud
from torch.distributed.checkpoint.stateful import Stateful
from torchdata.stateful_dataloader import StatefulDataLoader

from splitdask import ResumeStateError, write_split_data
from splitdask.torch import SplitIterableDataset

pytestmark = [
    pytest.mark.filterwarnings("ignore:'set_vital' is deprecated"),  # torchdata 0.11 on torch 2.13
    pytest.mark.filterwarnings("ignore:torch.distributed is disabled"),  # dcp without a group
]

N = 3000
BATCH = 32


def ident(record: bytes) -> int:
    return int(struct.unpack_from("<q", record)[0])


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("stateful") / "ds"
    write_split_data(path, (struct.pack("<q", i) + b"." * 16 for i in range(N)), splits=10)
    return str(path)


def batches(loader: Any, stop: int | None = None) -> list[list[int]]:
    out = []
    for batch in loader:
        out.append([ident(r) for r in batch])
        if len(out) == stop:
            break
    return out


def flat(bs: list[list[int]]) -> list[int]:
    return [i for b in bs for i in b]


@pytest.fixture(scope="module")
def reference(data: str) -> tuple[list[int], list[int]]:
    """Epochs 0 and 1 uninterrupted, with the batch size given to the dataset."""
    ds = SplitIterableDataset(data, seed=3, batch_size=BATCH)
    loader = tud.DataLoader(ds, batch_size=BATCH, collate_fn=list)
    return flat(batches(loader)), flat(batches(loader))


@pytest.mark.parametrize("ctx", ["fork", "spawn"])
@pytest.mark.parametrize("stop", [37, 40])  # the last batch from worker 0, then worker 1
def test_stateful_dataloader_resumes_mid_epoch_exactly(
    data: str, reference: tuple[list[int], list[int]], ctx: str, stop: int
) -> None:
    def loader() -> StatefulDataLoader:
        ds = SplitIterableDataset(data, seed=3)  # the batch size comes from the loader
        return StatefulDataLoader(
            ds, batch_size=BATCH, num_workers=2, collate_fn=list, multiprocessing_context=ctx
        )

    first = loader()
    head = flat(batches(first, stop))
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    del first
    assert head == reference[0][: stop * BATCH]

    resumed = loader()
    buf.seek(0)
    saved = torch.load(buf, weights_only=False)
    workers = saved["_snapshot"]["_worker_snapshots"]
    shares = [w["dataset_state"]["worker"] for w in workers.values()]
    assert sorted(s["seen"] for s in shares) == sorted(
        BATCH * len(range(w, stop, 2)) for w in range(2)
    )
    resumed.load_state_dict(saved)
    assert flat(batches(resumed)) == reference[0][stop * BATCH :]
    assert flat(batches(resumed)) == reference[1]  # then the next epoch


def test_worker_state_needs_the_same_worker_and_batch(data: str) -> None:
    ds = SplitIterableDataset(data, seed=3)
    dl = StatefulDataLoader(ds, batch_size=BATCH, num_workers=2, collate_fn=list)
    batches(dl, 3)
    share = dl.state_dict()["_snapshot"]["_worker_snapshots"]["worker_0"]["dataset_state"]
    assert share["version"] == 3
    assert share["worker"] == {"id": 0, "of": 2, "batch": 32, "seen": 64}
    other = SplitIterableDataset(data, seed=3)
    other.load_state_dict(json.loads(json.dumps(share)))
    with pytest.raises(ResumeStateError, match="worker 0 of 2 .batches of 32.*worker 0 of 1"):
        batches(tud.DataLoader(other, batch_size=BATCH, collate_fn=list))


def test_state_dict_without_argument_in_one_process(
    data: str, reference: tuple[list[int], list[int]]
) -> None:
    ds = SplitIterableDataset(data, seed=3)
    assert isinstance(ds, Stateful)
    assert ds.state_dict()["remaining"] == [0, N]  # before a pass: all of epoch 0
    loader = tud.DataLoader(ds, batch_size=BATCH, collate_fn=list)
    head = flat(batches(loader, 10))
    state = json.loads(json.dumps(ds.state_dict()))
    assert state == ds.state_dict(samples_seen=len(head))  # the same as counted by hand
    again = SplitIterableDataset(data, seed=3)
    again.load_state_dict(state)
    assert again.state_dict() == state  # loaded, not run yet: the same state
    tail = flat(batches(tud.DataLoader(again, batch_size=BATCH, collate_fn=list)))
    assert head + tail == reference[0]


def test_state_dict_without_argument_refused_after_plain_workers(data: str) -> None:
    ds = SplitIterableDataset(data, seed=3)
    batches(tud.DataLoader(ds, batch_size=BATCH, num_workers=2, collate_fn=list), 5)
    with pytest.raises(ResumeStateError, match="samples_seen=.*StatefulDataLoader"):
        ds.state_dict()
    assert ds.state_dict(samples_seen=5 * BATCH)["remaining"][0] == 5 * BATCH
    state = ds.state_dict(samples_seen=5 * BATCH)
    ds.load_state_dict(state)
    assert ds.state_dict() == state  # loaded, no worker started it: that state
    batches(tud.DataLoader(ds, batch_size=BATCH, num_workers=2, collate_fn=list), 2)
    with pytest.raises(ResumeStateError, match="samples_seen=.*StatefulDataLoader"):
        ds.state_dict()  # the workers run the loaded epoch: the main process cannot know


def test_distributed_checkpoint_saves_and_loads_the_dataset(
    data: str, reference: tuple[list[int], list[int]], tmp_path: Path
) -> None:
    ds = SplitIterableDataset(data, seed=3)
    head = flat(batches(tud.DataLoader(ds, batch_size=BATCH, collate_fn=list), 7))
    dcp.save({"data": ds}, checkpoint_id=tmp_path / "ckpt", no_dist=True)
    again = SplitIterableDataset(data, seed=3)
    dcp.load({"data": again}, checkpoint_id=tmp_path / "ckpt", no_dist=True)
    tail = flat(batches(tud.DataLoader(again, batch_size=BATCH, collate_fn=list)))
    assert head + tail == reference[0]


def test_batch_size_is_read_from_the_dataloader(data: str) -> None:
    given = SplitIterableDataset(data, seed=3, batch_size=16)
    taken = SplitIterableDataset(data, seed=3)
    run = [
        flat(batches(tud.DataLoader(ds, batch_size=16, num_workers=2, collate_fn=list)))
        for ds in (given, taken)
    ]
    assert run[0] == run[1]
    with pytest.raises(ValueError, match=r"batch_size=16\) but the DataLoader asks for .* 8"):
        batches(tud.DataLoader(given, batch_size=8, collate_fn=list))


def test_version_2_states_still_load(data: str, reference: tuple[list[int], list[int]]) -> None:
    ds = SplitIterableDataset(data, seed=3, batch_size=BATCH)
    state = ds.state_dict(0)
    old = {**state, "version": 2, "remaining": [100, N]}  # as saved before this round
    ds.load_state_dict(old)
    assert (
        flat(batches(tud.DataLoader(ds, batch_size=BATCH, collate_fn=list))) == (reference[0][100:])
    )

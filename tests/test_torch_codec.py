"""Typed records through splitdask.torch with real DataLoader workers (fork and spawn):
decoded records, default collate giving tensors, transform after decoding, a user
codec carried to spawned workers, ``decode=False`` and pickle's opt-in."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.utils.data as tud
from _codec_helpers import CODEC, decode_point, encode_point, label_plus_one

from splitdask import SplitDataLoader, register_codec, write_split_data
from splitdask.torch import SplitIterableDataset, SplitMapDataset

N = 96


def sample(i: int) -> dict[str, Any]:
    return {
        "tokens": np.full(16, i, dtype=np.int32),
        "label": i % 7,
        "weight": i / 2,
        "text": f"s{i}",
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("torchc") / "ds"
    write_split_data(root, [sample(i) for i in range(N)], 4, codec="msgpack")
    return str(root)


def check_batch(batch: dict[str, Any], size: int) -> list[int]:
    """A default-collated batch of samples: a dict of tensors (and a list of str);
    returns its sample ids."""
    assert set(batch) == {"tokens", "label", "weight", "text"}
    tokens = batch["tokens"]
    assert isinstance(tokens, torch.Tensor)
    assert tokens.dtype == torch.int32
    assert tokens.shape == (size, 16)
    assert batch["label"].dtype == torch.int64
    assert batch["weight"].dtype == torch.float64
    ids = tokens[:, 0].tolist()
    assert batch["label"].tolist() == [i % 7 for i in ids]
    assert batch["weight"].tolist() == [i / 2 for i in ids]
    assert batch["text"] == [f"s{i}" for i in ids]
    return list(ids)


@pytest.mark.parametrize("ctx", ["fork", "spawn"])
def test_iterable_dataset_default_collate_gives_tensors(data: str, ctx: str) -> None:
    ds = SplitIterableDataset(data, batch_size=8, shuffle="bins", seed=1)
    loader = tud.DataLoader(ds, batch_size=8, num_workers=2, multiprocessing_context=ctx)
    seen = [i for batch in loader for i in check_batch(batch, 8)]
    assert sorted(seen) == list(range(N))
    # Workers give the order one process gives.
    alone = tud.DataLoader(SplitIterableDataset(data, batch_size=8, shuffle="bins", seed=1), 8)
    assert seen == [i for b in alone for i in check_batch(b, 8)]


@pytest.mark.parametrize("ctx", ["fork", "spawn"])
def test_map_dataset_decodes_in_workers_and_transform_follows(data: str, ctx: str) -> None:
    ds = SplitMapDataset(data, transform=label_plus_one)
    assert ds[5]["label"] == 5 % 7 + 1
    assert ds[5]["tokens"].dtype == np.int32
    loader = tud.DataLoader(
        ds, batch_size=12, num_workers=2, multiprocessing_context=ctx, shuffle=False
    )
    labels = torch.cat([b["label"] for b in loader]).tolist()
    assert labels == [SplitDataLoader(data)[i]["label"] + 1 for i in range(N)]


def test_decode_false_gives_stored_bytes_and_pickle_needs_opt_in(data: str, tmp_path: Path) -> None:
    raw = SplitMapDataset(data, decode=False)
    assert raw[3] == SplitDataLoader(data, decode=False)[3]
    it = SplitIterableDataset(data, decode=False, shuffle=None)
    assert all(type(r) is bytes for r in it)
    pk = tmp_path / "pk"
    write_split_data(pk, [{"s": {1, 2}}] * 4, 2, codec="pickle")
    for cls in (SplitMapDataset, SplitIterableDataset):
        with pytest.raises(ValueError, match="allow_pickle=True"):
            cls(pk)
    assert SplitMapDataset(pk, allow_pickle=True)[0] == {"s": {1, 2}}
    assert next(iter(SplitIterableDataset(pk, allow_pickle=True, shuffle=None))) == {"s": {1, 2}}


def test_user_codec_reaches_spawned_workers(tmp_path: Path) -> None:
    register_codec(CODEC, encode_point, decode_point)
    ds_path = tmp_path / "pts"
    write_split_data(ds_path, [(float(i), 0.0, 1.0) for i in range(40)], 2, codec=CODEC)
    ds = SplitIterableDataset(ds_path, batch_size=10, shuffle=None)
    assert pickle.loads(pickle.dumps(ds))._codec.name == CODEC
    # Spawned workers never registered the codec: the dataset carries its functions.
    loader = tud.DataLoader(ds, batch_size=10, num_workers=2, multiprocessing_context="spawn")
    xs = sorted(torch.cat([b[0] for b in loader]).tolist())  # collate: tuples -> columns
    assert xs == [float(i) for i in range(40)]
    m = tud.DataLoader(
        SplitMapDataset(ds_path),
        batch_size=40,
        num_workers=1,
        multiprocessing_context="spawn",
        collate_fn=list,
    )
    assert [p[0] for b in m for p in b] == [float(i) for i in range(40)]

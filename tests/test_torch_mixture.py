"""SplitMixtureDataset with real DataLoader workers (fork and spawn) on real datasets."""

from __future__ import annotations

import itertools
import json
import pickle
import struct
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch.utils.data as tud
from conftest import RequestLog

from splitdask import ResumeStateError, write_split_data
from splitdask.plan import Mixture, audit
from splitdask.torch import SplitMixtureDataset

SIZES = {"web": 3000, "code": 900, "gold": 120}
WEIGHTS = [0.5, 0.3, 0.2]


def ident(record: bytes) -> tuple[int, int]:
    src, i = struct.unpack_from("<qq", record)
    return int(src), int(i)


def run(
    ds: Any, workers: int = 0, batch: int = 16, limit: int | None = None, **kw: Any
) -> list[Any]:
    out: list[Any] = []
    loader = tud.DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=list, **kw)
    for b in loader:
        out += [ident(r) if isinstance(r, bytes) else (ident(r[0]), r[1]) for r in b]
        if limit is not None and len(out) >= limit:
            break
    return out


@pytest.fixture(scope="module")
def urls(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("mix")
    out = []
    for j, (name, n) in enumerate(SIZES.items()):
        recs = (struct.pack("<qq", j, i) + b"." * 48 for i in range(n))
        write_split_data(root / name, recs, splits=6)
        out.append(str(root / name))
    return out


@pytest.mark.filterwarnings("ignore:This DataLoader will create 3 worker processes")
def test_output_is_the_same_for_any_worker_count_fork_and_spawn(urls: list[str]) -> None:
    mix = Mixture(urls, WEIGHTS, seed=4)
    ref = run(SplitMixtureDataset(mix, batch_size=16))
    assert len(ref) == mix.epoch_length == len(SplitMixtureDataset(mix, batch_size=16))
    for workers, ctx in ((1, "fork"), (2, "fork"), (3, "fork"), (2, "spawn")):
        ds = SplitMixtureDataset(mix, batch_size=16)
        assert run(ds, workers, multiprocessing_context=ctx) == ref, (workers, ctx)
    # Proportions over the epoch, and each source's epochs without repeats.
    counts = Counter(s for s, _ in ref)
    for s, w in enumerate(WEIGHTS):
        assert abs(counts[s] / len(ref) - w) < 0.01
    for s in range(3):
        ids = [i for src, i in ref if src == s]
        n = list(SIZES.values())[s]
        for e in range(0, len(ids), n):
            assert len(set(ids[e : e + n])) == len(ids[e : e + n])


def test_sample_source_and_transform(urls: list[str]) -> None:
    ds = SplitMixtureDataset(urls, WEIGHTS, batch_size=8, sample_source=True)
    got = run(ds, 2, batch=8, limit=200, multiprocessing_context="fork")
    assert all(src == tag for (src, _), tag in got)
    assert {tag for _, tag in got} == {0, 1, 2}
    ds = SplitMixtureDataset(urls, WEIGHTS, transform=ident)
    assert all(isinstance(x, tuple) for x in itertools.islice(ds, 50))
    assert len(pickle.dumps(ds)) < 4000


def test_resume_same_topology_is_exact_and_passes_go_on(urls: list[str]) -> None:
    mix = Mixture(urls, WEIGHTS, seed=1, stopping="first_exhausted")
    ds = SplitMixtureDataset(mix, batch_size=16)
    epoch0, epoch1 = run(ds, 2, multiprocessing_context="fork"), run(ds)
    ds = SplitMixtureDataset(mix, batch_size=16)
    first = run(ds, 2, limit=160, multiprocessing_context="fork")
    state = json.loads(json.dumps(ds.state_dict(160)))
    assert len(json.dumps(state)) < 2048
    assert [p["consumed"] for p in state["progress"]] == [
        sum(1 for s, _ in first if s == k) for k in range(3)
    ]
    again = SplitMixtureDataset(mix, batch_size=16)
    again.load_state_dict(state)
    assert len(again) == len(epoch0) - 160
    assert first + run(again, 2, multiprocessing_context="spawn") == epoch0
    assert run(again) == epoch1  # the next pass is the next epoch
    assert audit(mix, states=[state], records=True).ok


def test_elastic_resume_three_ranks_to_two_other_batch(urls: list[str]) -> None:
    mix = Mixture(urls, WEIGHTS, seed=2)

    def share(w: int, r: int, batch: int) -> SplitMixtureDataset:
        return SplitMixtureDataset(mix, batch_size=batch, world_size=w, rank=r)

    whole = [run(share(3, r, 8), batch=8) for r in range(3)]
    firsts = [
        run(share(3, r, 8), 2, batch=8, limit=400, multiprocessing_context="fork") for r in range(3)
    ]
    state = share(3, 0, 8).state_dict(400)
    rests = []
    for r in range(2):
        ds = share(2, r, 20)
        ds.load_state_dict(state)
        rests.append(run(ds, 1, batch=20, multiprocessing_context="fork"))
    assert len(rests[0]) == len(rests[1])
    done = [x for f in firsts for x in f[:400]]
    rest = [x for r in rests for x in r]
    # The same multiset per source as the uninterrupted epoch, but for the positions
    # each carries into the next epoch (fewer than its world size).
    full = Counter(x for w in whole for x in w)
    got = Counter(done + rest)
    assert sum((got - full).values()) < 3
    assert sum((full - got).values()) < 2


def test_reweight_only_when_asked(urls: list[str]) -> None:
    mix = Mixture(urls, WEIGHTS, seed=3, stopping="never", epoch_length=1000)
    ds = SplitMixtureDataset(mix, batch_size=10)
    with pytest.raises(TypeError, match="endless"):
        len(ds)
    first = run(ds, limit=300, batch=10)
    state = ds.state_dict(300)
    heavy = Mixture(urls, [0.1, 0.1, 0.8], seed=3, stopping="never", epoch_length=1000)
    other = SplitMixtureDataset(heavy, batch_size=10)
    with pytest.raises(ResumeStateError, match="reweight=True"):
        other.load_state_dict(state)
    other.load_state_dict(state, reweight=True)
    assert other.epoch == 1
    rest = run(other, limit=2000, batch=10)  # endless: as much as we like
    assert len(rest) == 2000
    shares = Counter(s for s, _ in rest)
    assert abs(shares[2] / 2000 - 0.8) < 0.01
    later = other.state_dict(2000)
    report = audit(mix, states=[state, later], records=True)
    assert report.ok
    assert sum(s.consumed for s in report.sources) == 2300
    done = Counter(first + rest)
    gold = [i for (s, i), c in done.items() if s == 2]
    assert len(gold) >= SIZES["gold"] - 1  # the small source came round, once each epoch


def test_states_of_other_mixtures_are_refused(urls: list[str]) -> None:
    ds = SplitMixtureDataset(urls, WEIGHTS, seed=1)
    state = ds.state_dict(0)
    for other, what in (
        (SplitMixtureDataset(urls, WEIGHTS, seed=2), "another seed"),
        (
            SplitMixtureDataset(urls, WEIGHTS, seed=1, stopping="first_exhausted"),
            "another stopping",
        ),
        (SplitMixtureDataset(urls[:2], WEIGHTS[:2], seed=1), "another number of sources"),
        (
            SplitMixtureDataset(urls, WEIGHTS, seed=1, shuffle="global"),
            "another shuffle of source 0",
        ),
    ):
        with pytest.raises(ResumeStateError, match=what):
            other.load_state_dict(state)
    with pytest.raises(ResumeStateError, match="not a SplitMixtureDataset state"):
        ds.load_state_dict({"epoch": 0})
    with pytest.raises(ResumeStateError, match="damaged"):
        ds.load_state_dict({**state, "remaining": [3, 2]})
    with pytest.raises(ValueError, match="samples_seen"):
        ds.state_dict(len(ds) + 1)
    with pytest.raises(TypeError, match="weights belong to the Mixture"):
        SplitMixtureDataset(Mixture(urls), WEIGHTS)


def test_persistent_workers_run_epochs_in_turn(tmp_path: Path, urls: list[str]) -> None:
    mix = Mixture(urls, WEIGHTS, seed=6, stopping="first_exhausted")
    ref = SplitMixtureDataset(mix, batch_size=16)
    expected = [run(ref) for _ in range(2)]
    ds = SplitMixtureDataset(mix, batch_size=16)
    loader = tud.DataLoader(
        ds, batch_size=16, num_workers=2, collate_fn=list, persistent_workers=True
    )
    got = [[ident(r) for b in loader for r in b] for _ in range(2)]
    assert got == expected
    assert expected[0] != expected[1]


def test_s3_mixture_reads_each_part_about_once_and_matches_local(
    s3_url: str,
    s3_storage_options: dict[str, Any],
    s3_requests: RequestLog,
    s3_fs: Any,
    tmp_path: Path,
) -> None:
    remote, local = [], []
    for j, (name, n) in enumerate(list(SIZES.items())[:2]):
        recs = [struct.pack("<qq", j, i) + b"." * 1000 for i in range(n)]
        remote.append(f"{s3_url}/{name}")
        write_split_data(remote[-1], recs, splits=16, storage_options=s3_storage_options)
        local.append(str(tmp_path / name))
        write_split_data(local[-1], recs, splits=16)
    parts = {"/" + p: s3_fs.info(p)["size"] for p in s3_fs.find(s3_url) if p.endswith(".bin")}
    mix = Mixture(remote, [0.7, 0.3], seed=1, window=2, storage_options=s3_storage_options)
    mark = s3_requests.mark()
    got = []
    for r in range(2):
        ds = SplitMixtureDataset(mix, batch_size=16, world_size=2, rank=r)
        got.append(run(ds, 2, multiprocessing_context="fork"))
    assert len(got[0]) == len(got[1]) == mix.epoch_length // 2
    fetched = 0
    for req in s3_requests.since(mark):
        if req.method == "GET" and req.path in parts:
            lo, hi = (
                (0, parts[req.path] - 1)
                if req.range is None
                else map(int, req.range.split("=")[1].split("-"))
            )
            fetched += hi - lo + 1
    # Each rank reads the windows of its contiguous share of each source, its two
    # workers through one temporary cache: about the data once (code's 1.4 epochs
    # and window edges aside).
    assert fetched <= 1.5 * sum(parts.values())
    # The same plan over a local copy of the same records gives the same ids.
    same = Mixture(local, [0.7, 0.3], seed=1, window=2)
    assert same.epoch_length == mix.epoch_length
    ref = [run(SplitMixtureDataset(same, batch_size=16, world_size=2, rank=r)) for r in range(2)]
    assert got == ref


def test_sources_of_different_codecs_decode_each_with_its_own(tmp_path: Path) -> None:
    import numpy as np

    write_split_data(tmp_path / "m", ({"i": i, "v": np.full(3, i, "i4")} for i in range(40)),
                     splits=2, codec="msgpack", mode="w")  # fmt: skip
    write_split_data(tmp_path / "j", ({"i": 1000 + i} for i in range(20)), splits=2,
                     codec="json", mode="w")  # fmt: skip
    write_split_data(tmp_path / "b", (b"raw %d" % i for i in range(10)), splits=2, mode="w")
    mix = Mixture([str(tmp_path / n) for n in "mjb"], [0.5, 0.3, 0.2], seed=1)
    for ctx in ("fork", "spawn"):
        ds = SplitMixtureDataset(mix, batch_size=4, sample_source=True)
        loader = tud.DataLoader(ds, batch_size=4, num_workers=2, collate_fn=list,
                                multiprocessing_context=ctx)  # fmt: skip
        got = [pair for b in loader for pair in b]
        by_source: dict[int, list[Any]] = {0: [], 1: [], 2: []}
        for rec, src in got:
            by_source[src].append(rec)
        assert sorted(r["i"] for r in by_source[0]) == list(range(40))
        assert all(np.array_equal(r["v"], np.full(3, r["i"], "i4")) for r in by_source[0])
        # The smaller sources repeat (each epoch freshly shuffled) until all are exhausted.
        assert {r["i"] for r in by_source[1]} == set(range(1000, 1020))
        assert set(by_source[2]) == {b"raw %d" % i for i in range(10)}
    stored = SplitMixtureDataset(mix, batch_size=4, decode=False)
    assert all(isinstance(r, bytes) for r in stored)

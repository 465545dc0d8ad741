"""A real multi-process torch.distributed job (gloo on 127.0.0.1): coverage, equal
lengths, and a resume mid-epoch on another world size (2 ranks, then 3), of one
dataset and of a mixture."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from splitdask import SplitDataLoader, write_split_data
from splitdask.plan import Mixture, audit

JOB = Path(__file__).with_name("_dist_job.py")
MIX_JOB = Path(__file__).with_name("_dist_mix_job.py")
N = 3001  # not a multiple of 2 or 3: padding is exercised


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(
    world: int, data: str, out: Path, phase: str, job: Path = JOB
) -> list[dict[str, object]]:
    port = str(free_port())
    procs = []
    for rank in range(world):
        env = {
            **os.environ,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
        }
        cmd = [sys.executable, str(job), data, str(out), phase]
        procs.append(subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    name = f"{phase}.json" if job == JOB else f"mix_{phase}.json"
    result: list[dict[str, object]] = json.loads((out / name).read_text())
    return result


@pytest.mark.timeout(300)
def test_two_ranks_then_three_after_resume(tmp_path: Path) -> None:
    data = str(tmp_path / "ds")
    write_split_data(data, (struct.pack("<q", i) * 4 for i in range(N)), splits=10)
    full = launch(2, data, tmp_path, "full")
    assert [r["rank"] for r in full] == [0, 1]
    assert {r["world_size"] for r in full} == {2}
    epoch0 = [r["epoch0"] for r in full]
    assert len(epoch0[0]) == len(epoch0[1]) == full[0]["len"] == (N + 1) // 2
    assert set(epoch0[0]) | set(epoch0[1]) == set(range(N))
    assert len(epoch0[0]) + len(epoch0[1]) - N == 1  # one record repeated as padding
    seen = [i for r in full for i in r["epoch1_seen"]]  # type: ignore[attr-defined]
    assert len(seen) == len(set(seen)) == 2 * 480

    resumed = launch(3, data, tmp_path, "resume")
    assert [r["rank"] for r in resumed] == [0, 1, 2]
    rests = [r["rest"] for r in resumed]
    assert len({len(r) for r in rests}) == 1  # type: ignore[arg-type]
    assert {r["len"] for r in resumed} == {len(rests[0])}  # type: ignore[arg-type]
    rest = [i for r in rests for i in r]  # type: ignore[attr-defined]
    assert not set(rest) & set(seen)
    assert set(rest) | set(seen) == set(range(N))
    assert len(rest) - len(set(rest)) < 3  # only the padding repeats
    assert {r["epoch"] for r in resumed} == {1}


@pytest.mark.timeout(300)
def test_mixture_two_ranks_then_three_after_resume(tmp_path: Path) -> None:
    sizes = {"a": 1501, "b": 400, "c": 61}
    for name, n in sizes.items():
        write_split_data(tmp_path / name, (struct.pack("<q", i) for i in range(n)), splits=5)
    full = launch(2, str(tmp_path), tmp_path, "full", MIX_JOB)
    resumed = launch(3, str(tmp_path), tmp_path, "resume", MIX_JOB)
    assert [r["world_size"] for r in full + resumed] == [2, 2, 3, 3, 3]
    mix = Mixture([str(tmp_path / x) for x in sizes], [0.6, 0.3, 0.1], seed=5)
    assert len({r["len"] for r in resumed}) == 1
    seen = [tuple(x) for r in full for x in r["read"][:240]]  # type: ignore[index]
    rest = [tuple(x) for r in resumed for x in r["read"]]  # type: ignore[attr-defined]
    assert {len(r["read"]) for r in resumed} == {resumed[0]["len"]}  # type: ignore[arg-type]
    # Per source, the epoch's records: those before and after the resume together are
    # the uninterrupted epoch's (but for the fewer than 3 positions carried on), with
    # no record of a source twice within one of its epochs.
    src, ep, idx = mix.locate(range(mix.epoch_length))
    binwise = [  # record ids in bin-space key order
        [struct.unpack("<q", r)[0] for r in SplitDataLoader(tmp_path / x).iterate_binwise()]
        for x in sizes
    ]
    expected = sorted(
        (s, binwise[s][k])
        for s in range(3)
        for e in set(ep[src == s].tolist())
        for k in mix.keys(s, e, idx[(src == s) & (ep == e)])
    )
    got = sorted(seen + rest)
    assert 0 <= len(expected) - len(got) < 3
    assert not Counter(got) - Counter(expected)
    state = json.loads((tmp_path / "mix_state.json").read_text())
    assert audit(mix, states=[state], records=True).ok

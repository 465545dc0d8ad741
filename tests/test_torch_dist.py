"""A real multi-process torch.distributed job (gloo on 127.0.0.1): coverage, equal
lengths, and a resume mid-epoch on another world size (2 ranks, then 3)."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from splitdask import write_split_data

JOB = Path(__file__).with_name("_dist_job.py")
N = 3001  # not a multiple of 2 or 3: padding is exercised


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(world: int, data: str, out: Path, phase: str) -> list[dict[str, object]]:
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
        cmd = [sys.executable, str(JOB), data, str(out), phase]
        procs.append(subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    result: list[dict[str, object]] = json.loads((out / f"{phase}.json").read_text())
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

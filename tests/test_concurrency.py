"""Many writers at once, and readers that outlive them: nothing lost, nothing broken.

Writers are real processes (and threads) appending and overwriting one dataset on
local disk and on the S3 server; every record names its writer, write and position,
so the final dataset can be checked record for record against what the writers
were told was committed.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from splitdask import (
    CommitConflictError,
    SnapshotExpiredError,
    SplitDataLoader,
    SplitWriter,
    gc,
    write_split_data,
)
from splitdask._dataset._snapshot import read_manifest
from splitdask._store import open_store
from splitdask._write._binwrite import write_bin_part
from splitdask._write._changes import AddRecords
from splitdask._write._commit import Transaction

ROOT = Path(__file__).resolve().parents[1]

# A writer process: `appends` writes of `size` records; every `overwrite_every`-th
# write (if > 0) replaces the dataset. Prints one JSON line per committed write.
_WRITER = textwrap.dedent(
    """
    import json, sys
    from splitdask import write_split_data
    url, who, appends, size, every, so = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \\
        int(sys.argv[4]), int(sys.argv[5]), json.loads(sys.argv[6])
    for w in range(appends):
        overwrite = every > 0 and w % every == every - 1
        recs = [f"{who}:{w}:{i}".encode() for i in range(size)]
        info = write_split_data(url, recs, splits=4, start_clean=overwrite, storage_options=so)
        print(json.dumps({"who": who, "write": w, "overwrite": overwrite, "n": size,
                          "generation": info.generation}), flush=True)
    """
)


def _run_writers(
    url: str, so: dict[str, Any], procs: int, appends: int, size: int, every: int
) -> list[dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _WRITER,
                url,
                str(p),
                str(appends),
                str(size),
                str(every),
                json.dumps(so),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for p in range(procs)
    ]
    done = []
    for child in children:
        out, err = child.communicate(timeout=240)
        assert child.returncode == 0, err
        done += [json.loads(line) for line in out.splitlines()]
    return done


def _expected(done: list[dict[str, Any]]) -> set[bytes]:
    """What must be in the dataset: the last overwrite and every append after it."""
    gens = [d["generation"] for d in done]
    assert len(set(gens)) == len(gens), "two writes reported the same generation"
    last = max((d["generation"] for d in done if d["overwrite"]), default=0)
    keep = [d for d in done if d["generation"] >= last]
    return {f"{d['who']}:{d['write']}:{i}".encode() for d in keep for i in range(d["n"])}


def _check(url: str, so: dict[str, Any], done: list[dict[str, Any]]) -> None:
    loader = SplitDataLoader(url, storage_options=so)
    got = list(loader)
    assert len(got) == len(set(got)), "a record is in the dataset twice"
    assert set(got) == _expected(done)
    loader.verify()  # no manifest names a missing part


@pytest.mark.timeout(300)
def test_processes_appending_locally_lose_nothing(tmp_path: Path) -> None:
    url = str(tmp_path / "ds")
    done = _run_writers(url, {}, procs=4, appends=15, size=25, every=0)
    assert len(done) == 60  # every append committed (local commits wait for the lock)
    _check(url, {}, done)
    assert len(SplitDataLoader(url)) == 60 * 25


@pytest.mark.timeout(300)
def test_processes_appending_and_overwriting_locally(tmp_path: Path) -> None:
    url = str(tmp_path / "ds")
    done = _run_writers(url, {}, procs=4, appends=10, size=20, every=4)
    _check(url, {}, done)


@pytest.mark.timeout(300)
def test_processes_appending_and_overwriting_on_s3(
    s3_url: str, s3_storage_options: dict[str, Any]
) -> None:
    done = _run_writers(s3_url, s3_storage_options, procs=3, appends=8, size=25, every=0)
    assert len(done) == 24
    _check(s3_url, s3_storage_options, done)
    more = _run_writers(s3_url, s3_storage_options, procs=3, appends=6, size=10, every=3)
    _check(s3_url, s3_storage_options, done + more)


def test_interleaved_writers_both_commit(tmp_path: Path) -> None:
    """Both writers began on the same commit; the second re-bases instead of losing the first."""
    url = str(tmp_path / "ds")
    write_split_data(url, [b"base"] * 10, splits=2)
    a = SplitWriter(url, 2)
    b = SplitWriter(url, 2)
    a.write_many([b"a"] * 25)
    b.write_many([b"b"] * 35)
    ia, ib = a.commit(), b.commit()
    assert (ia.generation, ib.generation) == (2, 3)
    assert (ia.num_records, ib.num_records) == (35, 70)
    assert list(SplitDataLoader(url)) == [b"base"] * 10 + [b"a"] * 25 + [b"b"] * 35


def test_threads_committing_at_once(tmp_path: Path) -> None:
    url = str(tmp_path / "ds")
    write_split_data(url, [b"x"], splits=4)
    barrier = threading.Barrier(6)
    infos: list[Any] = []

    def write(k: int) -> None:
        with SplitWriter(url, 4) as w:
            w.write_many([f"{k}:{i}".encode() for i in range(50)])
            barrier.wait(30)  # all six commit together
        infos.append(w.info)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(infos) == 6
    assert sorted(i.generation for i in infos) == list(range(2, 8))
    assert len(SplitDataLoader(url)) == 1 + 6 * 50


def test_create_that_lost_the_race_is_refused(tmp_path: Path) -> None:
    url = str(tmp_path / "ds")
    mine = SplitWriter(url, 2, mode="x")
    write_split_data(url, [b"theirs"], splits=1)
    mine.write(b"mine")
    with pytest.raises(CommitConflictError, match="another writer created"):
        mine.commit()
    assert list(SplitDataLoader(url)) == [b"theirs"]
    parts = {p.path for p in SplitDataLoader(url).snapshot.parts}
    assert {f"bins/{n}" for n in os.listdir(tmp_path / "ds" / "bins")} == parts


# -- readers never break ----------------------------------------------------------------


def _overwrite_in_another_process(url: str, so: dict[str, Any]) -> None:
    code = (
        "import json, sys; from splitdask import write_split_data; "
        "write_split_data(sys.argv[1], [b'new'] * 5, splits=2, start_clean=True, "
        "storage_options=json.loads(sys.argv[2]))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(
        [sys.executable, "-c", code, url, json.dumps(so)], check=True, env=env, timeout=120
    )


@pytest.mark.parametrize("where", ["local", "s3"])
def test_reader_outlives_an_overwrite(
    where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if where == "s3":
        url, so = request.getfixturevalue("s3_url"), request.getfixturevalue("s3_storage_options")
    else:
        url, so = str(tmp_path / "ds"), {}
    records = [f"{i:04d}".encode() * 8 for i in range(800)]
    write_split_data(url, records, splits=8, storage_options=so)
    loader = SplitDataLoader(url, storage_options=so)
    it: Iterator[bytes] = loader.iterate_binwise(shuffle=True, seed=3)
    head = [next(it) for _ in range(200)]
    _overwrite_in_another_process(url, so)
    rest = list(it)  # the same snapshot, to its end
    assert sorted(head + rest) == sorted(records)
    assert loader[799] == records[799]
    assert list(SplitDataLoader(url, storage_options=so)) == [b"new"] * 5
    # Past the retention, the old snapshot's parts go, and its reader says so.
    gc(url, so, older_than=0)
    fresh = SplitDataLoader(url, storage_options=so)
    assert list(fresh) == [b"new"] * 5
    loader.close()  # drop the maps: the next read must open the (now removed) parts
    with pytest.raises(SnapshotExpiredError, match=r"this reader.s version \(1\) has expired"):
        list(loader.iterate_binwise())


@pytest.mark.timeout(120)
def test_many_parts_read_under_a_small_descriptor_limit(tmp_path: Path) -> None:
    url = str(tmp_path / "ds")
    store = open_store(url)
    tx = Transaction.begin(store, "x")
    parts = {b: [] for b in range(4)}  # type: dict[int, list[Any]]
    for i in range(1200):  # every record its own part
        parts[i % 4] += write_bin_part(store, i % 4, [f"{i:05d}".encode()])
    deals = [(1, (i % 4,)) for i in range(1200)]
    tx.commit(AddRecords("x", 4, parts, deals))
    code = textwrap.dedent(
        """
        import resource, sys
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))
        from splitdask import SplitDataLoader
        loader = SplitDataLoader(sys.argv[1])
        assert len(loader.snapshot.parts) == 1200
        assert [loader[i] for i in range(1200)] == [b"%05d" % i for i in range(1200)]
        assert sorted(loader.iterate_binwise(shuffle=True, seed=1)) == sorted(loader)
        assert len(list(loader.iterate_binwise())) == 1200
        print("ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code, url], capture_output=True, text=True, env=env, timeout=100
    )
    assert out.stdout.strip() == "ok", out.stderr
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] > 128  # the limit was the child's


# -- leftovers ---------------------------------------------------------------------------


def _killed_write(url: str) -> None:
    code = textwrap.dedent(
        """
        import sys
        from splitdask import SplitWriter
        w = SplitWriter(sys.argv[1], 4, part_max_bytes=1 << 16)
        w.write_many(bytes(1000) for _ in range(2000))  # parts renamed, nothing committed
        w._batches.flush()
        print("ready", flush=True)
        sys.stdin.readline()
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    finally:
        proc.kill()
        proc.wait(30)


def test_killed_writers_leftovers_are_collected(tmp_path: Path) -> None:
    url = str(tmp_path / "ds")
    write_split_data(url, [b"keep"] * 10, splits=4)
    bins = tmp_path / "ds" / "bins"
    committed = set(os.listdir(bins))
    for _ in range(3):
        _killed_write(url)
    left = set(os.listdir(bins)) - committed
    assert left  # parts and temp files of the killed writes
    # Younger than the grace period: a write still running may own them.
    assert gc(url).removed == ()
    write_split_data(url, [b"more"], splits=4)
    assert set(os.listdir(bins)) >= left
    # Past it, gc removes them (so does the housekeeping of every SWEEP_EVERY-th
    # commit: not every commit, whose cost would then grow with the files).
    assert set(gc(url, older_than=0).orphans) == {f"bins/{n}" for n in left}
    assert not left & set(os.listdir(bins))
    write_split_data(url, [b"last"], splits=4)
    assert list(SplitDataLoader(url)) == [b"keep"] * 10 + [b"more", b"last"]


def test_gc_removes_exactly_the_old_unreferenced_files(tmp_path: Path) -> None:
    url = str(tmp_path / "ds")
    write_split_data(url, [b"a"] * 20, splits=4)
    first = {p.path for p in SplitDataLoader(url).snapshot.parts}
    write_split_data(url, [b"b"] * 20, splits=4, start_clean=True)
    _killed_write(url)
    manifest = read_manifest(open_store(url))
    assert manifest is not None
    live = {p.path for p in manifest.parts()}
    on_disk = {f"bins/{n}" for n in os.listdir(tmp_path / "ds" / "bins")}
    dry = gc(url, older_than=0, dry_run=True)
    # Retired: what only the expired version 1 named; the killed write's parts,
    # which no version ever named, are orphans.
    assert set(dry.retired) == first
    assert set(dry.orphans) == on_disk - live - first
    assert dry.versions == (1,)
    assert set(dry.removed) == on_disk - live
    assert {f"bins/{n}" for n in os.listdir(tmp_path / "ds" / "bins")} == on_disk  # dry run
    report = gc(url, older_than=0)
    assert set(report.removed) == on_disk - live
    assert report.bytes > 0
    assert {f"bins/{n}" for n in os.listdir(tmp_path / "ds" / "bins")} == live
    assert list(SplitDataLoader(url)) == [b"b"] * 20

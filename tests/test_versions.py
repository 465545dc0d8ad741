"""Versions: every commit makes one, readers pin one, gc keeps what retention says.

Real processes (spawned, and concurrent writers), a real S3 server (moto) for the
conditional create, and a hypothesis state machine over appends, overwrites,
compactions and gc with readers pinned to every version.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import splitdask
from splitdask import (
    FormatVersionError,
    SnapshotExpiredError,
    SplitDataLoader,
    compact,
    gc,
    write_split_data,
)
from splitdask._dataset._snapshot import read_manifest
from splitdask._format import MANIFEST_NAME, Manifest
from splitdask._format._log import LOG_DIR, STUB, checkpoint_name, entry_name
from splitdask._store import open_store
from splitdask._write._retention import CHECKPOINT_EVERY
from splitdask.cli import cli


def recs(prefix: str, n: int) -> list[bytes]:
    return [f"{prefix}{i}".encode() for i in range(n)]


def test_every_commit_is_a_version_that_opens_as_it_was(tmp_path: Path) -> None:
    ds = str(tmp_path / "ds")
    write_split_data(ds, recs("a", 10), splits=3)
    write_split_data(ds, recs("b", 4), tag="nightly", keep_versions=10)
    write_split_data(ds, recs("c", 6), mode="w", splits=2, keep_versions=10)
    assert [list(SplitDataLoader(ds, version=v)) for v in (1, 2, 3)] == [
        recs("a", 10),
        recs("a", 10) + recs("b", 4),
        recs("c", 6),
    ]
    assert SplitDataLoader(ds).version == 3
    assert SplitDataLoader(ds, version="nightly").version == 2
    got = [
        (v.version, v.op, v.num_records, v.records_written, v.tag) for v in splitdask.versions(ds)
    ]
    assert got == [
        (1, "create", 10, 10, None),
        (2, "append", 14, 4, "nightly"),
        (3, "overwrite", 6, 6, None),
    ]
    assert Path(f"{ds}/{MANIFEST_NAME}").read_bytes() == STUB


def test_version_errors_say_what_is_wrong(tmp_path: Path) -> None:
    ds = str(tmp_path / "ds")
    write_split_data(ds, recs("a", 3), splits=1)
    with pytest.raises(ValueError, match=r"has no version 5: the newest is 1"):
        SplitDataLoader(ds, version=5)
    with pytest.raises(ValueError, match=r"no version tagged 'x'"):
        SplitDataLoader(ds, version="x")
    with pytest.raises(ValueError, match=r"version must be >= 1"):
        SplitDataLoader(ds, version=0)
    with pytest.raises(TypeError, match=r"version must be an int or a tag"):
        SplitDataLoader(ds, version=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"tag must be a non-empty string that is not a number"):
        write_split_data(ds, recs("b", 1), tag="12")
    with pytest.raises(ValueError, match=r"keep_versions must be an integer >= 1"):
        write_split_data(ds, recs("b", 1), keep_versions=0)
    assert len(SplitDataLoader(ds)) == 3  # nothing refused was committed


def _read_all(loader: SplitDataLoader) -> list[bytes]:
    return list(loader)


def test_a_pickled_loader_reads_its_version_in_a_spawned_process(tmp_path: Path) -> None:
    ds = str(tmp_path / "ds")
    write_split_data(ds, recs("a", 3), splits=2)
    loader = SplitDataLoader(ds)
    blob = pickle.dumps(loader)
    write_split_data(ds, recs("b", 1), keep_versions=5)  # an append in between
    write_split_data(ds, recs("c", 2), mode="w", keep_versions=5)  # and an overwrite
    assert pickle.loads(blob).version == 1
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.apply(_read_all, (loader,)) == recs("a", 3)
    assert list(SplitDataLoader(ds)) == recs("c", 2)


def test_gc_keeps_what_retention_says_and_expired_versions_say_so(tmp_path: Path) -> None:
    ds = str(tmp_path / "ds")
    for k in range(4):
        write_split_data(ds, recs(f"r{k}-", 5), splits=2, keep_versions=10)
    pinned = SplitDataLoader(ds, version=2)
    report = gc(ds, older_than=3600, keep_versions=1)
    assert report.versions == ()
    assert report.oldest_kept == 1
    report = gc(ds, older_than=0, keep_versions=2)
    assert report.versions == (1, 2)
    assert report.oldest_kept == 3
    assert [v.version for v in splitdask.versions(ds)] == [3, 4]
    with pytest.raises(
        SnapshotExpiredError, match=r"version 2 is no longer kept.*oldest version kept is 3"
    ):
        SplitDataLoader(ds, version=2)
    # Appends only add parts: the pinned loader's parts are all still named.
    assert len(pinned) == 10
    assert list(pinned) == recs("r0-", 5) + recs("r1-", 5)
    assert list(SplitDataLoader(ds, version=3)) == [r for k in range(3) for r in recs(f"r{k}-", 5)]
    # The oldest kept version opens alone: a checkpoint was written at it.
    assert os.path.exists(f"{ds}/{checkpoint_name(3)}")
    assert not os.path.exists(f"{ds}/{entry_name(2)}")


def test_gc_removes_the_parts_only_expired_versions_named(tmp_path: Path) -> None:
    ds = str(tmp_path / "ds")
    write_split_data(ds, recs("old", 8), splits=2)
    old = SplitDataLoader(ds)
    old_parts = {p.path for p in old.snapshot.parts}
    write_split_data(ds, recs("new", 3), mode="w", splits=1, keep_versions=5)
    assert list(old) == recs("old", 8)  # kept: version 1 is within its retention
    report = gc(ds, older_than=0)
    assert set(report.retired) == old_parts
    assert not any(os.path.exists(f"{ds}/{p}") for p in old_parts)
    with pytest.raises(SnapshotExpiredError, match=r"version 1 is no longer kept.*kept is 2"):
        _ = pickle.loads(pickle.dumps(old)).version  # a worker given the old loader
    assert list(SplitDataLoader(ds)) == recs("new", 3)


def test_gc_removes_temp_files_of_killed_commits_past_the_grace_period(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    write_split_data(str(ds), recs("a", 4), splits=2)
    leftovers = [
        ds / f"{MANIFEST_NAME}.tmp-0123456789ab",  # a pre-version commit's temp manifest
        ds / LOG_DIR / f".{Path(entry_name(2)).name}.tmp-0123456789ab",
        ds / "bins" / ".00001-0123456789abcdef0123.bin.tmp",
    ]
    for f in leftovers:
        f.write_bytes(b"x")
    young = gc(str(ds), older_than=3600, dry_run=True)
    assert young.orphans == ()  # they may belong to a commit still running
    old = time.time() - 7200
    for f in leftovers:
        os.utime(f, (old, old))
    report = gc(str(ds), older_than=3600)
    assert sorted(report.orphans) == sorted(str(f.relative_to(ds)) for f in leftovers)
    assert not any(f.exists() for f in leftovers)
    assert list(SplitDataLoader(str(ds))) == recs("a", 4)


def test_checkpoints_bound_the_entries_an_open_replays(tmp_path: Path) -> None:
    ds = str(tmp_path / "ds")
    for k in range(CHECKPOINT_EVERY + 3):
        write_split_data(ds, [f"r{k}".encode()], splits=1, keep_versions=100)
    names = sorted(os.listdir(f"{ds}/{LOG_DIR}"))
    assert Path(checkpoint_name(CHECKPOINT_EVERY)).name in names
    # Without the entries before the checkpoint the newest version still opens.
    for v in range(1, CHECKPOINT_EVERY + 1):
        os.remove(f"{ds}/{entry_name(v)}")
    assert list(SplitDataLoader(ds)) == [f"r{k}".encode() for k in range(CHECKPOINT_EVERY + 3)]
    with pytest.raises(SnapshotExpiredError, match=f"oldest version kept is {CHECKPOINT_EVERY}"):
        SplitDataLoader(ds, version=3)


def test_a_damaged_checkpoint_or_entry_is_refused_naming_it(tmp_path: Path) -> None:
    ds = str(tmp_path / "ds")
    for k in range(CHECKPOINT_EVERY + 1):
        write_split_data(ds, [f"r{k}".encode()], splits=1)
    ckpt = f"{ds}/{checkpoint_name(CHECKPOINT_EVERY)}"
    good = Path(ckpt).read_bytes()
    data = bytearray(good)
    data[100] ^= 1
    Path(ckpt).write_bytes(bytes(data))
    from splitdask._dataset import _versions

    _versions._BUILT.clear()
    with pytest.raises(
        splitdask.CorruptDatasetError, match=r"\.ckpt: checkpoint checksum mismatch"
    ):
        SplitDataLoader(ds)
    Path(ckpt).write_bytes(good)
    entry = f"{ds}/{entry_name(CHECKPOINT_EVERY + 1)}"
    Path(entry).write_text('{"format":"splitdask","version":4,"entry":3}')
    _versions._ENTRIES.clear()
    with pytest.raises(splitdask.CorruptDatasetError, match=r"00017\.json: "):
        SplitDataLoader(ds, version=CHECKPOINT_EVERY + 1)


def test_a_dataset_from_before_versions_reads_and_converts_on_write(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    write_split_data(str(ds), recs("a", 6), splits=2)
    write_split_data(str(ds), recs("b", 2))
    manifest = read_manifest(open_store(str(ds)))
    assert manifest is not None
    # As splitdask before versions left it: one JSON manifest, no log.
    shutil.rmtree(ds / LOG_DIR)
    (ds / MANIFEST_NAME).write_bytes(manifest.to_json())
    from splitdask._dataset import _versions

    _versions._BUILT.clear()
    assert SplitDataLoader(str(ds)).version == 2
    assert [(v.version, v.op) for v in splitdask.versions(str(ds))] == [(2, "convert")]
    write_split_data(str(ds), recs("c", 1), keep_versions=5)
    assert [(v.version, v.op) for v in splitdask.versions(str(ds))] == [
        (2, "convert"),
        (3, "append"),
    ]
    assert list(SplitDataLoader(str(ds), version=2)) == list(SplitDataLoader(str(ds)))[:8]
    assert (ds / MANIFEST_NAME).read_bytes() == STUB
    # A reader from before versions parses the stub as a manifest: it refuses it by version.
    with pytest.raises(FormatVersionError, match=r"manifest format version 4"):
        Manifest.check_version(json.loads(STUB), "splitdask.json", (1, 2, 3))


def test_a_stub_of_an_unknown_version_is_refused(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    write_split_data(str(ds), recs("a", 2), splits=1)
    shutil.rmtree(ds / LOG_DIR)
    (ds / MANIFEST_NAME).write_bytes(STUB.replace(b'"version":4', b'"version":7'))
    with pytest.raises(FormatVersionError, match=r"version 7.*reads versions 1, 2, 3, 4"):
        SplitDataLoader(str(ds))


def test_log_command_lists_versions(tmp_path: Path) -> None:
    ds = str(tmp_path / "ds")
    write_split_data(ds, recs("a", 5), splits=2)
    write_split_data(ds, recs("b", 2), tag="v-two")
    result = CliRunner().invoke(cli, ["log", ds])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["version", "committed", "op", "records", "bins", "written", "tag"]
    assert lines[1].split()[0] == "1"
    assert lines[1].split()[3:] == ["create", "5", "2", "+5"]
    assert lines[2].split()[0] == "2"
    assert lines[2].split()[3:] == [
        "append",
        "7",
        "2",
        "+2",
        "v-two",
    ]
    as_json = CliRunner().invoke(cli, ["log", ds, "--json"])
    docs = [json.loads(line) for line in as_json.output.splitlines()]
    assert [(d["version"], d["tag"]) for d in docs] == [(1, None), (2, "v-two")]


def _append_many(url: str, options: dict[str, Any], worker: int, n: int) -> None:
    for k in range(n):
        write_split_data(url, [f"w{worker}-{k}".encode()], splits=1, storage_options=options)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_concurrent_writers_make_one_version_each(
    where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if where == "s3":
        url, options = (
            request.getfixturevalue("s3_url"),
            request.getfixturevalue("s3_storage_options"),
        )
    else:
        url, options = str(tmp_path / "ds"), {}
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(url, options, w, 6)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    got = sorted(SplitDataLoader(url, options))
    assert got == sorted(f"w{w}-{k}".encode() for w in range(3) for k in range(6))
    infos = splitdask.versions(url, options)
    appends = [v for v in infos if v.op in ("create", "append")]
    # 18 commits, each one version, numbered without gaps (compactions in between).
    assert sum(v.records_written for v in appends) == 18
    assert len(appends) == 18
    assert [v.version for v in infos] == list(range(infos[0].version, infos[-1].version + 1))


def test_s3_conditional_create_admits_exactly_one(
    s3_url: str, s3_storage_options: dict[str, Any]
) -> None:
    a, b = open_store(s3_url, s3_storage_options), open_store(s3_url, s3_storage_options)
    assert a.create_exclusive("_log/x.json", b"first")
    assert not b.create_exclusive("_log/x.json", b"second")
    assert b.read_file("_log/x.json") == b"first"


def test_compact_reports_its_own_commit(tmp_path: Path) -> None:
    ds = str(tmp_path / "ds")
    for k in range(3):
        write_split_data(ds, recs(f"a{k}-", 4), splits=2)
    from splitdask._write._compact import _compact_runs, _runs

    store = open_store(ds)
    stale = read_manifest(store)
    assert stale is not None
    picked = {b: _runs(parts, 1 << 30, 2) for b, parts in enumerate(stale.bins)}
    first = compact(ds)  # another compaction of the same runs commits first
    assert first.parts_written == 2
    assert first.version == stale.generation + 1
    committed, ours = _compact_runs(
        store,
        stale,
        {b: r for b, r in picked.items() if r},
        retention=3600,
        retries=3,
        part_max_bytes=1 << 30,
    )
    assert ours == []
    assert committed.generation == first.version
    assert sorted(SplitDataLoader(ds)) == sorted(r for k in range(3) for r in recs(f"a{k}-", 4))


class VersionedDataset(RuleBasedStateMachine):
    """Appends, overwrites, compactions and gc; a reader pinned to every version."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="splitdask-versions-")
        self.url = f"{self.dir}/ds"
        self.models: dict[int, list[bytes]] = {}  # version -> its records, while kept
        self.readers: dict[int, SplitDataLoader] = {}
        self.n = 0

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def _latest(self) -> list[bytes]:
        return self.models[max(self.models)] if self.models else []

    def _commit(self, records: list[bytes], info_version: int) -> None:
        self.models[info_version] = records
        self.readers[info_version] = pickle.loads(pickle.dumps(SplitDataLoader(self.url)))

    @rule(k=st.integers(1, 12), splits=st.sampled_from([None, 1, 3]), overwrite=st.booleans())
    def write(self, k: int, splits: int | None, overwrite: bool) -> None:
        new = [f"r{self.n + i}".encode() for i in range(k)]
        self.n += k
        info = write_split_data(
            self.url, new, splits=splits, mode="w" if overwrite else "a", keep_versions=1000
        )
        self._commit(new if overwrite else self._latest() + new, info.version)

    @rule()
    def compact(self) -> None:
        if self.models:
            info = compact(self.url, keep_versions=1000)
            if info.parts_written:
                self._commit(self._latest(), info.version)

    @rule(keep=st.integers(1, 4))
    def collect(self, keep: int) -> None:
        if self.models:
            report = gc(self.url, older_than=0, keep_versions=keep)
            for v in [v for v in self.models if v < report.oldest_kept]:
                del self.models[v]

    @invariant()
    def every_kept_version_reads_as_committed(self) -> None:
        for v, model in self.models.items():
            assert list(SplitDataLoader(self.url, version=v)) == model
            assert list(self.readers[v]) == model
        if self.models:
            assert [i.version for i in splitdask.versions(self.url)] == sorted(self.models)

    @invariant()
    def collected_versions_say_they_expired(self) -> None:
        for v in [v for v in self.readers if v not in self.models]:
            with pytest.raises(SnapshotExpiredError, match=f"version {v} is no longer kept"):
                SplitDataLoader(self.url, version=v)


VersionedDataset.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_versioned_dataset = VersionedDataset.TestCase


def _everything(ds: str) -> tuple[Any, ...]:
    loader = SplitDataLoader(ds)
    n = len(loader)
    idx = [n - 1, 0, n // 2, 3]
    return (
        n,
        loader.num_bins,
        loader.bin_counts,
        [loader[i] for i in range(n)],
        loader[idx],
        list(loader.read_batch(idx)),
        list(loader.iterate_binwise(shuffle=True, seed=3)),
        [loader.read_bin(b) for b in range(loader.num_bins)],
        loader.describe().num_parts,
        loader.verify().parts,
    )


def test_a_checkpoint_reads_exactly_as_the_manifest_it_holds(tmp_path: Path) -> None:
    ds = str(tmp_path / "ds")
    write_split_data(ds, recs("a", 50), splits=4)
    write_split_data(ds, recs("z", 30), splits=3, compression="zstd")
    for k in range(9):  # small appends: new parts, then an automatic compaction
        write_split_data(ds, recs(f"s{k}-", 3))
    write_split_data(ds, recs("w", 7), splits=6)  # more bins than before
    from splitdask._dataset import _versions

    before = _everything(ds)
    assert not any(n.endswith(".ckpt") for n in os.listdir(f"{ds}/{LOG_DIR}"))
    gc(ds, older_than=0)  # leaves one version, as a checkpoint
    _versions._BUILT.clear()
    assert [n for n in os.listdir(f"{ds}/{LOG_DIR}") if n.endswith(".ckpt")]
    manifest = read_manifest(open_store(ds))
    assert manifest is not None
    assert type(manifest.bins).__name__ == "PartTable"
    assert _everything(ds) == before
    # And after entries replayed on the checkpoint: edited bins over the table.
    write_split_data(ds, recs("after", 5), splits=2)
    _versions._BUILT.clear()
    manifest = read_manifest(open_store(ds))
    assert manifest is not None
    assert type(manifest.bins).__name__ == "EditedBins"
    assert _everything(ds)[3] == before[3] + recs("after", 5)


def test_opening_on_s3_fetches_a_checkpoint_and_the_newest_entries(
    s3_url: str, s3_storage_options: dict[str, Any], s3_requests: Any
) -> None:
    from splitdask._dataset import _versions

    for k in range(CHECKPOINT_EVERY + 4):
        write_split_data(s3_url, [f"r{k}".encode()], splits=1, storage_options=s3_storage_options)
    latest = splitdask.versions(s3_url, s3_storage_options)[-1].version  # with compactions
    checkpoint = latest // CHECKPOINT_EVERY * CHECKPOINT_EVERY
    _versions._BUILT.clear()
    _versions._ENTRIES.clear()
    m = s3_requests.mark()
    assert len(SplitDataLoader(s3_url, storage_options=s3_storage_options)) == CHECKPOINT_EVERY + 4
    got = [(r.method, r.path.rsplit("/", 1)[-1]) for r in s3_requests.since(m)]
    assert got[0] == ("GET", s3_url.split("/")[2])  # one LIST of _log/, first
    assert sorted(got[1:]) == sorted(
        ("GET", Path(name).name)
        for name in [checkpoint_name(checkpoint)]
        + [entry_name(v) for v in range(checkpoint + 1, latest + 1)]
    )


def _write_in_a_new_process(url: str, records: list[bytes]) -> int:
    return write_split_data(url, records, splits=1).version


def test_a_dataset_written_again_elsewhere_is_not_mixed_with_what_this_process_kept(
    tmp_path: Path,
) -> None:
    ds = str(tmp_path / "ds")
    write_split_data(ds, recs("a", 3), splits=1)  # this process keeps version 1
    shutil.rmtree(ds)
    with multiprocessing.get_context("spawn").Pool(1) as pool:  # another writes it anew
        assert pool.apply(_write_in_a_new_process, (ds, recs("b", 2))) == 1
    info = write_split_data(ds, recs("c", 1), splits=1)  # and this one appends
    assert info.version == 2
    from splitdask._dataset import _versions

    _versions._BUILT.clear()
    _versions._ENTRIES.clear()  # as a new process sees it
    assert list(SplitDataLoader(ds)) == recs("b", 2) + recs("c", 1)


def test_commits_expire_versions_past_their_retention_on_their_own(tmp_path: Path) -> None:
    ds = str(tmp_path / "ds")
    write_split_data(ds, recs("old", 6), splits=2)
    old = {p.path for p in SplitDataLoader(ds).snapshot.parts}
    write_split_data(ds, recs("new", 2), splits=1, mode="w", retention=0)
    # The overwrite expired version 1 at once: its entry and its parts are gone.
    assert [v.version for v in splitdask.versions(ds)] == [2]
    assert not any(os.path.exists(f"{ds}/{p}") for p in old)
    with pytest.raises(SnapshotExpiredError, match="version 1 is no longer kept"):
        SplitDataLoader(ds, version=1)
    # Appends replace nothing: the log is cut at a checkpoint (every 16 versions, or
    # one written where a compaction replaced parts), so fewer than 16 versions stay.
    for k in range(CHECKPOINT_EVERY + 2):
        write_split_data(ds, [f"a{k}".encode()], splits=1, retention=0)
    kept = [v.version for v in splitdask.versions(ds)]
    assert kept[-1] == SplitDataLoader(ds).version > CHECKPOINT_EVERY + 2
    assert len(kept) < CHECKPOINT_EVERY
    assert os.path.exists(f"{ds}/{checkpoint_name(kept[0])}")
    assert list(SplitDataLoader(ds)) == recs("new", 2) + [
        f"a{k}".encode() for k in range(CHECKPOINT_EVERY + 2)
    ]

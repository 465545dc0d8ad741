"""The ``splitdask`` command against real datasets on local disk and on the S3 server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import splitdataloader
from _cli_helpers import ENV, ok, options, run
from _manifests import log_files, manifest_doc

from splitdask import SnapshotExpiredError, SplitDataLoader, write_split_data
from splitdask._format import part_name
from splitdask._format._log import LOG_FORMAT_VERSION

RECORDS = [b"rec %d " % i + bytes([i % 256]) * (i % 7) for i in range(300)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("cli") / "ds")
    write_split_data(path, RECORDS[:200], splits=4, metadata={"source": "test"})
    write_split_data(path, RECORDS[200:], splits=4)  # a second commit: generation 2
    return path


def test_info_text_and_json(dataset: str) -> None:
    doc = json.loads(ok("info", dataset, "--json"))
    loader = SplitDataLoader(dataset)
    assert doc["num_records"] == 300 == len(loader)
    assert doc["num_bins"] == 4
    assert doc["num_parts"] == len(loader.snapshot.parts) == 8
    assert doc["generation"] == 2
    assert doc["format"] == "splitdask"
    assert doc["format_version"] == LOG_FORMAT_VERSION  # what this library writes: a log
    assert doc["payload_bytes"] == sum(map(len, RECORDS))
    assert doc["stored_bytes"] == sum(p.size for p in loader.snapshot.parts)
    assert doc["bin_counts"] == loader.bin_counts
    assert doc["bin_balance"]["min"] == min(loader.bin_counts)
    assert doc["bin_balance"]["max"] == max(loader.bin_counts)
    assert doc["bin_balance"]["mean"] == 75.0
    assert doc["metadata"] == {"source": "test"}
    text = ok("info", dataset).decode()
    assert "records:     300\n" in text
    assert "generation:  2\n" in text
    assert "min 75 / mean 75.0 / max 75" in text


def test_info_of_a_legacy_dataset(tmp_path: Path) -> None:
    splitdataloader.write_split_data(str(tmp_path / "old"), RECORDS[:50], splits=3)
    doc = json.loads(ok("info", str(tmp_path / "old"), "--json"))
    assert (doc["format"], doc["generation"], doc["num_records"], doc["num_bins"]) == (
        "splitdataloader",
        None,
        50,
        3,
    )


def test_records_to_stdout(dataset: str) -> None:
    assert ok("head", dataset, "-n", "5") == b"".join(RECORDS[:5])
    assert ok("head", dataset, "-n", "1000") == b"".join(RECORDS)
    assert ok("head", dataset, "-n", "2", "--hex") == b"".join(
        r.hex().encode() + b"\n" for r in RECORDS[:2]
    )
    assert ok("cat", dataset, "7", "-1", "0") == RECORDS[7] + RECORDS[-1] + RECORDS[0]
    lines = ok("cat", dataset, "3", "4", "--json").splitlines()
    assert [json.loads(x).encode("utf-8", "surrogateescape") for x in lines] == RECORDS[3:5]
    assert (
        ok("cat", dataset, "5", "--text") == RECORDS[5].decode("utf-8", "replace").encode() + b"\n"
    )
    out = run("cat", dataset, "300")
    assert out.returncode == 2  # usage: no such index
    assert b"index 300 is out of range" in out.stderr


def test_sample_is_seeded_and_without_replacement(dataset: str) -> None:
    first = ok("sample", dataset, "-n", "20", "--seed", "3", "--hex").splitlines()
    assert first == ok("sample", dataset, "-n", "20", "--seed", "3", "--hex").splitlines()
    assert first != ok("sample", dataset, "-n", "20", "--seed", "4", "--hex").splitlines()
    got = [bytes.fromhex(x.decode()) for x in first]
    assert len(set(got)) == 20
    assert set(got) <= set(RECORDS)
    out = run("sample", dataset, "-n", "301")
    assert out.returncode == 2  # usage
    assert b"cannot sample 301 records from a dataset of 300" in out.stderr


def test_usage_errors_and_missing_datasets(tmp_path: Path, dataset: str) -> None:
    assert run("head").returncode == 2
    assert run("head", dataset, "--no-such-option").returncode == 2
    assert len(ok("sample", dataset, "--json").splitlines()) == 10  # -n as head's
    assert run("gc", dataset, "--older-than", "soon").returncode == 2
    out = run("info", str(tmp_path / "nothing"))
    assert out.returncode == 3  # not found
    assert out.stderr.decode().startswith("splitdask: error: no splitdask dataset at")
    assert b"Traceback" not in out.stderr
    for cmd in ("info", "verify", "head", "cat", "sample", "import", "export", "gc", "compact"):
        help_text = ok(cmd, "--help").decode()
        assert "Example" in help_text
        assert "splitdask " + cmd in help_text
        if cmd != "export":
            assert "--storage-option" in help_text


def test_verify_exit_codes_name_every_damaged_file(tmp_path: Path) -> None:
    path = tmp_path / "ds"
    write_split_data(path, RECORDS, splits=3)
    out = run("verify", str(path))
    assert out.returncode == 0
    assert b"intact (3 parts" in out.stdout
    parts = [p.path for p in SplitDataLoader(path).snapshot.parts]
    with open(path / parts[0], "r+b") as f:
        f.truncate(20)
    with open(path / parts[2], "r+b") as f:
        f.seek(12)
        f.write(b"X")
    out = run("verify", str(path))
    assert out.returncode == 4  # damaged
    err = out.stderr.decode()
    assert parts[0] in err
    assert "truncated" in err
    assert parts[2] in err
    assert "checksum mismatch" in err
    assert parts[1] not in err


def test_verify_shows_progress_when_asked(tmp_path: Path) -> None:
    write_split_data(tmp_path / "ds", RECORDS, splits=3)
    out = run("verify", str(tmp_path / "ds"), "--progress")
    assert out.returncode == 0
    err = out.stderr.decode()
    assert "verifying" in err
    assert "300/300" in err
    assert "MB/s" in err
    assert run("verify", str(tmp_path / "ds")).stderr == b""  # not a terminal: no bar


def test_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    write_split_data(tmp_path / "ds", [b"x" * 1000] * 5000, splits=2)
    proc = subprocess.Popen(
        [sys.executable, "-m", "splitdask", "head", str(tmp_path / "ds"), "-n", "5000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    assert proc.stdout.read(10) == b"x" * 10  # like `| head -c 10`
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0
    assert err == b""


def test_storage_options_and_s3(
    s3_url: str, s3_storage_options: dict[str, Any], tmp_path: Path
) -> None:
    url = f"{s3_url}/train"
    write_split_data(url, RECORDS, splits=5, storage_options=s3_storage_options)
    opts = options(s3_storage_options)
    doc = json.loads(ok("info", url, *opts, "--json"))
    assert (doc["num_records"], doc["num_bins"], doc["urlpath"]) == (300, 5, url)
    assert ok("head", url, *opts, "-n", "3") == b"".join(RECORDS[:3])
    assert ok("cat", url, *opts, "299") == RECORDS[299]
    assert b"intact (5 parts" in ok("verify", url, *opts)
    source_opts = ["-s" if x == "-o" else x for x in opts]
    ok("import", url, str(tmp_path / "copy"), *source_opts, "--bins", "2")
    assert list(SplitDataLoader(tmp_path / "copy")) == RECORDS
    ok("import", str(tmp_path / "copy"), f"{s3_url}/back", *opts, "--bins", "3")
    assert list(SplitDataLoader(f"{s3_url}/back", s3_storage_options)) == RECORDS
    out = run("info", url)  # without the endpoint, a clear error, not a traceback
    assert out.returncode == 1
    assert b"Traceback" not in out.stderr
    bad = run("info", url, "-o", "novalue")
    assert bad.returncode == 2
    assert b"is not KEY=VALUE" in bad.stderr


def _orphan(path: Path, bin_index: int, uid: str, age: float) -> str:
    rel = part_name(bin_index, uid)
    (path / rel).write_bytes(b"leftover of a killed writer")
    t = time.time() - age
    os.utime(path / rel, (t, t))
    return rel


def test_gc_removes_exactly_the_unreferenced_parts_past_the_grace_period(tmp_path: Path) -> None:
    path = tmp_path / "ds"
    write_split_data(path, RECORDS[:100], splits=2)
    replaced = {p.path for p in SplitDataLoader(path).snapshot.parts}
    write_split_data(path, RECORDS, splits=3, start_clean=True)  # version 1 is replaced
    live = {p.path for p in SplitDataLoader(path).snapshot.parts}
    old = _orphan(path, 0, "aa" * 8, age=2 * 3600)
    young = _orphan(path, 1, "bb" * 8, age=60)
    before = {f"bins/{n}" for n in os.listdir(path / "bins")}
    assert before == live | replaced | {old, young}

    dry = json.loads(ok("gc", str(path), "--dry-run", "--json"))
    assert (dry["orphans"], dry["retired"], dry["dry_run"]) == ([old], [], True)
    assert {f"bins/{n}" for n in os.listdir(path / "bins")} == before

    report = json.loads(ok("gc", str(path), "--older-than", "1h", "--json"))
    assert report["orphans"] == [old]
    assert report["retired"] == []
    # Kept: the young orphan (unnamed, younger than the grace period); the replaced
    # parts stay too, as version 1, replaced seconds ago, is kept and names them.
    assert report["kept"] == 1
    assert {f"bins/{n}" for n in os.listdir(path / "bins")} == before - {old}
    assert list(SplitDataLoader(path, version=1)) == RECORDS[:100]

    text = ok("gc", str(path), "--older-than", "30s").decode()  # young orphan: 60 s old
    assert f"removed {young}" in text
    assert sorted(report["orphans"]) != sorted(replaced)
    remaining = {f"bins/{n}" for n in os.listdir(path / "bins")}
    assert remaining == live | replaced  # version 1 was replaced seconds ago: kept

    report = json.loads(ok("gc", str(path), "--older-than", "0", "--json"))
    assert (report["retired"], report["orphans"]) == (sorted(replaced), [])
    assert {f"bins/{n}" for n in os.listdir(path / "bins")} == live
    assert list(SplitDataLoader(path)) == RECORDS
    with pytest.raises(SnapshotExpiredError, match="version 1 "):
        SplitDataLoader(path, version=1)


def test_compact_keeps_every_record_and_shrinks_the_manifest(tmp_path: Path) -> None:
    path = tmp_path / "ds"
    for k in range(0, 300, 43):  # 7 appends: 7 small parts per bin (auto-compaction: 8)
        write_split_data(path, RECORDS[k : k + 43], splits=4)
    before = SplitDataLoader(path)
    manifest_before = len(json.dumps(manifest_doc(path)))
    assert len(before.snapshot.parts) == 28
    out = ok("compact", str(path)).decode()
    assert "compacted" in out
    after = SplitDataLoader(path)
    assert len(after.snapshot.parts) <= after.num_bins == 4
    assert [after[i] for i in range(len(after))] == RECORDS
    assert list(before) == RECORDS  # the old version still reads: its parts are kept
    assert b"intact" in ok("verify", str(path))
    # The compacted version's manifest names far fewer parts,
    assert len(json.dumps(manifest_doc(path))) < manifest_before * 0.6
    ok("gc", str(path), "--older-than", "0")
    # and gc leaves only it in the log (its entry, and a checkpoint to open it from).
    newest = after.version
    assert newest is not None
    assert {int(n.split(".")[0]) for n in log_files(path)} == {newest}
    assert list(SplitDataLoader(path)) == RECORDS

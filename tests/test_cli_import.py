"""``splitdask import`` from every source kind, ``export`` back, and interrupted imports."""

from __future__ import annotations

import gzip
import io
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import splitdataloader
import zstandard
from _cli_helpers import ENV, ok, run
from _manifests import log_files
from conftest import wait_for

from splitdask import SplitDataLoader, write_split_data
from splitdask._format import MANIFEST_NAME

LINES = [b'{"id": %d, "text": "line %d"}' % (i, i) for i in range(500)]
BLOBS = [bytes([i % 251]) * (i % 37) + b"\n\r\0" + b"%d" % i for i in range(120)]


def _records(path: Path | str) -> list[bytes]:
    return list(SplitDataLoader(path))


def _tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_import_a_folder_in_sorted_path_order(tmp_path: Path) -> None:
    src = tmp_path / "src"
    names = sorted(f"{d}/{i:03d}.bin" for d in ("a", "b/c") for i in range(60))
    for k, name in enumerate(names):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(BLOBS[k])
    out = ok("import", str(src), str(tmp_path / "ds"), "--bins", "5").decode()
    assert "imported 120 records" in out
    assert "(files)" in out
    assert _records(tmp_path / "ds") == BLOBS
    assert SplitDataLoader(tmp_path / "ds").num_bins == 5


@pytest.mark.parametrize("suffix", ["", ".gz", ".zst"])
def test_import_lines(tmp_path: Path, suffix: str) -> None:
    data = b"\n".join(LINES[:-1]) + b"\r\n" + LINES[-1] + b"\n"  # one CRLF ending too
    if suffix == ".gz":
        data = gzip.compress(data)
    elif suffix == ".zst":
        data = zstandard.ZstdCompressor().compress(data)
    src = tmp_path / f"train.jsonl{suffix}"
    src.write_bytes(data)
    ok("import", str(src), str(tmp_path / "ds"), "--bins", "3")
    assert _records(tmp_path / "ds") == LINES


def test_import_tar_members_and_webdataset_samples(tmp_path: Path) -> None:
    shards = []
    for s in range(3):
        members = []
        for k in range(s * 10, s * 10 + 10):
            members += [(f"sample{k:04d}.jpg", BLOBS[k]), (f"sample{k:04d}.json", LINES[k])]
        _tar(tmp_path / f"train-{s:03d}.tar", members)
        shards += members
    pattern = str(tmp_path / "train-*.tar")
    ok("import", pattern, str(tmp_path / "members"), "--bins", "4")
    assert _records(tmp_path / "members") == [data for _, data in shards]

    # --codec bytes keeps packing each sample as a small tar (the dict form:
    # tests/test_cli_codec.py).
    args = ("--bins", "4", "--group-by-key", "--codec", "bytes")
    ok("import", pattern, str(tmp_path / "samples"), *args)
    samples = _records(tmp_path / "samples")
    assert len(samples) == 30
    for k, rec in enumerate(samples):
        with tarfile.open(fileobj=io.BytesIO(rec)) as tar:
            got = [(m.name, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]
        assert got == [(f"sample{k:04d}.jpg", BLOBS[k]), (f"sample{k:04d}.json", LINES[k])]

    out = run(
        "import", str(tmp_path / "members"), str(tmp_path / "x"), "--bins", "2", "--group-by-key"
    )
    assert out.returncode == 1
    assert b"--group-by-key groups the members of tar" in out.stderr


def test_import_datasets_legacy_and_splitdask_rebinned(tmp_path: Path) -> None:
    splitdataloader.write_split_data(str(tmp_path / "old"), BLOBS, splits=7)
    ok("import", str(tmp_path / "old"), str(tmp_path / "new"), "--bins", "3")
    assert _records(tmp_path / "new") == BLOBS
    ok("import", str(tmp_path / "new"), str(tmp_path / "rebinned"), "--bins", "11")
    rebinned = SplitDataLoader(tmp_path / "rebinned")
    assert (rebinned.num_bins, list(rebinned)) == (11, BLOBS)


def test_import_refuses_an_existing_target_unless_told(tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_bytes(b"one\ntwo\n")
    ok("import", str(src), str(tmp_path / "ds"), "--bins", "2")
    manifest = (tmp_path / "ds" / MANIFEST_NAME).read_bytes(), log_files(tmp_path / "ds")
    out = run("import", str(src), str(tmp_path / "ds"), "--bins", "2")
    assert out.returncode == 1
    assert b"pass --append" in out.stderr
    assert b"--overwrite" in out.stderr
    assert ((tmp_path / "ds" / MANIFEST_NAME).read_bytes(), log_files(tmp_path / "ds")) == manifest
    ok("import", str(src), str(tmp_path / "ds"), "--append")
    assert _records(tmp_path / "ds") == [b"one", b"two"] * 2
    ok("import", str(src), str(tmp_path / "ds"), "--overwrite")
    assert _records(tmp_path / "ds") == [b"one", b"two"]
    assert run("import", str(src), str(tmp_path / "new")).returncode == 2  # --bins needed
    assert (
        run("import", str(tmp_path / "nope"), str(tmp_path / "new"), "--bins", "2").returncode
        == 3  # not found
    )


def test_import_progress_shows_rates(tmp_path: Path) -> None:
    src = tmp_path / "a.jsonl"
    src.write_bytes(b"\n".join(LINES) + b"\n")
    out = run("import", str(src), str(tmp_path / "ds"), "--bins", "2", "--progress")
    assert out.returncode == 0
    err = out.stderr.decode()
    assert "importing lines" in err
    assert "500" in err
    assert "rec/s" in err
    assert "MB/s" in err


@pytest.mark.parametrize(
    ("fmt", "dest"), [("files", "out"), ("lines", "out.txt.gz"), ("tar", "out.tar")]
)
def test_export_then_import_round_trip(tmp_path: Path, fmt: str, dest: str) -> None:
    records = LINES if fmt == "lines" else BLOBS
    write_split_data(tmp_path / "ds", records, splits=6, shuffle=True, seed=1)
    out = ok("export", str(tmp_path / "ds"), str(tmp_path / dest), "--format", fmt).decode()
    assert f"exported {len(records)} records" in out
    if fmt == "files":
        assert sorted(os.listdir(tmp_path / dest))[:2] == ["00000000.bin", "00000001.bin"]
    ok("import", str(tmp_path / dest), str(tmp_path / "back"), "--bins", "2")
    assert _records(tmp_path / "back") == records


def test_export_lines_refuses_a_record_with_a_newline(tmp_path: Path) -> None:
    write_split_data(tmp_path / "ds", [b"fine", b"two\nlines"], splits=1)
    out = run("export", str(tmp_path / "ds"), str(tmp_path / "out.txt"), "--format", "lines")
    assert out.returncode == 1
    assert b"record 1 holds a line break" in out.stderr
    assert b"--format files" in out.stderr
    assert not (tmp_path / "out.txt").exists()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_import_leaves_the_target_as_it_was(tmp_path: Path, sig: int) -> None:
    target = tmp_path / "ds"
    write_split_data(target, [b"committed %d" % i for i in range(50)], splits=2)
    manifest = (target / MANIFEST_NAME).read_bytes(), log_files(target)  # no new version
    parts_before = set(os.listdir(target / "bins"))
    fifo = tmp_path / "stream.txt"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [sys.executable, "-m", "splitdask", "import", str(fifo), str(target), "--append"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    with open(fifo, "wb") as f:  # blocks until the import opens the stream
        f.write(b"streamed record\n" * 40000)  # > 4,096 per bin: parts are being written
        f.flush()
        wait_for(lambda: set(os.listdir(target / "bins")) != parts_before, "import writing parts")
        proc.send_signal(sig)  # mid-import: the stream is still open
        proc.wait(timeout=60)
    assert proc.returncode != 0
    assert ((target / MANIFEST_NAME).read_bytes(), log_files(target)) == manifest
    assert _records(target) == [b"committed %d" % i for i in range(50)]
    if sig == signal.SIGINT:  # the writer aborts and removes its parts
        assert set(os.listdir(target / "bins")) == parts_before
    else:  # killed: its parts are orphans, which gc removes
        assert set(os.listdir(target / "bins")) > parts_before
        ok("gc", str(target), "--older-than", "0")
        assert set(os.listdir(target / "bins")) == parts_before

"""``splitdask export``: tar streams in bounded memory, formats from the extension."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from _cli_helpers import ENV, ok, run

from splitdask import write_split_data
from splitdask._transfer._export import tar_size


def _small_records(n: int) -> list[bytes]:
    return [b"r%07d" % i for i in range(n)]


def _peak_rss_of_export(src: Path, dest: Path) -> int:
    """Peak RSS (bytes) of ``splitdask export SRC DEST`` alone: measured by a fresh
    parent whose only child is the export, so nothing else the test ran counts."""
    code = (
        "import json, resource, subprocess, sys\n"
        "out = subprocess.run(sys.argv[1:], capture_output=True)\n"
        "assert out.returncode == 0, out.stderr.decode()\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)\n"
    )
    cmd = [sys.executable, "-c", code, sys.executable, "-m", "splitdask", "export"]
    out = subprocess.run(
        [*cmd, str(src), str(dest), "--format", "tar"],
        capture_output=True,
        env=ENV,
        timeout=300,
        check=True,
    )
    return int(json.loads(out.stdout))


@pytest.mark.timeout(600)
def test_export_tar_memory_does_not_grow_with_the_record_count(tmp_path: Path) -> None:
    few, many = _small_records(10_000), _small_records(300_000)
    write_split_data(tmp_path / "few", few, splits=4)
    write_split_data(tmp_path / "many", many, splits=4)
    small = _peak_rss_of_export(tmp_path / "few", tmp_path / "few.tar")
    large = _peak_rss_of_export(tmp_path / "many", tmp_path / "many.tar")
    # tarfile kept every member's header: about 0.5 KB a record, 140 MB more here.
    # The dataset itself is mapped (2.4 MB of records, 10 MB with its footers).
    assert large - small < 32 << 20, (small, large)
    with tarfile.open(tmp_path / "many.tar") as tar:
        for i, member in enumerate(tar):
            assert member.name == f"{i:08d}.bin"
            f = tar.extractfile(member)
            assert f is not None
            assert f.read() == many[i]
    assert i == len(many) - 1
    assert (tmp_path / "many.tar").stat().st_size == tar_size(map(len, many))


def test_export_tar_help_states_the_cost_per_record() -> None:
    text = " ".join(ok("export", "--help").decode().split())
    assert "512-byte header" in text
    assert "padded to a multiple of 512" in text


def test_tar_of_odd_sizes_reads_back_with_tarfile(tmp_path: Path) -> None:
    records = [b"", b"x", b"y" * 511, b"z" * 512, b"w" * 513, bytes(range(256)) * 9]
    write_split_data(tmp_path / "ds", records, splits=2)
    ok("export", str(tmp_path / "ds"), str(tmp_path / "out.tar"), "--format", "tar")
    with tarfile.open(tmp_path / "out.tar") as tar:
        got = [tar.extractfile(m).read() for m in tar]  # type: ignore[union-attr]
    assert got == records
    assert (tmp_path / "out.tar").stat().st_size == tar_size(map(len, records))


@pytest.mark.parametrize(
    ("dest", "fmt"),
    [("out.tar", "tar"), ("out.tgz", "tar"), ("out.jsonl", "lines"), ("o.txt.gz", "lines")],
)
def test_export_takes_the_format_from_the_extension(tmp_path: Path, dest: str, fmt: str) -> None:
    records = [b"one", b"two", b"three"]
    write_split_data(tmp_path / "ds", records, splits=2)
    out = ok("export", str(tmp_path / "ds"), str(tmp_path / dest)).decode()
    assert out.endswith(f"({fmt})\n")
    assert ok("import", str(tmp_path / dest), str(tmp_path / "back"), "--bins", "1")
    got = ok("head", str(tmp_path / "back"), "-n", "3", "--json").decode().split()
    assert [json.loads(x).encode() for x in got] == records


def test_export_files_from_a_trailing_slash_and_a_usage_error_otherwise(tmp_path: Path) -> None:
    write_split_data(tmp_path / "ds", [b"a", b"b"], splits=2)
    ok("export", str(tmp_path / "ds"), f"{tmp_path / 'folder'}/")
    assert sorted(p.name for p in (tmp_path / "folder").iterdir()) == [
        "00000000.bin",
        "00000001.bin",
    ]
    out = run("export", str(tmp_path / "ds"), str(tmp_path / "what"))
    assert out.returncode == 2
    assert b"pass --format files, lines or tar" in out.stderr

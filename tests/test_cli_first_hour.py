"""Issue 20 through the ``splitdask`` command: exit codes, terminal output, defaults,
an ETA for imports of files."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from _cli_helpers import ENV, ok, run

from splitdask import SplitDataLoader, write_split_data

RECORDS = [b"line %d" % i for i in range(20)] + [b"bin\x00\xcf\xff", b"two\nlines"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("first-hour") / "ds")
    write_split_data(path, RECORDS, splits=3)
    return path


def _damaged(tmp_path: Path) -> str:
    path = tmp_path / "damaged"
    write_split_data(path, RECORDS, splits=2)
    part = path / SplitDataLoader(path).snapshot.parts[0].path
    data = bytearray(part.read_bytes())
    data[data.index(b"line 0")] ^= 0xFF  # record 0's first byte: its checksum fails
    part.write_bytes(bytes(data))
    return str(path)


COMMANDS = {
    # command: its arguments after URL
    "info": [],
    "verify": [],
    "head": ["-n", "50"],
    "cat": ["0", "5"],
    "sample": ["-n", "22", "--seed", "1"],
    "log": [],
    "compact": [],
    "gc": ["--dry-run"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_exit_codes_not_found_and_usage_differ(tmp_path: Path, command: str) -> None:
    missing = run(command, str(tmp_path / "missing"), *COMMANDS[command])
    assert missing.returncode == 3, missing.stderr
    assert str(tmp_path / "missing").encode() in missing.stderr
    usage = run(command, str(tmp_path / "missing"), "--no-such-option")
    assert usage.returncode == 2


def test_verify_exit_codes_intact_damaged_missing(tmp_path: Path, dataset: str) -> None:
    assert run("verify", dataset).returncode == 0
    damaged = run("verify", _damaged(tmp_path))
    assert damaged.returncode == 4
    assert b"is damaged" in damaged.stderr
    assert run("verify", str(tmp_path / "nope")).returncode == 3


def test_reading_a_damaged_record_exits_4(tmp_path: Path) -> None:
    out = run("cat", _damaged(tmp_path), "0")
    assert out.returncode == 4, out.stderr


def test_every_command_documents_the_exit_codes() -> None:
    commands = [*COMMANDS, "import", "export", ("cache", "info"), ("cache", "clear")]
    for cmd in [*commands, ()]:
        args = (cmd,) if isinstance(cmd, str) else cmd
        text = " ".join(ok(*args, "--help").decode().split())
        assert "2 usage error; 3 not found" in text, args
        assert "4 damaged" in text, args


def test_a_folder_of_files_suggests_import(tmp_path: Path) -> None:
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "a.jpg").write_bytes(b"jpg")
    out = run("info", str(tmp_path / "pics"))
    assert out.returncode == 3
    assert f"run `splitdask import {tmp_path / 'pics'} DEST --bins N`".encode() in out.stderr


def test_a_typo_in_the_protocol_is_one_line_naming_the_url() -> None:
    out = run("info", "s4://bucket/train")
    assert out.returncode == 1
    lines = out.stderr.decode().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("splitdask: error: s4://bucket/train: unknown protocol 's4'")
    assert "s3, " in lines[0]


def _on_a_terminal(*args: str) -> bytes:
    """stdout of ``splitdask ARGS`` written to a pseudo-terminal."""
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "splitdask", *args],
        stdout=child,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    os.close(child)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the child closed its side
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else b""
    os.close(main)
    return b"".join(chunks).replace(b"\r\n", b"\n")


def test_records_on_a_terminal_are_one_readable_line_each(dataset: str) -> None:
    assert _on_a_terminal("head", dataset, "-n", "2") == b"line 0\nline 1\n"
    got = _on_a_terminal("cat", dataset, "20", "21", "3")
    assert got == b"b'bin\\x00\\xcf\\xff'\nb'two\\nlines'\nline 3\n"
    assert _on_a_terminal("sample", dataset, "-n", "1", "--seed", "0").count(b"\n") == 1
    # Piped, the bytes are unchanged, back to back (as before), unless asked otherwise.
    assert ok("cat", dataset, "20", "3") == RECORDS[20] + RECORDS[3]
    assert _on_a_terminal("cat", dataset, "3", "--raw") == RECORDS[3]


def test_sample_defaults_to_ten_records_as_head_does(dataset: str, tmp_path: Path) -> None:
    assert len(ok("sample", dataset, "--seed", "0", "--json").splitlines()) == 10
    write_split_data(tmp_path / "three", [b"a", b"b", b"c"], splits=1)
    got = ok("sample", str(tmp_path / "three"), "--json").splitlines()
    assert sorted(got) == [b'"a"', b'"b"', b'"c"']


def test_import_of_a_lines_file_shows_progress_against_its_size(tmp_path: Path) -> None:
    src = tmp_path / "train.jsonl"
    src.write_bytes(b"".join(b'{"id": %d}\n' % i for i in range(50_000)))
    out = run("import", str(src), str(tmp_path / "ds"), "--bins", "2", "--progress")
    assert out.returncode == 0, out.stderr
    bar = out.stderr.decode().replace("\r", "\n").splitlines()
    assert any("100%|" in line and "/689k" in line for line in bar), bar[-3:]
    assert "50,000 rec" in bar[-1] or any("50,000 rec" in line for line in bar)

"""A write that fails on a real I/O error (the kernel's ``EFBIG`` past a process's file
size limit, as a full disk fails it) removes every temp file and part it made at once,
names the dataset, and leaves the committed dataset exactly as it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from splitdask import SplitDataLoader, write_split_data

ROOT = Path(__file__).resolve().parents[1]

# The child lowers its own RLIMIT_FSIZE (SIGXFSZ ignored, so a write past it fails with
# EFBIG instead of killing the process) and runs one write; it prints what it raised.
_CHILD = textwrap.dedent(
    """
    import json, os, resource, signal, sys
    from splitdask import SplitWriter, write_split_data
    url, limit, case, options = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    out = {}
    try:
        if case == "footer":
            # 4 bins of 100 records of 1000 bytes: every part's data fits, its footer not.
            write_split_data(url, (bytes([i % 251]) * 1000 for i in range(400)), splits=4,
                             storage_options=options)
        elif case == "midway":
            # Each bin's first batch (4 MB) becomes a part, closed and renamed; then a
            # record past the limit fails its bin's next part while the other bins
            # hold finished parts.
            w = SplitWriter(url, 4, part_max_bytes=1 << 20, storage_options=options)
            try:
                w.write_many(bytes([i % 251]) * 100_000 for i in range(200))
                out["finished"] = sorted(os.listdir(os.path.join(url, "bins")))
                w.write_many([bytes(limit + 1)])
            except OSError as exc:
                out["closed"] = w._closed
                out["bins"] = sorted(os.listdir(os.path.join(url, "bins")))
                raise
        else:
            raise SystemExit(f"unknown case {case}")
    except OSError as exc:
        out.update(errno=exc.errno, message=str(exc))
    print(json.dumps(out))
    """
)


def _fail_write(
    url: str,
    limit: int,
    case: str,
    options: dict[str, Any] | None = None,
    tmpdir: Path | None = None,
) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, url, str(limit), case, json.dumps(options or {})],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def _committed(url: str) -> list[bytes]:
    records = [b"%06d" % i * 7 for i in range(1000)]
    write_split_data(url, records, splits=4)
    return records


@pytest.mark.parametrize("case", ["footer", "midway"])
def test_a_failed_write_leaves_no_temp_file_and_loses_nothing(tmp_path: Path, case: str) -> None:
    url = str(tmp_path / "ds")
    records = _committed(url)
    before = sorted(os.listdir(tmp_path / "ds" / "bins"))
    manifest = (tmp_path / "ds" / "splitdask.json").read_bytes()

    out = _fail_write(url, 100_100 if case == "footer" else 8 << 20, case)

    assert out["errno"] == 27  # EFBIG: the kernel's own error
    assert sorted(os.listdir(tmp_path / "ds" / "bins")) == before  # no .*.tmp, no parts
    if case == "midway":
        assert len(out["finished"]) == len(before) + 4  # a finished part in every bin
        # The failing write_many itself removed every file of the write, before any
        # abort() or commit(): the writer cannot commit a write with a part missing.
        assert out["bins"] == before
        assert out["closed"] is True
    assert out["message"].startswith(f"[Errno 27] {url}: writing a new part of bin ")
    assert "File too large" in out["message"]
    assert "ulimit -f" in out["message"]
    assert "nothing was committed" in out["message"]
    assert (tmp_path / "ds" / "splitdask.json").read_bytes() == manifest
    loader = SplitDataLoader(url)
    assert sorted(loader) == sorted(records)
    assert [loader[i] for i in range(len(loader))] == list(loader)


def test_the_same_write_under_no_limit_commits(tmp_path: Path) -> None:
    """Without the failure, the same child commits: the limit, not the code, failed it."""
    url = str(tmp_path / "ds")
    _committed(url)
    assert _fail_write(url, 1 << 30, "footer") == {}
    assert len(SplitDataLoader(url)) == 1400


def test_a_failed_write_to_s3_removes_its_spool_files(
    tmp_path: Path, s3_url: str, s3_storage_options: dict[str, Any], s3_fs: Any, s3_bucket: str
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    records = [b"%06d" % i * 7 for i in range(1000)]
    write_split_data(s3_url, records, splits=4, storage_options=s3_storage_options)
    s3_fs.invalidate_cache()
    keys = sorted(s3_fs.find(s3_bucket))

    # The spool files are local: the limit fails them as it fails local parts.
    out = _fail_write(s3_url, 100_100, "footer", s3_storage_options, spool)

    assert out["errno"] == 27
    assert list(spool.iterdir()) == []
    assert out["message"].startswith(f"[Errno 27] {s3_url}: writing a new part of bin ")
    assert f"the temp directory {spool}" in out["message"]
    assert "nothing was committed" in out["message"]
    s3_fs.invalidate_cache()
    assert sorted(s3_fs.find(s3_bucket)) == keys
    loader = SplitDataLoader(s3_url, storage_options=s3_storage_options)
    assert sorted(loader) == sorted(records)

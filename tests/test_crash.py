"""A writer killed with SIGKILL at any stage leaves the last committed dataset readable."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from dataset_suite import make_records

from splitdask import SplitDataLoader, write_split_data

# The child appends (or overwrites), announces the chosen stage on stdout, then
# blocks on stdin until the parent kills it: the kill lands exactly at that stage.
_CHILD = textwrap.dedent(
    """
    import os, sys
    from splitdask._store import LocalStore
    from splitdask import write_split_data
    url, stage, start_clean = sys.argv[1], sys.argv[2], sys.argv[3] == "1"

    def stop_here():
        print("ready", flush=True)
        sys.stdin.readline()
        raise SystemExit("parent did not kill")

    def records():
        for i in range(20000):
            if stage == "records" and i == 12000:
                stop_here()
            yield i.to_bytes(4, "little") * 50

    if stage == "parts-renamed":
        original = LocalStore.write_atomic
        def write_atomic(self, rel, data):
            stop_here()
        LocalStore.write_atomic = write_atomic
    if stage == "manifest-tmp-written":
        real_replace = os.replace
        def replace(src, dst):
            if dst.endswith("splitdask.json"):
                stop_here()
            real_replace(src, dst)
        os.replace = replace
    if stage == "after-commit":
        import splitdask._write._commit as commit
        def orphans(*args):
            stop_here()
        commit.orphans = orphans
    write_split_data(url, records(), splits=16, start_clean=start_clean)
    """
)

STAGES = ["records", "parts-renamed", "manifest-tmp-written", "after-commit"]


def _kill_at(url: str, stage: str, start_clean: bool) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, url, stage, "1" if start_clean else "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


CASES = [(stage, start_clean) for start_clean in (False, True) for stage in STAGES]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("stage", "start_clean"), CASES)
def test_sigkill_leaves_last_commit(tmp_path: Path, stage: str, start_clean: bool) -> None:
    url = str(tmp_path / "ds")
    before = make_records(333)
    write_split_data(url, before, splits=16)
    _kill_at(url, stage, start_clean)

    loader = SplitDataLoader(url)
    if stage == "after-commit":
        # Killed after the commit point: the new data is the dataset.
        assert len(loader) == 20000 + (0 if start_clean else 333)
        assert loader[len(loader) - 20000 + 7] == (7).to_bytes(4, "little") * 50
    else:
        assert list(loader) == before
    loader.verify()
    # Leftovers of the killed write don't get in the way of the next one.
    write_split_data(url, [b"after"], splits=16)
    assert SplitDataLoader(url)[-1] == b"after"


def test_directory_without_commit_is_reported(tmp_path: Path) -> None:
    url = str(tmp_path / "never")
    _kill_at(url, "parts-renamed", False)
    assert any((tmp_path / "never" / "bins").iterdir())  # parts exist, uncommitted
    with pytest.raises(FileNotFoundError, match="no splitdask dataset at"):
        SplitDataLoader(url)

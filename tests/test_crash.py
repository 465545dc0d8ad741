"""A writer killed with SIGKILL at any stage leaves the last committed dataset readable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from dataset_suite import make_records

from splitdask import SplitDataLoader, gc, write_split_data

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

    # The commit point is the creation of the next version's log entry,
    # _log/<N>.json: a durable temp file _log/.<name>.tmp-*, then os.link to the name.
    if stage == "parts-renamed":  # every part in place, the entry not yet written
        original = LocalStore.create_exclusive
        def create_exclusive(self, rel, data):
            if rel.startswith("_log/"):
                stop_here()
            return original(self, rel, data)
        LocalStore.create_exclusive = create_exclusive
    if stage in ("entry-tmp-written", "entry-linked"):
        real_link = os.link
        def link(src, dst):
            if "/_log/" in dst and dst.endswith(".json"):
                assert os.path.getsize(src) > 0  # the temp entry is whole
                if stage == "entry-linked":
                    real_link(src, dst)  # committed; its temp file not yet removed
                stop_here()
            real_link(src, dst)
        os.link = link
    if stage == "after-commit":
        import splitdask._write._commit as commit
        def collect_expired(*args):
            stop_here()
        commit.collect_expired = collect_expired
    write_split_data(url, records(), splits=16, start_clean=start_clean)
    """
)

STAGES = ["records", "parts-renamed", "entry-tmp-written", "entry-linked", "after-commit"]


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
    if stage in ("entry-linked", "after-commit"):
        # Killed after the commit point: the new data is the dataset.
        assert len(loader) == 20000 + (0 if start_clean else 333)
        assert loader[len(loader) - 20000 + 7] == (7).to_bytes(4, "little") * 50
    else:
        assert list(loader) == before
    loader.verify()
    # Leftovers of the killed write don't get in the way of the next one,
    write_split_data(url, [b"after"], splits=16)
    assert SplitDataLoader(url)[-1] == b"after"
    # and gc past their age removes them all: no temp file stays in the log.
    gc(url, older_than=0)
    assert not [n for n in os.listdir(tmp_path / "ds" / "_log") if ".tmp" in n]
    assert not [n for n in os.listdir(tmp_path / "ds") if ".tmp" in n]
    assert SplitDataLoader(url)[-1] == b"after"


def test_directory_without_commit_is_reported(tmp_path: Path) -> None:
    url = str(tmp_path / "never")
    _kill_at(url, "parts-renamed", False)
    assert any((tmp_path / "never" / "bins").iterdir())  # parts exist, uncommitted
    with pytest.raises(FileNotFoundError, match="no splitdask dataset at"):
        SplitDataLoader(url)

"""What a new user meets first: progress bars, helpful errors, the bin-count names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dask.bag as db
import pytest

from splitdask import SplitDataLoader, SplitWriter, write_split_data
from splitdask._format import MANIFEST_NAME
from splitdask.bag import to_split_bins

RECORDS = [b"record %d" % i for i in range(3000)]


def test_progress_bars_on_write_and_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_split_data(tmp_path / "a", RECORDS, splits=3, progress=True)
    err = capsys.readouterr().err
    assert "writing" in err
    assert "3.00k/3.00k" in err
    assert "rec/s" in err
    assert "MB/s" in err
    with SplitWriter(tmp_path / "b", num_bins=2, progress=True) as w:
        w.write_many(iter(RECORDS))  # length unknown: a count, no ETA
    err = capsys.readouterr().err
    assert "3.00k" in err
    assert "rec/s" in err
    SplitDataLoader(tmp_path / "a").verify(progress=True)
    err = capsys.readouterr().err
    assert "verifying" in err
    assert "3.00k/3.00k" in err
    write_split_data(tmp_path / "c", RECORDS, splits=3)  # off by default
    SplitDataLoader(tmp_path / "c").verify()
    assert capsys.readouterr().err == ""


def test_num_bins_is_an_alias_of_splits(tmp_path: Path) -> None:
    write_split_data(tmp_path / "a", RECORDS, num_bins=5)
    assert SplitDataLoader(tmp_path / "a").num_bins == 5
    with SplitWriter(tmp_path / "b", num_bins=3) as w:
        w.write_many(RECORDS)
    assert SplitDataLoader(tmp_path / "b").num_bins == 3
    with pytest.raises(TypeError, match="splits=4 and num_bins=5 disagree"):
        write_split_data(tmp_path / "c", RECORDS, splits=4, num_bins=5)


def test_metadata_that_json_cannot_hold_is_refused_before_reading_input(tmp_path: Path) -> None:
    consumed = []

    def records():  # type: ignore[no-untyped-def]
        for r in RECORDS:
            consumed.append(r)
            yield r

    with pytest.raises(TypeError, match="metadata must be JSON-serialisable.*set"):
        write_split_data(tmp_path / "a", records(), splits=2, metadata={"tags": {1, 2}})
    assert consumed == []
    assert not (tmp_path / "a" / MANIFEST_NAME).exists()
    bag = db.from_sequence(RECORDS[:10], npartitions=2)
    with pytest.raises(TypeError, match="metadata must be JSON-serialisable"):
        to_split_bins(bag, tmp_path / "b", metadata={"when": object()})


def test_to_split_bins_on_an_existing_dataset_names_the_ways_forward(tmp_path: Path) -> None:
    write_split_data(tmp_path / "a", RECORDS[:10], splits=2)
    bag = db.from_sequence(RECORDS[:10], npartitions=2)
    with pytest.raises(FileExistsError, match=r"append=True.*overwrite=True"):
        to_split_bins(bag, tmp_path / "a")


def test_opening_a_file_as_a_dataset_says_so(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text("{}\n")
    with pytest.raises(
        NotADirectoryError, match=r"train.jsonl is a file: a dataset is a directory"
    ):
        SplitDataLoader(tmp_path / "train.jsonl")
    with pytest.raises(NotADirectoryError, match="is a file"):
        write_split_data(tmp_path / "train.jsonl", RECORDS, splits=2)


@pytest.mark.timeout(60)
def test_a_spawn_script_without_a_main_guard_is_told_why_its_worker_died(tmp_path: Path) -> None:
    script = tmp_path / "no_guard.py"
    script.write_text(
        "from splitdask import MpQItr\n\n"
        "def gen(n):\n    yield from range(n)\n\n"
        "run = MpQItr.configure(start_method='spawn')\n"
        "print(list(run(gen, 3)))\n"
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=50, cwd=tmp_path
    )
    assert out.returncode != 0
    assert "WorkerDiedError" in out.stderr
    assert 'if __name__ == "__main__":' in out.stderr

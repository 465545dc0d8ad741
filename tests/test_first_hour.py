"""Issue 20, a newcomer's first hour: errors that say how to fix them, no stray
warnings, no folders before (or after) a write that commits nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import dask.bag as db
import nbclient
import nbformat
import pytest

from splitdask import DatasetNotFoundError, SplitDataLoader, SplitWriter, write_split_data
from splitdask.bag import to_split_bins


def _python(code: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def test_a_negative_seed_is_a_value_error(tmp_path: Path) -> None:
    write_split_data(tmp_path / "ds", [b"a", b"b"], splits=2)
    loader = SplitDataLoader(tmp_path / "ds")
    with pytest.raises(ValueError, match="seed must be at least 0, got -1"):
        list(loader.iterate_binwise(shuffle=True, seed=-1))
    with pytest.raises(ValueError, match="seed must be at least 0"):
        list(loader.iterate_batches(1, shuffle=True, seed=-1))


def test_a_typo_in_the_protocol_names_the_url_and_the_known_protocols() -> None:
    with pytest.raises(ValueError, match="s4://bucket/train: unknown protocol 's4'") as err:
        SplitDataLoader("s4://bucket/train")
    text = str(err.value)
    assert "did you mean s3://" in text
    assert "memory, " in text
    assert "\n" not in text


def test_missing_and_not_a_dataset_say_which(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="nothing is there"):
        SplitDataLoader(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="it is an empty folder"):
        SplitDataLoader(tmp_path / "empty")
    (tmp_path / "files").mkdir()
    for i in range(3):
        (tmp_path / "files" / f"{i}.json").write_text("{}")
    with pytest.raises(DatasetNotFoundError) as err:
        SplitDataLoader(tmp_path / "files")
    assert str(err.value) == (
        f"no splitdask dataset at {tmp_path / 'files'}: it is a folder of 3 entries without "
        "splitdask.json, _log/ or splitdataloader's index.dat; to make a dataset of it, run "
        f"`splitdask import {tmp_path / 'files'} DEST --bins N`"
    )
    (tmp_path / "train.jsonl").write_text("{}\n")
    with pytest.raises(NotADirectoryError, match=r"`splitdask import .*train.jsonl DEST"):
        SplitDataLoader(tmp_path / "train.jsonl")
    with pytest.raises(DatasetNotFoundError, match="memory://nowhere/x: nothing is there"):
        SplitDataLoader("memory://nowhere/x")


@pytest.mark.parametrize(
    ("blocked", "code", "hint"),
    [
        (
            "s3fs",
            "SplitDataLoader('s3://bucket/train')",
            "s3://bucket/train (s3://) needs s3fs, which is not installed: "
            "pip install 'splitdask[s3]' (from a clone of splitdask: pip install '.[s3]')",
        ),
        (
            "pyarrow",
            "write_split_data('ds', [b'a'], splits=1); SplitDataLoader('ds').read_batch([0])"
            ".to_arrow()",
            "RecordBatch.to_arrow() needs pyarrow, which is not installed: "
            "pip install 'splitdask[arrow]' (from a clone of splitdask: pip install '.[arrow]')",
        ),
    ],
)
def test_a_missing_extra_is_named(tmp_path: Path, blocked: str, code: str, hint: str) -> None:
    out = _python(
        f"import sys; sys.modules[{blocked!r}] = None\n"  # as if it were not installed
        "from splitdask import SplitDataLoader, write_split_data\n"
        f"try:\n    {code}\nexcept ImportError as exc:\n    print(exc)\n",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == hint


def test_no_hint_asks_for_the_zstd_extra() -> None:
    root = Path(__file__).resolve().parent.parent
    texts = [p.read_text() for p in [*root.glob("splitdask/**/*.py"), root / "README.md"]]
    assert not [t for t in texts if "[zstd]" in t]


@pytest.mark.timeout(240)
def test_progress_in_a_notebook_without_ipywidgets_is_quiet_text(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import sys\n"
            "sys.modules['ipywidgets'] = None  # a notebook without ipywidgets\n"
            "from splitdask import write_split_data\n"
            "write_split_data('ds', [b'x'] * 1000, splits=2, progress=True)\n"
            "print('done')"
        )
    ]
    client = nbclient.NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = nb.cells[0].outputs
    text = "".join(str(o.get("text", "")) for o in outputs)
    assert "IProgress" not in text
    assert "ipywidgets" not in text
    assert "1.00k/1.00k" in text  # the text bar
    assert "done" in text


def test_a_failed_first_write_leaves_no_folders(tmp_path: Path) -> None:
    records: list[object] = [b"x" * 100] * 5000 + [3]  # parts are written before the bad one
    with pytest.raises(TypeError, match="record 5000 is of type int"):
        write_split_data(tmp_path / "data" / "train", records, splits=4)
    assert not (tmp_path / "data").exists()
    write_split_data(tmp_path / "kept", [b"a"], splits=1)
    w = SplitWriter(tmp_path / "kept", mode="a")
    w.write_many([b"b"] * 5000)
    w.abort()
    assert sorted(os.listdir(tmp_path / "kept" / "bins")) == [
        p.path.split("/")[-1] for p in SplitDataLoader(tmp_path / "kept").snapshot.parts
    ]


def test_to_split_bins_without_compute_creates_nothing_until_computed(tmp_path: Path) -> None:
    bag = db.from_sequence([b"a", b"b", b"c", b"d"], npartitions=2)
    later = to_split_bins(bag, tmp_path / "out", compute=False)
    assert not (tmp_path / "out").exists()
    later.compute(scheduler="sync")
    assert sorted(SplitDataLoader(tmp_path / "out")) == [b"a", b"b", b"c", b"d"]


def test_no_module_needs_distributed_to_import(tmp_path: Path) -> None:
    out = _python(
        "import sys; sys.modules['distributed'] = None  # as if not installed\n"
        "import splitdask, splitdask.bag, splitdask.cli, splitdask.mpq\n"
        "from splitdask import SplitDataLoader, read_split_bins, write_split_data\n"
        "write_split_data('ds', [b'a', b'b'], splits=2)\n"
        "print(read_split_bins('ds').compute(scheduler='sync'))\n",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[b'a', b'b']"


def test_extras_split_runtime_tests_and_tools() -> None:
    import tomllib

    root = Path(__file__).resolve().parent.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]

    def names(specs: list[str]) -> list[str]:
        return [re.split(r"[\[<>=!~; ]", s, maxsplit=1)[0].lower() for s in specs]

    assert "distributed" not in names(project["dependencies"])
    assert names(extras["dask"]) == ["distributed"]
    assert names(extras["arrow"]) == ["pyarrow"]
    assert sorted(names(extras["dev"])) == ["atheris", "mypy", "ruff"]
    test = names(extras["test"])
    assert len(test) == len(set(test))  # nothing listed twice
    assert not set(test) & set(names(extras["dev"]))
    assert "torchdata" in test
    assert extras["torch"] == ["torch>=2.0"]
    pins = (root / "ci" / "constraints.txt").read_text().split()
    assert "torchdata==0.11.0" in pins

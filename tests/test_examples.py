"""Each example runs start to finish as a user would run it, on its small defaults.

The examples check their own results (they assert what they print), so a zero exit
status means the example did what its docstring says. Each runs with its own
``TMPDIR`` to check that it cleans up after itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbclient
import nbformat
import pytest

from splitdask import SplitDataLoader

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, tmp_path: Path, *args: str) -> str:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=tmp_path,
        env={**os.environ, "TMPDIR": str(tmpdir)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, f"{name} failed:\n{out.stdout}\n{out.stderr}"
    # Temporary datasets are removed (Dask may leave its empty scratch directory).
    assert not [p.name for p in tmpdir.iterdir() if p.name.startswith("splitdask-")]
    return out.stdout


@pytest.mark.timeout(240)
def test_quickstart(tmp_path: Path) -> None:
    out = run_example("quickstart.py", tmp_path)
    assert "len=10000 bins=8" in out
    assert "read_split_bins: 8 partitions" in out
    assert "quickstart OK\n" in out
    assert out.rstrip().splitlines()[-1].startswith("next: that dataset was in a temporary")
    assert "--dir DIR" in out
    assert "splitdask info DIR/train" in out


@pytest.mark.timeout(240)
def test_quickstart_into_a_given_directory(tmp_path: Path) -> None:
    out = run_example("quickstart.py", tmp_path, "--dir", str(tmp_path / "out"))
    assert (tmp_path / "out" / "train" / "splitdask.json").exists()
    # The suggested next command works.
    suggested = out.rstrip().splitlines()[-1].split()[1:4]
    assert suggested[1:] == ["info", str(tmp_path / "out" / "train")]
    info = subprocess.run(suggested, capture_output=True, text=True, timeout=60)
    assert info.returncode == 0
    assert "records:     10,000" in info.stdout


@pytest.mark.timeout(240)
def test_cluster_preprocessing(tmp_path: Path) -> None:
    out = run_example("cluster_preprocessing.py", tmp_path, "--out", str(tmp_path / "train"))
    assert "preprocessed 16000 samples into 6 bins" in out
    assert "epoch 1: 16000 samples" in out
    assert (tmp_path / "train" / "splitdask.json").exists()


@pytest.mark.timeout(240)
def test_single_machine_import(tmp_path: Path) -> None:
    out = run_example("single_machine_import.py", tmp_path, "--bins", "7")
    assert "importing 3000 files" in out
    assert "imported 3000 files" in out
    assert "7 bins of 428-429 records" in out


@pytest.mark.timeout(240)
def test_single_machine_import_of_a_given_folder(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    for i in range(25):
        (src / "a" / f"{i}.bin").write_bytes(bytes([i]) * (i + 1))
    args = [str(src), "--bins", "4", "--out", str(tmp_path / "ds")]
    out = run_example("single_machine_import.py", tmp_path, *args)
    assert "imported 25 files" in out
    loader = SplitDataLoader(tmp_path / "ds")
    assert sorted(bytes(r) for r in loader) == sorted(bytes([i]) * (i + 1) for i in range(25))
    assert loader.metadata["files"] == 25


@pytest.mark.timeout(240)
def test_notebook_exploration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))  # inherited by the kernel
    nb = nbformat.read(EXAMPLES / "notebook_exploration.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the cell's traceback, on any error
    text = "\n".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
        for cell in nb.cells
        if cell.cell_type == "code"
        for o in cell.outputs
    )
    assert "bins:    12" in text
    assert "records: 6,000" in text
    assert "imbalance (max / mean)" in text
    assert "dask.bag<read-split-bins, npartitions=12>" in text
    assert "sampled" in text
    html = "".join(
        str(o.get("data", {}).get("text/html", ""))
        for cell in nb.cells
        if cell.cell_type == "code"
        for o in cell.outputs
    )
    assert html.count('<rect class="bin"') == 12  # the loader's view: one bar per bin
    assert "6,000" in html
    assert "first records" in html
    assert "parts, " in text
    assert "6,000 records, 12 bins" in text
    assert not [p.name for p in tmpdir.iterdir() if p.name.startswith("splitdask-")]


@pytest.mark.timeout(240)
def test_train_torch(tmp_path: Path) -> None:
    out = run_example("train_torch.py", tmp_path)
    assert "interrupted in epoch 0 after 2048 samples" in out
    assert "resumed epoch 0 after 2048 samples" in out
    assert "resumed run matches the uninterrupted one (8192 samples)" in out
    assert out.rstrip().endswith("train_torch OK")

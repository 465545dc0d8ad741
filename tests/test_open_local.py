"""Plain local paths open without fsspec, at the root fsspec would give them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import fsspec
import pytest

from splitdask._store import LocalStore, open_store


@pytest.mark.parametrize(
    "spelling",
    [
        "{abs}",
        "{abs}/",
        "rel/ds",
        "rel/ds/",
        "../{up}/rel/ds",
        "./rel/ds",
        "~/{home}",
        "{abs}/../{last}",
        "file://{abs}",
        "simplecache::{abs}",
        "{abs}//x/..",
    ],
)
def test_local_root_is_fsspecs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spelling: str
) -> None:
    ds = tmp_path / "rel" / "ds"
    ds.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    url = spelling.format(abs=ds, up=tmp_path.name, home="rel/ds", last=ds.name)
    store = open_store(url)
    _, root = fsspec.core.url_to_fs(url)
    assert isinstance(store, LocalStore)
    assert store.root == root  # the same root, found with or without fsspec


def test_local_write_and_read_do_not_import_fsspec(tmp_path: Path) -> None:
    code = (
        "import sys, splitdask\n"
        f"info = splitdask.write_split_data({str(tmp_path / 'ds')!r}, [b'a', b'b'], splits=2)\n"
        f"loader = splitdask.SplitDataLoader({str(tmp_path / 'ds')!r})\n"
        "assert list(loader) == [b'a', b'b'] and len(loader) == 2\n"
        "print('fsspec' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_file_is_refused_on_the_fast_path_too(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="is a file"):
        open_store(f)

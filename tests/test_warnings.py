"""Warnings: every one is a SplitDaskWarning (one filter silences them all), and the
specific ones are still RuntimeWarnings, as they were before SplitDaskWarning."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

import splitdask
from splitdask import SplitDataLoader, write_split_data
from splitdask._store._local import LocalStore
from splitdask._write import _compact
from splitdask.errors import CleanupWarning, CompactionWarning, SplitDaskWarning


def _no_remove(self: LocalStore, rels: Sequence[str]) -> None:
    raise PermissionError("no delete permission")


def _overwrite_that_cannot_clean_up(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_split_data(root, [b"a", b"b"], splits=2)
    monkeypatch.setattr(LocalStore, "remove", _no_remove)
    write_split_data(root, [b"c"], splits=1, start_clean=True, retention=0)


def _appends_whose_compaction_fails(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(_compact, "_compact_runs", broken)
    for i in range(_compact.AUTO_COMPACT_PARTS):  # one small part per append, one bin
        write_split_data(root, [b"%d" % i], splits=1)


CASES: list[tuple[type[Warning], Callable[[Path, pytest.MonkeyPatch], None]]] = [
    (CleanupWarning, _overwrite_that_cannot_clean_up),
    (CompactionWarning, _appends_whose_compaction_fails),
]


def test_hierarchy_and_export() -> None:
    assert issubclass(SplitDaskWarning, UserWarning)
    for cls in (CleanupWarning, CompactionWarning):
        assert issubclass(cls, SplitDaskWarning)
        assert issubclass(cls, RuntimeWarning)  # filters written before keep working
        assert getattr(splitdask, cls.__name__) is cls
    assert splitdask.SplitDaskWarning is SplitDaskWarning


@pytest.mark.parametrize(("category", "provoke"), CASES)
def test_each_warning_is_a_splitdask_warning(
    category: type[Warning],
    provoke: Callable[[Path, pytest.MonkeyPatch], None],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.warns(SplitDaskWarning) as caught:
        provoke(tmp_path / "ds", monkeypatch)
    assert {type(w.message) for w in caught} == {category}
    assert len(SplitDataLoader(tmp_path / "ds")) >= 1  # committed all the same


@pytest.mark.parametrize(("category", "provoke"), CASES)
def test_one_filter_silences_them(
    category: type[Warning],
    provoke: Callable[[Path, pytest.MonkeyPatch], None],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=splitdask.SplitDaskWarning)
        provoke(tmp_path / "ds", monkeypatch)
    assert [w for w in caught if issubclass(w.category, (category, SplitDaskWarning))] == []

"""The shape of ``splitdask.mpq``: public names, option defaults, module layering."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import splitdask
import splitdask.mpq
from splitdask.mpq import MpQItr, MpQOptions, MpQRun, WorkerInfo, get_worker_info

PACKAGE = Path(splitdask.mpq.__file__).parent
ROOT = PACKAGE.parent.parent


def test_every_public_name_is_exported_and_reachable_from_splitdask() -> None:
    expected = {
        "MpQItr",
        "MpQItrError",
        "MpQItrTimeoutError",
        "MpQOptions",
        "MpQRun",
        "RemoteTraceback",
        "WorkerDiedError",
        "WorkerInfo",
        "get_worker_info",
    }
    assert set(splitdask.mpq.__all__) == expected
    for name in expected:
        assert getattr(splitdask, name) is getattr(splitdask.mpq, name)


@pytest.mark.parametrize("obj", [MpQItr, MpQOptions, MpQRun, WorkerInfo, get_worker_info])
def test_public_objects_name_the_public_module(obj: object) -> None:
    assert obj.__module__ == "splitdask.mpq"


def test_options_and_worker_info_pickle_by_the_public_path() -> None:
    opts = MpQOptions(queue_size=3, seed=5)
    data = pickle.dumps(opts)
    assert b"splitdask.mpq" in data
    assert b"_itr" not in data
    assert pickle.loads(data) == opts
    info = WorkerInfo(id=1, num_workers=2, seed=9, start_method="spawn")
    assert pickle.loads(pickle.dumps(info)) == info


def test_configure_defaults_are_the_dataclass_defaults() -> None:
    params = inspect.signature(MpQItr.configure).parameters
    fields = dataclasses.fields(MpQOptions)
    assert list(params) == [f.name for f in fields]
    for f in fields:
        assert params[f.name].kind is inspect.Parameter.KEYWORD_ONLY
        assert params[f.name].default == f.default, f.name
    assert MpQItr.configure() == MpQOptions()


def test_configure_passes_every_option_through() -> None:
    changed = {
        "queue_size": 3,
        "start_method": "spawn",
        "num_workers": 2,
        "timeout": 1.5,
        "shm_threshold": None,
        "shm_pool_bytes": 1 << 20,
        "seed": 11,
    }
    assert set(changed) == {f.name for f in dataclasses.fields(MpQOptions)}
    assert dataclasses.asdict(MpQItr.configure(**changed)) == changed  # type: ignore[arg-type]


def _sibling_imports(path: Path) -> set[str]:
    """The ``splitdask.mpq`` modules that ``path`` imports, at any level of the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            if node.module == "splitdask.mpq":
                found.update(alias.name for alias in node.names)
            elif node.module.startswith("splitdask.mpq."):
                found.add(node.module.rsplit(".", 1)[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("splitdask.mpq."):
                    found.add(alias.name.rsplit(".", 1)[1])
    return found


def test_modules_import_each_other_without_a_circle() -> None:
    graph = {
        p.stem: _sibling_imports(p) for p in sorted(PACKAGE.glob("_*.py")) if p.stem != "__init__"
    }
    assert set().union(*graph.values()) <= set(graph)
    order: list[str] = []  # a topological order exists only if there is no circle
    remaining = dict(graph)
    while remaining:
        ready = sorted(m for m, deps in remaining.items() if deps <= set(order))
        assert ready, f"import circle among {sorted(remaining)}"
        order += ready
        for m in ready:
            del remaining[m]
    assert graph["_wire"] == set()
    assert graph["_shm"] == set()
    assert "_run" not in graph["_worker"]  # the worker loop never sees the parent side


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_module_and_class_size_limits(path: Path) -> None:
    source = path.read_text()
    assert source.count("\n") <= 450
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            assert node.end_lineno is not None
            assert node.end_lineno - node.lineno + 1 <= 300, node.name


@pytest.mark.timeout(60)
def test_import_stays_light() -> None:
    code = (
        "import sys, splitdask.mpq; "
        "print(sorted(m for m in ('dask', 'fsspec', 'distributed', 'xxhash', 'splitdask.reader') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"

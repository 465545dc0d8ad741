"""The public API: one table in ``splitdask/__init__.py``, importable and light."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import splitdask

INIT = Path(splitdask.__file__)


def test_every_public_name_resolves_to_its_module() -> None:
    for name, module in splitdask._API.items():
        assert getattr(splitdask, name) is getattr(importlib.import_module(module), name), name
    assert sorted(splitdask.__all__) == sorted(["__version__", *splitdask._API])


def test_type_checking_imports_match_the_table() -> None:
    tree = ast.parse(INIT.read_text())
    typed: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom)
                for alias in imp.names:
                    assert alias.asname == alias.name  # explicit re-export for mypy users
                    typed[alias.name] = str(imp.module)
    assert typed == splitdask._API


def test_import_is_light() -> None:
    code = (
        "import sys, splitdask; "
        "heavy = [m for m in ('numpy', 'fsspec', 'dask', 'distributed') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unknown_name() -> None:
    with pytest.raises(AttributeError, match="'nope'"):
        splitdask.nope  # type: ignore[attr-defined]  # noqa: B018

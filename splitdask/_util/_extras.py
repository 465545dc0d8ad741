"""Optional dependencies: an ``ImportError`` that names the extra to install.

Each optional package belongs to one extra of ``pyproject.toml``; a user who lacks it
is told the command that installs it, from PyPI and from a clone of the repository.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "install_hint", "missing", "require"]

EXTRAS = {
    "s3fs": "s3",
    "pyarrow": "arrow",
    "ray": "ray",
    "torch": "torch",
    "distributed": "dask",
}
"""Optional package -> the extra of ``pyproject.toml`` that installs it."""


def install_hint(package: str) -> str:
    """The command that installs ``package``: its extra where it has one."""
    extra = EXTRAS.get(package)
    if extra is None:
        return f"pip install {package}"
    return f"pip install 'splitdask[{extra}]' (from a clone of splitdask: pip install '.[{extra}]')"


def missing(package: str, what: str) -> ImportError:
    """The error for ``what`` (a feature, a URL) needing ``package``, which is absent."""
    return ImportError(
        f"{what} needs {package}, which is not installed: {install_hint(package)}",
        name=package,
    )


def require(module: str, what: str) -> ModuleType:
    """``import module``, or :func:`missing`'s error if its package is not installed.

    An ``ImportError`` from inside an installed package (a broken install) is raised
    as it is: naming an extra would not fix it.
    """
    package = module.split(".", 1)[0]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".", 1)[0] != package:
            raise
        raise missing(package, what) from exc

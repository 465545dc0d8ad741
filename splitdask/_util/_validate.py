"""Argument checks shared by every entry point, so one mistake reads the same everywhere."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["MAX_METADATA_CONTAINERS", "check_int", "check_metadata", "check_version"]

MAX_METADATA_CONTAINERS = 1 << 16
"""Most JSON arrays and objects (the mapping itself included) in user metadata: a
reader refuses a manifest dense in them before parsing it (``_format._jsonbound``),
and metadata within this never makes it so."""


def check_int(
    value: Any,
    name: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    error: type[Exception] = ValueError,
    each: bool = False,
) -> int:
    """``value`` as an ``int`` if it is an integer (not a ``bool``) within bounds.

    ``each`` words the error for one item of a collection named ``name``
    ("bin numbers must be ints").

    Raises
    ------
    TypeError
        If ``value`` is not an integer; the message names ``name``.
    ValueError
        (or ``error``) if it is out of bounds.
    """
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        kind = "ints" if each else "an int"
        raise TypeError(f"{name} must be {kind}, not {type(value).__name__}")
    n = int(value.__index__())
    if minimum is not None and n < minimum:
        raise error(f"{name} must be at least {minimum}, got {n}")
    if maximum is not None and n > maximum:
        raise error(f"{name} must be at most {maximum}, got {n}")
    return n


def check_metadata(metadata: Any) -> dict[str, Any]:
    """``metadata`` as a dict, refused up front (before any input is read) unless JSON can
    store it: the manifest holds it, and a failure at commit would waste the whole write."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping, not {type(metadata).__name__}")
    try:
        json.dumps(dict(metadata))
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"metadata must be JSON-serialisable (the manifest stores it): {exc}"
        ) from None
    if _containers(metadata, MAX_METADATA_CONTAINERS) > MAX_METADATA_CONTAINERS:
        raise ValueError(
            f"metadata holds more than {MAX_METADATA_CONTAINERS} lists, tuples and "
            "mappings (MAX_METADATA_CONTAINERS); store large structured data in the "
            "records, or as one string (json.dumps) in the metadata"
        )
    return dict(metadata)


def check_version(version: Any) -> int | str | None:
    """``version`` as a reader takes it: ``None`` (the newest), a version number
    (commits count from 1) or a tag (a non-empty string).

    Raises
    ------
    TypeError
        If it is neither (a ``bool`` is not a version).
    ValueError
        If it is a number below 1.
    """
    if version is None or (isinstance(version, str) and version):
        return version
    if isinstance(version, bool) or not hasattr(version, "__index__"):
        raise TypeError(f"version must be an int or a tag (str), not {version!r}")
    n = int(version.__index__())
    if n < 1:
        raise ValueError(f"version must be >= 1 (versions count commits), not {n}")
    return n


def _containers(value: Any, stop: int) -> int:
    """How many mappings, lists and tuples ``value`` is and holds (JSON's arrays and
    objects), counted until the count passes ``stop``."""
    count, todo = 0, [value]
    while todo and count <= stop:
        v = todo.pop()
        if isinstance(v, Mapping):
            count += 1
            todo.extend(x for x in v.values() if isinstance(x, Mapping | list | tuple))
        elif isinstance(v, list | tuple):
            count += 1
            todo.extend(x for x in v if isinstance(x, Mapping | list | tuple))
    return count

"""Argument checks shared by every entry point, so one mistake reads the same everywhere."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["check_int", "check_metadata"]


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
    return dict(metadata)

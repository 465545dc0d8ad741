"""Bounds on a JSON document checked before it is parsed: its size and nesting depth.

``json.loads`` recurses once per nesting level and builds whatever the text
describes, so a hostile manifest must be measured first. The scan is linear and
runs in C: escaped backslashes and quotes are dropped (left to right, as JSON pairs
them), the text is split at the remaining quotes so that every other piece is
outside a string, and the brackets left there are summed with NumPy.
"""

from __future__ import annotations

import numpy as np

from splitdask.errors import CorruptDatasetError

__all__ = ["check_json_bounds", "json_depth"]

_STEP = np.zeros(256, np.int8)
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1
_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in ``data`` (0 for a scalar).

    Exact for valid JSON; for invalid JSON it may say anything (the parser then
    refuses the text, and its recursion is caught as well).
    """
    # Only brackets outside strings count. Outside strings valid JSON has no
    # backslash, so after dropping escape pairs every quote opens or closes one.
    unescaped = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(unescaped.split(b'"')[0::2])
    brackets = outside.translate(None, _BRACKETS)
    if not brackets:
        return 0
    levels = np.cumsum(_STEP[np.frombuffer(brackets, dtype=np.uint8)], dtype=np.int64)
    return max(0, int(levels.max()))


def check_json_bounds(data: bytes, max_bytes: int, max_depth: int, where: str) -> None:
    """Refuse ``data`` if it is larger than ``max_bytes`` or nests deeper than
    ``max_depth``, with a :class:`CorruptDatasetError` naming ``where``."""
    if len(data) > max_bytes:
        raise CorruptDatasetError(
            f"{where}: {len(data)} bytes, more than the largest manifest read "
            f"(MAX_MANIFEST_BYTES = {max_bytes})"
        )
    depth = json_depth(data)
    if depth > max_depth:
        raise CorruptDatasetError(
            f"{where}: JSON nested {depth} levels deep, more than allowed (MAX_DEPTH = {max_depth})"
        )

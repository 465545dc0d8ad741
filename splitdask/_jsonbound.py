"""Bounds on a JSON document checked before it is parsed: its size and nesting depth.

``json.loads`` recurses once per nesting level and builds whatever the text
describes, so a hostile manifest must be measured first. The scan is linear:
in bounded chunks, each byte is classed as escaped, inside a string or a
bracket with a few vectorised passes, and the brackets outside strings are summed.
"""

from __future__ import annotations

import numpy as np

from splitdask.errors import CorruptDatasetError

__all__ = ["check_json_bounds", "json_depth"]

_CHUNK = 1 << 20
_OPEN = np.zeros(256, np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_OPEN[[ord("]"), ord("}")]] = -1


def json_depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in ``data`` (0 for a scalar).

    Exact for valid JSON; for invalid JSON it may say anything (the parser then
    refuses the text, and its recursion is caught as well).
    """
    codes = np.frombuffer(data, dtype=np.uint8)
    depth = deepest = 0
    in_string = False
    escape = False  # the previous chunk ended on a backslash that escapes
    run = 0  # backslashes ending the previous chunk
    for lo in range(0, len(codes), _CHUNK):
        c = codes[lo : lo + _CHUNK]
        bs = c == ord("\\")
        escaped = np.zeros(len(c), dtype=bool)
        escaped[0] = escape
        if bs.any():
            # A backslash escapes the next byte if it is odd-numbered in its run.
            idx = np.arange(len(c))
            prev = np.maximum.accumulate(np.where(bs, -1, idx))
            pos = idx - prev + np.where(prev < 0, run, 0)
            active = bs & (pos % 2 == 1)
            escaped[1:] |= active[:-1]
            escape, run = bool(active[-1]), int(pos[-1]) if bs[-1] else 0
        else:
            escape, run = False, 0
        quotes = np.cumsum((c == ord('"')) & ~escaped) + in_string
        step = _OPEN[c] * (quotes % 2 == 0)
        if step.any():
            levels = np.cumsum(step, dtype=np.int64) + depth
            deepest = max(deepest, int(levels.max()))
            depth = int(levels[-1])
        in_string = bool(quotes[-1] % 2)
    return deepest


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

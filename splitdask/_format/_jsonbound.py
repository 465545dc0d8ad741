"""Bounds on a JSON document checked before it is parsed: its size, its nesting depth
and how many arrays and objects it holds for its size.

``json.loads`` recurses once per nesting level and builds whatever the text
describes; an empty array costs CPython about 25 times its 3 bytes (``[],``), so a
hostile document of a few hundred MB of them takes gigabytes and tens of seconds.
Everything else JSON holds costs at most about 13 times its text (a short string;
a number about 9 times), so bounding the arrays and objects per byte bounds the
cost of parsing to a small multiple of the document's size.

The scan is linear and its memory does not grow with the document: it runs over
chunks of ``_CHUNK`` bytes, in C and NumPy. In each chunk escaped backslashes and
quotes are dropped (left to right, as JSON pairs them; a chunk never ends inside a
run of backslashes), the parity of the quotes so far tells which bytes lie outside
strings, and the brackets there are counted and summed. A document with a NUL
byte is refused first: UTF-8 JSON has none, and in UTF-16 or UTF-32 (which
``json.loads`` would also accept) a byte that looks like a quote can be half of
another character, which would blind the scan.
"""

from __future__ import annotations

import numpy as np

from splitdask.errors import CorruptDatasetError

__all__ = [
    "CONTAINER_BYTES",
    "FREE_CONTAINERS",
    "check_json_bounds",
    "json_depth",
    "json_shape",
]

CONTAINER_BYTES = 12
"""A document may hold one JSON array or object per this many bytes (beyond
``FREE_CONTAINERS``). The densest thing splitdask writes is an order segment of one
bin, three per 45 to 60 bytes; a document of ``[]`` has one per 3 bytes."""
FREE_CONTAINERS = 1 << 18
"""Arrays and objects a document may hold whatever its size: a dataset of 65,536
mostly empty bins (``[],`` each) and user metadata of many small lists stay well
within it, and parsing that many costs about 20 MB."""

_CHUNK = 1 << 20
_STEP = np.zeros(256, np.int8)
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1
_BACKSLASH = ord("\\")
_OTHERS = bytes(b for b in range(256) if b not in b'"[]{}')


def json_shape(data: bytes, stop_containers: int | None = None) -> tuple[int, int]:
    """``(depth, containers)`` of ``data``: the deepest nesting of arrays and objects
    (0 for a scalar), and how many arrays and objects it opens.

    Exact for valid JSON; for invalid JSON they may say anything (the parser then
    refuses the text, and its recursion is caught as well). The scan stops early,
    with what it counted so far, once ``containers`` passes ``stop_containers``.
    """
    n = len(data)
    pos = quotes = level = deepest = containers = 0
    while pos < n:
        end = min(n, pos + _CHUNK)
        while end < n and data[end - 1] == _BACKSLASH:
            end += 1  # a run of backslashes is never split: escapes pair within it
        piece = data[pos:end]
        pos = end
        if b"\\" in piece:
            # Outside strings valid JSON has no backslash, so after dropping escape
            # pairs every quote opens or closes one.
            piece = piece.replace(b"\\\\", b"").replace(b'\\"', b"")
        # Only quotes and brackets matter, and their order: the rest goes first (in C).
        u = np.frombuffer(piece.translate(None, _OTHERS), np.uint8)
        is_quote = u == 34
        # Quotes so far, mod 2 (a uint8 sum wraps, its parity does not): even
        # before a byte means the byte is outside any string (a closing quote too).
        parity = np.cumsum(is_quote, dtype=np.uint8)
        parity += quotes & 1
        steps = _STEP[u]
        steps[(parity & 1).view(bool)] = 0
        steps = steps[steps != 0]
        quotes += int(np.count_nonzero(is_quote))
        if not len(steps):
            continue
        containers += int(np.count_nonzero(steps > 0))
        levels = np.cumsum(steps, dtype=np.int32)
        deepest = max(deepest, level + int(levels.max()))
        level += int(levels[-1])
        if stop_containers is not None and containers > stop_containers:
            break
    return deepest, containers


def json_depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in ``data`` (0 for a scalar); see
    :func:`json_shape`."""
    return json_shape(data)[0]


def check_json_bounds(
    data: bytes,
    max_bytes: int,
    max_depth: int,
    where: str,
    *,
    container_bytes: int = CONTAINER_BYTES,
    free_containers: int = FREE_CONTAINERS,
    kind: str = "manifest",
    size_name: str = "MAX_MANIFEST_BYTES",
) -> None:
    """Refuse ``data`` before it is parsed, with a :class:`CorruptDatasetError` naming
    ``where`` and the limit, if it is larger than ``max_bytes``, is not UTF-8 (a NUL
    byte), nests deeper than ``max_depth``, or holds more arrays and objects than
    ``free_containers`` plus one per ``container_bytes`` bytes. Parsing what passes
    costs at most about 15 times its size. ``kind`` and ``size_name`` word the size
    limit's message (the document read, and the constant that sets the limit).
    """
    if len(data) > max_bytes:
        raise CorruptDatasetError(
            f"{where}: {len(data)} bytes, more than the largest {kind} read "
            f"({size_name} = {max_bytes})"
        )
    if (nul := data.find(b"\0")) >= 0:
        raise CorruptDatasetError(
            f"{where}: a NUL byte at offset {nul}: not UTF-8 JSON (splitdask writes UTF-8)"
        )
    allowed = free_containers + len(data) // container_bytes
    depth, containers = json_shape(data, stop_containers=allowed)
    if depth > max_depth:
        raise CorruptDatasetError(
            f"{where}: JSON nested {depth} levels deep, more than allowed (MAX_DEPTH = {max_depth})"
        )
    if containers > allowed:
        raise CorruptDatasetError(
            f"{where}: more than {allowed} JSON arrays and objects in {len(data)} bytes, "
            f"more than allowed (FREE_CONTAINERS = {free_containers}, plus one per "
            f"CONTAINER_BYTES = {container_bytes} bytes): not written by splitdask, and "
            "refused before parsing (parsing it would take memory out of proportion "
            "to its size)"
        )

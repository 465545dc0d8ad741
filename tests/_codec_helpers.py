"""A user codec, a transform and a child-process reader for ``test_codec.py``.

They live in their own importable module so that a process started with ``spawn``
unpickles them by name (``tests/`` is on ``sys.path`` under pytest, and children
inherit it). Importing this module registers nothing: the tests register the codec
in their own process only, so a child that decodes it got it from the pickled loader.
"""

from __future__ import annotations

import struct
from typing import Any

from splitdask import SplitDataLoader

CODEC = "point3"


def encode_point(p: Any) -> bytes:
    """A user codec for ``(x, y, z)`` float triples: 24 bytes, big-endian."""
    return struct.pack(">3d", *p)


def decode_point(buf: Any) -> tuple[float, ...]:
    return struct.unpack(">3d", buf)  # type: ignore[no-any-return]


def label_plus_one(rec: dict[str, Any]) -> dict[str, Any]:
    """A transform: a copy of ``rec`` with its label incremented."""
    return {**rec, "label": rec["label"] + 1}


def read_everything(loader: SplitDataLoader) -> dict[str, Any]:
    """Run in a spawned child: what each read path of ``loader`` gives there."""
    from splitdask._format._codec import known_codecs

    return {
        "registered_here": CODEC in known_codecs(),
        "first": loader[0],
        "all": list(loader),
        "binwise": list(loader.iterate_binwise()),
        "batches": list(loader.iterate_batches(7)),
    }

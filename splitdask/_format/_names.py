"""Names of parts on disk: where a new part goes, its temp name, and reading one back.

No I/O; re-exported by ``_format`` with the rest of the on-disk format.
"""

from __future__ import annotations

import re

__all__ = ["BINS_DIR", "parse_part_name", "part_name", "temp_name"]

BINS_DIR = "bins"
_PART_FILE = re.compile(r"(\.?)([0-9]{5,})-([0-9a-f]{8,64})\.bin(\.tmp)?")


def part_name(bin_index: int, uid: str) -> str:
    """Path, relative to the dataset root, of a new part of bin ``bin_index``."""
    return f"{BINS_DIR}/{bin_index:05d}-{uid}.bin"


def temp_name(rel: str) -> str:
    """Name under which a local part is written before it is renamed to ``rel``.

    Hidden (a leading dot) and suffixed, so no reader or listing mistakes it for a part.
    """
    head, _, name = rel.rpartition("/")
    return f"{head}/.{name}.tmp" if head else f".{name}.tmp"


def parse_part_name(name: str) -> tuple[int, str, bool] | None:
    """``(bin, uid, is_temp)`` of a file name under ``bins/``, or ``None`` if it is
    neither a part nor a part's temp file (see :func:`part_name`, :func:`temp_name`)."""
    m = _PART_FILE.fullmatch(name.rsplit("/", 1)[-1])
    if m is None or bool(m[1]) != bool(m[4]):
        return None
    return int(m[2]), m[3], bool(m[4])

"""How long versions are kept, and the checkpoints that let the oldest kept one open alone.

Shared by the commit (``_commit``: a checkpoint every :data:`CHECKPOINT_EVERY`
versions) and ``gc`` (``_gc``: a checkpoint at the oldest version it keeps).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from splitdask._format import Manifest
from splitdask._format._checkpoint import encode_checkpoint
from splitdask._format._log import checkpoint_name
from splitdask._store import Store

__all__ = [
    "CHECKPOINT_EVERY",
    "DEFAULT_KEEP_VERSIONS",
    "DEFAULT_RETENTION",
    "check_retention",
    "write_checkpoint",
]

DEFAULT_RETENTION = 3600.0
"""Seconds a version stays readable after a newer one replaced it, and the age below
which an unnamed file is taken to belong to a write still running."""
DEFAULT_KEEP_VERSIONS = 1
"""Newest versions kept whatever their age."""
CHECKPOINT_EVERY = 16
"""A checkpoint is written at every version divisible by this: opening replays at
most this many log entries."""


def write_checkpoint(store: Store, manifest: Manifest, info: Mapping[str, Any]) -> None:
    """Write ``manifest``'s checkpoint, unless someone has."""
    store.create_exclusive(checkpoint_name(manifest.generation), encode_checkpoint(manifest, info))


def check_retention(retention: float, keep_versions: int) -> None:
    """Refuse a retention that is not a number of seconds >= 0, or ``keep_versions`` < 1."""
    if isinstance(retention, bool) or not isinstance(retention, int | float) or retention < 0:
        raise ValueError(f"retention must be a non-negative number of seconds, not {retention!r}")
    if isinstance(keep_versions, bool) or not isinstance(keep_versions, int) or keep_versions < 1:
        raise ValueError(f"keep_versions must be an integer >= 1, not {keep_versions!r}")

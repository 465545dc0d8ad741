"""Exceptions raised by splitdask.

Each one also derives from the builtin exception a caller would catch for the same
situation (``FileNotFoundError``, ``ValueError``, ``RuntimeError``), so code written
against plain Python I/O keeps working.
"""

from __future__ import annotations

__all__ = [
    "CommitConflictError",
    "CorruptDatasetError",
    "DatasetNotFoundError",
    "FormatVersionError",
    "SnapshotExpiredError",
    "SplitDaskError",
]


class SplitDaskError(Exception):
    """Base class of every error splitdask raises on purpose."""


class DatasetNotFoundError(SplitDaskError, FileNotFoundError):
    """No committed dataset at the location (no manifest, and no legacy index)."""


class CorruptDatasetError(SplitDaskError, ValueError):
    """A manifest or bin part is malformed, truncated, missing or fails its checksum."""


class FormatVersionError(SplitDaskError, ValueError):
    """The manifest was written by a format version this library cannot read."""


class CommitConflictError(SplitDaskError, RuntimeError):
    """Another writer committed to the same dataset while this one was writing."""


class SnapshotExpiredError(SplitDaskError, RuntimeError):
    """A reader's snapshot was replaced (an overwrite or a compaction) and the parts
    it named were removed after the retention period; open a new reader."""

"""splitdask: training data split over bins, read back fast, locally, remotely and with Dask."""

from __future__ import annotations

from splitdask.errors import (
    CommitConflictError,
    CorruptDatasetError,
    DatasetNotFoundError,
    FormatVersionError,
    SplitDaskError,
)

__version__ = "0.1.0"

__all__ = [
    "CommitConflictError",
    "CorruptDatasetError",
    "DatasetNotFoundError",
    "FormatVersionError",
    "SplitDaskError",
    "__version__",
]

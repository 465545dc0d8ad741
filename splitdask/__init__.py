"""splitdask: training data split over bins, read back fast, locally, remotely and with Dask.

The public API is listed in ``__all__``; the modules it comes from are:
``writer`` (writing), ``reader`` (reading), ``errors``, and the format and storage
layers underneath (``format``, ``index``, ``storage``, ``legacy``).
"""

from __future__ import annotations

from splitdask.errors import (
    CommitConflictError,
    CorruptDatasetError,
    DatasetNotFoundError,
    FormatVersionError,
    SplitDaskError,
)
from splitdask.reader import SplitDataLoader, VerifyReport
from splitdask.writer import CommitInfo, SplitWriter, write_split_data

__version__ = "0.1.0"

__all__ = [
    "CommitConflictError",
    "CommitInfo",
    "CorruptDatasetError",
    "DatasetNotFoundError",
    "FormatVersionError",
    "SplitDataLoader",
    "SplitDaskError",
    "SplitWriter",
    "VerifyReport",
    "__version__",
    "write_split_data",
]

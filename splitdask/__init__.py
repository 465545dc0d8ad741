"""splitdask: training data split over bins, read back fast, locally, remotely and with Dask.

The public API is listed in ``__all__``. It comes from ``writer`` (writing),
``reader`` (reading), ``bag`` (Dask), ``mpq`` (the prefetching iterator) and
``errors``, over the ``format``, ``index``, ``storage`` and ``legacy`` layers.
Submodules are imported on first use, so ``import splitdask`` is cheap (a
spawned MpQItr worker does not pay for fsspec or Dask unless it uses them).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from splitdask.errors import (
    CommitConflictError,
    CorruptDatasetError,
    DatasetNotFoundError,
    FormatVersionError,
    SplitDaskError,
)

if TYPE_CHECKING:
    from splitdask.bag import read_split_bins, to_split_bins
    from splitdask.mpq import (
        MpQItr,
        MpQItrError,
        MpQItrTimeoutError,
        MpQOptions,
        MpQRun,
        RemoteTraceback,
        WorkerDiedError,
        WorkerInfo,
        get_worker_info,
    )
    from splitdask.reader import SplitDataLoader, VerifyReport
    from splitdask.writer import CommitInfo, SplitWriter, write_split_data

__version__ = "0.1.0"

_LAZY = {
    "read_split_bins": "splitdask.bag",
    "to_split_bins": "splitdask.bag",
    "MpQItr": "splitdask.mpq",
    "MpQItrError": "splitdask.mpq",
    "MpQItrTimeoutError": "splitdask.mpq",
    "MpQOptions": "splitdask.mpq",
    "MpQRun": "splitdask.mpq",
    "RemoteTraceback": "splitdask.mpq",
    "WorkerDiedError": "splitdask.mpq",
    "WorkerInfo": "splitdask.mpq",
    "get_worker_info": "splitdask.mpq",
    "SplitDataLoader": "splitdask.reader",
    "VerifyReport": "splitdask.reader",
    "CommitInfo": "splitdask.writer",
    "SplitWriter": "splitdask.writer",
    "write_split_data": "splitdask.writer",
}

__all__ = [
    "CommitConflictError",
    "CommitInfo",
    "CorruptDatasetError",
    "DatasetNotFoundError",
    "FormatVersionError",
    "MpQItr",
    "MpQItrError",
    "MpQItrTimeoutError",
    "MpQOptions",
    "MpQRun",
    "RemoteTraceback",
    "SplitDataLoader",
    "SplitDaskError",
    "SplitWriter",
    "VerifyReport",
    "WorkerDiedError",
    "WorkerInfo",
    "__version__",
    "get_worker_info",
    "read_split_bins",
    "to_split_bins",
    "write_split_data",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'splitdask' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this hook
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

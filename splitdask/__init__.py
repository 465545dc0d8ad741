"""splitdask: training data split over bins, read back fast, locally, remotely and with Dask.

The public API is the table :data:`_API` below: each public name and the module it
lives in. Modules are imported on first use of one of their names (PEP 562), so
``import splitdask`` is cheap: a spawned MpQItr worker does not pay for fsspec,
NumPy or Dask unless it uses them. Public modules are the ones users import
(``splitdask.bag``, ``splitdask.ray``, ``splitdask.torch``, ``splitdask.plan``,
``splitdask.mpq``, ``splitdask.errors``); underscored modules are internal and may
change.

Note to developers: the private subpackages, in dependency order (each imports only
those listed before it; ``python ci/structure.py`` checks it, and
``docs/decisions.md``, "The package's shape", says why):

* ``errors``, ``_util``: exceptions, argument checks, progress bars, the worker split.
* ``_format``: every byte layout (manifest, part footers, part names, compression);
  no I/O.
* ``_store``: where bytes live: one :class:`Store` class per backend (local, fsspec,
  S3); no format knowledge.
* ``_dataset``: what a commit left: index arithmetic, seeded orders and epoch plans
  (public as ``plan``), the kinds of part, legacy datasets, :class:`Snapshot`.
* ``_read``: records, batches and bins out of a snapshot, verify, describe, and the
  read layer's ``Loader``.
* ``_write``: parts in, the commit protocol, compaction and gc, ``SplitWriter``.
* the engines: ``_transfer`` (import and export), ``_front`` (the public
  ``SplitDataLoader``), ``bag`` (Dask), ``ray``, ``torch``; ``mpq`` stands apart
  and needs only ``errors`` and ``_util``.
* ``cli``: the ``splitdask`` command.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from splitdask._dataset._versions import VersionInfo as VersionInfo
    from splitdask._format._codec import Codec as Codec
    from splitdask._format._codec import register_codec as register_codec
    from splitdask._front import SplitDataLoader as SplitDataLoader
    from splitdask._read._batch import RecordBatch as RecordBatch
    from splitdask._read._describe import Description as Description
    from splitdask._read._history import versions as versions
    from splitdask._read._verify import VerifyReport as VerifyReport
    from splitdask._transfer._export import export_records as export_records
    from splitdask._transfer._sources import Source as Source
    from splitdask._transfer._sources import open_source as open_source
    from splitdask._write._commit import CommitInfo as CommitInfo
    from splitdask._write._compact import compact as compact
    from splitdask._write._gc import GcReport as GcReport
    from splitdask._write._gc import gc as gc
    from splitdask._write._writer import SplitWriter as SplitWriter
    from splitdask._write._writer import write_split_data as write_split_data
    from splitdask.bag import read_split_bins as read_split_bins
    from splitdask.bag import to_split_bins as to_split_bins
    from splitdask.errors import CleanupWarning as CleanupWarning
    from splitdask.errors import CommitConflictError as CommitConflictError
    from splitdask.errors import CompactionWarning as CompactionWarning
    from splitdask.errors import CorruptDatasetError as CorruptDatasetError
    from splitdask.errors import DatasetNotFoundError as DatasetNotFoundError
    from splitdask.errors import FormatVersionError as FormatVersionError
    from splitdask.errors import ResumeStateError as ResumeStateError
    from splitdask.errors import SnapshotExpiredError as SnapshotExpiredError
    from splitdask.errors import SplitDaskError as SplitDaskError
    from splitdask.errors import SplitDaskWarning as SplitDaskWarning
    from splitdask.mpq import MpQItr as MpQItr
    from splitdask.mpq import MpQItrError as MpQItrError
    from splitdask.mpq import MpQItrTimeoutError as MpQItrTimeoutError
    from splitdask.mpq import MpQOptions as MpQOptions
    from splitdask.mpq import MpQRun as MpQRun
    from splitdask.mpq import RemoteTraceback as RemoteTraceback
    from splitdask.mpq import WorkerDiedError as WorkerDiedError
    from splitdask.mpq import WorkerInfo as WorkerInfo
    from splitdask.mpq import get_worker_info as get_worker_info
    from splitdask.plan import shuffle_quality as shuffle_quality

__version__ = "0.1.0"

_API: dict[str, str] = {
    # reading and writing
    "SplitDataLoader": "splitdask._front",
    "RecordBatch": "splitdask._read._batch",
    "VerifyReport": "splitdask._read._verify",
    "SplitWriter": "splitdask._write._writer",
    "write_split_data": "splitdask._write._writer",
    "CommitInfo": "splitdask._write._commit",
    "compact": "splitdask._write._compact",
    "gc": "splitdask._write._gc",
    "GcReport": "splitdask._write._gc",
    "Description": "splitdask._read._describe",
    # typed records: how a dataset's records are encoded (codec=, decode=)
    "register_codec": "splitdask._format._codec",
    "Codec": "splitdask._format._codec",
    # versions: every commit makes one; readers pin one
    "versions": "splitdask._read._history",
    "VersionInfo": "splitdask._dataset._versions",
    # import and export (the `splitdask` command's sources and formats)
    "open_source": "splitdask._transfer._sources",
    "Source": "splitdask._transfer._sources",
    "export_records": "splitdask._transfer._export",
    # Dask
    "read_split_bins": "splitdask.bag",
    "to_split_bins": "splitdask.bag",
    # the prefetching iterator
    "MpQItr": "splitdask.mpq",
    "MpQItrError": "splitdask.mpq",
    "MpQItrTimeoutError": "splitdask.mpq",
    "MpQOptions": "splitdask.mpq",
    "MpQRun": "splitdask.mpq",
    "RemoteTraceback": "splitdask.mpq",
    "WorkerDiedError": "splitdask.mpq",
    "WorkerInfo": "splitdask.mpq",
    "get_worker_info": "splitdask.mpq",
    # training (splitdask.torch holds the PyTorch datasets; it imports torch)
    "shuffle_quality": "splitdask.plan",
    # errors
    "CommitConflictError": "splitdask.errors",
    "CorruptDatasetError": "splitdask.errors",
    "DatasetNotFoundError": "splitdask.errors",
    "FormatVersionError": "splitdask.errors",
    "SnapshotExpiredError": "splitdask.errors",
    "ResumeStateError": "splitdask.errors",
    "SplitDaskError": "splitdask.errors",
    # warnings (all are SplitDaskWarning; the specific ones are RuntimeWarning too)
    "SplitDaskWarning": "splitdask.errors",
    "CleanupWarning": "splitdask.errors",
    "CompactionWarning": "splitdask.errors",
}

__all__ = ["__version__", *sorted(_API)]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'splitdask' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this hook
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

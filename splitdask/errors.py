"""Exceptions raised, and warnings emitted, by splitdask.

Each exception also derives from the builtin exception a caller would catch for the
same situation (``FileNotFoundError``, ``ValueError``, ``RuntimeError``), so code
written against plain Python I/O keeps working. Every warning is a
:class:`SplitDaskWarning`, so one filter silences them all; each specific warning
also derives from the builtin category it was emitted as before (``RuntimeWarning``),
so filters written against that keep working.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CommitConflictError",
    "CorruptDatasetError",
    "DatasetNotFoundError",
    "FormatVersionError",
    "SnapshotExpiredError",
    "SplitDaskError",
    "MpQItrError",
    "MpQItrTimeoutError",
    "RemoteTraceback",
    "WorkerDiedError",
    "ResumeStateError",
    "SplitDaskWarning",
    "CleanupWarning",
    "CompactionWarning",
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
    """A commit lost to other writers more often than its retries allow, or cannot
    apply to what they committed (it would create a dataset that now exists)."""


class SnapshotExpiredError(SplitDaskError, RuntimeError):
    """A reader's snapshot was replaced (an overwrite or a compaction) and the parts
    it named were removed after the retention period; open a new reader."""


# ------------------------------------------------------------------------ MpQItr


class MpQItrError(SplitDaskError, RuntimeError):
    """A worker of an :class:`~splitdask.mpq.MpQItr` failed in a way that is not a plain exception.

    Raised when a worker's exception cannot be re-created in the parent (it did
    not pickle, or it is not an ``Exception``), when ``generator_fn`` cannot be
    sent to a worker, or when an item cannot be unpickled.

    Attributes
    ----------
    worker_id : int or None
        The worker involved, if any.
    remote_type : str or None
        Qualified name of the worker's exception type, if it raised one.
    remote_traceback : str or None
        The worker's traceback text, if it raised.
    """

    # No __reduce__: BaseException's own pickles (type, args, __dict__), which keeps
    # every attribute, subclasses' included, as long as ``cls(message)`` works.
    def __init__(
        self,
        message: str,
        *,
        worker_id: int | None = None,
        remote_type: str | None = None,
        remote_traceback: str | None = None,
    ) -> None:
        super().__init__(message)
        self.worker_id = worker_id
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback


class WorkerDiedError(MpQItrError):
    """A worker process ended before its generator finished.

    Attributes
    ----------
    exitcode : int or None
        The process exit code; negative ``-N`` means it was killed by signal ``N``
        (``-9`` is ``SIGKILL``, which is also what the out-of-memory killer sends).
    pid : int or None
        The worker's process id.
    """

    def __init__(
        self,
        message: str,
        *,
        worker_id: int | None = None,
        exitcode: int | None = None,
        pid: int | None = None,
    ) -> None:
        super().__init__(message, worker_id=worker_id)
        self.exitcode = exitcode
        self.pid = pid


class MpQItrTimeoutError(MpQItrError, TimeoutError):
    """No item arrived within :attr:`~splitdask.mpq.MpQOptions.timeout` seconds."""

    # RuntimeError's __new__ comes first in the MRO but cannot make an OSError: picklers
    # that call ``cls.__new__(cls)`` (tblib's, which dask installs for every exception
    # class) would fail. TimeoutError's can.
    def __new__(cls, *args: Any, **kwargs: Any) -> MpQItrTimeoutError:
        return TimeoutError.__new__(cls, *args)


class RemoteTraceback(Exception):
    """Carries a worker's traceback text; set as ``__cause__`` of re-raised errors.

    It is what makes ``The above exception was the direct cause ...`` show the
    worker's own frames when the parent prints the error. It is never raised on
    its own, so it derives from ``Exception`` only.
    """

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return "\n\n" + self.tb.rstrip("\n") + "\n(end of worker traceback)"


class ResumeStateError(SplitDaskError, ValueError):
    """A resume state is damaged, or was saved for another dataset snapshot, seed,
    shuffle mode or window."""


# ---------------------------------------------------------------------- warnings


class SplitDaskWarning(UserWarning):
    """Base class of every warning splitdask emits.

    Examples
    --------
    >>> import warnings
    >>> warnings.filterwarnings("ignore", category=SplitDaskWarning)  # doctest: +SKIP
    """


class CleanupWarning(SplitDaskWarning, RuntimeWarning):
    """Files that no manifest names (replaced or abandoned parts, a killed writer's
    leftovers) could not be removed. Nothing of the dataset is lost: they are garbage
    that ``gc`` or a later write removes, or that can be deleted by hand. Expected on
    a bucket without delete permission."""


class CompactionWarning(SplitDaskWarning, RuntimeWarning):
    """The compaction that follows an append failed; the append itself is committed
    and the next append tries again."""

"""``SplitDataLoader.verify``: every part read whole and checked as its kind requires."""

from __future__ import annotations

from dataclasses import dataclass

from splitdask._dataset._snapshot import Snapshot
from splitdask._util._progress import Progress
from splitdask.errors import CorruptDatasetError

__all__ = ["VerifyReport", "verify"]


@dataclass(frozen=True)
class VerifyReport:
    """What :meth:`SplitDataLoader.verify` checked."""

    parts: int
    bytes: int


def verify(snapshot: Snapshot, progress: bool = False) -> VerifyReport:
    """Check every part's size and content (format v1: checksum and footer; legacy:
    each record's length prefix against the index). ``progress`` shows a bar
    (records/s, MB/s, ETA) as parts are checked.

    Raises
    ------
    CorruptDatasetError
        Naming every missing, truncated or altered file found.
    """
    store = snapshot.store.uncached()  # the parts as stored, not the cached copies
    problems: list[str] = []
    total = 0
    with Progress(progress, snapshot.num_records, f"verifying {store.urlpath}") as bar:
        for part in snapshot.parts:
            try:
                size, problem = part.verify(store)
            except FileNotFoundError:
                problems.append(f"{store.where(part.path)}: missing")
                size, problem = 0, None
            total += size
            bar.update(part.count, size)
            if problem is not None:
                problems.append(problem)
    if problems:
        raise CorruptDatasetError(
            f"verify found {len(problems)} problem(s):\n  " + "\n  ".join(problems)
        )
    return VerifyReport(parts=len(snapshot.parts), bytes=total)

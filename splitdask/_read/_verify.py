"""``SplitDataLoader.verify``: every part read whole and checked as its kind requires."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from splitdask._dataset._parts import Part
from splitdask._dataset._snapshot import Snapshot
from splitdask._util._progress import Progress
from splitdask.errors import CorruptDatasetError

__all__ = ["VERIFY_STREAMS", "VerifyReport", "verify"]

VERIFY_STREAMS = 16
"""Remote parts :func:`verify` reads at once."""


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

    def check(part: Part) -> tuple[int, str | None]:
        try:
            return part.verify(store)
        except FileNotFoundError:
            return 0, f"{store.where(part.path)}: missing"

    # Remote parts are streamed side by side, so the link stays full; each stream
    # holds one 8 MiB read at a time. Local disks are read one part after another.
    workers = 1 if store.is_local else VERIFY_STREAMS
    with (
        Progress(progress, snapshot.num_records, f"verifying {store.urlpath}") as bar,
        ThreadPoolExecutor(workers) as pool,
    ):
        for part, (size, problem) in zip(
            snapshot.parts, pool.map(check, snapshot.parts), strict=True
        ):
            total += size
            bar.update(part.count, size)
            if problem is not None:
                problems.append(problem)
    if problems:
        raise CorruptDatasetError(
            f"verify found {len(problems)} problem(s):\n  " + "\n  ".join(problems)
        )
    return VerifyReport(parts=len(snapshot.parts), bytes=total)

"""A write's files outside the manifest: whose they are, and the one rule that removes them.

Every part a write makes starts its unique name with the write's *tag*
(:func:`new_tag`), so the files of one write can be told from others' (:func:`tagged`)
when a commit collects what its killed or repeated task runs left. Files nothing
names are removed by :func:`tidy`, the single cleanup rule: a failure to remove
loses nothing and is reported as a :class:`~splitdask.errors.CleanupWarning`, never
as an error.
"""

from __future__ import annotations

import secrets
import warnings
from collections.abc import Sequence

from splitdask._format import BINS_DIR, Manifest, parse_part_name
from splitdask._store import Store
from splitdask.errors import CleanupWarning

__all__ = ["new_tag", "orphans", "tagged", "tidy", "warn_left"]


def new_tag() -> str:
    """A fresh tag for one write: it starts the uid of every part the write makes."""
    return secrets.token_hex(8)


def tagged(name: str, tag: str) -> bool:
    """Whether a file under ``bins/`` (a part or its temp file) belongs to write ``tag``."""
    parsed = parse_part_name(name)
    return parsed is not None and parsed[1].startswith(tag)


def orphans(store: Store, manifest: Manifest | None, before: float) -> list[str]:
    """Files under ``bins/`` that ``manifest`` neither names nor retires, last
    modified before ``before`` (a POSIX time): leftovers of writers that died."""
    known = set()
    if manifest is not None:
        known = {p.path for p in manifest.parts()} | {r.path for r in manifest.retired}
    # Names first (cheap): mostly every file is known, and then nothing needs a stat.
    names = store.list_dir(BINS_DIR)
    unknown = {n for n in names if f"{BINS_DIR}/{n}" not in known and parse_part_name(n)}
    if not unknown:
        return []
    infos = store.list_info(BINS_DIR)
    return [f"{BINS_DIR}/{i.name}" for i in infos if i.name in unknown and i.mtime < before]


def tidy(store: Store, rels: Sequence[str], what: str) -> None:
    """Remove files no manifest names; on failure warn, leaving them as garbage.

    Losing this cleanup loses nothing, so it never turns a write that succeeded
    into an error (a caller would then abandon parts it just committed).
    """
    if not rels:
        return
    try:
        store.remove(rels)
    except Exception as exc:
        warn_left(store, f"{len(rels)} {what}", exc)


def warn_left(store: Store, what: str, exc: Exception) -> None:
    """Warn that ``what`` at ``store`` was left behind (``exc`` said why); its caller's
    caller is named as where the warning comes from."""
    warnings.warn(
        f"{store.urlpath}: could not remove {what} ({type(exc).__name__}: {exc}); they "
        "are not part of the dataset and can be deleted by hand",
        CleanupWarning,
        stacklevel=3,
    )

"""A dataset's history: :func:`versions`, what ``splitdask log`` prints."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from splitdask._dataset._snapshot import open_snapshot
from splitdask._dataset._versions import VersionInfo, list_log, version_infos
from splitdask._store import UrlPath, open_store

__all__ = ["versions"]


def versions(
    urlpath: UrlPath, storage_options: Mapping[str, Any] | None = None
) -> list[VersionInfo]:
    """Every version of the dataset at ``urlpath`` that can still be opened, oldest first.

    Parameters
    ----------
    urlpath, storage_options
        The dataset, as for :class:`~splitdask.SplitDataLoader`.

    Returns
    -------
    list of VersionInfo
        Each version's number, commit time, what the commit did (``create``,
        ``append``, ``overwrite``, ``compact``, ``convert``, ``metadata``), the
        dataset's records and bins at that version, what the commit wrote, and its
        tag. Open one with ``SplitDataLoader(urlpath, version=v.version)``; ``gc``
        removes those past their retention. A dataset written before versions has
        one, its generation (time 0: not recorded); a splitdataloader dataset none.

    Raises
    ------
    DatasetNotFoundError
        If no dataset was ever committed at ``urlpath``.
    """
    store = open_store(urlpath, storage_options)
    listing = list_log(store)
    if listing.versions:
        return version_infos(store, listing)
    snap = open_snapshot(store)  # raises DatasetNotFoundError for nothing there
    if snap.manifest is None:
        return []
    m = snap.manifest
    return [VersionInfo(m.generation, 0.0, "convert", m.num_records, m.num_bins, 0, 0, 0, None)]

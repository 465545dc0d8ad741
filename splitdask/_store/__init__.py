"""Where a dataset lives: one :class:`Store` class per backend, built by :func:`open_store`."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any, Literal

from splitdask._store._base import PartSink, Store, UrlPath
from splitdask._store._cache import CacheInfo, CacheStats, PartCache
from splitdask._store._cachesettings import parse_bytes, resolve_cache
from splitdask._store._fsspec import FsspecStore
from splitdask._store._local import LocalStore
from splitdask._store._resolve import resolve
from splitdask._store._s3 import S3Store
from splitdask._store._upload import UPLOAD_BLOCK

__all__ = [
    "UPLOAD_BLOCK",
    "CacheDir",
    "CacheInfo",
    "CacheStats",
    "FsspecStore",
    "LocalStore",
    "PartCache",
    "PartSink",
    "S3Store",
    "Store",
    "UrlPath",
    "cache_report",
    "open_store",
    "reopen_store",
]

CacheDir = UrlPath | Literal[False] | None
"""``cache_dir=``: a directory, ``None`` (``SPLITDASK_CACHE_DIR`` if set) or ``False`` (off)."""


def open_store(
    urlpath: UrlPath,
    storage_options: Mapping[str, Any] | None = None,
    *,
    cache_dir: CacheDir = None,
    cache_bytes: int | str | None = None,
) -> Store:
    """The store for a dataset root given as fsspec users give one.

    Parameters
    ----------
    urlpath
        Local path, ``PathLike``, or any fsspec URL (``s3://bucket/key``,
        ``memory://x``, ``simplecache::s3://...``).
    storage_options
        Passed to the fsspec filesystem (credentials, ``endpoint_url``, ...).
    cache_dir, cache_bytes
        A local part cache for a remote store (:mod:`._cache`): its directory
        (``None``: ``SPLITDASK_CACHE_DIR``, else no cache; ``False``: no cache) and
        its limit in bytes (``None``: ``SPLITDASK_CACHE_BYTES``, else 10% of the free
        space or 50 GiB, whichever is less). Local datasets are never cached.

    Returns
    -------
    Store
        A :class:`LocalStore` for local paths (fsspec is then bypassed on the hot
        paths), an :class:`S3Store` for S3, else a :class:`FsspecStore`.
    """
    if not isinstance(urlpath, str | os.PathLike):
        raise TypeError(f"urlpath must be a str or os.PathLike, not {type(urlpath).__name__}")
    if storage_options is not None and not isinstance(storage_options, Mapping):
        raise TypeError(
            f"storage_options must be a dict or None, not {type(storage_options).__name__}"
        )
    url = os.fspath(urlpath)
    options = dict(storage_options or {})
    root = None if options else _plain_local_root(url)
    if root is None:
        from fsspec.implementations.local import LocalFileSystem  # fsspec only when used

        fs, direct, root = resolve(url, options)
        if not isinstance(direct, LocalFileSystem):
            protocols = (
                direct.protocol if isinstance(direct.protocol, tuple) else (direct.protocol,)
            )
            kind = S3Store if {"s3", "s3a"}.intersection(protocols) else FsspecStore
            store = kind(url, options, root, fs, direct)
            directory, limit = resolve_cache(cache_dir, cache_bytes)
            if directory is not None and limit is not None:
                store.cache = PartCache(directory, limit)
            return store
    if cache_bytes is not None:
        parse_bytes(cache_bytes, "cache_bytes")  # a bad value is an error, cache or not
    if os.path.isfile(root):
        raise NotADirectoryError(
            f"{url} is a file: a dataset is a directory (holding splitdask.json, or a "
            "splitdataloader index.dat); pass the directory that holds the dataset, or "
            f"make a dataset of the file's records: `splitdask import {url} DEST --bins N`"
        )
    return LocalStore(url, options, root)


def cache_report(cache: PartCache | None) -> dict[str, Any] | None:
    """A cache's counters in this process and what its directory holds, as a dict:
    ``hits``, ``misses``, ``bytes_from_cache``, ``bytes_downloaded``, ``damaged``,
    ``directory``, ``entries``, ``bytes``, ``limit``; ``None`` for no cache."""
    if cache is None:
        return None
    return {**dataclasses.asdict(cache.stats), **cache.info()._asdict()}


def reopen_store(
    urlpath: str, storage_options: dict[str, Any], cache_dir: str, cache_bytes: int
) -> Store:
    """:func:`open_store` with a cache, as a pickled store is opened again."""
    return open_store(urlpath, storage_options, cache_dir=cache_dir, cache_bytes=cache_bytes)


def _plain_local_root(url: str) -> str | None:
    """The root fsspec gives a plain POSIX path (no ``:``, so no protocol or chaining;
    no ``~``, ``.``, ``..`` or repeated ``/``), without importing fsspec (about 0.1 s,
    more than a whole small write); ``None`` for anything else, which fsspec resolves."""
    path = url.rstrip("/") or url
    if (
        os.name != "posix"
        or not path
        or ":" in url
        or url.startswith(("~", "//"))
        or os.path.normpath(path) != path
        or path == "."
    ):
        return None
    return path if path.startswith("/") else f"{os.getcwd()}/{path}"

"""Where a dataset lives: one :class:`Store` class per backend, built by :func:`open_store`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from splitdask._store._base import PartSink, Store, UrlPath
from splitdask._store._fsspec import UPLOAD_BLOCK, FsspecStore, S3Store
from splitdask._store._local import LocalStore

__all__ = ["UPLOAD_BLOCK", "FsspecStore", "LocalStore", "PartSink", "S3Store", "Store",
           "UrlPath", "open_store"]  # fmt: skip


S3_RETRIES = {"max_attempts": 8, "mode": "standard"}
"""botocore's retry settings splitdask gives S3 unless ``storage_options`` set their
own (``config_kwargs={"retries": ...}``): up to 8 attempts with exponential backoff
and jitter on connection errors, 500/502/503/504 and throttling (SlowDown). s3fs
adds its own ``retries`` (default 5) around each read, for bodies cut mid-stream."""


def with_retries(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with :data:`S3_RETRIES` filled in for an ``s3://`` URL."""
    if not url.startswith(("s3://", "s3a://")):
        return options
    config = dict(options.get("config_kwargs") or {})
    config.setdefault("retries", dict(S3_RETRIES))
    return {**options, "config_kwargs": config}


def open_store(urlpath: UrlPath, storage_options: Mapping[str, Any] | None = None) -> Store:
    """The store for a dataset root given as fsspec users give one.

    Parameters
    ----------
    urlpath
        Local path, ``PathLike``, or any fsspec URL (``s3://bucket/key``,
        ``memory://x``, ``simplecache::s3://...``).
    storage_options
        Passed to the fsspec filesystem (credentials, ``endpoint_url``, ...).

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
    import fsspec  # here, not at import time: a spawned MpQItr worker may never need it
    from fsspec.implementations.cached import CachingFileSystem
    from fsspec.implementations.local import LocalFileSystem

    url = os.fspath(urlpath)
    options = dict(storage_options or {})
    fs, root = fsspec.core.url_to_fs(url, **with_retries(url, options))
    # Parts are immutable (a new name for every write), so they may be read through a
    # caching layer; the manifest is not, so it and every write skip the cache.
    direct = fs
    while isinstance(direct, CachingFileSystem):
        direct = direct.fs
    if isinstance(direct, LocalFileSystem):
        return LocalStore(url, options, root)
    protocols = direct.protocol if isinstance(direct.protocol, tuple) else (direct.protocol,)
    if {"s3", "s3a"}.intersection(protocols):
        return S3Store(url, options, root, fs, direct)
    return FsspecStore(url, options, root, fs, direct)

"""From a URL and ``storage_options`` to fsspec filesystems: the storage itself, any
caching layer in front of it, and the settings splitdask gives S3 by default."""

from __future__ import annotations

from typing import Any

from splitdask._store._net import net_settings

__all__ = ["S3_RETRIES", "resolve", "with_retries"]


S3_RETRIES = {"max_attempts": 8, "mode": "standard"}
"""botocore's retry settings splitdask gives S3 unless ``storage_options`` set their
own (``config_kwargs={"retries": ...}``): up to 8 attempts with exponential backoff
and jitter on connection errors, 500/502/503/504 and throttling (SlowDown). s3fs
adds its own ``retries`` (default 5) around each read, for bodies cut mid-stream."""


def with_retries(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with :data:`S3_RETRIES` and a connection pool of
    ``net_settings().connections`` filled in for an ``s3://`` URL."""
    if not url.startswith(("s3://", "s3a://")):
        return options
    config = dict(options.get("config_kwargs") or {})
    config.setdefault("retries", dict(S3_RETRIES))
    # botocore's pool holds 10 connections by default: too few to keep a link full.
    config.setdefault("max_pool_connections", net_settings().connections)
    return {**options, "config_kwargs": config}


def resolve(url: str, options: dict[str, Any]) -> tuple[Any, Any, str]:
    """``(fs, direct, root)`` for a URL: the filesystem to read parts through (maybe a
    cache), the storage below any caching layers, and the root path on it."""
    import fsspec
    from fsspec.implementations.cached import CachingFileSystem

    fs, root = fsspec.core.url_to_fs(url, **with_retries(url, options))
    # Parts are immutable (a new name for every write), so they may be read through a
    # caching layer; the manifest is not, so it and every write skip the cache.
    direct = fs
    while isinstance(direct, CachingFileSystem):
        direct = direct.fs
    return fs, direct, root

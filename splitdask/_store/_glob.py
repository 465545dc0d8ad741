"""Several dataset roots from one argument: a list of URLs, or a glob of them, as
``dask.bag.read_text`` takes files."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from splitdask._store._base import UrlPath
from splitdask._store._resolve import resolve

__all__ = ["expand_urls", "has_magic"]

_MAGIC = frozenset("*?[")


def has_magic(url: str) -> bool:
    """Whether ``url`` is a glob pattern (``*``, ``?`` or ``[``)."""
    return not _MAGIC.isdisjoint(url)


def expand_urls(
    urlpath: UrlPath | Sequence[UrlPath], storage_options: Mapping[str, Any] | None
) -> list[str]:
    """The dataset roots ``urlpath`` names, in order.

    A list or tuple: its URLs, in its order. A glob pattern: the paths it matches,
    sorted (as fsspec and ``read_text`` sort them), with the pattern's protocol.
    Anything else: that one URL.

    Raises
    ------
    TypeError
        For an argument that is not a URL, a path or a sequence of them.
    ValueError
        For an empty list, or a glob inside a chained URL (``a::b://...``).
    FileNotFoundError
        For a glob that matches nothing.
    """
    if isinstance(urlpath, list | tuple):
        urls = [os.fspath(u) if isinstance(u, os.PathLike) else u for u in urlpath]
        bad = [u for u in urls if not isinstance(u, str)]
        if bad:
            raise TypeError(f"urlpath lists a {type(bad[0]).__name__}, not a URL or path")
        if not urls:
            raise ValueError("urlpath is an empty list; give at least one dataset")
        return urls
    if not isinstance(urlpath, str | os.PathLike):
        raise TypeError(
            f"urlpath must be a URL, a path or a list of them, not {type(urlpath).__name__}"
        )
    url = os.fspath(urlpath)
    if not has_magic(url):
        return [url]
    if "::" in url:
        raise ValueError(
            f"{url}: a glob in a chained URL is not expanded; list the datasets' URLs instead"
        )
    _, fs, pattern = resolve(url, dict(storage_options or {}))
    found = sorted({str(p).rstrip("/") for p in fs.glob(pattern)})
    if not found:
        raise FileNotFoundError(f"{url} matches no dataset (nothing matches the pattern)")
    if "://" not in url:
        return found
    return [fs.unstrip_protocol(p) for p in found]

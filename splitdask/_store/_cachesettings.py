"""The part cache's settings: ``cache_dir=`` / ``cache_bytes=`` and the environment
variables that stand in for them, checked, with the cache directory made ready."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from typing import Any

from splitdask._store._cache import scan

__all__ = [
    "CACHE_BYTES_ENV",
    "CACHE_DIR_ENV",
    "DEFAULT_CACHE_BYTES",
    "default_cache_bytes",
    "parse_bytes",
    "resolve_cache",
]

CACHE_DIR_ENV = "SPLITDASK_CACHE_DIR"
CACHE_BYTES_ENV = "SPLITDASK_CACHE_BYTES"
DEFAULT_CACHE_BYTES = 50 << 30
"""The default limit's ceiling: 50 GiB (or 10% of the free space, if less)."""

_TAG = "CACHEDIR.TAG"
_TAG_TEXT = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# A splitdask part cache (splitdask cache info|clear); see docs/storage.md.\n"
)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_bytes(value: int | str, what: str) -> int:
    """A positive byte count from an int or a string such as ``"500M"``, ``"20GiB"``.

    Raises
    ------
    ValueError
        If it is not a positive number of bytes.
    """
    if isinstance(value, bool):
        raise TypeError(f"{what} must be a number of bytes, not a bool")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([kmgt]?)(?:i?b)?\s*", value.lower())
        if m is None:
            raise ValueError(
                f"{what}={value!r}: expected a number of bytes such as 1000000, 500M or 20GiB"
            )
        n = int(float(m[1]) * _UNITS[m[2]])
    else:
        raise TypeError(
            f"{what} must be an int or a str such as '20GiB', not {type(value).__name__}"
        )
    if n <= 0:
        raise ValueError(f"{what}={value!r}: the cache's size must be a positive number of bytes")
    return n


def default_cache_bytes(directory: str) -> int:
    """10% of the free space of ``directory``'s filesystem plus what the cache
    already holds, or :data:`DEFAULT_CACHE_BYTES`, whichever is less (at least 1 MiB)."""
    free = shutil.disk_usage(directory).free
    return max(1 << 20, min(DEFAULT_CACHE_BYTES, (free + scan(directory)[1]) // 10))


def resolve_cache(cache_dir: Any, cache_bytes: int | str | None) -> tuple[str | None, int | None]:
    """``(directory, limit)`` from the arguments and :data:`CACHE_DIR_ENV` /
    :data:`CACHE_BYTES_ENV`; ``(None, None)`` when no cache is configured.

    ``cache_dir=None`` takes the environment's; ``False`` turns the cache off.
    """
    if cache_dir is False:
        return None, None
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_DIR_ENV) or None
    if cache_dir is None:
        if cache_bytes is not None:
            parse_bytes(cache_bytes, "cache_bytes")  # still a clear error for a bad one
        return None, None
    if not isinstance(cache_dir, str | os.PathLike):
        raise TypeError(f"cache_dir must be a str or os.PathLike, not {type(cache_dir).__name__}")
    directory = os.path.abspath(os.path.expanduser(os.fspath(cache_dir)))
    _prepare(directory)
    if cache_bytes is None and (env := os.environ.get(CACHE_BYTES_ENV)):
        return directory, parse_bytes(env, CACHE_BYTES_ENV)
    if cache_bytes is None:
        return directory, default_cache_bytes(directory)
    return directory, parse_bytes(cache_bytes, "cache_bytes")


def _prepare(directory: str) -> None:
    """Make the cache directory (and its tag); errors name it and the fix."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise NotADirectoryError(
            f"cache_dir {directory} is a file: pass a directory (it is created if missing)"
        )
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot create cache_dir {directory}: {exc.strerror}") from exc
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(
            f"cache_dir {directory} is not writable by this user: pass a directory you can write to"
        )
    tag = os.path.join(directory, _TAG)
    if not os.path.exists(tag):
        with contextlib.suppress(OSError), open(tag, "w") as f:
            f.write(_TAG_TEXT)

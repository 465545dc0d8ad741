"""Errors a store raises, worded once: access refused, no credentials, short reads.

Every store turns a backend's failure into one of these, so a URL that fails
fails with the same message whichever code path touched it.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator

from splitdask.errors import CorruptDatasetError

__all__ = ["access", "not_found", "short_read", "size_mismatch", "too_large"]


@contextlib.contextmanager
def access(where: str) -> Iterator[None]:
    """Turn a refused request into an error that names the file and the likely fix."""
    try:
        yield
    except PermissionError as exc:
        raise PermissionError(
            f"{where}: access denied ({exc}); check the credentials and "
            "permissions given in storage_options"
        ) from exc
    except Exception as exc:
        # botocore's NoCredentialsError and its kin derive from no builtin error
        # and splitdask does not import the backends, so match them by name.
        if "checksum" in type(exc).__name__.lower():  # botocore's FlexibleChecksumError
            raise CorruptDatasetError(
                f"{where}: the response failed its transfer checksum ({exc})"
            ) from exc
        if "credential" not in type(exc).__name__.lower():
            if type(exc) is OSError and where not in str(exc):
                # What is left after the backend's retries: say which file it was.
                raise OSError(exc.errno, f"{where}: {exc}") from exc
            raise
        raise PermissionError(
            f"{where}: no credentials ({type(exc).__name__}: {exc}); pass "
            "them in storage_options (for s3: key and secret, or profile) or configure "
            "them in the environment"
        ) from exc


def not_found(rel: str) -> FileNotFoundError:
    """A missing file; ``filename`` is its path relative to the root, for callers
    that name it in their own terms ("listed in the manifest but missing")."""
    return FileNotFoundError(errno.ENOENT, "no such file", rel)


def short_read(where: str, start: int, end: int, got: int | None) -> CorruptDatasetError:
    has = "" if got is None else f", got {got}"
    return CorruptDatasetError(
        f"{where}: asked for bytes {start}-{end}{has}: the file is shorter "
        "than the manifest says (truncated or replaced?)"
    )


def size_mismatch(where: str, got: int, expected: int) -> CorruptDatasetError:
    return CorruptDatasetError(
        f"{where}: {got} bytes, the manifest says {expected} (truncated or replaced?)"
    )


def too_large(where: str, got: int, limit: int) -> CorruptDatasetError:
    return CorruptDatasetError(
        f"{where}: {got} bytes, more than the {limit} read at most for this file "
        "(not a splitdask file, or damaged)"
    )

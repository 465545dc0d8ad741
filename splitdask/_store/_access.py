"""Errors a store raises, worded once: access refused, no credentials, an endpoint
that refuses or does not answer, short reads; and :func:`retrying`, which reads again
when a response was damaged in transit.

Every store turns a backend's failure into one of these, so a URL that fails
fails with the same message whichever code path touched it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar
from urllib.parse import urlsplit

from splitdask._store._net import net_settings
from splitdask._store._resolve import refused
from splitdask.errors import CorruptDatasetError

__all__ = [
    "Again",
    "access",
    "aretrying",
    "in_transit",
    "network_error",
    "not_found",
    "retrying",
    "short_read",
    "size_mismatch",
    "too_large",
]

T = TypeVar("T")

# botocore's errors of a request that reached no answer.
_NETWORK = frozenset(
    {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError"}
)

# Failures of a response body on its way here (the request itself succeeded, so the
# request-level retries never saw them), matched by name: splitdask does not import
# the backends.
_IN_TRANSIT = frozenset(
    {
        "IncompleteRead",
        "IncompleteReadError",
        "ClientPayloadError",
        "ContentLengthError",
        "TransferEncodingError",
        "ResponseStreamingError",
        "ServerDisconnectedError",
        "ConnectionClosedError",
        "ServerTimeoutError",
        "ReadTimeoutError",
    }
)


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
        net = network_error(where, exc)
        if net is not None:
            raise net from exc
        if "credential" not in type(exc).__name__.lower():
            if type(exc) is OSError and where not in str(exc):
                # What is left after the backend's retries: say which file it was.
                said = exc.strerror or exc
                raise OSError(exc.errno, f"{where}: {said}{_gave_up(exc)}") from exc
            raise
        raise PermissionError(
            f"{where}: no credentials ({type(exc).__name__}: {exc}); pass "
            "them in storage_options (for s3: key and secret, or profile) or configure "
            "them in the environment"
        ) from exc


def _endpoint(exc: BaseException) -> str:
    """``scheme://host:port`` of the request that failed (botocore names its URL)."""
    kwargs = getattr(exc, "kwargs", None)
    url = kwargs.get("endpoint_url") if isinstance(kwargs, dict) else None
    if not url:
        return "the endpoint"
    parts = urlsplit(str(url))
    return f"{parts.scheme}://{parts.netloc}"


def _gave_up(exc: BaseException) -> str:
    """``" (gave up after 7 attempts over 58 s)"``, from what the retry policy noted
    (on the exception, or the retry count in the answer of an error response)."""
    seen: BaseException | None = exc
    while seen is not None:
        attempts = getattr(seen, "splitdask_attempts", None)
        if attempts is not None:
            took = getattr(seen, "splitdask_seconds", 0.0)
            return f" (gave up after {attempts} attempts over {took:.0f} s)"
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            retries = response.get("ResponseMetadata", {}).get("RetryAttempts")
            if isinstance(retries, int):
                return f" (gave up after {retries + 1} attempts)"
        seen = seen.__cause__
    return ""


def network_error(where: str, exc: BaseException) -> OSError | None:
    """One line for a request that could not reach the endpoint or got no answer:
    which endpoint, for which file, what happened, and what to check; ``None`` when
    ``exc`` is no such failure."""
    name = type(exc).__name__
    if name not in _NETWORK:
        return None
    ep, after = _endpoint(exc), _gave_up(exc)
    if refused(exc):
        return ConnectionRefusedError(
            f"cannot connect to {ep} for {where}: connection refused{after}; check "
            "endpoint_url (nothing is listening there)"
        )
    if name == "ConnectTimeoutError":
        return TimeoutError(
            f"cannot connect to {ep} for {where}: no connection within the connect "
            f"timeout{after}; check endpoint_url and the network (connect_timeout: "
            "SPLITDASK_CONNECT_TIMEOUT, or config_kwargs in storage_options)"
        )
    if name == "ReadTimeoutError":
        return TimeoutError(
            f"{where}: {ep} did not answer within the read timeout{after}; check that "
            "endpoint_url is an S3 server and is up (read_timeout: SPLITDASK_READ_TIMEOUT, "
            "or config_kwargs in storage_options)"
        )
    cause = getattr(exc, "kwargs", {}).get("error", exc)
    return ConnectionError(f"cannot reach {ep} for {where}: {cause}{after}; check endpoint_url")


def in_transit(exc: BaseException) -> bool:
    """Whether ``exc`` is a response damaged on its way (a failed transfer checksum, a
    body cut short) that the request-level retries did not already give up on."""
    seen: BaseException | None = exc
    while seen is not None:
        if getattr(seen, "splitdask_attempts", None) is not None:
            return False
        name = type(seen).__name__
        if name in _IN_TRANSIT or "checksum" in name.lower():
            return True
        seen = seen.__cause__
    return False


def retrying(where: str, fn: Callable[[], T]) -> T:
    """``fn()`` under :func:`access`, called again while its response is damaged in
    transit (:func:`in_transit`), within the retry time of
    :func:`~splitdask._store._net.net_settings`.

    Only a transfer checksum that keeps failing is a
    :class:`~splitdask.errors.CorruptDatasetError`: once, it is more likely a network
    fault than a damaged object. :func:`aretrying` is the same for coroutines.
    """
    again = Again(where)
    while True:
        try:
            with access(where):
                return fn()
        except Exception as exc:
            time.sleep(again.delay(exc))


async def aretrying(where: str, fn: Callable[[], Awaitable[T]]) -> T:
    """:func:`retrying` for a coroutine function: ``await fn()``, again while its
    response is damaged in transit, waiting with ``asyncio.sleep``."""
    again = Again(where)
    while True:
        try:
            with access(where):
                return await fn()
        except Exception as exc:
            await asyncio.sleep(again.delay(exc))


class Again:
    """Whether and when to try one read again, for :func:`retrying` (and for each
    request of the read engine, ``_fetch``)."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.settings = net_settings()
        self.started = time.monotonic()
        self.attempt = 0

    def delay(self, exc: Exception) -> float:
        """Seconds to wait before reading again; raises what ``exc`` should become
        when it is not to be read again."""
        self.attempt += 1
        if not in_transit(exc):
            raise exc
        elapsed = time.monotonic() - self.started
        delay = random.uniform(0, min(10.0, 0.25 * 2 ** (self.attempt - 1)))
        # A stalled body may stall again: try again only if that ends in time.
        stall = self.settings.read_timeout if "Timeout" in _names(exc) else 0.0
        if elapsed + delay + stall <= self.settings.retry_seconds:
            return delay
        if "checksum" in _names(exc).lower():
            raise CorruptDatasetError(
                f"{self.where}: the response failed its transfer checksum on each of "
                f"{self.attempt} attempts over {elapsed:.0f} s ({exc}): the object is "
                "damaged, or something between here and the server alters it"
            ) from exc
        raise exc


def _names(exc: BaseException) -> str:
    """The class names of ``exc`` and its causes, space-separated."""
    names: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(names) < 8:
        names.append(type(seen).__name__)
        seen = seen.__cause__
    return " ".join(names)


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

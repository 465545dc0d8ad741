"""From a URL and ``storage_options`` to fsspec filesystems: the storage itself, any
caching layer in front of it, and the settings splitdask gives S3 by default.

S3 requests are retried by one layer, :class:`RetryPolicy`, inside botocore's request
loop (so every request of every code path is covered, request bodies included):
botocore's own retries and s3fs's retries on top of them are turned off, because the
two multiplied (a full outage of 503s took 218 s and 45 requests before a write
failed). The policy bounds retrying by time, not by a count of attempts.
"""

from __future__ import annotations

import contextlib
import errno
import random
import socket
import time
from typing import Any

from splitdask._store._net import NetSettings, net_settings
from splitdask._util._extras import missing

__all__ = [
    "BOTOCORE_RETRIES",
    "RetryPolicy",
    "filesystem",
    "refused",
    "resolve",
    "with_s3_defaults",
]


BOTOCORE_RETRIES = {"total_max_attempts": 1, "mode": "standard"}
"""botocore's retry settings splitdask gives S3 unless ``storage_options`` set their own
(``config_kwargs={"retries": ...}``): none, as :class:`RetryPolicy` retries instead."""

_BASE = 0.25
"""Seconds: the first retry waits up to this, each later one up to twice as long."""
_MAX_BACKOFF = 10.0
"""Seconds a retry waits at most (with full jitter: 5 s on average)."""

# What S3 answers when it is busy or failing for a moment: worth another try.
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_RETRY_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "BandwidthLimitExceeded",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "InternalError",
        "ServiceUnavailable",
    }
)
_STARTED = "splitdask_started"


def refused(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a refused TCP connection."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, ConnectionRefusedError) or getattr(seen, "errno", None) == (
            errno.ECONNREFUSED
        ):
            return True
        kwargs = getattr(seen, "kwargs", None)  # botocore keeps the cause in kwargs
        inner = kwargs.get("error") if isinstance(kwargs, dict) else None
        seen = inner if isinstance(inner, BaseException) else seen.__cause__ or seen.__context__
    return False


def _unresolved(exc: BaseException) -> bool:
    """Whether the endpoint's host name did not resolve (``socket.gaierror``)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, socket.gaierror):
            return True
        kwargs = getattr(seen, "kwargs", None)
        inner = kwargs.get("error") if isinstance(kwargs, dict) else None
        seen = inner if isinstance(inner, BaseException) else seen.__cause__ or seen.__context__
    return False


def _kind(exc: BaseException) -> str:
    """``"connect"``, ``"read"`` (timeouts), ``"unreachable"`` (refused, or no such
    host), ``"transient"`` or ``""``."""
    # By class name: splitdask does not import the backends (botocore's classes).
    names = {c.__name__ for c in type(exc).__mro__}
    if "ConnectTimeoutError" in names:
        return "connect"
    if "ReadTimeoutError" in names:
        return "read"
    if refused(exc) or _unresolved(exc):
        return "unreachable"
    if names & {"ConnectionError", "HTTPClientError"}:
        return "transient"
    return ""


class RetryPolicy:
    """The one retry policy of S3 requests: a botocore ``needs-retry`` handler.

    A request is retried on throttling, 5xx answers, dropped connections and timeouts,
    with exponentially growing, fully jittered waits, until ``retry_seconds`` have
    passed since it was first sent. After a timed-out attempt another is started only
    if it could time out within that budget too, so a silent endpoint fails within it.
    A refused connection (nothing listening: a wrong ``endpoint_url``, or a server
    that is down) or a host name that does not resolve is retried only within
    ``connect_timeout``.

    When it gives up on an error it notes the attempts and seconds on the exception
    (``splitdask_attempts``, ``splitdask_seconds``) for the message.
    """

    def __init__(self, settings: NetSettings) -> None:
        self.settings = settings

    def install(self, session: Any) -> None:
        """Register on an aiobotocore session: every client it makes (s3fs makes a new
        one when its connections were closed) carries the policy."""
        session.register("before-call.s3", self.started, unique_id="splitdask-retry-start")
        session.register("needs-retry.s3", self.needs_retry, unique_id="splitdask-retry")

    def started(self, context: dict[str, Any], **_: Any) -> None:
        context.setdefault(_STARTED, time.monotonic())

    def needs_retry(
        self,
        attempts: int,
        request_dict: dict[str, Any],
        response: Any = None,
        caught_exception: BaseException | None = None,
        **_: Any,
    ) -> float | None:
        """Seconds to wait before the next attempt, or ``None``: no retry."""
        s = self.settings
        context = request_dict.get("context") or {}
        elapsed = time.monotonic() - context.get(_STARTED, time.monotonic())
        delay = random.uniform(0, min(_MAX_BACKOFF, _BASE * 2 ** (attempts - 1)))
        if caught_exception is not None:
            kind = _kind(caught_exception)
            # After a timeout the next attempt may time out too: start it only if it
            # would still end within the budget.
            config = context.get("client_config")  # the timeouts the client was given
            connect = float(getattr(config, "connect_timeout", s.connect_timeout))
            read = float(getattr(config, "read_timeout", s.read_timeout))
            wait = {"connect": connect, "read": read}.get(kind, 0.0)
            budget = connect if kind == "unreachable" else s.retry_seconds
            if kind and elapsed + delay + wait <= budget:
                return delay
            if kind:
                with contextlib.suppress(AttributeError):
                    caught_exception.splitdask_attempts = attempts  # type: ignore[attr-defined]
                    caught_exception.splitdask_seconds = elapsed  # type: ignore[attr-defined]
            return None
        if response is None or elapsed + delay > s.retry_seconds:
            return None
        parsed = response[1] if isinstance(response, tuple) and len(response) > 1 else {}
        status = parsed.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = parsed.get("Error", {}).get("Code")
        if status in _RETRY_STATUS or code in _RETRY_CODES:
            return delay
        return None


def with_s3_defaults(
    url: str, options: dict[str, Any], settings: NetSettings | None = None
) -> dict[str, Any]:
    """``options`` with splitdask's S3 defaults filled in for an ``s3://`` URL: the
    connect and read timeouts and the connection pool size of
    :func:`~splitdask._store._net.net_settings` and :data:`BOTOCORE_RETRIES`, each
    unless ``config_kwargs`` sets its own."""
    last = url.rsplit("::", 1)[-1]
    if not last.startswith(("s3://", "s3a://")):
        return options
    if last != url:  # a chained URL: the S3 layer's options are keyed by its protocol
        proto = last.split("://", 1)[0]
        return {**options, proto: with_s3_defaults(last, dict(options.get(proto) or {}), settings)}
    s = settings or net_settings()
    config = dict(options.get("config_kwargs") or {})
    config.setdefault("connect_timeout", s.connect_timeout)
    config.setdefault("read_timeout", s.read_timeout)
    config.setdefault("retries", dict(BOTOCORE_RETRIES))
    # botocore's pool holds 10 connections by default: too few to keep a link full.
    config.setdefault("max_pool_connections", s.connections)
    return {**options, "config_kwargs": config}


def _install(direct: Any, settings: NetSettings) -> None:
    """Make :class:`RetryPolicy` the one retry layer of an s3fs filesystem."""
    import importlib

    policy = getattr(direct, "_splitdask_policy", None)
    if policy is not None:
        policy.settings = settings  # a cached instance: the settings may have changed
        return
    if getattr(direct, "session", None) is None:
        # The session s3fs would make itself; made here so the policy is on it.
        # s3fs keeps a session it does not own when it reconnects.
        session = importlib.import_module("aiobotocore.session")
        direct.session = session.AioSession(**direct.kwargs)
        direct._session_is_owned = False
    policy = RetryPolicy(settings)
    policy.install(direct.session)
    client = getattr(direct, "_s3", None)
    if client is not None:  # made before: give it the policy too
        policy.install(client.meta.events)
    direct._splitdask_policy = policy


def _protocols(fs: Any) -> tuple[str, ...]:
    return fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)


def filesystem(url: str, options: dict[str, Any]) -> tuple[Any, str]:
    """fsspec's ``url_to_fs``, with errors that say how to fix them: an unknown
    protocol names the URL and the protocols fsspec knows; a protocol whose package is
    missing names the extra (or package) to install."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url, **options)  # type: ignore[no-any-return]
    except ValueError as exc:
        if "Protocol not known" not in str(exc):
            raise
        raise ValueError(_unknown_protocol(url)) from None
    except ImportError as exc:
        proto = _protocol(url)
        if proto not in _PACKAGES:  # fsspec's message names the package to install
            raise ImportError(f"{url}: {exc}", name=exc.name) from exc
        raise missing(_PACKAGES[proto], f"{url} ({proto}://)") from exc


# Packages of the protocols splitdask has an extra for; other protocols are named by
# fsspec's own error (its ImportError's name).
_PACKAGES = {"s3": "s3fs", "s3a": "s3fs"}


def _protocol(url: str) -> str | None:
    """The protocol fsspec resolves last in ``url`` (a chain ends with the storage)."""
    for part in reversed(url.split("::")):
        if "://" in part:
            return part.split("://", 1)[0]
    return None


def _unknown_protocol(url: str) -> str:
    import difflib

    import fsspec

    known = sorted(set(fsspec.available_protocols()))
    protos = [p.split("://", 1)[0] for p in url.split("::") if "://" in p]
    bad = next((p for p in protos if p not in known), protos[0] if protos else url)
    close = difflib.get_close_matches(bad, known, n=3, cutoff=0.5)
    guess = f" (did you mean {' or '.join(c + '://' for c in close)}?)" if close else ""
    return f"{url}: unknown protocol {bad!r}{guess}; protocols fsspec knows: {', '.join(known)}"


def resolve(url: str, options: dict[str, Any]) -> tuple[Any, Any, str]:
    """``(fs, direct, root)`` for a URL: the filesystem to read parts through (maybe a
    cache), the storage below any caching layers, and the root path on it."""
    from fsspec.implementations.cached import CachingFileSystem

    settings = net_settings()
    full = with_s3_defaults(url, options, settings)
    fs, root = filesystem(url, full)
    # Parts are immutable (a new name for every write), so they may be read through a
    # caching layer; the manifest is not, so it and every write skip the cache.
    direct = fs
    while isinstance(direct, CachingFileSystem):
        direct = direct.fs
    if "s3" in _protocols(direct) and hasattr(direct, "set_session"):  # s3fs
        direct.retries = 1  # s3fs's retries (class default 5) would multiply botocore's
        layer = full.get(url.rsplit("::", 1)[-1].split("://", 1)[0], full) if "::" in url else full
        if layer.get("config_kwargs", {}).get("retries") == BOTOCORE_RETRIES:
            _install(direct, settings)
    return fs, direct, root

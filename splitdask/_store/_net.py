"""What splitdask assumes about the network to object storage, in one place.

Every remote read and write is sized from these: how many requests go out at once
(one connection pool per process), how large a ranged GET is, how many bytes a reader
may have in flight, and the latency and per-connection bandwidth that decide when
two ranges are cheaper fetched as one. Each is an environment variable, read when a
store is opened, so DataLoader workers, Dask and Ray workers started with the same
environment agree; ``docs/storage.md`` lists them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["NetSettings", "net_settings"]

_ENV = "SPLITDASK_"


@dataclass(frozen=True)
class NetSettings:
    """Sizes and estimates for remote I/O (see :func:`net_settings`)."""

    connections: int = 64
    """Requests in flight at most per process: the connection pool's size
    (``SPLITDASK_CONNECTIONS``). botocore's ``max_pool_connections`` in
    ``storage_options["config_kwargs"]`` overrides it for S3."""
    chunk_bytes: int = 8 << 20
    """Bytes of one ranged GET when a part is fetched whole (``SPLITDASK_CHUNK_BYTES``):
    large enough that the first-byte latency is a small share of it, small enough that
    one part keeps several connections busy."""
    inflight_bytes: int = 256 << 20
    """Bytes a reader fetches ahead of what it hands out (``SPLITDASK_INFLIGHT_BYTES``):
    the bound on its read-ahead memory (a single bin larger than this is still fetched
    whole, alone)."""
    latency: float = 0.03
    """Seconds to a response's first byte, as an estimate (``SPLITDASK_LATENCY``)."""
    bandwidth: float = 40e6
    """Bytes per second of one connection, as an estimate (``SPLITDASK_BANDWIDTH``)."""
    connect_timeout: float = 5.0
    """Seconds to open a connection before the attempt fails (``SPLITDASK_CONNECT_TIMEOUT``)."""
    read_timeout: float = 20.0
    """Seconds a response may stay silent before the attempt fails (``SPLITDASK_READ_TIMEOUT``):
    short enough that a request which timed out is tried once more within
    ``retry_seconds`` (two silences of 20 s fit in 60 s, two of 30 s do not)."""
    retry_seconds: float = 60.0
    """Seconds of retrying transient failures (throttling, 5xx, cut or corrupted
    bodies) before a request fails for good (``SPLITDASK_RETRY_SECONDS``)."""

    @property
    def gap_bytes(self) -> int:
        """Bytes that cost as much time to transfer as one request's latency: two
        ranges closer than this are cheaper fetched as one."""
        return int(self.latency * self.bandwidth)


def net_settings() -> NetSettings:
    """The settings, from ``SPLITDASK_*`` environment variables over the defaults.

    Raises
    ------
    ValueError
        If a variable is set to something that is not a positive number.
    """
    values: dict[str, float | int] = {}
    for name, field in NetSettings.__dataclass_fields__.items():
        raw = os.environ.get(_ENV + name.upper())
        if raw is None:
            continue
        kind = int if field.type in ("int", int) else float
        try:
            value = kind(raw)
        except ValueError:
            value = -1
        if value <= 0:
            raise ValueError(
                f"{_ENV}{name.upper()}={raw!r}: expected a positive "
                f"{'integer' if kind is int else 'number'}"
            )
        values[name] = value
    return NetSettings(**values)  # type: ignore[arg-type]

"""A shaping HTTP/1.1 reverse proxy on 127.0.0.1: latency, per-connection pacing, a request log.

It sits in front of an S3 server (moto, SeaweedFS) and makes it behave like a distant
object store:

- **latency** ``L``: the first byte of every response leaves no earlier than ``L``
  seconds after the request's last byte arrived (``max(L, server time)``: a fast server
  adds nothing to ``L``, as a real store's own time is part of its first-byte latency);
- **bandwidth** ``B``: every client connection is paced by two token buckets (responses,
  and request bodies for uploads) of ``B`` bytes/s and :data:`BURST` bytes capacity, so
  a body of ``n`` bytes takes at least ``(n - BURST) / B`` seconds on its connection;
- a **request log**: method, path, query, ``Range`` header, status, body bytes in and
  out, the first-byte hold and pacing time of every request, read and reset through
  :meth:`ShapingProxy.log` / :meth:`ShapingProxy.reset` in-process, or over HTTP:
  ``GET /__log__`` (JSON list), ``GET /__summary__`` (totals), ``POST /__reset__``,
  ``POST /__config__?latency=S&bandwidth=BPS`` (applies to requests that start later).

Connections are kept alive on both sides (one upstream connection per client
connection), ``Expect: 100-continue`` is answered by the proxy, chunked bodies are
relayed as they come. Bounded: it stops by itself after ``lifetime`` seconds.

Two ways to run it:

- in-process, for tests: ``with ShapingProxy(upstream, latency=0.03, bandwidth=40e6) as
  p: ... p.url ...`` (a thread with its own event loop);
- as a process with its own interpreter lock, for benchmarks: ``python
  tests/shaping_proxy.py --upstream http://127.0.0.1:8333 --latency 0.03 --bandwidth
  40e6`` prints ``127.0.0.1:<port>`` and serves until ``--lifetime`` runs out or its
  standard input closes (so it dies with its parent).

Speed: it costs about 1 CPU-second per GB relayed (measured: 0.86-1.24 s/GB relaying
8 MiB ranged GETs from SeaweedFS on 16-32 connections), so it relays about 1 GB/s on a
core of its own. ``benchmarks/s3.py`` prints that figure in every run, beside the same
fetch straight to the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import parse_qs

BURST = 256 << 10
"""Token-bucket capacity in bytes, and the largest piece relayed at once when paced."""
_READ = 1 << 20  # largest piece relayed at once when not paced
_CONTROL = ("/__log__", "/__summary__", "/__reset__", "/__config__")


@dataclass
class Entry:
    """One request relayed, as the proxy saw it (times in seconds since the proxy started)."""

    conn: int
    method: str
    path: str
    query: str
    range: str | None
    status: int = 0
    bytes_in: int = 0
    """Request body bytes."""
    bytes_out: int = 0
    """Response body bytes."""
    held: float = 0.0
    """From the request's last byte until the response head was released (>= latency)."""
    paced: float = 0.0
    """Time spent waiting for the token buckets (both directions)."""
    span_in: float = 0.0
    span_out: float = 0.0
    """From the first to the last piece of the request (response) body the bucket
    released: at least ``(bytes - BURST) / bandwidth``."""
    start: float = 0.0
    first_byte: float = 0.0
    """When the first piece of the response body was released by the bucket."""
    end: float = 0.0


class _Bucket:
    """A token bucket of ``BURST`` bytes refilled at the proxy's current bandwidth."""

    def __init__(self, proxy: ShapingProxy) -> None:
        self.proxy = proxy
        self.tokens = float(BURST)
        self.stamp = time.monotonic()

    async def take(self, n: int) -> float:
        """Wait until ``n`` (<= ``BURST``) bytes may pass; the seconds waited. The bytes
        are taken at ``self.stamp``."""
        waited = 0.0
        while True:
            rate = self.proxy.bandwidth
            now = time.monotonic()
            if rate <= 0:
                self.stamp = now
                return waited
            self.tokens = min(BURST, self.tokens + (now - self.stamp) * rate)
            self.stamp = now
            if self.tokens >= n:
                self.tokens -= n
                return waited
            pause = (n - self.tokens) / rate
            await asyncio.sleep(pause)
            waited += pause


class ShapingProxy:
    """The proxy, serving from a thread with its own event loop (see the module docstring)."""

    def __init__(
        self,
        upstream: str,
        *,
        latency: float = 0.0,
        bandwidth: float = 0.0,
        lifetime: float = 600.0,
        port: int = 0,
    ) -> None:
        host, _, p = upstream.removeprefix("http://").rstrip("/").partition(":")
        self.upstream = (host, int(p or 80))
        self.latency = latency
        self.bandwidth = bandwidth
        """Bytes per second per connection and direction; 0 for no pacing."""
        self.lifetime = lifetime
        self._t0 = time.monotonic()
        self._lock = threading.Lock()
        self._log: list[Entry] = []
        self._conns = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.port = port
        self._thread = threading.Thread(target=self._run, name="shaping-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None or not self.port:
            raise RuntimeError(f"the shaping proxy did not start: {self._error!r}")
        self.url = f"http://127.0.0.1:{self.port}"

    # -- the Python API ------------------------------------------------------------------

    def log(self) -> list[Entry]:
        """The requests relayed since the start or the last :meth:`reset`."""
        with self._lock:
            return list(self._log)

    def reset(self) -> None:
        with self._lock:
            self._log.clear()

    def summary(self) -> dict[str, Any]:
        """Totals of :meth:`log`: requests by method, body bytes in and out."""
        entries = self.log()
        methods: dict[str, int] = {}
        for e in entries:
            methods[e.method] = methods.get(e.method, 0) + 1
        return {
            "requests": len(entries),
            "methods": methods,
            "bytes_in": sum(e.bytes_in for e in entries),
            "bytes_out": sum(e.bytes_out for e in entries),
            "connections": len({e.conn for e in entries}),
        }

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def wait(self, timeout: float | None = None) -> None:
        """Block until the proxy has stopped (its lifetime ran out or :meth:`stop`)."""
        self._thread.join(timeout)

    def __enter__(self) -> ShapingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- serving -------------------------------------------------------------------------

    def _now(self) -> float:
        return time.monotonic() - self._t0

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # reported by __init__ when it happens at start
            self._error = e
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(
            self._client, "127.0.0.1", self.port, limit=1 << 20, backlog=256
        )
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        tasks: set[asyncio.Task[Any]] = set()
        async with server:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.lifetime)
            server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    tasks.add(task)
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self._conns += 1
            conn = self._conns
        writer.transport.set_write_buffer_limits(high=4 << 20)
        down, up = _Bucket(self), _Bucket(self)
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                method, target, headers = _parse_head(head)
                path, _, query = target.partition("?")
                if path in _CONTROL:
                    await reader.readexactly(int(headers.get("content-length", 0)))
                    await self._control(writer, method, path, query)
                    continue
                if upstream is not None and upstream[0].at_eof():  # closed while idle
                    upstream[1].close()
                    upstream = None
                if upstream is None:
                    upstream = await asyncio.open_connection(*self.upstream, limit=4 << 20)
                    upstream[1].transport.set_write_buffer_limits(high=4 << 20)
                entry = Entry(conn, method, path, query, headers.get("range"), start=self._now())
                keep_up, keep = await self._exchange(
                    reader, writer, upstream, head, headers, entry, down, up
                )
                if not keep_up:
                    upstream[1].close()
                    upstream = None
                if not keep or headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        except asyncio.CancelledError:  # stopping: end quietly (streams log a cancelled task)
            return
        finally:
            if upstream is not None:
                upstream[1].close()
            writer.close()

    async def _exchange(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        head: bytes,
        headers: dict[str, str],
        entry: Entry,
        down: _Bucket,
        up: _Bucket,
    ) -> tuple[bool, bool]:
        """Relay one request and its response; whether the upstream and the client
        connections stay open."""
        latency = self.latency
        up_reader, up_writer = upstream
        if headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # the body follows at once
            head = _without(head, b"expect")
        up_writer.write(head)
        entry.bytes_in, entry.paced, entry.span_in = await _relay_body(
            reader, up_writer, headers, up
        )
        sent = time.monotonic()
        rhead = await up_reader.readuntil(b"\r\n\r\n")
        while rhead.startswith(b"HTTP/1.1 1"):  # interim responses: pass on, read on
            writer.write(rhead)
            rhead = await up_reader.readuntil(b"\r\n\r\n")
        status_line, rheaders = _parse_response(rhead)
        entry.status = int(status_line.split(b" ", 2)[1])
        while (pause := sent + latency - time.monotonic()) > 0:  # asyncio may wake early
            await asyncio.sleep(pause)
        entry.held = time.monotonic() - sent
        if entry.method == "HEAD" or entry.status in (204, 304):
            body: dict[str, str] = {"content-length": "0"}
        else:
            body = rheaders
        framed = "content-length" in body or "chunked" in body.get("transfer-encoding", "")
        how = rheaders.get("connection", "").lower()
        up_keeps = "close" not in how and (status_line.startswith(b"HTTP/1.1") or "keep" in how)
        if framed and not up_keeps:  # an HTTP/1.0 server (moto): the client keeps its link
            rhead = b"HTTP/1.1" + _without(rhead, b"connection")[8:]

        def log(out: int, paced: float, first: float, last: float) -> None:
            entry.bytes_out, entry.paced, entry.span_out = out, entry.paced + paced, last - first
            entry.end = self._now()
            entry.first_byte = first - self._t0 if out else entry.end
            with self._lock:
                self._log.append(entry)

        await _relay_body(up_reader, writer, body, down, rhead, log)
        return up_keeps and framed, framed

    async def _control(self, writer: asyncio.StreamWriter, method: str, path: str, q: str) -> None:
        if path == "/__log__":
            payload: Any = [asdict(e) for e in self.log()]
        elif path == "/__summary__":
            payload = self.summary()
        elif path == "/__reset__":
            self.reset()
            payload = {"reset": True}
        else:
            args = parse_qs(q)
            if "latency" in args:
                self.latency = float(args["latency"][0])
            if "bandwidth" in args:
                self.bandwidth = float(args["bandwidth"][0])
            payload = {"latency": self.latency, "bandwidth": self.bandwidth}
        data = json.dumps(payload).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % len(data)
            + data
        )
        await writer.drain()


async def _relay_body(
    src: asyncio.StreamReader,
    dst: asyncio.StreamWriter,
    headers: dict[str, str],
    bucket: _Bucket,
    prefix: bytes = b"",
    done: Callable[[int, float, float, float], None] | None = None,
) -> tuple[int, float, float]:
    """Copy one message body (Content-Length, chunked or to the end) through ``bucket``;
    body bytes, seconds paced, and the span from the first piece released to the last.

    ``prefix`` (a response head) goes out with the first piece. ``done(bytes, paced,
    first, last)`` is called before the last piece is written, so whoever has the whole
    response can already read its log entry.
    """
    total, paced = 0, 0.0
    first = last = 0.0
    piece = BURST if bucket.proxy.bandwidth > 0 else _READ
    pending, finished = prefix, False

    def finish() -> None:
        nonlocal pending, finished
        finished = True
        if done is not None:
            done(total, paced, first, last)
        if pending:
            dst.write(pending)
            pending = b""

    async def copy(data: bytes, payload: int, final: bool = False) -> None:
        nonlocal total, paced, first, last, pending
        for i in range(0, len(data), BURST):
            paced += await bucket.take(min(BURST, len(data) - i))
        if payload:
            last = bucket.stamp
            if not total:
                first = bucket.stamp
        total += payload
        if final:
            finish()
        elif pending:
            dst.write(pending)
            pending = b""
        dst.write(data)
        if dst.transport.get_write_buffer_size() > (2 << 20):
            await dst.drain()

    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await src.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                tail = b""
                while (line := await src.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    tail += line
                await copy(size_line + tail + line, 0, final=True)
                break
            await copy(size_line, 0)
            left = size
            while left:
                data = await src.read(min(left, piece))
                if not data:
                    raise asyncio.IncompleteReadError(b"", left)
                left -= len(data)
                await copy(data, len(data))
            await copy(await src.readexactly(2), 0)
    elif "content-length" in headers:
        left = int(headers["content-length"])
        while left:
            data = await src.read(min(left, piece))
            if not data:
                raise asyncio.IncompleteReadError(b"", left)
            left -= len(data)
            await copy(data, len(data), final=not left)
    elif done is not None:  # a response without framing ends with its connection
        while data := await src.read(piece):
            await copy(data, len(data))
    if not finished:  # an empty body (or one that ends with the connection)
        finish()
    await dst.drain()
    return total, paced, last - first


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    line, _, rest = head.partition(b"\r\n")
    method, target, _ = line.decode("latin-1").split(" ", 2)
    return method, target, _headers(rest)


def _parse_response(head: bytes) -> tuple[bytes, dict[str, str]]:
    line, _, rest = head.partition(b"\r\n")
    return line, _headers(rest)


def _headers(block: bytes) -> dict[str, str]:
    out = {}
    for raw in block.split(b"\r\n"):
        name, sep, value = raw.partition(b":")
        if sep:
            out[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return out


def _without(head: bytes, name: bytes) -> bytes:
    lines = head.split(b"\r\n")
    return b"\r\n".join(ln for ln in lines if not ln.lower().startswith(name + b":"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--upstream", required=True, help="http://host:port of the S3 server")
    ap.add_argument("--latency", type=float, default=0.0, help="first-byte delay, seconds")
    ap.add_argument("--bandwidth", type=float, default=0.0, help="bytes/s per connection")
    ap.add_argument("--lifetime", type=float, default=3600.0, help="stop after this, seconds")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    proxy = ShapingProxy(
        args.upstream,
        latency=args.latency,
        bandwidth=args.bandwidth,
        lifetime=args.lifetime,
        port=args.port,
    )
    print(f"127.0.0.1:{proxy.port}", flush=True)

    def watch_stdin() -> None:  # the parent closed our stdin (or died): stop
        sys.stdin.read()
        proxy.stop()

    threading.Thread(target=watch_stdin, daemon=True).start()
    proxy.wait()


if __name__ == "__main__":
    main()

"""A fault-injecting HTTP/1.1 proxy on 127.0.0.1, for tests of flaky storage.

It sits in front of the moto server and, counting requests and connections, drops
every ``drop``-th connection, answers every ``slow``-th request with S3's 503
SlowDown, delays every ``delay_every``-th, cuts every ``truncate``-th GET response
mid-body (``truncate_fix_length`` also shortens its Content-Length, so the client
cannot tell; ``cut_first`` cuts the first GET of every path) and flips a byte in the
body of every ``corrupt``-th GET (the first ``corrupt_limit`` of them, if set).
``hang`` reads requests and never answers; ``lose`` (``"PUT /_log/"``: a method and
a part of the path) forwards matching requests upstream, then closes the
client's connection without relaying the answer, so the server acted on a request
whose client never hears of it; ``fail`` answers matching requests with 503 SlowDown
without forwarding them. Each request goes upstream on its own connection, so faults
never leak between requests; ``log`` lists every request as ``(method, path, fault)``.

Bounded: it serves at most ``lifetime`` seconds, then stops by itself; ``stop()``
ends it sooner. Threads are daemons and every socket has a timeout.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

_SLOWDOWN = (
    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
    b"<Message>Please reduce your request rate.</Message></Error>"
)


@dataclass
class Faults:
    drop: int = 0
    slow: int = 0
    delay_every: int = 0
    delay: float = 0.05
    truncate: int = 0
    truncate_fix_length: bool = False
    cut_first: bool = False
    """Cut the body of the first GET of every path (matching ``only``) mid-stream."""
    corrupt: int = 0
    corrupt_limit: int = 0
    hang: bool = False
    lose: str = ""
    fail: str = ""
    """Like ``lose``: matching requests are answered 503 SlowDown, never forwarded."""
    only: str = ""
    """Apply request faults only to paths containing this (e.g. ``/bins/``)."""
    counts: dict[str, int] = field(default_factory=dict)
    seen: set[bytes] = field(default_factory=set)
    """Paths GET so far (for ``cut_first``)."""


def _every(n: int, k: int) -> bool:
    return k > 0 and n % k == 0


class FaultyProxy:
    def __init__(self, upstream: str, faults: Faults, lifetime: float = 300.0) -> None:
        host, _, port = upstream.removeprefix("http://").rstrip("/").partition(":")
        self.upstream = (host, int(port))
        self.faults = faults
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._deadline = time.monotonic() + lifetime
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._connections = 0
        self._requests = 0
        self.log: list[tuple[str, str, str]] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()

    def __enter__(self) -> FaultyProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _count(self, what: str) -> None:
        self.faults.counts[what] = self.faults.counts.get(what, 0) + 1

    def requests(self, method: str = "", contains: str = "") -> list[tuple[str, str, str]]:
        """Logged requests of ``method`` (any if empty) whose path contains ``contains``."""
        with self._lock:
            log = list(self.log)
        return [r for r in log if method in ("", r[0]) and contains in r[1]]

    def _serve(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._connections += 1
                n = self._connections
            if _every(n, self.faults.drop):
                self._count("dropped connections")
                conn.close()
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        buf = b""
        try:
            while not self._stop.is_set():
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(1 << 16)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                if b"expect: 100-continue" in head.lower():
                    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")  # then the body comes
                    head = _drop_header(head, b"expect:")
                length = _content_length(head) or 0
                while len(buf) < length:
                    chunk = conn.recv(1 << 20)
                    if not chunk:
                        return
                    buf += chunk
                body, buf = buf[:length], buf[length:]
                if not self._exchange(conn, head, body):
                    return
        except OSError:
            return
        finally:
            conn.close()

    def _exchange(self, conn: socket.socket, head: bytes, body: bytes) -> bool:
        """Answer one request; ``False`` when the client connection must close."""
        method, path = head.split(b" ", 2)[:2]
        faulty = self.faults.only.encode() in path
        with self._lock:
            if faulty:
                self._requests += 1
            n = self._requests if faulty else -1
        f = self.faults
        fault = ""
        if f.hang:
            fault = "hung"
        elif f.lose and _matches(f.lose, method, path):
            fault = "response lost"
        elif (f.fail and _matches(f.fail, method, path)) or (faulty and _every(n, f.slow)):
            fault = "503 SlowDown"
        with self._lock:
            self.log.append((method.decode(), path.decode().split("?")[0], fault))
        if fault == "hung":
            self._count(fault)
            self._stop.wait(self._deadline - time.monotonic())
            return False
        if fault == "response lost":
            self._count(fault)
            self._upstream(_close_upstream(head) + b"\r\n\r\n" + body)
            return False  # the client's connection closes without an answer
        if fault == "503 SlowDown":
            self._count(fault)
            conn.sendall(
                b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                b"Content-Length: %d\r\n\r\n" % len(_SLOWDOWN) + _SLOWDOWN
            )
            return True
        if faulty and _every(n, f.delay_every):
            self._count("delayed")
            time.sleep(f.delay)
        response = self._upstream(_close_upstream(head) + b"\r\n\r\n" + body)
        is_get = method == b"GET" and faulty
        resp_head, _, resp_body = response.partition(b"\r\n\r\n")
        first = False
        if is_get and f.cut_first:
            with self._lock:
                first = path not in f.seen
                f.seen.add(path)
        if is_get and (first or _every(n, f.truncate)) and len(resp_body) > 1:
            self._count("truncated")
            cut = resp_body[: len(resp_body) // 2]
            if f.truncate_fix_length:
                conn.sendall(_with_length(resp_head, len(cut)) + b"\r\n\r\n" + cut)
                return True
            conn.sendall(resp_head + b"\r\n\r\n" + cut)
            return False  # the client sees the connection end mid-body
        limited = f.corrupt_limit and f.counts.get("corrupted", 0) >= f.corrupt_limit
        if is_get and _every(n, f.corrupt) and resp_body and not limited:
            self._count("corrupted")
            resp_body = bytes([resp_body[0] ^ 0xFF]) + resp_body[1:]
        conn.sendall(resp_head + b"\r\n\r\n" + resp_body)
        return b"connection: close" not in resp_head.lower()

    def _upstream(self, request: bytes) -> bytes:
        with socket.create_connection(self.upstream, timeout=30) as up:
            up.sendall(request)
            chunks = []
            while chunk := up.recv(1 << 20):
                chunks.append(chunk)
        return _dechunk(b"".join(chunks))


def _matches(spec: str, method: bytes, path: bytes) -> bool:
    want_method, _, part = spec.partition(" ")
    return method.decode() == want_method and part.encode() in path.split(b"?")[0]


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return None


def _close_upstream(head: bytes) -> bytes:
    lines = [
        ln
        for ln in head.split(b"\r\n")
        if not ln.lower().startswith((b"connection:", b"keep-alive:"))
    ]
    return b"\r\n".join([*lines, b"Connection: close"])


def _drop_header(head: bytes, name: bytes) -> bytes:
    return b"\r\n".join(ln for ln in head.split(b"\r\n") if not ln.lower().startswith(name))


def _with_length(head: bytes, length: int) -> bytes:
    lines = [ln for ln in head.split(b"\r\n") if not ln.lower().startswith(b"content-length:")]
    return b"\r\n".join([*lines, b"Content-Length: %d" % length])


def _dechunk(response: bytes) -> bytes:
    """The response with a chunked body rewritten to a Content-Length one."""
    head, _, body = response.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" not in head.lower():
        return response
    out = []
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out.append(body[:size])
        body = body[size + 2 :]
    lines = [ln for ln in head.split(b"\r\n") if not ln.lower().startswith(b"transfer-encoding:")]
    data = b"".join(out)
    return _with_length(b"\r\n".join(lines), len(data)) + b"\r\n\r\n" + data

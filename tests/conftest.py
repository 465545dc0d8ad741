"""Session fixtures: a real S3-compatible HTTP server on 127.0.0.1 (moto) and its request log.

The server is moto's ``ThreadedMotoServer`` bound to 127.0.0.1 on a free port; tests
reach it through s3fs with ``endpoint_url``, exactly as a user reaches any S3-compatible
store, so nothing here mocks a client library and nothing leaves the machine.

Fixtures
--------
s3_endpoint (session)
    ``"http://127.0.0.1:<port>"``. Dummy AWS credentials and region are put in
    ``os.environ`` before the server starts and restored at the end of the session.
s3_storage_options (session)
    Storage options that reach the server from any process (credentials, endpoint and
    region are explicit, nothing is read from the environment).
s3_url (function)
    ``"s3://<fresh bucket>/ds"``: the bucket exists and is empty; it is deleted after
    the test.
s3_requests (function)
    The server's :class:`RequestLog`: every HTTP request it answered, from any process.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import s3fs
from distributed import Client, LocalCluster
from moto.server import ThreadedMotoServer

DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True)
class Request:
    """One HTTP request as the server saw it."""

    method: str
    path: str
    """URL path, ``/<bucket>/<key>`` (path-style addressing)."""
    query: str
    range: str | None
    """The ``Range`` header of a ranged GET, else ``None``."""

    @property
    def is_admin(self) -> bool:
        """A request to moto's own control API, not an S3 call."""
        return self.path.startswith("/moto-api")


class RequestLog:
    """Every request the server answered, in arrival order; thread-safe.

    Counting works by marks: ``m = log.mark()``, then do something, then
    ``log.count("GET", since=m)``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[Request] = []

    def record(self, request: Request) -> None:
        with self._lock:
            self._entries.append(request)

    def mark(self) -> int:
        """A position in the log; pass it as ``since`` to see only later requests."""
        with self._lock:
            return len(self._entries)

    def since(self, mark: int = 0, *, contains: str = "") -> list[Request]:
        """S3 requests after ``mark`` (control-API calls left out), optionally only
        those whose path contains ``contains``."""
        with self._lock:
            entries = self._entries[mark:]
        return [r for r in entries if not r.is_admin and contains in r.path]

    def count(self, method: str | None = None, *, since: int = 0, contains: str = "") -> int:
        """How many S3 requests (of ``method``, if given) were answered after ``since``."""
        return sum(1 for r in self.since(since, contains=contains) if method in (None, r.method))

    def counts(self, since: int = 0, *, contains: str = "") -> collections.Counter[str]:
        """Requests after ``since`` by HTTP method, e.g. ``Counter({'GET': 3, 'PUT': 1})``."""
        return collections.Counter(r.method for r in self.since(since, contains=contains))


class _Recording:
    """WSGI middleware that logs each request before the app answers it."""

    def __init__(self, app: Callable[..., Iterable[bytes]], log: RequestLog) -> None:
        self.app = app
        self.log = log

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        self.log.record(
            Request(
                method=environ["REQUEST_METHOD"],
                path=environ.get("PATH_INFO", ""),
                query=environ.get("QUERY_STRING", ""),
                range=environ.get("HTTP_RANGE"),
            )
        )
        return self.app(environ, start_response)


class S3Server:
    """A started ``ThreadedMotoServer`` on 127.0.0.1 with its request log."""

    def __init__(self) -> None:
        self.log = RequestLog()
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._moto.start()
        # The werkzeug server looks its app up on every request, so wrapping it here,
        # before any request is made, logs every request.
        wsgi = self._moto._server
        assert wsgi is not None
        wsgi.app = _Recording(wsgi.app, self.log)
        host, port = self._moto.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"

    def stop(self) -> None:
        self._moto.stop()

    def _set_auth(self, value: str) -> None:
        import requests

        url = f"{self.endpoint}/moto-api/reset-auth"
        requests.post(url, data=value, timeout=30).raise_for_status()

    @contextlib.contextmanager
    def enforcing_auth(self) -> Iterator[None]:
        """Within the block the server checks signatures and IAM policies, as AWS does
        (moto accepts anything by default). The dummy credentials belong to no IAM
        user, so with them every S3 call is refused."""
        self._set_auth("0")
        try:
            yield
        finally:
            self._set_auth("inf")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in DUMMY_CREDENTIALS.items():
            mp.setenv(name, value)
        server = S3Server()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def s3_endpoint(s3_server: S3Server) -> str:
    return s3_server.endpoint


@pytest.fixture(scope="session")
def s3_storage_options(s3_endpoint: str) -> dict[str, Any]:
    return {
        "key": DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "secret": DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "endpoint_url": s3_endpoint,
        "client_kwargs": {"region_name": DUMMY_CREDENTIALS["AWS_DEFAULT_REGION"]},
    }


@pytest.fixture
def s3_fs(s3_storage_options: dict[str, Any]) -> s3fs.S3FileSystem:
    """An s3fs filesystem on the test server (the cached instance splitdask also gets)."""
    return s3fs.S3FileSystem(**s3_storage_options)


@pytest.fixture
def s3_bucket(s3_fs: s3fs.S3FileSystem) -> Iterator[str]:
    """A fresh, empty bucket, removed with its contents after the test."""
    bucket = f"splitdask-{uuid.uuid4().hex[:20]}"
    # create_bucket directly: s3fs.mkdir would send us-east-1 as a LocationConstraint,
    # which S3 rejects for that region.
    s3_fs.call_s3("create_bucket", Bucket=bucket)
    s3_fs.invalidate_cache()
    yield bucket
    s3_fs.invalidate_cache()
    if s3_fs.exists(bucket):
        s3_fs.rm(bucket, recursive=True)


@pytest.fixture
def s3_url(s3_bucket: str) -> str:
    return f"s3://{s3_bucket}/ds"


@pytest.fixture
def s3_requests(s3_server: S3Server) -> RequestLog:
    return s3_server.log


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    """A real Dask cluster of two single-threaded worker processes (behind nannies),
    shared by the tests of one module."""
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster, set_as_default=False) as c,
    ):
        yield c


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll an observable condition until it holds, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)

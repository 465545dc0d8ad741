"""The shaping proxy (tests/shaping_proxy.py) in front of the moto server.

What the benchmark relies on: every request appears once in the log with its method,
path, range, status and body bytes; connections are kept alive; the first-byte delay
and the per-connection pacing are applied (checked on the times the proxy records,
which its waits bound from below, never on wall time against a ceiling); the log is
read and reset over HTTP too; it stops by itself; it runs as a process.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import s3fs
from conftest import S3Server
from shaping_proxy import BURST, ShapingProxy


def _fs(endpoint: str) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(
        key="testing",
        secret="testing",
        endpoint_url=endpoint,
        client_kwargs={"region_name": "us-east-1"},
        skip_instance_cache=True,
    )


@pytest.fixture
def bucket(s3_server: S3Server) -> Iterator[str]:
    name = f"shaping-{uuid.uuid4().hex[:16]}"
    fs = _fs(s3_server.endpoint)
    fs.call_s3("create_bucket", Bucket=name)
    yield name
    fs.rm(name, recursive=True)


def _http(url: str, method: str = "GET") -> Any:
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=30) as r:
        return json.load(r)


def test_log_records_each_request_with_its_range_status_and_bytes(
    s3_server: S3Server, bucket: str
) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    with ShapingProxy(s3_server.endpoint, lifetime=120) as proxy:
        fs = _fs(proxy.url)
        mark = s3_server.log.mark()
        fs.pipe(f"{bucket}/obj", data)
        assert fs.cat_file(f"{bucket}/obj", start=1000, end=1100) == data[1000:1100]
        assert fs.cat_file(f"{bucket}/obj", start=5, end=6) == data[5:6]
        log = proxy.log()
    upstream = s3_server.log.since(mark)
    assert [(e.method, e.path, e.range) for e in log] == [
        (r.method, r.path, r.range) for r in upstream
    ], "one log entry per request the server answered, in order"
    put, get1, get2 = log
    assert (put.method, put.status, put.bytes_in, put.bytes_out) == ("PUT", 200, len(data), 0)
    assert (get1.range, get1.status, get1.bytes_out) == ("bytes=1000-1099", 206, 100)
    assert (get2.range, get2.status, get2.bytes_out) == ("bytes=5-5", 206, 1)
    assert get1.path == f"/{bucket}/obj"
    assert len({e.conn for e in log}) == 1, "keep-alive: one client connection for all"


def test_listing_query_and_head_are_logged_without_body(s3_server: S3Server, bucket: str) -> None:
    with ShapingProxy(s3_server.endpoint, lifetime=120) as proxy:
        fs = _fs(proxy.url)
        fs.pipe(f"{bucket}/a/b", b"12345")
        proxy.reset()
        assert fs.ls(f"{bucket}/a") == [f"{bucket}/a/b"]
        assert fs.info(f"{bucket}/a/b")["size"] == 5
        log = proxy.log()
    listing = [e for e in log if "list-type=2" in e.query]
    assert listing, log
    assert all(e.method == "GET" and e.status == 200 and e.bytes_out > 0 for e in listing)
    heads = [e for e in log if e.method == "HEAD"]
    assert all(e.bytes_out == 0 for e in heads), "a HEAD's Content-Length is not a body"


def test_log_summary_reset_and_config_over_http(s3_server: S3Server, bucket: str) -> None:
    with ShapingProxy(s3_server.endpoint, lifetime=120) as proxy:
        fs = _fs(proxy.url)
        fs.pipe(f"{bucket}/x", b"a" * 1000)
        fs.cat_file(f"{bucket}/x")
        over_http = _http(proxy.url + "/__log__")
        assert [e["method"] for e in over_http] == [e.method for e in proxy.log()]
        summary = _http(proxy.url + "/__summary__")
        assert (summary["bytes_in"], summary["bytes_out"]) == (1000, 1000)
        assert summary["requests"] == len(over_http)
        assert _http(proxy.url + "/__reset__", "POST") == {"reset": True}
        assert (proxy.log(), _http(proxy.url + "/__log__")) == ([], [])
        got = _http(proxy.url + "/__config__?latency=0.25&bandwidth=1e6", "POST")
        assert got == {"latency": 0.25, "bandwidth": 1e6}
        assert (proxy.latency, proxy.bandwidth) == (0.25, 1e6)
        assert proxy.log() == [], "control requests are not logged"


def test_first_byte_is_held_back_by_the_latency(s3_server: S3Server, bucket: str) -> None:
    with ShapingProxy(s3_server.endpoint, latency=0.2, lifetime=120) as proxy:
        fs = _fs(proxy.url)
        fs.pipe(f"{bucket}/x", b"abc")
        for i in range(3):
            assert fs.cat_file(f"{bucket}/x", start=i, end=3) == b"abc"[i:]
        log = proxy.log()
    assert [e.range for e in log if e.method == "GET"] == ["bytes=0-2", "bytes=1-2", "bytes=2-2"]
    assert all(e.held >= 0.2 for e in log), [e.held for e in log]


def test_responses_and_uploads_are_paced_per_connection(s3_server: S3Server, bucket: str) -> None:
    size, rate = 3 * BURST + 12345, 2e6
    data = b"z" * size
    with ShapingProxy(s3_server.endpoint, bandwidth=rate, lifetime=120) as proxy:
        fs = _fs(proxy.url)
        fs.pipe(f"{bucket}/x", data)
        assert fs.cat_file(f"{bucket}/x") == data
        put, get = (e for e in proxy.log() if e.method in ("PUT", "GET"))
    floor = (size - BURST) / rate  # a bucket of BURST bytes passes at most this fast
    assert (put.bytes_in, get.bytes_out) == (size, size)
    assert put.span_in >= floor * 0.999, "the upload was paced"
    assert get.span_out >= floor * 0.999, "the download was paced"
    assert get.paced > 0


def test_small_responses_are_not_paced(s3_server: S3Server, bucket: str) -> None:
    with ShapingProxy(s3_server.endpoint, bandwidth=1e3, lifetime=120) as proxy:
        fs = _fs(proxy.url)
        fs.pipe(f"{bucket}/x", b"q" * 100)
        assert fs.cat_file(f"{bucket}/x", start=0, end=50) == b"q" * 50
        log = proxy.log()
    assert [e.paced for e in log if e.path.endswith("/x")] == [0.0, 0.0], "within one burst"


def test_it_stops_by_itself_after_its_lifetime(s3_server: S3Server) -> None:
    proxy = ShapingProxy(s3_server.endpoint, lifetime=0.5)
    proxy.wait(60)
    assert not proxy.running
    with pytest.raises(urllib.error.URLError, match="refused"):
        urllib.request.urlopen(proxy.url + "/__log__", timeout=5)


def test_runs_as_a_process_printing_its_port(s3_server: S3Server, bucket: str) -> None:
    script = Path(__file__).with_name("shaping_proxy.py")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(script),
            "--upstream",
            s3_server.endpoint,
            "--latency",
            "0.01",
            "--bandwidth",
            "40e6",
            "--lifetime",
            "120",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        endpoint = "http://" + proc.stdout.readline().strip()
        fs = _fs(endpoint)
        fs.pipe(f"{bucket}/p", b"0123456789")
        assert fs.cat_file(f"{bucket}/p", start=2, end=4) == b"23"
        log = _http(endpoint + "/__log__")
        assert [(e["method"], e["range"], e["bytes_out"]) for e in log][-1] == (
            "GET",
            "bytes=2-3",
            2,
        )
        assert all(e["held"] >= 0.01 for e in log)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # the parent going away stops it
        assert proc.wait(timeout=60) == 0


class _Chunked(http.server.BaseHTTPRequestHandler):
    """An upstream that frames its bodies the other two ways HTTP/1.1 allows."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        if self.path == "/chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (b"hello", b" world"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\nX-Trailer: 1\r\n\r\n")
        else:  # no length: the body ends with the connection
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"until the end")
            self.close_connection = True

    def log_message(self, *args: Any) -> None:
        pass


def test_chunked_and_unframed_bodies_are_relayed_and_counted() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Chunked)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        upstream = f"http://127.0.0.1:{server.server_address[1]}"
        with ShapingProxy(upstream, latency=0.01, bandwidth=1e6, lifetime=120) as proxy:
            with urllib.request.urlopen(proxy.url + "/chunked", timeout=30) as r:
                assert r.read() == b"hello world"
            with urllib.request.urlopen(proxy.url + "/plain", timeout=30) as r:
                assert r.read() == b"until the end"
            log = proxy.log()
    finally:
        server.shutdown()
        server.server_close()
    assert [(e.path, e.status, e.bytes_out) for e in log] == [
        ("/chunked", 200, 11),
        ("/plain", 200, 13),
    ]

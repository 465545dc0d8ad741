"""Fail fast, never half-true: S3 faults injected by tests/faulty_proxy.py in front of moto.

A refused connection and a silent endpoint fail in one line naming the endpoint; a
full outage is retried by one layer within the retry time; a response damaged in
transit is read again before it is called corrupt; a commit whose answer was lost
is looked up before the writer reports anything. Retry times are shortened through
the ``SPLITDASK_*`` variables so the tests stay quick; what the defaults do is
checked on :class:`RetryPolicy` itself, which decides from the elapsed time.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from _manifests import forget_versions
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError
from faulty_proxy import Faults, FaultyProxy

from splitdask import (
    CorruptDatasetError,
    SplitDataLoader,
    SplitWriter,
    compact,
    write_split_data,
)
from splitdask._format._log import entry_name
from splitdask._store._net import NetSettings
from splitdask._store._resolve import RetryPolicy

RECORDS = [bytes([i % 256]) * (50 + i % 37) for i in range(120)]


@pytest.fixture
def proxy(s3_endpoint: str) -> Iterator[FaultyProxy]:
    with FaultyProxy(s3_endpoint, Faults(), lifetime=240) as p:
        yield p


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short timeouts and retry time (read when a store is opened)."""
    monkeypatch.setenv("SPLITDASK_CONNECT_TIMEOUT", "1")
    monkeypatch.setenv("SPLITDASK_READ_TIMEOUT", "1")
    monkeypatch.setenv("SPLITDASK_RETRY_SECONDS", "4")


def _via(endpoint: str, options: dict[str, Any]) -> dict[str, Any]:
    # A fresh s3fs instance (skip_instance_cache) so no pooled connection bypasses it.
    return {**options, "endpoint_url": endpoint, "skip_instance_cache": True}


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port nothing listens on: bound (so no one else takes it), never listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


# -- a refused connection ----------------------------------------------------------------


def test_refused_connection_fails_in_one_line_naming_the_endpoint(
    quick: None,
    closed_port: int,
    s3_url: str,
    s3_storage_options: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SPLITDASK_CONNECT_TIMEOUT", "2")
    endpoint = f"http://127.0.0.1:{closed_port}"
    options = _via(endpoint, s3_storage_options)
    expected = (
        rf"^cannot connect to {endpoint} for {s3_url}/_log: connection refused "
        r"\(gave up after (\d+) attempts over \d+ s\); check endpoint_url"
    )
    started = time.monotonic()
    with pytest.raises(ConnectionRefusedError, match=expected) as read:
        SplitDataLoader(s3_url, storage_options=options)
    with pytest.raises(ConnectionRefusedError, match=expected):
        write_split_data(s3_url, RECORDS, splits=2, storage_options=options)
    assert "\n" not in str(read.value)
    # Retried (a server restarting), but only within the connect timeout.
    assert int(read.value.args[0].split("after ")[1].split()[0]) >= 2
    assert time.monotonic() - started < 60  # a guard: each fails after about 2 s


def test_cli_prints_one_line_for_a_refused_connection(
    closed_port: int, s3_url: str, s3_storage_options: dict[str, Any]
) -> None:
    endpoint = f"http://127.0.0.1:{closed_port}"
    opts = [f"key={s3_storage_options['key']}", f"secret={s3_storage_options['secret']}"]
    args = [a for o in [*opts, f"endpoint_url={endpoint}"] for a in ("-o", o)]
    env = {**os.environ, "SPLITDASK_CONNECT_TIMEOUT": "1", "NO_COLOR": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "splitdask", "info", s3_url, *args],
        capture_output=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 1
    lines = out.stderr.decode().splitlines()
    assert len(lines) == 1, out.stderr.decode()
    assert lines[0].startswith(f"splitdask: error: cannot connect to {endpoint} for {s3_url}")
    assert "connection refused" in lines[0]


def test_unreachable_endpoints_are_retried_only_within_the_connect_timeout() -> None:
    policy = RetryPolicy(NetSettings())  # the defaults: connect_timeout 5 s
    refused = EndpointConnectionError(
        endpoint_url="http://127.0.0.1:1/b/k", error=ConnectionRefusedError(111, "refused")
    )
    assert policy.needs_retry(1, _started(1.0), caught_exception=refused) is not None
    assert policy.needs_retry(5, _started(5.0), caught_exception=refused) is None
    assert refused.splitdask_attempts == 5  # type: ignore[attr-defined]
    no_host = EndpointConnectionError(
        endpoint_url="http://no-such-host:9000/b/k", error=socket.gaierror(-2, "unknown")
    )
    assert policy.needs_retry(1, _started(1.0), caught_exception=no_host) is not None
    assert policy.needs_retry(5, _started(5.0), caught_exception=no_host) is None


# -- an endpoint that accepts and never answers ----------------------------------------


def test_silent_endpoint_fails_with_a_timeout_naming_it(
    quick: None, proxy: FaultyProxy, s3_url: str, s3_storage_options: dict[str, Any]
) -> None:
    proxy.faults.hang = True
    with pytest.raises(TimeoutError) as err:
        SplitDataLoader(s3_url, storage_options=_via(proxy.url, s3_storage_options))
    message = str(err.value)
    # The first request of an open: the listing of the log.
    assert message.startswith(f"{s3_url}/_log: {proxy.url} did not answer")
    assert "read timeout" in message
    assert "SPLITDASK_READ_TIMEOUT" in message
    sent = proxy.requests("GET")
    assert {path for _, path, _ in sent} == {_bucket_path(s3_url)}  # a listing, each time
    # read timeout 1 s, retry time 4 s: an attempt is started only if it could time
    # out within the 4 s, so at most 4, and a timed-out request is tried again.
    assert 2 <= len(sent) <= 4, proxy.log
    assert f"gave up after {len(sent)} attempts" in message


def test_silent_endpoint_with_the_defaults_fails_within_a_minute() -> None:
    s = NetSettings()
    policy = RetryPolicy(s)
    timeout = ReadTimeoutError(endpoint_url="http://127.0.0.1:1/b/k")
    # One silence of 20 s is tried again; after two, a third could not end by 60 s.
    assert policy.needs_retry(1, _started(s.read_timeout), caught_exception=timeout) is not None
    assert policy.needs_retry(2, _started(2 * s.read_timeout), caught_exception=timeout) is None


# -- a full outage -------------------------------------------------------------------------


def test_an_outage_is_retried_by_one_layer_then_fails_naming_the_object(
    quick: None, proxy: FaultyProxy, s3_url: str, s3_storage_options: dict[str, Any]
) -> None:
    proxy.faults.slow = 1  # every request: 503 SlowDown
    with pytest.raises(OSError, match="reduce your request rate") as err:
        write_split_data(
            s3_url, RECORDS, splits=2, storage_options=_via(proxy.url, s3_storage_options)
        )
    message = str(err.value)
    assert f"{s3_url}/_log:" in message
    # The first request of the write (the listing of the log), and only it, was
    # tried: as often as the one retry layer says (s3fs retrying on top would
    # multiply the count).
    assert {(m, p) for m, p, _ in proxy.log} == {("GET", _bucket_path(s3_url))}
    assert f"gave up after {len(proxy.log)} attempts" in message
    assert len(proxy.log) >= 2


def test_an_outage_is_retried_for_the_retry_time_only() -> None:
    policy = RetryPolicy(NetSettings())  # retry_seconds 60
    slow_down = (
        None,
        {"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}},
    )
    not_found = (
        None,
        {"Error": {"Code": "NoSuchKey"}, "ResponseMetadata": {"HTTPStatusCode": 404}},
    )
    assert policy.needs_retry(3, _started(10.0), response=slow_down) is not None
    assert policy.needs_retry(9, _started(60.0), response=slow_down) is None
    assert policy.needs_retry(1, _started(0.0), response=not_found) is None


def _bucket_path(url: str) -> str:
    """The request path of a listing of ``url``'s bucket (its query names the prefix)."""
    return "/" + url.removeprefix("s3://").split("/")[0]


def _started(seconds_ago: float) -> dict[str, Any]:
    """A request_dict whose request was first sent ``seconds_ago``."""
    return {"context": {"splitdask_started": time.monotonic() - seconds_ago}}


# -- a response damaged in transit ---------------------------------------------------------


def test_a_response_failing_its_transfer_checksum_is_read_again(
    quick: None, proxy: FaultyProxy, s3_url: str, s3_storage_options: dict[str, Any]
) -> None:
    write_split_data(s3_url, RECORDS, splits=2, storage_options=s3_storage_options)
    forget_versions()  # as a new process: the log entry is read
    proxy.faults.only = "/_log/0"  # the log entry (not the listing)
    proxy.faults.corrupt, proxy.faults.corrupt_limit = 1, 1  # its first GET only
    loader = SplitDataLoader(s3_url, storage_options=_via(proxy.url, s3_storage_options))
    assert list(loader) == RECORDS
    assert proxy.faults.counts["corrupted"] == 1
    assert len(proxy.requests("GET", "/_log/0")) == 2


def test_async_reads_are_read_again_too(
    quick: None, proxy: FaultyProxy, s3_url: str, s3_storage_options: dict[str, Any]
) -> None:
    from fsspec.asyn import sync

    from splitdask._store import open_store
    from splitdask._store._access import aretrying

    write_split_data(s3_url, RECORDS, splits=2, storage_options=s3_storage_options)
    store = open_store(s3_url, _via(proxy.url, s3_storage_options))
    expected = store.read_file("splitdask.json")
    proxy.faults.only = "/splitdask.json"
    proxy.faults.corrupt, proxy.faults.corrupt_limit = 1, 1
    fs, path = store.direct, store.full("splitdask.json")
    got = sync(fs.loop, aretrying, store.where("splitdask.json"), lambda: fs._cat_file(path))
    assert got == expected
    assert proxy.faults.counts["corrupted"] == 1
    assert len(proxy.requests("GET", "/splitdask.json")) == 3  # one before, two here


def test_a_checksum_failing_every_time_is_a_corrupt_dataset(
    quick: None, proxy: FaultyProxy, s3_url: str, s3_storage_options: dict[str, Any]
) -> None:
    write_split_data(s3_url, RECORDS, splits=2, storage_options=s3_storage_options)
    forget_versions()  # as a new process: the log entry is read
    proxy.faults.only = "/_log/0"
    proxy.faults.corrupt = 1  # every GET of the log entry
    with pytest.raises(CorruptDatasetError, match="failed its transfer checksum on each of") as e:
        SplitDataLoader(s3_url, storage_options=_via(proxy.url, s3_storage_options))
    tries = len(proxy.requests("GET", "/_log/0"))
    assert tries >= 2
    assert f"on each of {tries} attempts" in str(e.value)
    assert str(e.value).startswith(f"{s3_url}/{entry_name(1)}: ")


def test_bodies_cut_short_are_read_again(
    quick: None, proxy: FaultyProxy, s3_url: str, s3_storage_options: dict[str, Any]
) -> None:
    write_split_data(s3_url, RECORDS, splits=2, storage_options=s3_storage_options)
    loader = SplitDataLoader(s3_url, storage_options=_via(proxy.url, s3_storage_options))
    proxy.faults.only = "/bins/"
    proxy.faults.cut_first = True  # the first GET of each part ends mid-body
    report = loader.verify()  # streamed reads; raises on a damaged part
    assert report.parts == 2
    assert proxy.faults.counts["truncated"] == 2
    proxy.faults.seen.clear()
    assert sorted(loader.iterate_binwise()) == sorted(RECORDS)  # whole-part reads
    assert proxy.faults.counts["truncated"] == 4


# -- a commit whose answer was lost --------------------------------------------------------


def _records(url: str, options: dict[str, Any]) -> list[bytes]:
    return list(SplitDataLoader(url, storage_options=options))


def test_writes_whose_commit_answer_was_lost_succeed_once(
    quick: None, proxy: FaultyProxy, s3_url: str, s3_storage_options: dict[str, Any]
) -> None:
    # The server commits every log entry PUT (the commit); its answer never reaches
    # the writer.
    proxy.faults.lose = "PUT /_log/"
    options = _via(proxy.url, s3_storage_options)
    a, b, c = RECORDS[:40], RECORDS[40:80], RECORDS[80:]
    info = write_split_data(s3_url, a, splits=2, storage_options=options)
    assert info.records_written == 40
    assert info.num_records == 40
    with SplitWriter(s3_url, storage_options=options) as w:
        w.write_many(b)
    assert w.info is not None
    assert w.info.num_records == 80
    info = write_split_data(s3_url, c, storage_options=options)
    assert info.records_written == 40
    assert info.num_records == 120
    assert proxy.faults.counts["response lost"] >= 3
    assert _records(s3_url, s3_storage_options) == RECORDS  # each write once

    before = SplitDataLoader(s3_url, storage_options=s3_storage_options).manifest
    assert before is not None
    assert any(len(b) > 1 for b in before.bins)
    lost = proxy.faults.counts["response lost"]
    done = compact(s3_url, storage_options=options)
    assert proxy.faults.counts["response lost"] > lost
    after = SplitDataLoader(s3_url, storage_options=s3_storage_options)
    assert after.manifest is not None
    assert [len(b) for b in after.manifest.bins] == [1, 1]
    assert done.generation == after.manifest.generation == before.generation + 1
    assert list(after) == RECORDS


def test_a_commit_that_did_not_land_says_so_and_a_retry_is_safe(
    quick: None, proxy: FaultyProxy, s3_url: str, s3_storage_options: dict[str, Any]
) -> None:
    write_split_data(s3_url, RECORDS[:40], splits=2, storage_options=s3_storage_options)
    proxy.faults.fail = "PUT /_log/"  # the commit: answered 503, never forwarded
    options = _via(proxy.url, s3_storage_options)
    with pytest.raises(OSError, match="the commit did not land") as err:
        write_split_data(s3_url, RECORDS[40:], storage_options=options)
    assert "nothing was committed; retrying is safe" in str(err.value)
    assert str(err.value).startswith(f"{s3_url}: ")
    assert _records(s3_url, s3_storage_options) == RECORDS[:40]
    proxy.faults.fail = ""
    write_split_data(s3_url, RECORDS[40:], storage_options=options)
    assert _records(s3_url, s3_storage_options) == RECORDS

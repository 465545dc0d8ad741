"""Uploads of parts to S3 (``_store/_upload.py``): one PUT for a small part, a multipart
upload with concurrent blocks for a large one, bounded memory, and nothing left after a
failure. Against the real moto server, through a proxy that watches or gates requests."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
from conftest import RequestLog, wait_for
from faulty_proxy import Faults, FaultyProxy

from splitdask import SplitDataLoader, SplitWriter, write_split_data
from splitdask._store._net import net_settings
from splitdask._store._upload import block_size, upload, upload_slots

MIB = 1 << 20


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """5 MiB blocks (S3's smallest), so multipart uploads of a few blocks stay small."""
    monkeypatch.setenv("SPLITDASK_CHUNK_BYTES", str(5 * MIB))


class WatchingProxy(FaultyProxy):
    """Counts UploadPart requests in flight and holds each one until ``hold`` of them
    are, or ``patience`` seconds have passed (then it lets it go on regardless)."""

    def __init__(self, upstream: str, hold: int, patience: float, faults: Faults | None = None):
        super().__init__(upstream, faults or Faults())
        self.hold = hold
        self.patience = patience
        self.inflight = 0
        self.peak = 0
        self._cond = threading.Condition()

    def _exchange(self, conn: Any, head: bytes, body: bytes) -> bool:
        if b"partNumber=" not in head.split(b"\r\n", 1)[0]:
            return super()._exchange(conn, head, body)
        with self._cond:
            self.inflight += 1
            self.peak = max(self.peak, self.inflight)
            self._cond.notify_all()
            self._cond.wait_for(lambda: self.inflight >= self.hold, timeout=self.patience)
        try:
            return super()._exchange(conn, head, body)
        finally:
            with self._cond:
                self.inflight -= 1


def through(proxy: FaultyProxy, options: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**options, "endpoint_url": proxy.url, **extra}


def spool(tmp_path: Path, size: int, seed: int = 0) -> tuple[Path, bytes]:
    data = np.random.default_rng(seed).bytes(size)
    path = tmp_path / "part.bin"
    path.write_bytes(data)
    return path, data


def test_block_size_and_slots_follow_the_network_settings() -> None:
    net = net_settings()
    assert block_size(1, net) == block_size(900, net) == 5 * MIB
    # Blocks double every 900, so S3's 10,000 parts hold its largest object (5 TiB).
    assert block_size(901, net) == 10 * MIB
    assert sum(block_size(n, net) for n in range(1, 10_001)) > 5 << 40
    assert upload_slots(net, 5 * MIB) == min(net.connections, net.inflight_bytes // (5 * MIB)) // 2


def test_large_part_sends_its_blocks_at_once_and_round_trips(
    s3_endpoint: str,
    s3_storage_options: dict[str, Any],
    s3_bucket: str,
    s3_fs: Any,
    s3_requests: RequestLog,
    tmp_path: Path,
) -> None:
    local, data = spool(tmp_path, 17 * MIB + 123)  # four blocks, the last a short one
    # Every block is held at the proxy until all four are in flight: sent one at a
    # time, each would wait out the patience and the peak would stay at 1.
    with WatchingProxy(s3_endpoint, hold=4, patience=30) as proxy:
        fs = fsspec.filesystem("s3", **through(proxy, s3_storage_options))
        m = s3_requests.mark()
        upload(fs, str(local), f"{s3_bucket}/big.bin")
    assert proxy.peak == 4
    methods = [r.method for r in s3_requests.since(m) if r.method in ("PUT", "POST")]
    assert methods == ["POST", "PUT", "PUT", "PUT", "PUT", "POST"]
    s3_fs.invalidate_cache()
    assert s3_fs.cat_file(f"{s3_bucket}/big.bin") == data
    etag = s3_fs.call_s3("head_object", Bucket=s3_bucket, Key="big.bin")["ETag"]
    assert etag.strip('"').endswith("-4")  # a multipart object of four parts


def test_small_part_is_one_put(
    s3_storage_options: dict[str, Any],
    s3_bucket: str,
    s3_fs: Any,
    s3_requests: RequestLog,
    tmp_path: Path,
) -> None:
    local, data = spool(tmp_path, 5 * MIB)
    fs = fsspec.filesystem("s3", **s3_storage_options)
    m = s3_requests.mark()
    upload(fs, str(local), f"{s3_bucket}/small.bin")
    assert [r.method for r in s3_requests.since(m)] == ["PUT"]
    s3_fs.invalidate_cache()
    assert s3_fs.cat_file(f"{s3_bucket}/small.bin") == data


def test_blocks_in_flight_stay_within_the_slots(
    monkeypatch: pytest.MonkeyPatch,
    s3_endpoint: str,
    s3_storage_options: dict[str, Any],
    s3_url: str,
    s3_fs: Any,
) -> None:
    # 4 connections: 2 slots for the whole process, shared by the four parts the
    # writer commits at once (each of three blocks).
    monkeypatch.setenv("SPLITDASK_CONNECTIONS", "4")
    assert upload_slots(net_settings(), 5 * MIB) == 2
    records = [np.random.default_rng(i).bytes(MIB) for i in range(4 * 12)]
    # Each block waits for a third to join it (which a bounded upload never sends)
    # for a moment, so that an unbounded one shows its extra blocks in the peak.
    with WatchingProxy(s3_endpoint, hold=3, patience=0.3) as proxy:
        so = through(proxy, s3_storage_options)
        write_split_data(s3_url, records, splits=4, storage_options=so)
    assert proxy.peak == 2
    loader = SplitDataLoader(s3_url, storage_options=s3_storage_options)
    assert list(loader) == records
    loader.verify()


@pytest.mark.parametrize("failing", [1, 3])
def test_a_failed_block_leaves_no_object_and_no_open_upload(
    failing: int,
    s3_endpoint: str,
    s3_storage_options: dict[str, Any],
    s3_bucket: str,
    s3_fs: Any,
    s3_requests: RequestLog,
    tmp_path: Path,
) -> None:
    local, _ = spool(tmp_path, 20 * MIB + 1)
    faults = Faults(slow=1, only=f"partNumber={failing}&")  # a 503 for every attempt
    with WatchingProxy(s3_endpoint, hold=1, patience=0, faults=faults) as proxy:
        so = through(proxy, s3_storage_options, config_kwargs={"retries": {"max_attempts": 1}})
        fs = fsspec.filesystem("s3", **so)
        m = s3_requests.mark()
        with pytest.raises(OSError, match="reduce your request rate|SlowDown|503"):
            upload(fs, str(local), f"{s3_bucket}/doomed.bin")
    assert faults.counts["503 SlowDown"] >= 1
    aborts = [r for r in s3_requests.since(m) if r.method == "DELETE" and "uploadId" in r.query]
    assert len(aborts) == 1
    s3_fs.invalidate_cache()
    assert not s3_fs.exists(f"{s3_bucket}/doomed.bin")
    open_uploads = s3_fs.call_s3("list_multipart_uploads", Bucket=s3_bucket)
    assert open_uploads.get("Uploads", []) == []


def test_a_writer_whose_upload_fails_commits_nothing(
    s3_endpoint: str,
    s3_storage_options: dict[str, Any],
    s3_url: str,
    s3_bucket: str,
    s3_fs: Any,
) -> None:
    write_split_data(s3_url, [b"kept"], splits=2, storage_options=s3_storage_options)
    before = sorted(s3_fs.find(s3_bucket))
    records = [np.random.default_rng(i).bytes(MIB) for i in range(24)]
    faults = Faults(slow=1, only="partNumber=2&")
    with WatchingProxy(s3_endpoint, hold=1, patience=0, faults=faults) as proxy:
        so = through(proxy, s3_storage_options, config_kwargs={"retries": {"max_attempts": 1}})
        with pytest.raises(OSError, match="bins/"):
            write_split_data(s3_url, records, splits=2, storage_options=so)
    s3_fs.invalidate_cache()
    assert sorted(s3_fs.find(s3_bucket)) == before
    assert s3_fs.call_s3("list_multipart_uploads", Bucket=s3_bucket).get("Uploads", []) == []
    assert list(SplitDataLoader(s3_url, storage_options=s3_storage_options)) == [b"kept"]


def test_other_backends_take_the_generic_path(tmp_path: Path) -> None:
    local, data = spool(tmp_path, 11 * MIB + 7)
    fs = fsspec.filesystem("memory")
    try:
        upload(fs, str(local), "/splitdask-upload-test/part.bin")
        assert fs.cat_file("/splitdask-upload-test/part.bin") == data
    finally:
        fs.rm("/splitdask-upload-test", recursive=True)


def test_a_large_part_goes_up_while_it_is_written(
    s3_storage_options: dict[str, Any], s3_url: str, s3_fs: Any, s3_requests: RequestLog
) -> None:
    records = [np.random.default_rng(i).bytes(MIB) for i in range(12)]
    m = s3_requests.mark()

    def blocks_sent() -> int:
        return sum("partNumber" in r.query for r in s3_requests.since(m, contains="/bins/"))

    with SplitWriter(s3_url, 1, storage_options=s3_storage_options) as w:
        w.write_many(records)
        # Not committed yet, and both full blocks of the 12 MiB part are on their way.
        wait_for(lambda: blocks_sent() == 2, "two blocks sent before the commit")
    assert blocks_sent() == 3  # the rest went at the commit
    (part,) = SplitDataLoader(s3_url, storage_options=s3_storage_options).snapshot.parts
    key = f"{s3_url.removeprefix('s3://').split('/', 1)[1]}/{part.path}"
    bucket = s3_url.removeprefix("s3://").split("/", 1)[0]
    etag = s3_fs.call_s3("head_object", Bucket=bucket, Key=key)["ETag"]
    assert etag.strip('"').endswith("-3")
    assert list(SplitDataLoader(s3_url, storage_options=s3_storage_options)) == records


def test_an_aborted_writer_leaves_no_open_upload(
    s3_storage_options: dict[str, Any], s3_url: str, s3_bucket: str, s3_fs: Any
) -> None:
    w = SplitWriter(s3_url, 2, storage_options=s3_storage_options)
    w.write_many(np.random.default_rng(i).bytes(MIB) for i in range(30))
    assert s3_fs.call_s3("list_multipart_uploads", Bucket=s3_bucket).get("Uploads")
    w.abort()
    assert s3_fs.call_s3("list_multipart_uploads", Bucket=s3_bucket).get("Uploads", []) == []
    s3_fs.invalidate_cache()
    assert s3_fs.find(s3_bucket) == []

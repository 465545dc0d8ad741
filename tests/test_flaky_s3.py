"""S3 through a fault-injecting proxy (tests/faulty_proxy.py) in front of moto.

Transient faults (dropped connections, 503 SlowDown, delays, bodies cut mid-stream)
are retried within splitdask's retry policy (tests/test_faults.py), so a whole write,
read and verify cycle passes; a read the transport cannot tell is wrong (a body cut
with its length fixed up, a flipped byte) is caught by the checksums and never
returned as a record.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from faulty_proxy import Faults, FaultyProxy

from splitdask import CorruptDatasetError, SplitDataLoader, write_split_data

RECORDS = [bytes([i % 256]) * (100 + i % 37) for i in range(400)]


@pytest.fixture
def proxy(s3_endpoint: str) -> Iterator[FaultyProxy]:
    with FaultyProxy(s3_endpoint, Faults(), lifetime=240) as p:
        yield p


def _via(proxy: FaultyProxy, options: dict[str, Any]) -> dict[str, Any]:
    # A fresh s3fs instance (skip_instance_cache) so no pooled connection bypasses it.
    return {**options, "endpoint_url": proxy.url, "skip_instance_cache": True}


def test_write_read_verify_survive_transient_faults(
    proxy: FaultyProxy, s3_url: str, s3_storage_options: dict[str, Any]
) -> None:
    proxy.faults.drop = 4  # every 4th connection closed unanswered
    proxy.faults.slow = 5  # every 5th request: 503 SlowDown
    proxy.faults.delay_every = 3
    proxy.faults.truncate = 7  # every 7th GET cut mid-body (connection ends)
    options = _via(proxy, s3_storage_options)
    write_split_data(s3_url, RECORDS, splits=3, storage_options=options)
    loader = SplitDataLoader(s3_url, storage_options=options)
    assert [loader[i] for i in range(0, 400, 7)] == RECORDS[0:400:7]
    assert loader[np.arange(400)] == RECORDS
    assert sorted(loader.iterate_binwise(shuffle=True, seed=1)) == sorted(RECORDS)
    report = loader.verify()
    assert report.parts == 3
    counts = proxy.faults.counts
    for fault in ("dropped connections", "503 SlowDown", "truncated", "delayed"):
        assert counts.get(fault, 0) > 0, counts


def test_undetectable_truncation_is_caught_by_the_checksums(
    proxy: FaultyProxy,
    s3_url: str,
    s3_storage_options: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A failed transfer checksum is read again for this long before it counts.
    monkeypatch.setenv("SPLITDASK_RETRY_SECONDS", "2")
    write_split_data(s3_url, RECORDS, splits=2, storage_options=s3_storage_options)
    options = _via(proxy, s3_storage_options)
    loader = SplitDataLoader(s3_url, storage_options=options)
    loader[0], loader[1]  # both footers fetched intact
    proxy.faults.only = "/bins/"
    proxy.faults.corrupt = 1  # every part GET from now on has its first byte flipped
    with pytest.raises(CorruptDatasetError, match=r"record 2 \(bytes \d+-\d+\) does not match"):
        loader[4]  # bin 0, record 2
    with pytest.raises(CorruptDatasetError, match="checksum"):
        list(loader.iterate_binwise())
    proxy.faults.corrupt = 0
    proxy.faults.truncate, proxy.faults.truncate_fix_length = 1, True
    with pytest.raises(CorruptDatasetError, match="shorter than the manifest says|bytes"):
        loader[6]
    with pytest.raises(CorruptDatasetError):
        loader[np.arange(10, 30)]
    assert proxy.faults.counts["corrupted"] > 0
    assert proxy.faults.counts["truncated"] > 0


def test_persistent_fault_fails_naming_the_object_and_commits_nothing(
    proxy: FaultyProxy, s3_url: str, s3_storage_options: dict[str, Any], s3_fs: Any
) -> None:
    proxy.faults.slow = 1  # every request: SlowDown, for good
    options = _via(proxy, s3_storage_options)
    options["config_kwargs"] = {"retries": {"max_attempts": 2, "mode": "standard"}}
    with pytest.raises(OSError, match=s3_url.removeprefix("s3://").split("/")[0]):
        write_split_data(s3_url, RECORDS, splits=2, storage_options=options)
    s3_fs.invalidate_cache()
    assert not s3_fs.exists(f"{s3_url}/splitdask.json")
    assert not s3_fs.exists(f"{s3_url}/_log")

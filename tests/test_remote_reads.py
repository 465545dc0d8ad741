"""How remote reads are planned: whole parts in concurrent chunks, read-ahead within a
byte budget, ranges merged by cost, and footers fetched by the entry.

Request counts and ranges come from the log of a real S3 server (moto on 127.0.0.1);
the planning functions are checked on their own too, since they do no I/O.
"""

from __future__ import annotations

import itertools
import random
import struct
from typing import Any

import boto3
import pytest
from conftest import RequestLog, wait_for
from dataset_suite import make_records

from splitdask import CorruptDatasetError, SplitDataLoader, write_split_data
from splitdask._format import entry_tables, footer_size
from splitdask._read._entries import SPARSE_MIN_FOOTER
from splitdask._store._fetch import chunk_spans, plan_ranges
from splitdask._store._net import NetSettings, net_settings

MiB = 1 << 20


def spans_of(got: list[Any]) -> list[tuple[int, int]]:
    """``(lo, hi)`` (hi exclusive) of each logged ranged GET."""
    out = []
    for r in got:
        assert r.range is not None, r
        lo, hi = r.range.removeprefix("bytes=").split("-")
        out.append((int(lo), int(hi) + 1))
    return out


def bins_requested(loader: SplitDataLoader, log: RequestLog, since: int) -> list[int]:
    """The bin of each part request logged since ``since``, in order."""
    bin_of = {p.path: int(p.path.split("/")[1][:5]) for p in loader.snapshot.parts}
    return [bin_of[r.path.split("/ds/", 1)[1]] for r in log.since(since, contains="/bins/")]


def fetched(got: list[Any]) -> int:
    return sum(hi - lo for lo, hi in spans_of(got))


# -- planning (no I/O) -------------------------------------------------------------------


def test_plan_merges_only_gaps_cheaper_than_a_request() -> None:
    net = NetSettings(latency=0.01, bandwidth=1e6)  # a request is worth 10,000 bytes
    assert net.gap_bytes == 10_000
    starts = [0, 5_000, 100_000, 50_000]
    ends = [1_000, 6_000, 101_000, 51_000]
    plan = plan_ranges(starts, ends, net)
    assert [(lo, hi) for lo, hi, _ in plan] == [(0, 6_000), (50_000, 51_000), (100_000, 101_000)]
    assert [sorted(items) for _, _, items in plan] == [[0, 1], [3], [2]]
    # gap=0 keeps them apart; empty ranges are served by no request.
    assert len(plan_ranges(starts, ends, net, gap=0)) == 4
    assert plan_ranges([7, 9], [7, 9], net) == []


def test_plan_never_merges_past_a_chunk() -> None:
    net = NetSettings(chunk_bytes=4096, latency=1.0, bandwidth=1e9)
    plan = plan_ranges([0, 3000, 6000], [1000, 4000, 7000], net)
    assert [(lo, hi) for lo, hi, _ in plan] == [(0, 4000), (6000, 7000)]


@pytest.mark.parametrize("size", [1, MiB - 1, MiB, 3 * MiB + 5, 40 * MiB, 300 * MiB])
def test_chunks_cover_a_part_exactly(size: int) -> None:
    net = NetSettings()
    spans = chunk_spans(size, net)
    assert spans[0][0] == 0
    assert spans[-1][1] == size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert all(hi - lo <= net.chunk_bytes for lo, hi in spans)
    # A part of a few MiB is spread over several requests, a huge one is not cut finer
    # than the chunk size.
    if size >= 16 * MiB:
        assert len(spans) >= 16 or all(hi - lo == net.chunk_bytes for lo, hi in spans[:-1])
    if size > 2 * MiB:
        assert len(spans) >= 2


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPLITDASK_CONNECTIONS", "7")
    monkeypatch.setenv("SPLITDASK_LATENCY", "0.5")
    got = net_settings()
    assert got.connections == 7
    assert got.latency == 0.5
    monkeypatch.setenv("SPLITDASK_CHUNK_BYTES", "lots")
    with pytest.raises(ValueError, match="SPLITDASK_CHUNK_BYTES='lots'"):
        net_settings()


# -- whole parts and read-ahead ------------------------------------------------------------


def test_a_large_part_arrives_in_concurrent_chunks(
    s3_url: str, s3_storage_options: dict[str, Any], s3_requests: RequestLog
) -> None:
    records = [bytes([i]) * (256 << 10) for i in range(24)]  # 6 MiB in one bin
    write_split_data(s3_url, records, splits=1, storage_options=s3_storage_options)
    loader = SplitDataLoader(s3_url, storage_options=s3_storage_options)
    (part,) = loader.manifest.parts()  # type: ignore[union-attr]
    m = s3_requests.mark()
    got_records = loader.read_bin(0)
    assert got_records == records
    assert {type(r) for r in got_records} == {bytes}  # not views of a joined buffer
    got = s3_requests.since(m, contains="/bins/")
    spans = sorted(spans_of(got))
    assert len(spans) == len(chunk_spans(part.size, net_settings())) >= 4
    assert spans[0][0] == 0
    assert spans[-1][1] == part.size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))


def test_read_ahead_stays_within_its_budget(
    s3_url: str,
    s3_storage_options: dict[str, Any],
    s3_requests: RequestLog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    records = [i.to_bytes(4, "little") * 500 for i in range(400)]  # equal bins
    write_split_data(s3_url, records, splits=8, storage_options=s3_storage_options)
    one_bin = sum(len(r) for r in records) // 8
    # A budget of three and a half bins, the one in hand included: two bins ahead.
    monkeypatch.setenv("SPLITDASK_INFLIGHT_BYTES", str(int(one_bin * 3.5)))
    loader = SplitDataLoader(s3_url, storage_options=s3_storage_options)

    def bins_fetched(since: int) -> set[int]:
        return set(bins_requested(loader, s3_requests, since))

    m = s3_requests.mark()
    it = loader.iterate_binwise()
    first = next(it)
    # While the caller holds bin 0, the next two bins are fetched, and no more.
    wait_for(lambda: len(bins_fetched(m)) >= 3, "the read-ahead of two bins")
    assert bins_fetched(m) <= {0, 1, 2}
    rest = list(it)
    assert [first, *rest] == [r for b in range(8) for r in loader.read_bin(b)]
    assert len(s3_requests.since(m, contains="/bins/")) == 16  # each part twice: pass + read_bin


def test_read_ahead_runs_several_bins_at_once(
    s3_url: str, s3_storage_options: dict[str, Any], s3_requests: RequestLog
) -> None:
    records = make_records(300, 6)
    write_split_data(s3_url, records, splits=6, storage_options=s3_storage_options)
    loader = SplitDataLoader(s3_url, storage_options=s3_storage_options)
    m = s3_requests.mark()
    it = loader.iterate_binwise(shuffle=True, seed=1)
    next(it)
    # The default budget holds every bin of this small dataset: all are requested
    # while the caller is still on the first record.
    wait_for(lambda: len(s3_requests.since(m, contains="/bins/")) == 6, "all six bins")
    assert len(list(it)) == len(records) - 1
    assert len(s3_requests.since(m, contains="/bins/")) == 6


# -- random reads and footers --------------------------------------------------------------


def big_footer_records(n: int = 6000) -> list[bytes]:
    assert footer_size(n, 2) >= SPARSE_MIN_FOOTER
    return [i.to_bytes(4, "little") * 8 for i in range(n)]


@pytest.fixture
def one_part(s3_url: str, s3_storage_options: dict[str, Any]) -> tuple[Any, ...]:
    """A dataset of one part whose footer is read by the entry: its records, the
    part, and where its offsets and checksums start."""
    records = big_footer_records()
    write_split_data(s3_url, records, splits=1, storage_options=s3_storage_options)
    (part,) = SplitDataLoader(s3_url, storage_options=s3_storage_options).snapshot.parts
    return records, part, *entry_tables(part.size, part.count)


def test_first_read_of_a_part_fetches_its_entries_not_its_footer(
    s3_url: str,
    s3_storage_options: dict[str, Any],
    s3_requests: RequestLog,
    one_part: tuple[Any, ...],
) -> None:
    records, part, offsets, sums = one_part
    loader = SplitDataLoader(s3_url, storage_options=s3_storage_options)

    m = s3_requests.mark()
    assert loader[1234] == records[1234]
    got = s3_requests.since(m)
    # The record's two offsets and its checksum and the footer's hash (three ranges,
    # fetched at once), then the record: 64 bytes, not the 96 kB footer.
    assert sorted(spans_of(got[:3])) == [
        (offsets + 8 * 1234, offsets + 8 * 1234 + 16),
        (sums + 8 * 1234, sums + 8 * 1234 + 8),
        (part.size - 32, part.size - 24),
    ]
    assert len(got) == 4
    assert fetched(got) == 24 + 8 + 32

    # The second record of the part reads the whole footer (then every record is
    # one request): a part read twice is likely read again.
    m = s3_requests.mark()
    assert loader[17] == records[17]
    got = s3_requests.since(m)
    assert spans_of(got)[0] == (part.size - footer_size(part.count, 2), part.size)
    m = s3_requests.mark()
    for i in random.Random(3).sample(range(len(records)), 20):
        assert loader[i] == records[i]
    assert s3_requests.count("GET", since=m) == 20


def test_a_batch_reads_entries_of_parts_it_touches_once(
    s3_url: str, s3_storage_options: dict[str, Any], s3_requests: RequestLog
) -> None:
    records = big_footer_records(8 * 4500)
    write_split_data(s3_url, records, splits=8, storage_options=s3_storage_options)
    loader = SplitDataLoader(s3_url, storage_options=s3_storage_options)
    picks = [
        8 * k + b for b, k in enumerate(random.Random(4).sample(range(4500), 8))
    ]  # a record of each bin
    m = s3_requests.mark()
    assert loader[picks] == [records[i] for i in picks]
    got = s3_requests.since(m)
    # two entry ranges, the footer's hash and the record, per part
    assert len(got) == 8 * 4
    assert fetched(got) == 8 * (24 + 8 + 32)


def test_a_damaged_entry_is_refused(
    s3_url: str, s3_storage_options: dict[str, Any], s3_endpoint: str, one_part: tuple[Any, ...]
) -> None:
    _, part, offsets, sums = one_part
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    bucket, _, prefix = s3_url.removeprefix("s3://").partition("/")
    key = f"{prefix}/{part.path}"
    body = bytearray(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[offsets + 8 * 5 : offsets + 8 * 6] = struct.pack("<Q", part.size * 2)  # record 5's start
    body[sums + 8 * 9 : sums + 8 * 10] = bytes(8)  # record 9's checksum
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(body))

    fresh = SplitDataLoader(s3_url, storage_options=s3_storage_options)
    with pytest.raises(CorruptDatasetError, match=r"record 5 at bytes .*outside the part"):
        fresh[5]
    fresh = SplitDataLoader(s3_url, storage_options=s3_storage_options)
    with pytest.raises(CorruptDatasetError, match="record 9 .*does not match its checksum"):
        fresh[9]
    # Read whole, the footer's own hash catches both.
    with pytest.raises(CorruptDatasetError, match=part.path):
        fresh.read_bin(0)


def test_read_bin_fetches_the_next_bin_meanwhile(
    s3_url: str, s3_storage_options: dict[str, Any], s3_requests: RequestLog
) -> None:
    records = make_records(300, 8)
    write_split_data(s3_url, records, splits=6, storage_options=s3_storage_options)
    loader = SplitDataLoader(s3_url, storage_options=s3_storage_options)

    def bins_since(m: int) -> list[int]:
        return bins_requested(loader, s3_requests, m)

    m = s3_requests.mark()
    first = loader.read_bin(0)
    wait_for(lambda: 1 in bins_since(m), "the fetch of bin 1")
    m = s3_requests.mark()
    second = loader.read_bin(1)  # taken from the fetch started by read_bin(0)
    assert 1 not in bins_since(m)
    assert loader.read_bin(4) == loader.read_bin(4)  # out of order: fetched, still right
    everything = first + second + [r for b in range(2, 6) for r in loader.read_bin(b)]
    assert sorted(everything) == sorted(records)
    loader.close()
    assert loader.read_bin(5) == list(loader.iterate_binwise())[-len(loader.read_bin(5)) :]

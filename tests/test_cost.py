"""What an epoch costs: ``describe().epoch``, ``splitdask info`` and the notebook view
state, for a remote dataset, the GETs, bytes and request bill of each read path.

Expected figures are computed here from the manifest as stored (part sizes) and the
records written, not through the code under test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import _cli_helpers
import pytest
from _cli_helpers import ok, options
from _manifests import manifest_doc
from conftest import RequestLog

from splitdask import SplitDataLoader, write_split_data
from splitdask._read._cost import dollars

CHUNK = 16 << 10
MIB = 1 << 20
PRICE = 0.0004 / 1000  # dollars per GET: S3 Standard, us-east-1


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPLITDASK_CHUNK_BYTES", str(CHUNK))
    monkeypatch.setitem(_cli_helpers.ENV, "SPLITDASK_CHUNK_BYTES", str(CHUNK))  # the CLI's


def ceil(a: int, b: int) -> int:
    return -(-a // b)


@pytest.fixture
def remote(s3_url: str, s3_storage_options: dict[str, Any]) -> tuple[str, list[bytes]]:
    small = [bytes([i % 251]) * (1000 + i) for i in range(300)]
    big = [b"\x07" * (9 * MIB)]  # one part over 8 MiB: verify reads it in two GETs
    write_split_data(s3_url, small, splits=3, storage_options=s3_storage_options)
    write_split_data(s3_url, big, splits=1, storage_options=s3_storage_options)
    return s3_url, small + big


def expected(so: dict[str, Any], url: str, records: list[bytes]) -> dict[str, Any]:
    """The figures from the stored manifest and the records, by the documented rules."""
    manifest = manifest_doc(url, so)
    sizes = [p["size"] for b in manifest["bins"] for p in b]
    stored = sum(sizes)
    payload = sum(map(len, records))
    footers = stored - 8 * len(sizes) - payload  # after the 8-byte magic and the records
    assert 0 < footers < CHUNK  # so that every footer is one GET
    n = len(records)
    return {
        "whole": (sum(ceil(s, CHUNK) for s in sizes), stored),
        # one GET a record, a record larger than a chunk in chunks (the 9 MiB one)
        "random": (
            sum(max(1, ceil(len(r), CHUNK)) for r in records) + len(sizes),
            payload + footers,
        ),
        "footers": (len(sizes), footers),
        "per_record": (1, payload // n),
        "verify": (sum(1 + ceil(s, 8 * MIB) for s in sizes), stored),  # a HEAD each
    }


def test_describe_states_each_read_path(
    remote: tuple[str, list[bytes]], s3_storage_options: dict[str, Any], s3_fs: Any
) -> None:
    url, records = remote
    want = expected(s3_storage_options, url, records)
    epoch = SplitDataLoader(url, storage_options=s3_storage_options).describe().epoch
    assert epoch is not None
    assert epoch.chunk_bytes == CHUNK
    got = {
        "whole": epoch.whole_bins,
        "random": epoch.random_access,
        "footers": epoch.footers,
        "per_record": epoch.per_record,
        "verify": epoch.verify,
    }
    for path, (requests, nbytes) in want.items():
        assert (got[path].requests, got[path].bytes) == (requests, nbytes), path
        assert got[path].dollars == pytest.approx(requests * PRICE), path
    # The 9 MiB part takes 2 GETs to verify, the three small ones one each; a HEAD each.
    assert want["verify"][0] == 3 + 2 + 4


def test_info_shows_the_costs(
    remote: tuple[str, list[bytes]], s3_storage_options: dict[str, Any], s3_fs: Any
) -> None:
    url, records = remote
    want = expected(s3_storage_options, url, records)
    opts = options(s3_storage_options)
    doc = json.loads(ok("info", url, *opts, "--json"))["epoch"]
    assert doc["get_price_per_1000"] == 0.0004
    for key, path in [
        ("whole_bins", "whole"),
        ("random_access", "random"),
        ("footers", "footers"),
        ("random_access_per_record", "per_record"),
        ("verify", "verify"),
    ]:
        assert (doc[key]["requests"], doc[key]["bytes"]) == want[path], key
    text = ok("info", url, *opts).decode()
    lines = {ln.split(":", 1)[0].strip(): ln for ln in text.splitlines()}
    whole, verify = want["whole"][0], want["verify"][0]
    assert f"{whole:,} GETs" in lines["whole bins"]
    assert "iterate_binwise" in lines["whole bins"]
    assert f"{want['random'][0]:,} GETs" in lines["random"]
    assert f"{want['footers'][0]:,} GETs" in lines["random"]
    assert f"{verify:,} GETs" in lines["verify"]
    assert "$0.40 per million GETs" in lines["epoch"]


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (0.08, "$0.08"),
        (1234.5, "$1,234.50"),
        (2.56e-5, "$0.000026"),
        (0.0008, "$0.00080"),
        (0, "$0.00"),
    ],
)
def test_amounts_keep_two_significant_digits_below_a_cent(amount: float, text: str) -> None:
    assert dollars(amount) == text


def test_notebook_view_shows_the_costs(
    remote: tuple[str, list[bytes]], s3_storage_options: dict[str, Any], s3_fs: Any
) -> None:
    url, records = remote
    want = expected(s3_storage_options, url, records)
    html = SplitDataLoader(url, storage_options=s3_storage_options)._repr_html_()
    assert f"{want['whole'][0]:,} GETs" in html
    assert f"{want['verify'][0]:,} GETs" in html


def test_a_local_dataset_costs_no_requests(tmp_path: Path) -> None:
    path = str(tmp_path / "ds")
    write_split_data(path, [b"a", b"bc"], splits=2)
    assert SplitDataLoader(path).describe().epoch is None
    assert json.loads(ok("info", path, "--json"))["epoch"] is None
    assert "epoch:       local: no requests\n" in ok("info", path).decode()
    assert "local: no requests" in SplitDataLoader(path)._repr_html_()
    write_split_data("memory://splitdask-cost-test/ds", [b"a"], splits=1)
    assert SplitDataLoader("memory://splitdask-cost-test/ds").describe().epoch is None


def test_the_figures_are_what_the_server_sees(
    remote: tuple[str, list[bytes]], s3_storage_options: dict[str, Any], s3_requests: RequestLog
) -> None:
    url, records = remote
    loader = SplitDataLoader(url, storage_options=s3_storage_options)
    epoch = loader.describe().epoch
    assert epoch is not None
    m = s3_requests.mark()
    assert sorted(loader.iterate_binwise(shuffle=True)) == sorted(records)
    got = s3_requests.since(m, contains="/bins/")
    assert len(got) == epoch.whole_bins.requests
    m = s3_requests.mark()
    loader.verify()
    assert len(s3_requests.since(m, contains="/bins/")) == epoch.verify.requests
    fresh = SplitDataLoader(url, storage_options=s3_storage_options)
    m = s3_requests.mark()
    for i in range(len(records)):
        assert fresh[i] == records[i]
    assert len(s3_requests.since(m, contains="/bins/")) == epoch.random_access.requests

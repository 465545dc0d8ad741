"""splitdask on S3: a real S3-compatible HTTP server (moto) on 127.0.0.1, through s3fs.

The generic dataset behaviour runs through :class:`DatasetSuite`, on plain ``s3://``
and through a ``simplecache::`` layer. The tests below check what only a remote store
has: how many requests each access costs (counted by the server), the order of the
commit's requests, a writer killed mid-upload, caching, and access errors.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from _manifests import forget_versions, log_files
from conftest import Request, RequestLog, S3Server, wait_for
from dataset_suite import DatasetSuite, make_records

from splitdask import (
    CorruptDatasetError,
    DatasetNotFoundError,
    SplitDataLoader,
    SplitWriter,
    gc,
    write_split_data,
)
from splitdask._format import MANIFEST_NAME, footer_size
from splitdask._format._log import checkpoint_name, entry_name
from splitdask._store import UPLOAD_BLOCK
from splitdask._write._retention import CHECKPOINT_EVERY

ROOT = Path(__file__).resolve().parents[1]


class TestS3(DatasetSuite):
    @pytest.fixture
    def url(self, s3_url: str) -> str:
        return s3_url

    @pytest.fixture
    def storage_options(self, s3_storage_options: dict[str, Any]) -> dict[str, Any]:
        return s3_storage_options


class TestS3SimpleCache(DatasetSuite):
    """The same behaviour with parts read through a local cache."""

    @pytest.fixture
    def url(self, s3_url: str) -> str:
        return f"simplecache::{s3_url}"

    @pytest.fixture
    def storage_options(self, s3_storage_options: dict[str, Any]) -> dict[str, Any]:
        return {"s3": s3_storage_options}


# -- helpers ---------------------------------------------------------------------------


def key(url: str, rel: str = "") -> str:
    """The s3fs path (``bucket/key``) of ``rel`` under ``url``."""
    path = url.removeprefix("s3://")
    return f"{path}/{rel}" if rel else path


def rel_of(path: str) -> str:
    """The dataset-relative name of a request path ``/<bucket>/ds/<rel>``."""
    return path.split("/ds/", 1)[-1]


def parts_of(loader: SplitDataLoader) -> list[Any]:
    assert loader.manifest is not None
    return loader.manifest.parts()


def described(requests: list[Request]) -> list[str]:
    """Each request as ``"LIST <prefix>"`` (a bucket listing, dataset-relative) or
    ``"<METHOD> <rel>"``."""
    out = []
    for r in requests:
        query = urllib.parse.parse_qs(r.query)
        if r.method == "GET" and "list-type" in query:
            out.append("LIST " + query.get("prefix", [""])[0].split("ds/", 1)[-1])
        else:
            out.append(f"{r.method} {rel_of(r.path)}")
    return out


# -- request counts ----------------------------------------------------------------------


def test_open_is_one_list_and_the_newest_entries(
    s3_url: str, s3_storage_options: dict[str, Any], s3_requests: RequestLog
) -> None:
    so = s3_storage_options
    write_split_data(s3_url, make_records(50), splits=4, storage_options=so)
    write_split_data(s3_url, make_records(10, 1), splits=4, storage_options=so)
    forget_versions()  # as a new process: nothing of the log known yet
    m = s3_requests.mark()
    loader = SplitDataLoader(s3_url, storage_options=so)
    assert len(loader) == 60
    # One listing of the log, then its entries, fetched at once (in any order); the
    # stub is never read.
    got = described(s3_requests.since(m))
    assert got[0] == "LIST _log/"
    assert sorted(got[1:]) == [f"GET {entry_name(1)}", f"GET {entry_name(2)}"]
    # Versions never change: opening again in this process only lists the log.
    m = s3_requests.mark()
    assert len(SplitDataLoader(s3_url, storage_options=so)) == 60
    assert described(s3_requests.since(m)) == ["LIST _log/"]
    # Past a checkpoint, the entries before it are not read.
    for k in range(3, CHECKPOINT_EVERY + 2):
        write_split_data(s3_url, [b"%d" % k], splits=4, storage_options=so)
    forget_versions()
    m = s3_requests.mark()
    loader = SplitDataLoader(s3_url, storage_options=so)
    assert len(loader) == 60 + CHECKPOINT_EVERY - 1
    assert loader.version == CHECKPOINT_EVERY + 1
    got = described(s3_requests.since(m))  # the checkpoint and the entry at once
    assert got[0] == "LIST _log/"
    assert sorted(got[1:]) == [
        f"GET {checkpoint_name(CHECKPOINT_EVERY)}",
        f"GET {entry_name(CHECKPOINT_EVERY + 1)}",
    ]


def test_single_record_is_one_ranged_get_after_the_footer(
    s3_url: str, s3_storage_options: dict[str, Any], s3_requests: RequestLog
) -> None:
    records = make_records(200)
    records[7] = b""
    write_split_data(s3_url, records, splits=4, storage_options=s3_storage_options)
    loader = SplitDataLoader(s3_url, storage_options=s3_storage_options)
    parts = parts_of(loader)
    # First touch of each part: its footer, then the record.
    for b in range(4):
        m = s3_requests.mark()
        assert loader[b] == records[b]
        got = s3_requests.since(m)
        assert [r.method for r in got] == ["GET", "GET"]
        assert all(r.path.endswith(parts[b].path) for r in got)
        footer_start = parts[b].size - footer_size(parts[b].count, 2)
        assert got[0].range == f"bytes={footer_start}-{parts[b].size - 1}"
    # From then on: exactly one ranged GET per record, for exactly its bytes.
    for i in random.Random(1).sample(range(200), 60):
        m = s3_requests.mark()
        assert loader[i] == records[i]
        got = s3_requests.since(m)
        if not records[i]:
            assert got == []  # an empty record costs nothing
            continue
        assert len(got) == 1
        assert got[0].method == "GET"
        assert got[0].range is not None
        lo, hi = (int(x) for x in got[0].range.removeprefix("bytes=").split("-"))
        assert hi - lo + 1 == len(records[i])
    assert loader[7] == b""


def test_batch_merges_near_ranges(
    s3_url: str, s3_storage_options: dict[str, Any], s3_requests: RequestLog
) -> None:
    records = [bytes([i % 251]) * 1000 for i in range(400)]
    write_split_data(s3_url, records, splits=4, storage_options=s3_storage_options)
    loader = SplitDataLoader(s3_url, storage_options=s3_storage_options)
    picks = random.Random(2).sample(range(400), 100)
    m = s3_requests.mark()
    assert loader[picks] == [records[i] for i in picks]
    # Four footers, then one merged GET per part (each part is 100 kB, well within
    # the merge gap): 8 requests for 100 records.
    assert s3_requests.counts(m) == {"GET": 8}
    m = s3_requests.mark()
    assert loader[picks[:50]] == [records[i] for i in picks[:50]]
    assert s3_requests.counts(m) == {"GET": 4}
    assert loader[::3] == records[::3]


def test_batch_does_not_merge_far_ranges(
    s3_url: str, s3_storage_options: dict[str, Any], s3_requests: RequestLog
) -> None:
    big = [bytes([i]) * (1536 << 10) for i in range(3)]  # 1.5 MiB records, one bin
    write_split_data(s3_url, big, splits=1, storage_options=s3_storage_options)
    loader = SplitDataLoader(s3_url, storage_options=s3_storage_options)
    loader[1]
    m = s3_requests.mark()
    assert loader[[2, 0]] == [big[2], big[0]]
    # 1.5 MiB apart: fetching the record in between would cost more than a request.
    # (Each record, larger than a MiB, comes in two concurrent chunks.)
    got = s3_requests.since(m)
    spans = sorted(tuple(int(x) for x in r.range.removeprefix("bytes=").split("-")) for r in got)
    assert len(spans) == 4
    assert sum(hi - lo + 1 for lo, hi in spans) == 2 * len(big[0])


def test_iterate_binwise_one_get_per_part_and_prefetch(
    s3_url: str, s3_storage_options: dict[str, Any], s3_requests: RequestLog
) -> None:
    so = s3_storage_options
    batches = [make_records(60, 1), make_records(60, 2), make_records(60, 3)]
    for batch in batches:  # three appends: every bin has three parts
        write_split_data(s3_url, batch, splits=3, storage_options=so)
    loader = SplitDataLoader(s3_url, storage_options=so)
    parts = parts_of(loader)
    assert len(parts) == 9
    bin_parts = {b: [p for p in parts if p.path.startswith(f"bins/{b:05d}-")] for b in range(3)}

    m = s3_requests.mark()
    it = loader.iterate_binwise()
    first = next(it)

    def fetched(b: int) -> bool:
        got = {r.path for r in s3_requests.since(m)}
        return all(any(g.endswith(p.path) for g in got) for p in bin_parts[b])

    # While the caller holds the first record of bin 0, bin 1 is being fetched.
    assert fetched(0)
    wait_for(lambda: fetched(1), "the prefetch of bin 1")
    rest = list(it)
    everything = [r for batch in batches for r in batch]
    assert [first, *rest] == [r for b in range(3) for r in loader.read_bin(b)]
    assert sorted([first, *rest]) == sorted(everything)
    got = s3_requests.since(m)
    assert {r.method for r in got} == {"GET"}
    size = {p.path: p.size for p in parts}
    requests_per_part = {p.path: 0 for p in parts}
    for r in got:
        assert r.range == f"bytes=0-{size[rel_of(r.path)] - 1}"  # the whole part, one GET
        requests_per_part[rel_of(r.path)] += 1
    # read_bin above fetched each part once more.
    assert requests_per_part == {p.path: 2 for p in parts}
    assert len(got) == 18

    m = s3_requests.mark()
    shuffled = list(loader.iterate_binwise(shuffle=True, seed=3))
    assert sorted(shuffled) == sorted(everything)
    assert s3_requests.counts(m) == {"GET": 9}


# -- commit protocol on object storage -------------------------------------------------------


def test_commit_writes_parts_then_manifest_last(
    s3_url: str, s3_storage_options: dict[str, Any], s3_requests: RequestLog
) -> None:
    so = s3_storage_options
    m = s3_requests.mark()
    write_split_data(s3_url, make_records(100), splits=5, storage_options=so)
    writes = [r for r in s3_requests.since(m) if r.method in ("PUT", "POST", "DELETE")]
    # One PUT per part, then (a new dataset) the stub, then the commit: the
    # conditional PUT of the first log entry, last.
    assert [r.method for r in writes] == ["PUT"] * 7
    assert all("/bins/" in r.path for r in writes[:5])
    assert described(writes[5:]) == [f"PUT {MANIFEST_NAME}", f"PUT {entry_name(1)}"]
    # Nothing after the commit request: whether versions expired is told by the
    # commit's own listing.
    assert described(s3_requests.since(m))[-1] == f"PUT {entry_name(1)}"

    old = {p.path for p in parts_of(SplitDataLoader(s3_url, storage_options=so))}
    m = s3_requests.mark()
    write_split_data(s3_url, make_records(30, 5), splits=3, start_clean=True, storage_options=so)
    writes = [r for r in s3_requests.since(m) if r.method in ("PUT", "POST", "DELETE")]
    # Overwrite: new parts, then the log entry; the old parts stay for version 1.
    assert [r.method for r in writes] == ["PUT"] * 4
    assert all("/bins/" in r.path for r in writes[:3])
    assert described(writes[3:]) == [f"PUT {entry_name(2)}"]
    assert list(SplitDataLoader(s3_url, storage_options=so)) == make_records(30, 5)
    assert list(SplitDataLoader(s3_url, storage_options=so, version=1)) == make_records(100)
    # gc past the grace period: the log forgets version 1 first (a checkpoint of the
    # oldest kept version, then version 1's entry goes), then its parts go.
    m = s3_requests.mark()
    gc(s3_url, so, older_than=0)
    writes = [r for r in s3_requests.since(m) if r.method in ("PUT", "POST", "DELETE")]
    assert described(writes[:2]) == [f"PUT {checkpoint_name(2)}", f"DELETE {entry_name(1)}"]
    assert [r.method for r in writes[2:]] == ["DELETE"] * 5
    assert {rel_of(r.path) for r in writes[2:]} == old


def test_large_part_is_one_multipart_upload(
    s3_url: str, s3_storage_options: dict[str, Any], s3_requests: RequestLog
) -> None:
    records = [np.random.default_rng(i).bytes(1 << 20) for i in range(20)]
    assert sum(map(len, records)) > 2 * UPLOAD_BLOCK
    m = s3_requests.mark()
    write_split_data(s3_url, records, splits=1, storage_options=s3_storage_options)
    writes = [r for r in s3_requests.since(m) if r.method in ("PUT", "POST")]
    # Initiate, three 8 MiB-bounded parts, complete; then the stub and the log entry.
    assert [r.method for r in writes] == ["POST", "PUT", "PUT", "PUT", "POST", "PUT", "PUT"]
    assert "uploads" in writes[0].query
    assert all("partNumber" in r.query for r in writes[1:4])
    assert "uploadId" in writes[4].query
    assert described(writes[5:]) == [f"PUT {MANIFEST_NAME}", f"PUT {entry_name(1)}"]
    loader = SplitDataLoader(s3_url, storage_options=s3_storage_options)
    assert loader[[19, 0, 7]] == [records[19], records[0], records[7]]
    loader.verify()


_APPEND_FOREVER = """
import json, sys
from splitdask import SplitWriter

url, options = sys.argv[1], json.loads(sys.argv[2])

def records():
    i = 0
    while True:  # never ends: the writer only stops when it is killed
        yield i.to_bytes(8, "little") * 8192
        i += 1

with SplitWriter(url, 2, storage_options=options, part_max_bytes=20 << 20) as w:
    w.write_many(records())
"""


@pytest.mark.timeout(120)
def test_writer_killed_mid_upload_leaves_dataset_as_it_was(
    s3_url: str,
    s3_storage_options: dict[str, Any],
    s3_requests: RequestLog,
    s3_fs: Any,
    tmp_path: Path,
) -> None:
    so = s3_storage_options
    before = make_records(300)
    write_split_data(s3_url, before, splits=4, storage_options=so)
    manifest_before = s3_fs.cat_file(key(s3_url, MANIFEST_NAME)), log_files(s3_url, so)

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "TMPDIR": str(tmp_path),
    }
    m = s3_requests.mark()
    child = subprocess.Popen(
        [sys.executable, "-c", _APPEND_FOREVER, s3_url, json.dumps(so)],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:

        def uploading() -> bool:
            if child.poll() is not None:
                pytest.fail(f"writer exited early: {child.stderr.read().decode()}")  # type: ignore[union-attr]
            return any(
                r.method == "PUT" and "partNumber" in r.query and "/bins/" in r.path
                for r in s3_requests.since(m)
            )

        # The first 20 MiB part of a bin is going up as a multipart upload: kill now.
        wait_for(uploading, "the writer to upload a part")
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        assert child.stderr is not None
        child.stderr.close()

    s3_fs.invalidate_cache()
    # No new version: the stub and the log are as they were, and no commit was tried.
    assert (s3_fs.cat_file(key(s3_url, MANIFEST_NAME)), log_files(s3_url, so)) == manifest_before
    assert not any(
        (r.path.endswith(MANIFEST_NAME) or "/_log/" in r.path) and r.method == "PUT"
        for r in s3_requests.since(m)
    )
    loader = SplitDataLoader(s3_url, storage_options=so)
    assert len(loader) == len(before)
    assert list(loader) == before
    assert sorted(loader.iterate_binwise(shuffle=True, seed=0)) == sorted(before)
    assert loader.verify().parts == 4
    # The leftovers of the dead writer stand in no one's way.
    write_split_data(s3_url, [b"after"], splits=4, storage_options=so)
    assert list(SplitDataLoader(s3_url, storage_options=so)) == [*before, b"after"]


# -- caching ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cache", ["simplecache", "filecache"])
def test_cached_reads_fetch_each_part_once_and_see_new_commits(
    s3_url: str,
    s3_storage_options: dict[str, Any],
    s3_requests: RequestLog,
    s3_fs: Any,
    tmp_path: Path,
    cache: str,
) -> None:
    so = s3_storage_options
    records = make_records(120)
    write_split_data(s3_url, records, splits=4, storage_options=so)
    cached_url = f"{cache}::{s3_url}"
    cached_so = {"s3": so, cache: {"cache_storage": str(tmp_path / "cache")}}
    loader = SplitDataLoader(cached_url, storage_options=cached_so)

    m = s3_requests.mark()
    assert list(loader.iterate_binwise()) == [r for b in range(4) for r in records[b::4]]
    first_pass = s3_requests.count("GET", since=m, contains="/bins/")
    assert 4 <= first_pass <= 8  # each part downloaded once (plus HEADs by the cache layer)
    m = s3_requests.mark()
    assert list(loader.iterate_binwise(shuffle=True)) != []
    assert [loader[i] for i in range(0, 120, 7)] == records[::7]
    assert loader[[5, 3, 99]] == [records[5], records[3], records[99]]
    assert s3_requests.since(m) == []  # everything from the local cache

    # The manifest is never cached: a commit made elsewhere is seen by the next loader,
    # and a write through the cached URL appends to the current dataset, not a stale one.
    write_split_data(s3_url, [b"new"], splits=4, storage_options=so)
    write_split_data(cached_url, [b"newer"], splits=4, storage_options=cached_so)
    again = SplitDataLoader(cached_url, storage_options=cached_so)
    assert list(again) == [*records, b"new", b"newer"]

    # verify() checks the objects as stored, not the cached copies.
    victim = parts_of(loader)[0].path
    data = bytearray(s3_fs.cat_file(key(s3_url, victim)))
    data[20] ^= 1
    s3_fs.pipe_file(key(s3_url, victim), bytes(data))
    assert loader[0] == records[0]  # still served from the cache
    with pytest.raises(CorruptDatasetError, match=f"{victim}: checksum mismatch"):
        loader.verify()


# -- errors ----------------------------------------------------------------------------------


def test_missing_bucket(s3_storage_options: dict[str, Any], s3_requests: RequestLog) -> None:
    url = "s3://splitdask-no-such-bucket/ds"
    so = s3_storage_options
    with pytest.raises(DatasetNotFoundError, match="bucket 'splitdask-no-such-bucket' does not"):
        SplitDataLoader(url, storage_options=so)

    consumed = []

    def records() -> Iterator[bytes]:
        consumed.append(True)
        yield b"x"

    m = s3_requests.mark()
    with pytest.raises(
        FileNotFoundError,
        match=r"cannot write s3://splitdask-no-such-bucket/ds: bucket "
        r"'splitdask-no-such-bucket' does not exist",
    ):
        write_split_data(url, records(), splits=2, storage_options=so)
    assert consumed == []  # refused at open, before reading any input
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SplitWriter(url, 2, storage_options=so)
    assert s3_requests.count("PUT", since=m) == 0  # and no bucket was created


def test_unknown_credentials_are_refused(
    s3_url: str, s3_storage_options: dict[str, Any], s3_server: S3Server
) -> None:
    so = s3_storage_options
    write_split_data(s3_url, [b"a", b"b"], splits=2, storage_options=so)
    with s3_server.enforcing_auth():
        # Opening starts with the listing of the log.
        with pytest.raises(PermissionError, match=f"{s3_url}/_log: access denied"):
            SplitDataLoader(s3_url, storage_options=so)
        with pytest.raises(PermissionError, match="check the credentials"):
            SplitWriter(s3_url, 2, storage_options=so)
    assert list(SplitDataLoader(s3_url, storage_options=so)) == [b"a", b"b"]


class IamUser:
    """An IAM user on the test server whose inline policy a test sets."""

    def __init__(self, so: dict[str, Any], name: str) -> None:
        self.iam = boto3.client(
            "iam",
            endpoint_url=so["endpoint_url"],
            aws_access_key_id=so["key"],
            aws_secret_access_key=so["secret"],
            region_name="us-east-1",
        )
        self.name = name
        self.iam.create_user(UserName=name)
        cred = self.iam.create_access_key(UserName=name)["AccessKey"]
        self.storage_options = {**so, "key": cred["AccessKeyId"], "secret": cred["SecretAccessKey"]}

    def allow(self, *statements: tuple[str, str]) -> None:
        """Replace the user's permissions by ``(action, resource)`` pairs."""
        doc = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": action, "Resource": f"arn:aws:s3:::{resource}"}
                for action, resource in statements
            ],
        }
        self.iam.put_user_policy(UserName=self.name, PolicyName="p", PolicyDocument=json.dumps(doc))


def test_access_denied_by_policy(
    s3_url: str, s3_storage_options: dict[str, Any], s3_server: S3Server
) -> None:
    so = s3_storage_options
    records = make_records(20)
    write_split_data(s3_url, records, splits=2, storage_options=so)
    bucket = key(s3_url).split("/")[0]
    user = IamUser(so, f"reader-{bucket}")
    limited = user.storage_options
    user.allow(("s3:ListBucket", bucket))  # may list the bucket, not read objects
    forget_versions()  # as a new process: the log entry must be read
    with (
        s3_server.enforcing_auth(),
        pytest.raises(PermissionError, match=f"{s3_url}/{entry_name(1)}: access denied"),
    ):
        SplitDataLoader(s3_url, storage_options=limited)
    # May read the log, but no part, and may write nothing.
    user.allow(("s3:ListBucket", bucket), ("s3:GetObject", f"{bucket}/ds/_log/*"))
    with s3_server.enforcing_auth():
        loader = SplitDataLoader(s3_url, storage_options=limited)
        assert len(loader) == 20
        with pytest.raises(PermissionError, match=f"{s3_url}/bins/.*access denied"):
            loader[0]
        with pytest.raises(PermissionError, match=f"{s3_url}/bins/.*access denied"):
            list(loader.iterate_binwise())
        with pytest.raises(PermissionError, match=f"{s3_url}/bins/.*access denied"):
            write_split_data(s3_url, [b"c"], splits=2, storage_options=limited)
    assert list(SplitDataLoader(s3_url, storage_options=so)) == records


def test_no_delete_permission_loses_nothing(
    s3_url: str, s3_storage_options: dict[str, Any], s3_server: S3Server, s3_fs: Any
) -> None:
    """Write-once buckets: removing replaced or abandoned parts is housekeeping."""
    so = s3_storage_options
    write_split_data(s3_url, make_records(20, 1), splits=2, storage_options=so)
    old = {p.path for p in parts_of(SplitDataLoader(s3_url, storage_options=so))}
    bucket = key(s3_url).split("/")[0]
    user = IamUser(so, f"writer-{bucket}")
    user.allow(
        ("s3:ListBucket", bucket), ("s3:GetObject", f"{bucket}/*"), ("s3:PutObject", f"{bucket}/*")
    )
    with s3_server.enforcing_auth():
        # Overwrite with no retention: committed, then version 1 (its log entry
        # first, then its parts) cannot be removed: a warning, not an error, and the
        # new parts stay.
        with pytest.warns(
            RuntimeWarning,
            match=f"could not remove versions past their retention.*{entry_name(1)}: access denied",
        ):
            info = write_split_data(
                s3_url,
                make_records(10, 2),
                splits=2,
                start_clean=True,
                storage_options=user.storage_options,
                retention=0,
            )
        assert info.num_records == 10

        # A failed write reports its own error, not the failed clean-up's.
        def records() -> Iterator[Any]:
            yield from make_records(400, 3, max_len=80000)  # parts go up at 4 MiB
            yield "not bytes"

        with (
            pytest.warns(RuntimeWarning, match="uncommitted parts"),
            pytest.raises(TypeError, match="record 400 is of type str"),
            SplitWriter(
                s3_url, 2, storage_options=user.storage_options, part_max_bytes=1 << 20
            ) as w,
        ):
            w.write_many(records())
    loader = SplitDataLoader(s3_url, storage_options=so)
    assert list(loader) == make_records(10, 2)
    loader.verify()
    s3_fs.invalidate_cache()
    left = {rel_of("/" + p) for p in s3_fs.find(key(s3_url, "bins"))}
    assert old <= left  # garbage, but nothing of the dataset was lost


def test_no_credentials(
    s3_url: str, s3_storage_options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_split_data(s3_url, [b"a"], splits=1, storage_options=s3_storage_options)
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    # Nothing to find anywhere, and no instance-metadata lookup beyond 127.0.0.1.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    so = {
        "endpoint_url": s3_storage_options["endpoint_url"],
        "client_kwargs": s3_storage_options["client_kwargs"],
        "skip_instance_cache": True,
    }
    with pytest.raises(PermissionError, match=f"{s3_url}/_log: no credentials"):
        SplitDataLoader(s3_url, storage_options=so)
    with pytest.raises(PermissionError, match="pass them in storage_options"):
        write_split_data(s3_url, [b"b"], storage_options=so)


def test_part_deleted_after_footer_cached(
    s3_url: str, s3_storage_options: dict[str, Any], s3_fs: Any
) -> None:
    records = make_records(40)
    write_split_data(s3_url, records, splits=2, storage_options=s3_storage_options)
    loader = SplitDataLoader(s3_url, storage_options=s3_storage_options)
    assert loader[0] == records[0]  # both footers cached
    assert loader[1] == records[1]
    gone = parts_of(loader)[1].path
    s3_fs.rm_file(key(s3_url, gone))
    missing = f"{s3_url}/{gone}: listed in the manifest but missing"
    with pytest.raises(CorruptDatasetError, match=missing):
        loader[3]
    with pytest.raises(CorruptDatasetError, match=missing):
        loader[[0, 2, 3]]
    with pytest.raises(CorruptDatasetError, match=missing):
        list(loader.iterate_binwise())
    with pytest.raises(CorruptDatasetError, match=f"(?s)1 problem.*{gone}: missing"):
        loader.verify()
    assert loader[2] == records[2]  # the other part still reads


def test_part_replaced_by_shorter_object(
    s3_url: str, s3_storage_options: dict[str, Any], s3_fs: Any
) -> None:
    records = [bytes([i]) * 1000 for i in range(40)]
    write_split_data(s3_url, records, splits=2, storage_options=s3_storage_options)
    loader = SplitDataLoader(s3_url, storage_options=s3_storage_options)
    assert loader[0] == records[0]  # footer of part 0 cached
    p0, p1 = (p.path for p in parts_of(loader))
    s3_fs.pipe_file(key(s3_url, p0), s3_fs.cat_file(key(s3_url, p0))[:5000])
    s3_fs.pipe_file(key(s3_url, p1), b"tiny")
    shorter = "shorter than the manifest says"
    with pytest.raises(CorruptDatasetError, match=f"{s3_url}/{p0}: .*{shorter}"):
        loader[38]  # past the new end
    with pytest.raises(CorruptDatasetError, match=f"{s3_url}/{p1}: .*{shorter}"):
        loader[1]  # its footer is fetched from an object that no longer has one
    fresh = SplitDataLoader(s3_url, storage_options=s3_storage_options)
    with pytest.raises(CorruptDatasetError, match=f"{s3_url}/{p0}: .*{shorter}"):
        list(fresh.iterate_binwise())
    with pytest.raises(CorruptDatasetError, match=f"{s3_url}/{p1}: .*{shorter}"):
        fresh[[1, 3]]
    with pytest.raises(CorruptDatasetError, match="2 problem") as err:
        fresh.verify()
    assert f"{p0}: 5000 bytes" in str(err.value)
    assert f"{p1}: 4 bytes" in str(err.value)


def test_storage_urls_and_pathlike_stay_on_the_local_fast_path(tmp_path: Path) -> None:
    for url in (tmp_path / "a", f"file://{tmp_path}/b", f"simplecache::file://{tmp_path}/c"):
        write_split_data(url, [b"x", b"yz"], splits=2)
        loader = SplitDataLoader(url)
        assert loader._store.is_local
        assert loader[1] == b"yz"
        assert all(p.data is not None for p in loader._reader.open_parts())  # mmapped

"""Fuzz targets for the parsers of untrusted bytes: manifest, part footers, legacy index,
version log entry and checkpoint.

Each target feeds bytes to one parser and accepts only splitdask's own errors; any
other exception is a bug (atheris reports it and exits non-zero). Run by
tests/test_fuzz.py as a short smoke run; by hand for longer::

    python tests/fuzz_parsers.py -max_total_time=600 -rss_limit_mb=1024 [CORPUS_DIR]
"""

from __future__ import annotations

import sys
import uuid

import atheris

with atheris.instrument_imports(include=["splitdask"]):
    from splitdask._dataset import _legacy
    from splitdask._format import (
        DATA_START,
        Manifest,
        decode_footer,
        decode_footer_v2,
        footer_size,
    )
    from splitdask._format._checkpoint import decode_checkpoint
    from splitdask._format._log import Entry, apply
    from splitdask._store import open_store
    from splitdask.errors import SplitDaskError

UID = "0123456789abcdef"


def manifest(body: bytes) -> None:
    m = Manifest.from_json(body, "m")
    # What parsed is consistent: every record has exactly one place.
    assert sum(m.bin_counts()) == m.num_records


def footer(body: bytes, version: int) -> None:
    count = int.from_bytes(body[:3], "little")
    part = body[3:]
    if version == 1:
        offsets = decode_footer(part, len(part), count, "p")
    else:
        offsets, sums = decode_footer_v2(part, len(part), count, UID, "p")
        assert len(sums) == count
    assert len(offsets) == count + 1
    assert int(offsets[0]) == DATA_START
    assert int(offsets[-1]) == len(part) - footer_size(count, version)


def entry(body: bytes) -> None:
    """A log entry of version 1, replayed on nothing (as the first of a log)."""
    e = Entry.from_json(body, "e", 1)
    m = apply(None, e, "e")
    m.validate("e")
    assert sum(m.bin_counts()) == m.num_records == e.num_records


def checkpoint(body: bytes) -> None:
    m = decode_checkpoint(body, "c", 1)
    assert sum(m.bin_counts()) == m.num_records


def legacy(body: bytes) -> None:
    store = open_store(f"memory://fuzz-{uuid.uuid4().hex}")
    cut = int.from_bytes(body[:2], "little") % (len(body) + 1)
    store.fs.pipe_file(store.full(_legacy.INDEX_NAME), body[2:][:cut])
    store.fs.pipe_file(store.full(_legacy.bin_name(0)), body[2:][cut:])
    try:
        order, parts = _legacy.load(store)
        assert len(order.bins) == sum(p.count for p in parts)
        for p in parts:
            assert int(p.ends.max(initial=0)) <= p.size
    finally:
        store.fs.rm(store.root, recursive=True)


def one_input(data: bytes) -> None:
    if not data:
        return
    kind, body = data[0] % 6, data[1:]
    try:
        if kind == 0:
            manifest(body)
        elif kind in (1, 2):
            footer(body, kind)
        elif kind == 3:
            legacy(body)
        elif kind == 4:
            entry(body)
        else:
            checkpoint(body)
    except SplitDaskError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

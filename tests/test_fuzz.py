"""The parsers of untrusted bytes raise only splitdask's errors, within bounded memory.

Property tests (hypothesis) mutate valid manifests, footers and legacy indexes; a
coverage-guided atheris smoke run (tests/fuzz_parsers.py) explores beyond them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splitdask import write_split_data
from splitdask._format import Manifest, encode_footer, encode_footer_v2, record_sum
from splitdask._format._checkpoint import encode_checkpoint
from splitdask._format._jsonbound import json_depth
from splitdask._format._log import diff, entry_name

sys.path.insert(0, str(Path(__file__).parent))
import fuzz_parsers
from _manifests import manifest_doc

FUZZ = Path(__file__).parent / "fuzz_parsers.py"
MANIFEST = json.dumps(
    {
        "format": "splitdask",
        "version": 2,
        "generation": 1,
        "uid": "ab",
        "num_records": 3,
        "bins": [
            [
                {
                    "path": "bins/00000-0123456789abcdef.bin",
                    "count": 2,
                    "size": 154,
                    "checksum": "xxh3_64:0123456789abcdef",
                    "version": 2,
                }
            ],
            [
                {
                    "path": "bins/00001-aaaaaaaa.bin",
                    "count": 1,
                    "size": 49,
                    "checksum": "xxh3_64:0123456789abcdef",
                }
            ],
        ],
        "order": [{"start": 0, "count": 3, "bins": [0, 1], "first": [0, 0]}],
        "metadata": {"k": [1, {"x": "y\\"}]},
    }
).encode()
RECS = [b"ab", b"cde"]
OFFSETS = [8, 10, 13]
PART_V1 = b"SPLTDASK" + b"".join(RECS) + encode_footer(OFFSETS)
PART_V2 = (
    b"SPLTDASK"
    + b"".join(RECS)
    + encode_footer_v2(OFFSETS, [record_sum(r) for r in RECS], fuzz_parsers.UID)
)
# The same state as a log's first version (a commit's uid is 8 to 64 hex digits).
_SEED_MANIFEST = Manifest.from_json(MANIFEST.replace(b'"uid": "ab"', b'"uid": "00ab00ab"'), "seed")
ENTRY = diff(None, _SEED_MANIFEST, op="create", reset=True, when=1.0).to_json()
CHECKPOINT = encode_checkpoint(_SEED_MANIFEST, {"time": 1.0, "op": "create", "tag": None})
SEEDS = [
    b"\0" + MANIFEST,
    b"\1" + (2).to_bytes(3, "little") + PART_V1,
    b"\2" + (2).to_bytes(3, "little") + PART_V2,
    b"\3" + (12).to_bytes(2, "little") + np.array([0, 0, 2], "<u4").tobytes() + b"\2\0\0\0ab",
    b"\4" + ENTRY,
    b"\5" + CHECKPOINT,
]


def _mutated(seed: bytes) -> st.SearchStrategy[bytes]:
    """``seed`` with a few bytes overwritten, inserted or cut."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        data = bytearray(seed)
        for _ in range(draw(st.integers(1, 6))):
            pos = draw(st.integers(0, len(data)))
            op = draw(st.sampled_from(["set", "insert", "cut"]))
            chunk = draw(st.binary(min_size=1, max_size=8))
            if op == "set":
                data[pos : pos + len(chunk)] = chunk
            elif op == "insert":
                data[pos:pos] = chunk
            else:
                del data[pos : pos + len(chunk)]
        return bytes(data)

    return build()


def _peak(data: bytes) -> int:
    tracemalloc.start()
    try:
        fuzz_parsers.one_input(data)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _run_bounded(data: bytes) -> None:
    # A parser builds at most a small multiple of its input (JSON objects of a few
    # bytes each become Python objects of ~100 bytes), never what the bytes claim.
    bound = 200 * len(data) + (4 << 20)
    peak = _peak(data)
    if peak >= bound:
        # tracemalloc counts every thread of the process (a session's S3 server, a
        # cluster's): a parser's own allocation comes back, another thread's need not.
        peak = min(peak, _peak(data))
    assert peak < bound, f"{peak} bytes for {len(data)} of input"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS).flatmap(_mutated))
def test_mutated_inputs_raise_only_splitdask_errors(data: bytes) -> None:
    _run_bounded(data)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 5), st.binary(max_size=400))
def test_random_inputs_raise_only_splitdask_errors(kind: int, body: bytes) -> None:
    _run_bounded(bytes([kind]) + body)


def test_seeds_parse() -> None:
    # The seeds are valid: mutations start from inputs that reach the deep checks.
    for seed in SEEDS:
        fuzz_parsers.one_input(seed)
    fuzz_parsers.manifest(MANIFEST)
    fuzz_parsers.footer(SEEDS[2][1:], 2)
    fuzz_parsers.entry(ENTRY)
    fuzz_parsers.checkpoint(CHECKPOINT)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab\n'),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text('[]{}"\\a'), inner),
    max_leaves=30,
)


def _depth(x: object) -> int:
    if isinstance(x, list | dict):
        items = x.values() if isinstance(x, dict) else x
        return 1 + max(map(_depth, items), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(_JSON)
def test_json_depth_is_exact_for_valid_json(doc: object) -> None:
    text = json.dumps(doc).encode()
    assert json_depth(text) == _depth(doc)


def test_json_depth_pairs_escapes_as_json_does() -> None:
    # Runs of backslashes before quotes and brackets, inside strings and keys: the
    # scan must tell an escaped quote from a closing one however long the run.
    for n in range(6):
        for tail in ('"', "[", "]", "{", '"[', '\\"]'):
            text = "\\" * n + tail
            doc = {text: [text, {"k": [[text]]}], "x": [[[[]]]]}
            assert json_depth(json.dumps(doc).encode()) == _depth(doc)


def test_atheris_smoke_run(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for k, seed in enumerate(SEEDS):
        (corpus / f"seed{k}").write_bytes(seed)
    # A real dataset's manifest and part as seeds too.
    write_split_data(tmp_path / "ds", [b"x" * k for k in range(9)], splits=2)
    real = json.dumps(manifest_doc(tmp_path / "ds")).encode()  # the manifest parser's input
    (corpus / "real").write_bytes(b"\0" + real)
    (corpus / "real-entry").write_bytes(b"\4" + (tmp_path / "ds" / entry_name(1)).read_bytes())
    proc = subprocess.run(
        [
            sys.executable,
            str(FUZZ),
            "-runs=4000",
            "-max_total_time=25",
            "-rss_limit_mb=1024",
            "-timeout=10",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Done" in proc.stderr or "DONE" in proc.stderr, proc.stderr[-2000:]

"""Typed records (issue 19): codecs on write, recorded in the dataset, decoded on every read path.

A generic round-trip suite runs every codec through every read path, locally and on
S3 (moto, over HTTP); the column-wise msgpack batch decoder is checked against
decoding record by record; errors name what to do; loaders pickled into a spawned
process decode there.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import pickle
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import _codec_helpers as h
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import splitdask
from splitdask import RecordBatch, SplitDataLoader, SplitWriter, register_codec, write_split_data
from splitdask._format import Manifest, PartInfo
from splitdask._format._checkpoint import decode_checkpoint, encode_checkpoint
from splitdask._format._codec import columns, get_codec, known_codecs, split_records
from splitdask._format._log import LOG_DIR, Entry, apply, diff
from splitdask._format._msgpack import fast_columns
from splitdask._write._changes import AddRecords

# -- values of each codec -------------------------------------------------------------


def _msgpack_values(n: int) -> list[Any]:
    rng = np.random.default_rng(0)
    return [
        {
            "tokens": rng.integers(0, 50_000, 16, dtype=np.int32),
            "label": int(rng.integers(-300, 70_000)),
            "score": float(i) / 7,
            "ok": i % 3 == 0,
            "text": "é" * (i % 5),
            "raw": bytes([i % 256]) * 3,
            "none": None,
            "scalar": np.float32(i),
            "image": rng.random((2, 3)).astype(">f8"),
        }
        for i in range(n)
    ]


VALUES: dict[str, Callable[[int], list[Any]]] = {
    "bytes": lambda n: [f"record {i}".encode() * (i % 4) for i in range(n)],
    "json": lambda n: [
        {"id": i, "name": f"n{i}", "tags": ["a"] * (i % 3), "p": i / 4} for i in range(n)
    ],
    "msgpack": _msgpack_values,
    "npy": lambda n: [np.arange(6, dtype=np.int16).reshape(2, 3) + i for i in range(n)],
    "pickle": lambda n: [{"set": {i, i + 1}, "t": (i, "x")} for i in range(n)],
    h.CODEC: lambda n: [(float(i), -1.5 * i, 2.0) for i in range(n)],
}
READ_OPTIONS: dict[str, dict[str, Any]] = {"pickle": {"allow_pickle": True}}


@pytest.fixture(autouse=True)
def _user_codec() -> None:
    register_codec(h.CODEC, h.encode_point, h.decode_point)


def same(a: Any, b: Any) -> bool:
    """Equal values, arrays equal in dtype, shape and elements, types alike."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            type(a) is type(b)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
        )
    if isinstance(a, dict):
        return type(b) is dict and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return type(a) is type(b) and bool(a == b)


def check_every_path(loader: SplitDataLoader, values: list[Any]) -> None:
    """Every read path of ``loader`` gives ``values`` (decoded)."""
    n = len(values)
    assert len(loader) == n
    assert all(same(loader[i], values[i]) for i in range(n))
    assert same(loader[-1], values[-1])
    assert same(loader[2:9:3], values[2:9:3])
    assert same(loader[[5, 0, 5]], [values[5], values[0], values[5]])
    assert same(list(loader), values)
    # Bin-wise passes hold each record once: matched to write order by loader[i].
    binwise = list(loader.iterate_binwise())
    by_bin = [r for b in range(loader.num_bins) for r in loader.read_bin(b)]
    assert same(binwise, by_bin)
    key = pickle.dumps
    assert sorted(map(key, binwise)) == sorted(map(key, values))
    shuffled = list(loader.iterate_binwise(shuffle=True, seed=3, copy=False))
    shuffled = [bytes(r) if isinstance(r, memoryview) else r for r in shuffled]
    assert sorted(map(key, shuffled)) == sorted(map(key, values))
    # A batch is the columns of what loader[i] gives: one reference for every codec.
    idx = [3, 1, 4, 1, 5, 9, 2, 6]
    batch = loader.read_batch(idx)
    if loader.codec == "bytes":
        assert isinstance(batch, RecordBatch)
        assert batch.to_pylist() == [values[i] for i in idx]
    else:
        assert same(batch, columns([values[i] for i in idx]))
    got = list(loader.iterate_batches(4, shuffle=True, seed=1))
    order = list(loader.iterate_binwise(shuffle=True, seed=1))
    want = [columns(order[k : k + 4]) for k in range(0, n, 4)]
    if loader.codec == "bytes":
        got = [b.to_pylist() for b in got]
        want = [order[k : k + 4] for k in range(0, n, 4)]
    assert same(got, want)


@pytest.mark.parametrize("where", ["local", "s3"])
@pytest.mark.parametrize("codec", list(VALUES))
def test_every_codec_round_trips_on_every_read_path(
    codec: str, where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if where == "s3":
        url, so = request.getfixturevalue("s3_url"), request.getfixturevalue("s3_storage_options")
    else:
        url, so = str(tmp_path / "ds"), None
    values = VALUES[codec](40)
    info = write_split_data(url, values, splits=3, codec=codec, storage_options=so)
    assert info.records_written == 40
    loader = SplitDataLoader(url, storage_options=so, **READ_OPTIONS.get(codec, {}))
    assert loader.codec == codec == loader.describe().codec
    check_every_path(loader, values)
    # The stored bytes are the codec's encoding of each value.
    raw = SplitDataLoader(url, storage_options=so, decode=False)
    enc = get_codec(codec).encode
    assert [raw[i] for i in range(5)] == [bytes(enc(v)) for v in values[:5]]
    assert isinstance(raw.read_batch([0, 1]), RecordBatch)
    assert bytes(loader.view(0)) == raw[0]  # view(i) is always the stored bytes


def test_codec_is_recorded_once_and_survives_checkpoints(tmp_path: Path) -> None:
    url = tmp_path / "ds"
    values = VALUES["msgpack"](20)
    for k in range(17):  # version 16 is checkpointed
        write_split_data(url, values[k : k + 1], codec="msgpack" if k == 0 else None)
    entries = sorted((url / LOG_DIR).glob("*.json"))
    docs = [json.loads(p.read_bytes()) for p in entries]
    assert docs[0]["codec"] == "msgpack"
    assert all("codec" not in d for d in docs[1:])  # absent: unchanged
    assert list((url / LOG_DIR).glob("*.ckpt"))
    loader = SplitDataLoader(url)
    assert loader.codec == "msgpack"
    assert len(loader) == 17
    assert same(list(loader), values[:17])
    assert "codec msgpack" in loader.describe().summary()
    # A bytes dataset names no codec anywhere: as every dataset before codecs.
    write_split_data(tmp_path / "plain", [b"a", b"b"])
    doc = json.loads(next((tmp_path / "plain" / LOG_DIR).glob("*.json")).read_bytes())
    assert "codec" not in doc
    plain = SplitDataLoader(tmp_path / "plain")
    assert plain.codec == "bytes"
    assert plain[1] == b"b"
    assert "codec" not in plain.describe().summary()


def _manifest(codec: str) -> Manifest:
    part = PartInfo("bins/00000-0123456789abcdef.bin", 1, 100, "xxh3_64:" + "0" * 16)
    from splitdask._format import Segment

    return Manifest(
        bins=((part,),),
        order=(Segment(0, 1, (0,), (0,)),),
        generation=1,
        uid="aaaaaaaaaaaaaaaa",
        codec=codec,
    )


def test_the_format_carries_the_codec() -> None:
    m = _manifest("msgpack")
    assert Manifest.from_json(m.to_json(), "m").codec == "msgpack"
    assert "codec" not in json.loads(_manifest("bytes").to_json())
    ck = encode_checkpoint(
        m, {"time": 1.0, "op": "create", "tag": None, "written": [1, 1, 1], "parent": ""}
    )
    assert decode_checkpoint(ck, "ck", 1).codec == "msgpack"
    entry = diff(None, m, op="create", when=1.0)
    assert entry.codec == "msgpack"
    back = Entry.from_json(entry.to_json(), "e", 1)
    assert apply(None, back, "e").codec == "msgpack"
    # An entry without the key: unchanged after the version before, bytes after a reset.
    doc = json.loads(entry.to_json())
    del doc["codec"]
    assert apply(None, Entry.from_json(json.dumps(doc).encode(), "e", 1), "e").codec == "bytes"
    doc["codec"] = "Not A Name!"
    with pytest.raises(splitdask.CorruptDatasetError, match="codec name"):
        Entry.from_json(json.dumps(doc).encode(), "e", 1)


# -- writing: appends and errors --------------------------------------------------------


def test_appends_keep_the_codec_and_refuse_another(tmp_path: Path) -> None:
    url = tmp_path / "ds"
    write_split_data(url, [{"a": 1}], codec="json")
    write_split_data(url, [{"a": 2}])  # codec=None: the dataset's
    with SplitWriter(url) as w:
        assert w.codec.name == "json"
        w.write({"a": 3})
    with pytest.raises(ValueError, match=r"codec='json'.*codec='msgpack'"):
        write_split_data(url, [{"a": 4}], codec="msgpack")
    assert [r["a"] for r in SplitDataLoader(url)] == [1, 2, 3]
    # A commit re-based onto a dataset created meanwhile in another codec is refused too.
    change = AddRecords("a", 1, {}, [(1, (0,))], {}, "msgpack")
    with pytest.raises(ValueError, match=r"codec='json'.*codec='msgpack'"):
        change.apply(_manifest("json"), 0.0, "here")
    # Replacing the dataset may change its codec.
    write_split_data(url, [np.ones(3)], mode="w", codec="npy")
    assert SplitDataLoader(url).codec == "npy"


def test_a_dict_with_the_default_codec_says_which_codec_to_use(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"record 1 is of type dict.*codec='msgpack'"):
        write_split_data(tmp_path / "ds", [b"ok", {"text": "hi"}])
    assert not (tmp_path / "ds" / LOG_DIR).exists() or not list(
        (tmp_path / "ds" / LOG_DIR).glob("*.json")
    )


@pytest.mark.parametrize(
    ("codec", "bad", "field"),
    [
        ("json", {"x": [1, 2, np.zeros(2)]}, r"\['x'\]\[2\] \(of type ndarray\)"),
        ("json", {"x": {"y": float("nan")}}, r"\['x'\]\['y'\] \(of type float\)"),
        ("msgpack", {"meta": {"when": object()}}, r"\['meta'\]\['when'\] \(of type object\)"),
        ("msgpack", {"a": np.array([object()])}, r"\['a'\] \(of type ndarray\)"),
        ("npy", np.array([{}], dtype=object), None),
    ],
)
def test_a_value_the_codec_cannot_encode_names_record_and_field(
    codec: str, bad: Any, field: str | None, tmp_path: Path
) -> None:
    good = VALUES[codec](3) if codec != "json" else [{"x": 1}] * 3
    where = f" at field {field}" if field else r" \(an array of dtype object"  # npy: no fields
    with pytest.raises(TypeError, match=rf"record 3: codec '{codec}' cannot encode it{where}"):
        write_split_data(tmp_path / "ds", [*good, bad], codec=codec)
    assert not list((tmp_path / "ds").glob(f"{LOG_DIR}/*.json"))  # nothing committed


def test_unknown_codec_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError,
        match=r"unknown codec 'protobuf': known codecs are 'bytes', 'json', 'msgpack', 'npy', "
        "'pickle'",
    ):
        write_split_data(tmp_path / "ds", [b"x"], codec="protobuf")


def test_register_codec_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="built-in"):
        register_codec("json", h.encode_point, h.decode_point)
    with pytest.raises(ValueError, match="codec name"):
        register_codec("Bad Name", h.encode_point, h.decode_point)
    with pytest.raises(TypeError, match="decode must be callable"):
        register_codec("fine", h.encode_point, None)  # type: ignore[arg-type]
    assert h.CODEC in known_codecs()


# -- reading: opening, options ----------------------------------------------------------


def test_an_unregistered_codec_or_pickle_fails_at_open_naming_the_fix(tmp_path: Path) -> None:
    register_codec("temporary", h.encode_point, h.decode_point)
    write_split_data(tmp_path / "user", [(1.0, 2.0, 3.0)], codec="temporary")
    from splitdask._format import _codec

    del _codec._user["temporary"]
    with pytest.raises(
        ValueError, match=r"codec 'temporary', which is not registered.*register_codec\('temporary'"
    ):
        SplitDataLoader(tmp_path / "user")
    assert SplitDataLoader(tmp_path / "user", decode=False)[0] == h.encode_point((1, 2, 3))
    write_split_data(tmp_path / "pk", [{"a": 1}], codec="pickle")
    with pytest.raises(ValueError, match="allow_pickle=True"):
        SplitDataLoader(tmp_path / "pk")
    assert SplitDataLoader(tmp_path / "pk", allow_pickle=True)[0] == {"a": 1}


def test_transform_applies_after_decoding_on_every_path(tmp_path: Path) -> None:
    values = VALUES["msgpack"](24)
    write_split_data(tmp_path / "ds", values, splits=2, codec="msgpack")
    loader = SplitDataLoader(tmp_path / "ds", transform=h.label_plus_one)
    check_every_path(loader, [h.label_plus_one(v) for v in values])
    clone = pickle.loads(pickle.dumps(loader))
    assert clone[3]["label"] == values[3]["label"] + 1
    with pytest.raises(TypeError, match="transform must be callable"):
        SplitDataLoader(tmp_path / "ds", transform=3)  # type: ignore[arg-type]
    # On stored bytes, with decode=False.
    raw = SplitDataLoader(tmp_path / "ds", decode=False, transform=len)
    assert raw[0] == len(get_codec("msgpack").encode(values[0]))


def test_npy_batches_are_one_array(tmp_path: Path) -> None:
    arrays = [np.full((4, 5), i, dtype=np.float32) for i in range(10)]
    write_split_data(tmp_path / "ds", arrays, splits=1, codec="npy")
    batch = SplitDataLoader(tmp_path / "ds").read_batch(range(10))
    assert batch.shape == (10, 4, 5)
    assert batch.dtype == np.float32
    assert (batch[:, 0, 0] == np.arange(10)).all()
    fortran = np.asfortranarray(np.arange(6).reshape(2, 3))
    write_split_data(tmp_path / "f", [fortran, fortran], codec="npy")
    got = SplitDataLoader(tmp_path / "f").read_batch([0, 1])
    assert same(got, np.stack([fortran, fortran]))


def test_decoded_arrays_are_writable(tmp_path: Path) -> None:
    write_split_data(tmp_path / "ds", VALUES["msgpack"](8), splits=1, codec="msgpack")
    loader = SplitDataLoader(tmp_path / "ds")
    assert loader[0]["tokens"].flags.writeable
    assert loader.read_batch(range(8))["tokens"].flags.writeable


@pytest.mark.timeout(120)
def test_a_pickled_loader_decodes_in_a_spawned_process(tmp_path: Path) -> None:
    """The child never registers the user codec: the pickled loader carries it, and
    the transform with it."""
    values = VALUES[h.CODEC](30)
    write_split_data(tmp_path / "pts", values, splits=3, codec=h.CODEC)
    write_split_data(tmp_path / "mp", VALUES["msgpack"](30), splits=3, codec="msgpack")
    pts = SplitDataLoader(tmp_path / "pts")
    mp = SplitDataLoader(tmp_path / "mp", transform=h.label_plus_one)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        got_pts, got_mp = pool.map(h.read_everything, [pts, mp])
    assert not got_pts["registered_here"]
    for loader, got in ((pts, got_pts), (mp, got_mp)):
        here = {
            "registered_here": True,
            "first": loader[0],
            "all": list(loader),
            "binwise": list(loader.iterate_binwise()),
            "batches": list(loader.iterate_batches(7)),
        }
        # Compared as they came back: through pickle (which makes arrays native-endian).
        here = pickle.loads(pickle.dumps(here))
        assert all(same(got[k], here[k]) for k in ("first", "all", "binwise", "batches"))
    assert got_mp["first"]["label"] == VALUES["msgpack"](1)[0]["label"] + 1


# -- msgpack batches, column-wise ------------------------------------------------------


def _batch(records: list[Any], plain: bool = False) -> tuple[Any, Any]:
    """A batch of ``records`` as the codec encodes them, or (``plain``) as msgpack alone
    does (small ints in fewer bytes: records of one schema differ in length)."""
    from splitdask._format._msgpack import _packb

    enc = [(_packb if plain else get_codec("msgpack").encode)(r) for r in records]
    data = np.frombuffer(b"".join(enc) or b"", np.uint8)
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in enc])]).astype(np.int64)
    return data, offsets


def _by_record(data: Any, offsets: Any) -> Any:
    return columns(get_codec("msgpack").decode_many(split_records(data, offsets)))


scalars = st.one_of(
    st.integers(-(1 << 63), (1 << 63) - 1),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    st.binary(max_size=3),
    # Lengths across msgpack's header sizes (fixstr, str8/bin8, str16/bin16).
    st.text(min_size=20, max_size=40),
    st.binary(min_size=250, max_size=300),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(scalars, st.integers(0, 300), st.floats(width=32)), min_size=1, max_size=30),
    st.sampled_from(["<i4", ">u2", "|b1", "<f8", "<U2"]),
    st.booleans(),
)
def test_msgpack_batches_decode_column_wise_as_record_by_record(
    rows: list[tuple[Any, int, float]], dtype: str, plain: bool
) -> None:
    records = [
        {"any": a, "small": s, "arr": np.full((2,), s).astype(dtype), "np": np.float32(f)}
        for a, s, f in rows
    ]
    if plain:  # a caption of its own length in every record (and no other differences)
        records = [{"caption": "é" * s, **r} for r, (_, s, _) in zip(records, rows, strict=True)]
    data, offsets = _batch(records, plain)
    want = _by_record(data, offsets)
    got = get_codec("msgpack").decode_batch(data, offsets)
    assert same(got, want)


def test_msgpack_fast_path_is_taken_and_falls_back_where_it_must() -> None:
    same_layout = [{"t": np.arange(4, dtype=np.int32) + i, "y": i, "s": i / 2} for i in range(50)]
    data, offsets = _batch(same_layout)
    cols = fast_columns(data, offsets)
    assert cols is not None
    assert cols["t"].shape == (50, 4)
    assert cols["y"].dtype == np.int64
    assert same(cols, _by_record(data, offsets))
    # The codec writes a dict's ints as int64: one layout, whatever the numbers.
    wide = [{"y": v} for v in [1, 200, -5, 70_000, 3, 200]]
    assert len(set(np.diff(_batch(wide)[1]).tolist())) == 1
    assert same(fast_columns(*_batch(wide)), {"y": np.array([1, 200, -5, 70_000, 3, 200])})
    # msgpack alone writes them in 1, 2 and 3 bytes: grouped by length, scattered back.
    assert len(set(np.diff(_batch(wide, plain=True)[1]).tolist())) == 3
    got = fast_columns(*_batch(wide, plain=True))
    assert same(got, {"y": np.array([1, 200, -5, 70_000, 3, 200])})
    # Strings and bytes of many lengths (and header sizes): walked field by field.
    captions = [
        {"img": np.full((2, 2), i, np.uint8), "text": "w" * (i * 7), "b": b"z" * (i * 40)}
        for i in range(12)
    ]
    data, offsets = _batch(captions)
    assert len(set(np.diff(offsets).tolist())) == 12
    cols = fast_columns(data, offsets)
    assert cols is not None
    assert cols["img"].shape == (12, 2, 2)
    assert cols["img"].flags.writeable
    assert same(cols, _by_record(data, offsets))
    # Nested values, differing keys, a field of differing types: one by one.
    for recs in (
        [{"n": {"a": 1}}, {"n": {"a": 2}}],
        [{"a": 1}, {"b": 1}],
        [{"a": 1}, {"a": 1.5}],
        [{"a": 1}, {"a": True}],
        [{"a": "x"}, {"a": 17}],
        [{"a": "xy"}, {"b": "x"}],
        [{"a": b"x"}, {"a": "xy"}],
        [[1, 2], [3, 4]],
    ):
        data, offsets = _batch(recs)
        assert fast_columns(data, offsets) is None
        assert same(get_codec("msgpack").decode_batch(data, offsets), _by_record(data, offsets))
    assert same(_by_record(*_batch([{"a": 1}, {"a": 1.5}])), {"a": [1, 1.5]})
    assert same(_by_record(*_batch([{"a": 1}, {"b": 1}])), [{"a": 1}, {"b": 1}])


def test_msgpack_refuses_malformed_arrays() -> None:
    import msgpack

    bad = msgpack.packb({"a": msgpack.ExtType(1, b"\x02|O\x00")})
    with pytest.raises(ValueError, match="malformed array"):
        get_codec("msgpack").decode(bad)
    short = msgpack.packb(
        {"a": msgpack.ExtType(1, b"\x03<i4\x01" + (4).to_bytes(8, "little") + b"\0" * 4)}
    )
    with pytest.raises(ValueError, match="size disagrees"):
        get_codec("msgpack").decode(short)

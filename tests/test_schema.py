"""``_read._schema``: the fields of a dataset's first decoded records (for the notebook
view) and one record as a JSON line (for the CLI), on records read back from disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from splitdask import SplitDataLoader, write_split_data
from splitdask._read._schema import FieldSummary, summarize_fields, to_json


def test_fields_of_decoded_msgpack_records(tmp_path: Path) -> None:
    recs = [
        {
            "tokens": np.arange(8 + (i % 2), dtype=np.int32),
            "image": np.zeros((2, 3), np.uint8),
            "label": i,
            "score": None if i == 1 else 0.5,
            "text": "x",
        }
        for i in range(4)
    ]
    recs[3]["extra"] = b"\x00"
    write_split_data(tmp_path / "ds", recs, 2, codec="msgpack")
    loader = SplitDataLoader(tmp_path / "ds")
    fields = summarize_fields(loader[:4])
    assert [f.name for f in fields] == ["tokens", "image", "label", "score", "text", "extra"]
    by = {f.name: f for f in fields}
    assert by["tokens"] == FieldSummary("tokens", "ndarray", "int32", (None,), 4, 4)
    assert by["image"].describe() == "uint8 (2, 3)"
    assert by["tokens"].describe() == "int32 (?,)"
    assert by["label"].describe() == "int"
    assert by["score"].describe() == "float | None"
    assert by["extra"].describe() == "bytes (in 1 of 4)"


def test_fields_of_other_records() -> None:
    assert summarize_fields([]) == []
    (one,) = summarize_fields([np.zeros((3, 2), np.float32), np.ones((3, 2), np.float32)])
    assert (one.name, one.dtype, one.shape) == ("", "float32", (3, 2))
    (mixed,) = summarize_fields([np.zeros(2), np.zeros((2, 2))])
    assert (mixed.kind, mixed.shape, mixed.describe()) == ("ndarray", None, "float64 ?")
    assert summarize_fields([b"a", "b"])[0].kind == "bytes | str"
    assert summarize_fields([np.int16(3)])[0].describe() == "int16"


def test_to_json_lines() -> None:
    rec = {
        "a": np.arange(4, dtype=np.int8).reshape(2, 2),
        "b": b"\xff",
        "c": (1, np.float32(0.5)),
        "d": {"e": [None, True]},
        "f": {1, 2},
        "g": "ü",
        "h": np.array([b"x", b"yz"]),
    }
    line = to_json(rec)
    assert line.isascii()
    assert "\n" not in line
    assert json.loads(line) == {
        "a": [[0, 1], [2, 3]],
        "b": {"$base64": "/w=="},
        "c": [1, 0.5],
        "d": {"e": [None, True]},
        "f": [1, 2],
        "g": "ü",
        "h": [{"$base64": "eA=="}, {"$base64": "eXo="}],
    }
    assert json.loads(to_json(object()))[:8] == "<object "

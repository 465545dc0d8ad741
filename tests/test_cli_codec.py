"""The command line and typed records, through subprocesses: ``head``/``cat``/``sample``
print decoded records as JSON lines, and ``import`` keeps structure (WebDataset
samples as dicts, files with their names and class labels, JSON Lines as values)."""

from __future__ import annotations

import base64
import io
import json
import tarfile
from pathlib import Path

import numpy as np
from _cli_helpers import ok, run

from splitdask import SplitDataLoader, write_split_data


def _tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _npy(arr: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, arr, allow_pickle=False)
    return out.getvalue()


def test_head_cat_sample_print_decoded_json_lines(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    recs = [
        {"ids": np.arange(i, i + 3, dtype=np.int32), "y": i, "b": bytes([i, 255]), "t": "é"}
        for i in range(20)
    ]
    write_split_data(ds, recs, 3, codec="msgpack")
    lines = ok("head", str(ds), "-n", "2").decode().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first == {"ids": [0, 1, 2], "y": 0, "b": {"$base64": "AP8="}, "t": "é"}
    assert base64.b64decode(json.loads(lines[1])["b"]["$base64"]) == bytes([1, 255])
    assert lines[0].isascii()
    got = [json.loads(x)["y"] for x in ok("cat", str(ds), "5", "-1").decode().splitlines()]
    assert got == [5, 19]
    sampled = ok("sample", str(ds), "-n", "4", "--seed", "1").decode().splitlines()
    assert len({json.loads(x)["y"] for x in sampled}) == 4
    # --hex shows the stored bytes, not decoded.
    hexed = ok("cat", str(ds), "0", "--hex").decode().split()
    assert bytes.fromhex(hexed[0]) == SplitDataLoader(ds, decode=False)[0]
    # npy records are lists; a bytes dataset prints as before.
    write_split_data(tmp_path / "npy", [np.eye(2) * i for i in range(3)], 1, codec="npy")
    assert json.loads(ok("cat", str(tmp_path / "npy"), "2")) == [[2.0, 0.0], [0.0, 2.0]]
    write_split_data(tmp_path / "raw", [b"ab", b"cd"], 1)
    assert ok("head", str(tmp_path / "raw")) == b"abcd"


def test_import_webdataset_samples_as_dicts(tmp_path: Path) -> None:
    members = []
    for k in range(12):
        key = f"shard/s{k:03d}"
        members += [
            (f"{key}.jpg", bytes([k]) * 135),
            (f"{key}.txt", f"caption {k}".encode()),
            (f"{key}.json", json.dumps({"k": k, "tags": ["a"]}).encode()),
            (f"{key}.cls", b"%d\n" % (k % 3)),
            (f"{key}.emb.npy", _npy(np.full(4, k, dtype=np.float32))),
        ]
    _tar(tmp_path / "train-000.tar", members[:30])
    _tar(tmp_path / "train-001.tar", members[30:])
    ds = tmp_path / "ds"
    out = ok("import", str(tmp_path / "train-*.tar"), str(ds), "--bins", "3", "--group-by-key")
    assert b"imported 12 records" in out
    loader = SplitDataLoader(ds)
    assert loader.codec == "msgpack"
    for k, rec in enumerate(loader):
        assert rec["__key__"] == f"shard/s{k:03d}"
        assert rec["jpg"] == bytes([k]) * 135
        assert rec["txt"] == f"caption {k}"
        assert rec["json"] == {"k": k, "tags": ["a"]}
        assert rec["cls"] == k % 3
        assert rec["emb.npy"].dtype == np.float32
        assert rec["emb.npy"].tolist() == [k] * 4
    # A sample of 135 B of image and ~100 B of text stays small (not a 10 KiB tar).
    assert loader.nbytes / len(loader) < 400
    batch = loader.read_batch(range(12))
    assert batch["cls"].tolist() == [k % 3 for k in range(12)]
    assert batch["emb.npy"].shape == (12, 4)

    # Appending more samples uses the dataset's codec without being told.
    _tar(tmp_path / "more.tar", [("x/s999.txt", b"late")])
    ok("import", str(tmp_path / "more.tar"), str(ds), "--append", "--group-by-key")
    assert SplitDataLoader(ds)[-1] == {"__key__": "x/s999", "txt": "late"}


def test_import_files_with_names_and_class_labels(tmp_path: Path) -> None:
    src = tmp_path / "imgs"
    files = {f"{c}/{i}.png": f"{c}{i}".encode() for c in ("dog", "cat") for i in range(3)}
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    ok("import", str(src), str(tmp_path / "named"), "--bins", "2", "--keep-names")
    named = list(SplitDataLoader(tmp_path / "named"))
    assert named == [{"name": n, "data": files[n]} for n in sorted(files)]

    ok("import", str(src), str(tmp_path / "labelled"), "--bins", "2", "--labels")
    loader = SplitDataLoader(tmp_path / "labelled")
    assert loader.metadata["classes"] == ["cat", "dog"]
    assert [(r["class"], r["label"]) for r in loader] == [("cat", 0)] * 3 + [("dog", 1)] * 3
    assert loader.read_batch(range(6))["label"].tolist() == [0, 0, 0, 1, 1, 1]

    # Labels of other classes are refused on append; files not in class folders too.
    (tmp_path / "other" / "bird").mkdir(parents=True)
    (tmp_path / "other" / "bird" / "0.png").write_bytes(b"b")
    out = run("import", str(tmp_path / "other"), str(tmp_path / "labelled"), "--append", "--labels")
    assert out.returncode == 1
    assert b"holds labels of classes ['cat', 'dog']" in out.stderr
    (src / "stray.png").write_bytes(b"s")
    out = run("import", str(src), str(tmp_path / "bad"), "--bins", "1", "--labels")
    assert out.returncode == 1
    assert b"stray.png: class folders need every file at ROOT/<class>/<file>" in out.stderr
    out = run(
        "import", str(src), str(tmp_path / "b2"), "--bins", "1", "--labels", "--codec", "bytes"
    )
    assert out.returncode == 1
    assert b"needs a codec that stores dicts" in out.stderr


def test_import_json_lines_and_datasets_with_a_codec(tmp_path: Path) -> None:
    src = tmp_path / "rows.jsonl"
    src.write_text("\n".join(json.dumps({"id": i, "x": i / 2}) for i in range(10)) + "\n\n")
    ok("import", str(src), str(tmp_path / "rows"), "--bins", "2", "--codec", "msgpack")
    rows = SplitDataLoader(tmp_path / "rows")
    assert list(rows) == [{"id": i, "x": i / 2} for i in range(10)]
    # A dataset copied keeps its codec (records decoded, then encoded again).
    ok("import", str(tmp_path / "rows"), str(tmp_path / "copy"), "--bins", "3")
    copy = SplitDataLoader(tmp_path / "copy")
    assert (copy.codec, list(copy)) == ("msgpack", list(rows))
    # A line that is not JSON names the line; an unknown codec lists the known ones.
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\nnot json\n')
    out = run(
        "import", str(tmp_path / "bad.jsonl"), str(tmp_path / "b"), "--bins", "1", "--codec", "json"
    )
    assert out.returncode == 1
    assert b"line 2 is not JSON" in out.stderr
    out = run("import", str(src), str(tmp_path / "c"), "--bins", "1", "--codec", "nope")
    assert out.returncode == 1
    assert b"unknown codec 'nope': known codecs are 'bytes', 'json', 'msgpack'" in out.stderr

"""Records that keep their structure for ``splitdask import`` (with a codec that
stores dicts, ``msgpack`` by default):

- a WebDataset sample (tar members sharing a key) -> ``{"__key__": key, ext: value,
  ...}``, each member's value decoded by its last extension (:func:`field_value`);
- a file of a folder -> ``{"name": path under the folder, "data": bytes}``, and with
  class folders (``root/<class>/<file>``) also ``"label"`` (the class's index in the
  sorted class names) and ``"class"``;
- a line of a text file -> its JSON value (a JSON Lines file).
"""

from __future__ import annotations

import io
import json
import posixpath
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["class_names", "field_value", "file_record", "json_lines", "sample_record"]

KEY = "__key__"


def field_value(ext: str, data: bytes) -> Any:
    """A WebDataset member's value, by its last extension: ``txt`` -> str, ``json``
    -> its JSON value, ``cls`` -> int (str if not an integer), ``npy`` -> the array
    (never unpickled); anything else (images, audio, ...) -> the bytes as stored.
    A ``txt``/``json``/``cls``/``npy`` member that does not parse stays bytes."""
    last = ext.rsplit(".", 1)[-1].lower()
    try:
        if last == "txt":
            return data.decode("utf-8")
        if last == "json":
            return json.loads(data)
        if last == "cls":
            text = data.decode("utf-8").strip()
            try:
                return int(text)
            except ValueError:
                return text
        if last == "npy":
            return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return data
    return data


def sample_record(key: str, members: Sequence[tuple[str, bytes]], where: str) -> dict[str, Any]:
    """One WebDataset sample: its members ``(extension, data)`` as fields.

    Raises
    ------
    ValueError
        If two members of the sample have the same extension (naming ``where``).
    """
    record: dict[str, Any] = {KEY: key}
    for ext, data in members:
        if ext in record:
            raise ValueError(f"{where}: sample {key!r} has two members with extension {ext!r}")
        record[ext] = field_value(ext, data)
    return record


def class_names(relpaths: Sequence[str], root: str) -> list[str]:
    """The sorted class folders of files ``root/<class>/<file>``.

    Raises
    ------
    ValueError
        If a file is not exactly one folder below ``root`` (naming it).
    """
    for rel in relpaths:
        if rel.count("/") != 1:
            raise ValueError(
                f"{posixpath.join(root, rel)}: class folders need every file at "
                "ROOT/<class>/<file>; drop --labels to import names without labels"
            )
    return sorted({rel.split("/", 1)[0] for rel in relpaths})


def file_record(rel: str, data: bytes, classes: dict[str, int] | None) -> dict[str, Any]:
    """One file as ``{"name", "data"}``, plus ``"label"``/``"class"`` with classes."""
    record: dict[str, Any] = {"name": rel, "data": data}
    if classes is not None:
        cls = rel.split("/", 1)[0]
        record["label"], record["class"] = classes[cls], cls
    return record


def json_lines(lines: Iterator[bytes], where: str) -> Iterator[Any]:
    """Each non-blank line's JSON value.

    Raises
    ------
    ValueError
        At a line that is not JSON, naming ``where`` and the line number.
    """
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except ValueError as exc:
            raise ValueError(
                f"{where}: line {n} is not JSON ({exc}); a codec other than bytes stores "
                "each line's JSON value: import with --codec bytes to keep lines as bytes"
            ) from None

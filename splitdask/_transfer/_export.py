"""``splitdask export``: a dataset's records out as files, lines or a tar archive.

Records leave in write order (global index order) and come back in that order through
``splitdask import``: files and tar members are named by zero-padded global index,
and lines are written one per record.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Iterable, Mapping
from typing import IO, Any, Literal

from fsspec.core import url_to_fs

__all__ = ["EXPORT_FORMATS", "export_records"]

ExportFormat = Literal["files", "lines", "tar"]
EXPORT_FORMATS = ("files", "lines", "tar")


def index_width(n: int) -> int:
    """Digits of the zero-padded names: sorted names are index order."""
    return max(8, len(str(max(n - 1, 0))))


def export_records(
    records: Iterable[bytes],
    num_records: int,
    dest: str,
    format: ExportFormat,
    storage_options: Mapping[str, Any] | None = None,
) -> int:
    """Write ``records`` to ``dest`` as ``format``; returns the number written.

    ``files``: ``dest`` is a folder (created) of files ``00000000.bin, ...``; ``lines``:
    ``dest`` is a file of one record per line (``.gz`` compresses); ``tar``: ``dest`` is a
    tar archive of members named like the files (``.tar.gz``/``.tgz`` compress).

    Raises
    ------
    ValueError
        For ``lines``, naming the first record that holds a newline (or ends in a
        carriage return), which a line cannot carry; the partial file is removed.
    """
    if format not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {', '.join(EXPORT_FORMATS)}, not {format!r}")
    fs, root = url_to_fs(dest, **dict(storage_options or {}))
    width = index_width(num_records)
    if format == "files":
        fs.makedirs(root, exist_ok=True)
        n = 0
        for n, rec in enumerate(records, 1):
            fs.pipe_file(f"{root.rstrip('/')}/{n - 1:0{width}d}.bin", bytes(rec))
        return n
    try:
        with fs.open(root, "wb") as raw, _compressed(raw, root) as f:
            return _write_lines(f, records) if format == "lines" else _write_tar(f, records, width)
    except BaseException:
        if fs.exists(root):
            fs.rm(root)
        raise


def _compressed(raw: IO[bytes], path: str) -> Any:
    if path.endswith((".gz", ".tgz")):
        return gzip.GzipFile(fileobj=raw, mode="wb", mtime=0)
    return raw


def _write_lines(f: IO[bytes], records: Iterable[bytes]) -> int:
    n = 0
    batch: list[bytes] = []  # written a few thousand lines at a time
    for n, rec in enumerate(records, 1):
        b = bytes(rec)
        if b"\n" in b or b.endswith(b"\r"):
            raise ValueError(
                f"record {n - 1} holds a line break, which --format lines cannot carry: "
                "export with --format files or --format tar instead"
            )
        batch.append(b)
        if len(batch) == 4096:
            f.write(b"\n".join(batch) + b"\n")
            batch.clear()
    if batch:
        f.write(b"\n".join(batch) + b"\n")
    return n


def _write_tar(f: IO[bytes], records: Iterable[bytes], width: int) -> int:
    n = 0
    with tarfile.open(fileobj=f, mode="w|", format=tarfile.GNU_FORMAT) as tar:
        for n, rec in enumerate(records, 1):
            info = tarfile.TarInfo(f"{n - 1:0{width}d}.bin")
            info.size, info.mode = len(rec), 0o644
            tar.addfile(info, io.BytesIO(rec))
    return n

"""``splitdask export``: a dataset's records out as files, lines or a tar archive.

Records leave in write order (global index order) and come back in that order through
``splitdask import``: files and tar members are named by zero-padded global index,
and lines are written one per record.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Mapping
from typing import IO, Any, Literal

from splitdask._store._resolve import filesystem

__all__ = ["EXPORT_FORMATS", "export_records", "infer_format", "tar_size"]

ExportFormat = Literal["files", "lines", "tar"]
EXPORT_FORMATS = ("files", "lines", "tar")


_LINE_SUFFIXES = (".jsonl", ".ndjson", ".json", ".txt", ".csv", ".tsv")


def infer_format(dest: str) -> ExportFormat | None:
    """The format a destination's name asks for, or ``None`` when it does not say:
    ``.tar``/``.tar.gz``/``.tgz`` is ``tar``; ``.jsonl``, ``.txt``, ... (also ``.gz``)
    ``lines``; a name ending in ``/`` a folder of ``files``."""
    name = dest.lower()
    if name.endswith("/"):
        return "files"
    if name.endswith((".tar", ".tar.gz", ".tgz")):
        return "tar"
    if name.endswith(".gz"):
        name = name[:-3]
    return "lines" if name.endswith(_LINE_SUFFIXES) else None


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
    fs, root = filesystem(dest, dict(storage_options or {}))
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


# The tar layout, written by hand (ustar): tarfile keeps every member's TarInfo until
# the archive closes (memory grows with the record count) and spends tens of
# microseconds building each header. Only the name, the size and the checksum differ
# between two headers here, so one template is patched per record.
TAR_BLOCK = 512
# tarfile's (and GNU tar's) default blocking factor: the archive ends with two zero
# blocks and is padded to a multiple of 20 blocks (at most 10 KiB, once).
TAR_RECORD = 20 * TAR_BLOCK
_FLUSH_BYTES = 1 << 20


def tar_size(record_sizes: Iterable[int]) -> int:
    """Bytes of the tar archive ``export`` writes for records of these sizes."""
    body = sum(TAR_BLOCK + -(-n // TAR_BLOCK) * TAR_BLOCK for n in record_sizes)
    end = body + 2 * TAR_BLOCK
    return -(-end // TAR_RECORD) * TAR_RECORD


def _tar_template() -> bytearray:
    h = bytearray(TAR_BLOCK)
    h[100:108] = b"0000644\0"  # mode
    h[108:116] = b"0000000\0"  # uid
    h[116:124] = b"0000000\0"  # gid
    h[136:148] = b"00000000000\0"  # mtime: 0, so the same dataset gives the same bytes
    h[156:157] = b"0"  # regular file
    h[257:265] = b"ustar\x0000"  # POSIX ustar magic and version
    return h


def _tar_size_field(n: int) -> bytes:
    if n < 8**11:
        return b"%011o\0" % n
    return b"\x80" + n.to_bytes(11, "big")  # GNU base-256, for members of 8 GiB or more


def _tar_header(template: bytes, base: int, name: bytes, size: int) -> bytes:
    """``template`` with ``name`` and ``size``; ``base`` is the template's checksum with
    an empty name and size (only the bytes that differ are summed per record)."""
    field = _tar_size_field(size)
    check = b"%06o\0 " % (base + sum(name) + sum(field))
    return name + template[len(name) : 124] + field + template[136:148] + check + template[156:]


def _write_tar(f: IO[bytes], records: Iterable[bytes], width: int) -> int:
    """Stream a ustar archive: memory is one buffer of about 1 MiB, whatever the count."""
    template = bytes(_tar_template())
    base = sum(template) + 8 * ord(" ")  # the checksum field counts as spaces
    buf = bytearray()
    written = 0
    n = 0
    pad = bytes(TAR_BLOCK)
    for n, rec in enumerate(records, 1):
        size = memoryview(rec).nbytes
        buf += _tar_header(template, base, b"%0*d.bin" % (width, n - 1), size)
        buf += rec
        buf += pad[: -size % TAR_BLOCK]
        if len(buf) >= _FLUSH_BYTES:
            f.write(buf)
            written += len(buf)
            buf.clear()
    buf += bytes(2 * TAR_BLOCK)
    buf += bytes(-(written + len(buf)) % TAR_RECORD)
    f.write(buf)
    return n

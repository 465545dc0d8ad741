"""Record sources for ``splitdask import``: what a folder, a file or an archive holds.

:func:`open_source` finds what ``src`` is and returns a :class:`Source`: its kind,
its record count when that is known up front (for a progress bar's ETA) and an
iterator of its records, read lazily and streaming, so an import of any size holds
one record at a time.

Kinds (``"auto"`` picks one in this order):

- ``"splitdask"``: a splitdask or splitdataloader 0.0.1 dataset, records in write order;
- ``"files"``: a folder, one record per file, files in sorted path order;
- ``"tar"``: tar (WebDataset) shards, ``.tar``/``.tar.gz``/``.tgz``, or a glob of them;
  one record per member, or with ``group_by_key`` one per sample;
- ``"lines"``: a text or JSON Lines file, one record per line without its line ending;
  ``.gz`` and ``.zst`` are decompressed.
"""

from __future__ import annotations

import gzip
import io
import os
import posixpath
import tarfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any, Literal

from fsspec.implementations.local import LocalFileSystem

from splitdask._dataset._legacy import INDEX_NAME
from splitdask._format import MANIFEST_NAME
from splitdask._store._resolve import filesystem

__all__ = ["SOURCE_KINDS", "Source", "open_source", "pack_sample"]

SourceKind = Literal["auto", "splitdask", "files", "tar", "lines"]
SOURCE_KINDS = ("auto", "splitdask", "files", "tar", "lines")
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


@dataclass(frozen=True)
class Source:
    """What :func:`open_source` found: ``kind``, ``total`` records (``None`` if unknown
    before reading) and ``records``, an iterator that opens the files as it goes.

    When the record count is unknown but the files' sizes are (lines, tar shards),
    ``nbytes`` is their total and ``position()`` how many of those bytes were read so
    far: a progress bar's ETA.
    """

    kind: str
    total: int | None
    records: Iterator[bytes]
    paths: tuple[str, ...] = ()
    nbytes: int | None = None
    position: Callable[[], int] | None = None


class _Position:
    """Bytes read so far of a sequence of files (their stored, maybe compressed, bytes)."""

    def __init__(self) -> None:
        self.done = 0
        self.current: Any = None

    def __call__(self) -> int:
        try:
            return self.done + (self.current.tell() if self.current is not None else 0)
        except (OSError, ValueError):  # closed, or not seekable (a FIFO)
            return self.done


def _sized(fs: Any, kind: str, paths: list[str], read: Any) -> Source:
    """A source of files whose record count is unknown: with their total size, when
    every one has a size (a FIFO has none), and the position in them."""
    try:
        sizes = [fs.size(p) for p in paths]
    except OSError:
        sizes = []
    nbytes = sum(sizes) if sizes and None not in sizes else None
    position = _Position()
    records = _chain(fs, paths, read, position)
    return Source(kind, None, records, tuple(paths), nbytes, position if nbytes else None)


def open_source(
    src: str,
    kind: SourceKind = "auto",
    *,
    group_by_key: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> Source:
    """The records of ``src`` (a local path or fsspec URL; a glob for tar shards).

    Raises
    ------
    FileNotFoundError
        If ``src`` names nothing (or a glob matches nothing).
    ValueError
        If ``kind`` is unknown, or ``group_by_key`` is asked of a source that is not tar.
    """
    if kind not in SOURCE_KINDS:
        raise ValueError(f"source kind must be one of {', '.join(SOURCE_KINDS)}, not {kind!r}")
    fs, root = filesystem(str(src), dict(storage_options or {}))
    if kind == "auto":
        kind = _detect(fs, root, str(src))  # type: ignore[assignment]
    if group_by_key and kind != "tar":
        raise ValueError(f"--group-by-key groups the members of tar shards; {src} is {kind}")
    if kind == "splitdask":
        from splitdask._read._loader import Loader

        loader = Loader(str(src), storage_options)
        return Source(kind, len(loader), iter(loader))
    if kind == "files":
        paths = sorted(p for p in fs.find(root) if not posixpath.basename(p).startswith("."))
        return Source(kind, len(paths), (fs.cat_file(p) for p in paths), tuple(paths))
    if kind == "tar":
        shards = sorted(fs.glob(root)) if _has_magic(root) else [root]
        if not shards:
            raise FileNotFoundError(f"no tar shards match {src}")
        read = _tar_samples if group_by_key else _tar_members
        return _sized(fs, kind, shards, read)
    if not fs.exists(root) or fs.isdir(root):  # (a FIFO is fine: not isfile, but readable)
        raise FileNotFoundError(f"{src}: no such file")
    if not isinstance(fs, LocalFileSystem) or os.path.isfile(root):
        return _sized(fs, kind, [root], _lines)
    return Source(kind, None, _chain(fs, [root], _lines), (root,))  # a FIFO: no size


def _has_magic(path: str) -> bool:
    return any(c in path for c in "*?[")


def _detect(fs: Any, root: str, src: str) -> str:
    name = root.rstrip("/")
    if _has_magic(name) or name.endswith(_TAR_SUFFIXES):
        return "tar"
    if fs.isdir(name):
        if fs.exists(f"{name}/{MANIFEST_NAME}") or fs.exists(f"{name}/{INDEX_NAME}"):
            return "splitdask"
        return "files"
    if not fs.exists(name):
        raise FileNotFoundError(f"{src}: no such file or directory")
    return "lines"


def _chain(
    fs: Any,
    paths: list[str],
    read: Callable[[IO[bytes]], Iterator[bytes]],
    position: _Position | None = None,
) -> Iterator[bytes]:
    for path in paths:
        # A local file (or FIFO) through the OS: lines arrive as soon as they are written.
        opener = open if isinstance(fs, LocalFileSystem) else fs.open
        with opener(path, "rb") as raw, _decompressed(raw, path) as f:
            if position is not None:
                position.current = raw
            yield from read(f)
            if position is not None:
                position.done += raw.tell()
                position.current = None


def _decompressed(raw: IO[bytes], path: str) -> Any:
    if path.endswith((".gz", ".tgz")):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if path.endswith(".zst"):
        import zstandard  # a dependency of splitdask

        return zstandard.ZstdDecompressor().stream_reader(raw, closefd=False)
    return raw


def _lines(f: Any) -> Iterator[bytes]:
    # Blocks split at b"\n", not readline: several times faster per record. read1
    # returns what is there, so a FIFO's lines arrive as they are written.
    read = getattr(f, "read1", None) or f.read
    rest = b""
    while chunk := read(1 << 20):
        buf = rest + chunk if rest else chunk
        lines = buf.split(b"\n")
        rest = lines.pop()
        if b"\r" in buf:
            yield from (line[:-1] if line.endswith(b"\r") else line for line in lines)
        else:
            yield from lines
    if rest:
        yield rest  # a last line without a line ending


def _tar_members(f: IO[bytes]) -> Iterator[bytes]:
    with tarfile.open(fileobj=f, mode="r|") as tar:
        for member in tar:
            if member.isfile():
                yield _read_member(tar, member)


def _tar_samples(f: IO[bytes]) -> Iterator[bytes]:
    """WebDataset samples: consecutive members sharing a key (the path up to the first
    dot of the file name) become one record, packed by :func:`pack_sample`."""
    key: str | None = None
    sample: list[tuple[str, bytes]] = []
    with tarfile.open(fileobj=f, mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            folder, name = posixpath.split(member.name)
            k = posixpath.join(folder, name.split(".", 1)[0])
            if k != key and sample:
                yield pack_sample(sample)
                sample = []
            key = k
            sample.append((member.name, _read_member(tar, member)))
    if sample:
        yield pack_sample(sample)


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    fobj = tar.extractfile(member)
    assert fobj is not None  # a regular file
    return fobj.read()


def pack_sample(members: list[tuple[str, bytes]]) -> bytes:
    """One WebDataset sample as one record: an uncompressed tar of its members, in order
    (``tarfile.open(fileobj=io.BytesIO(record))`` reads it back), with fixed times and
    owners so the same sample always packs to the same bytes."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()

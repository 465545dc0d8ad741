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

With ``structured`` (a codec that stores values, not bytes), records keep their
structure (``_samples``): a sample is a dict of its fields, a file with
``keep_names`` a dict of its name and data, a line its JSON value, and a dataset's
records are decoded; otherwise every record is bytes as before.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import posixpath
import tarfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, Literal

from fsspec.implementations.local import LocalFileSystem

from splitdask._dataset._legacy import INDEX_NAME
from splitdask._format import MANIFEST_NAME
from splitdask._store._resolve import filesystem
from splitdask._transfer._samples import class_names, file_record, json_lines, sample_record

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
    records: Iterator[Any]
    paths: tuple[str, ...] = ()
    nbytes: int | None = None
    position: Callable[[], int] | None = None
    codec: str = "bytes"
    """The codec the records suit: a dataset's own when it is decoded."""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """For the manifest: ``{"classes": [...]}`` with ``labels``."""


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
    structured: bool | None = None,
    keep_names: bool = False,
    labels: bool = False,
) -> Source:
    """The records of ``src`` (a local path or fsspec URL; a glob for tar shards).

    ``structured``: records are values for a codec (see the module's docstring);
    ``None``: bytes, except a dataset's records, decoded with its codec (which
    :attr:`Source.codec` names). ``keep_names`` and ``labels`` (files only) need it.

    Raises
    ------
    FileNotFoundError
        If ``src`` names nothing (or a glob matches nothing).
    ValueError
        If ``kind`` is unknown, ``group_by_key`` is asked of a source that is not tar,
        ``keep_names``/``labels`` of one that is not files or without ``structured``,
        or ``labels`` of files that are not all in class folders.
    """
    if kind not in SOURCE_KINDS:
        raise ValueError(f"source kind must be one of {', '.join(SOURCE_KINDS)}, not {kind!r}")
    fs, root = filesystem(str(src), dict(storage_options or {}))
    if kind == "auto":
        kind = _detect(fs, root, str(src))  # type: ignore[assignment]
    if group_by_key and kind != "tar":
        raise ValueError(f"--group-by-key groups the members of tar shards; {src} is {kind}")
    if (keep_names or labels) and (kind != "files" or not structured):
        flag = "--labels" if labels else "--keep-names"
        raise ValueError(
            f"{flag} makes a record of each file of a folder ({src} is {kind}) as a dict: "
            "it needs a codec that stores dicts (--codec msgpack, the default with it)"
        )
    if kind == "splitdask":
        from splitdask._read._loader import Loader

        loader = Loader(str(src), storage_options, decode=structured is not False)
        codec = loader.codec if structured is not False else "bytes"
        return Source(kind, len(loader), iter(loader), codec=codec)
    if kind == "files":
        paths = sorted(p for p in fs.find(root) if not posixpath.basename(p).startswith("."))
        if keep_names or labels:
            return _named_files(fs, root, paths, labels)
        return Source(kind, len(paths), (fs.cat_file(p) for p in paths), tuple(paths))
    if kind == "tar":
        shards = sorted(fs.glob(root)) if _has_magic(root) else [root]
        if not shards:
            raise FileNotFoundError(f"no tar shards match {src}")
        read: Callable[[IO[bytes]], Iterator[Any]] = _tar_members
        if group_by_key:
            read = _tar_dicts if structured else _tar_samples
        return _sized(fs, kind, shards, read)
    if not fs.exists(root) or fs.isdir(root):  # (a FIFO is fine: not isfile, but readable)
        raise FileNotFoundError(f"{src}: no such file")
    if not isinstance(fs, LocalFileSystem) or os.path.isfile(root):
        source = _sized(fs, kind, [root], _lines)
    else:  # a FIFO: no size
        source = Source(kind, None, _chain(fs, [root], _lines), (root,))
    if structured:
        source = dataclasses.replace(source, records=json_lines(source.records, str(src)))
    return source


def _named_files(fs: Any, root: str, paths: list[str], labels: bool) -> Source:
    """Files as ``{"name", "data"}`` dicts (and ``label``, ``class`` with ``labels``)."""
    base = root.rstrip("/") + "/"
    rels = [p[len(base) :] if p.startswith(base) else posixpath.basename(p) for p in paths]
    classes = class_names(rels, root) if labels else None
    index = None if classes is None else {c: i for i, c in enumerate(classes)}
    records = (file_record(r, fs.cat_file(p), index) for r, p in zip(rels, paths, strict=True))
    meta = {} if classes is None else {"classes": classes}
    return Source("files", len(paths), records, tuple(paths), metadata=meta)


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
    read: Callable[[IO[bytes]], Iterator[Any]],
    position: _Position | None = None,
) -> Iterator[Any]:
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
    """WebDataset samples, each packed as a small tar by :func:`pack_sample` (for a
    ``"bytes"`` dataset)."""
    for _, members in _tar_grouped(f):
        yield pack_sample(members)


def _tar_dicts(f: IO[bytes]) -> Iterator[dict[str, Any]]:
    """WebDataset samples as dicts (:func:`~splitdask._transfer._samples.sample_record`):
    one field per member, named by its extension (what follows the key)."""
    where = getattr(f, "name", "a tar shard")
    for key, members in _tar_grouped(f):
        fields = [(name[len(key) + 1 :], data) for name, data in members]
        yield sample_record(key, fields, str(where))


def _tar_grouped(f: IO[bytes]) -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """WebDataset samples: runs of consecutive members sharing a key (the path up to
    the first dot of the file name), as ``(key, [(member name, data), ...])``."""
    key: str | None = None
    sample: list[tuple[str, bytes]] = []
    with tarfile.open(fileobj=f, mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            folder, name = posixpath.split(member.name)
            k = posixpath.join(folder, name.split(".", 1)[0])
            if k != key and sample:
                assert key is not None
                yield key, sample
                sample = []
            key = k
            sample.append((member.name, _read_member(tar, member)))
    if sample:
        assert key is not None
        yield key, sample


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

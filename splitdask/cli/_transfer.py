"""Commands that move records in and out: ``import`` and ``export``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import click

from splitdask.cli._common import (
    cli,
    fail,
    progress_option,
    reporting_errors,
    show_progress,
    storage_option,
    storage_options,
    url_argument,
)


@cli.command("import")
@click.argument("src", metavar="SRC")
@url_argument()
@click.option(
    "--bins",
    type=click.IntRange(min=1),
    default=None,
    help="Bins of a new dataset (required for one); with --append, bins to deal over.",
)
@click.option("--append", is_flag=True, help="Add to the dataset at URL.")
@click.option("--overwrite", is_flag=True, help="Replace the dataset at URL (in one commit).")
@click.option(
    "--from",
    "kind",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "splitdask", "files", "tar", "lines"]),
    help="What SRC is (auto: a dataset, a folder, *.tar[.gz] shards, else lines).",
)
@click.option(
    "--group-by-key",
    is_flag=True,
    help="Tar/WebDataset: one record per sample (members sharing a key), a dict of "
    "its fields by extension (with --codec bytes: packed as a small tar), "
    "instead of one per member.",
)
@click.option(
    "--codec",
    default=None,
    metavar="NAME",
    help="How records are stored: bytes, json, msgpack, npy, pickle. Default: the "
    "dataset's when appending, msgpack with --group-by-key/--keep-names/--labels, a "
    "source dataset's own, else bytes. With a codec other than bytes, lines are "
    "parsed as JSON.",
)
@click.option(
    "--keep-names",
    is_flag=True,
    help="Folder: each file as {name, data} (name: its path under SRC).",
)
@click.option(
    "--labels",
    is_flag=True,
    help="Folder of class folders SRC/<class>/<file>: each file as {name, data, label, "
    "class}, label the index of its class in the sorted class names (kept in the "
    "metadata as 'classes').",
)
@click.option("--shuffle", is_flag=True, help="Deal records over the bins in a random rotation.")
@click.option("--seed", type=int, default=None, help="Seed for --shuffle.")
@click.option(
    "--compression",
    type=click.Choice(["none", "zstd"]),
    default="none",
    show_default=True,
    help="zstd: compress each record on its own (a dictionary trained per bin); "
    "loader[i] still decodes one record.",
)
@click.option(
    "--compression-level",
    type=int,
    default=None,
    help="zstd level, -131072 to 22 (default 3); needs --compression zstd.",
)
@storage_option
@click.option(
    "-s",
    "--source-option",
    multiple=True,
    metavar="KEY=VALUE",
    help="fsspec storage option for SRC (repeatable), as -o is for URL.",
)
@progress_option
def import_(
    src: str,
    url: str,
    bins: int | None,
    append: bool,
    overwrite: bool,
    kind: str,
    group_by_key: bool,
    codec: str | None,
    keep_names: bool,
    labels: bool,
    shuffle: bool,
    seed: int | None,
    compression: str,
    compression_level: int | None,
    storage_option: tuple[str, ...],
    source_option: tuple[str, ...],
    progress: bool | None,
) -> None:
    """Records from SRC into the dataset at URL, committed once at the end.

    SRC is a folder (one record per file, sorted paths), a text or JSON Lines file (one
    record per line, without its line ending; .gz and .zst are decompressed), tar or
    WebDataset shards (a file or a quoted glob), a splitdataloader 0.0.1 directory or
    another splitdask dataset (copied in write order; --bins rebins it). Nothing is
    visible at URL until the import finishes: an interrupted import (Ctrl-C, kill)
    leaves URL as it was (`splitdask gc URL` later removes what it wrote).

    \b
    Examples:
      splitdask import ./images data/train --bins 64
      splitdask import 'shards/train-*.tar' s3://bucket/train --bins 256 --group-by-key
      splitdask import ./imagenet/train data/train --bins 64 --labels
      splitdask import rows.jsonl data/rows --bins 8 --codec msgpack
      splitdask import more.jsonl.zst data/train --append
    """
    from splitdask import SplitWriter
    from splitdask._dataset._snapshot import read_manifest
    from splitdask._store import open_store
    from splitdask._transfer._sources import open_source
    from splitdask._write._changes import Mode

    if append and overwrite:
        raise click.UsageError("--append and --overwrite are mutually exclusive")
    options = storage_options(storage_option)
    with reporting_errors():
        manifest = read_manifest(open_store(url, options))
        exists = manifest is not None
        if exists and not (append or overwrite):
            fail(
                f"a dataset already exists at {url}: pass --append to add to it or "
                "--overwrite to replace it"
            )
        if not exists and bins is None and not append:
            raise click.UsageError("--bins N is required to create a dataset")
        if codec is None and manifest is not None and not overwrite:
            codec = manifest.codec  # appending: the dataset's
        if codec is None and (group_by_key or keep_names or labels):
            codec = "msgpack"
        source = open_source(
            src,
            kind,  # type: ignore[arg-type]  # click.Choice checked it
            group_by_key=group_by_key,
            storage_options=storage_options(source_option),
            structured=None if codec is None else codec != "bytes",
            keep_names=keep_names,
            labels=labels,
        )
        codec = codec or source.codec
        old = manifest.metadata.get("classes") if manifest is not None and not overwrite else None
        new = source.metadata.get("classes")
        if old is not None and new is not None and old != new:
            fail(
                f"{url} holds labels of classes {old}, {src} has classes {new}: labels "
                "would not mean the same; import into a new dataset"
            )
        mode: Mode = "w" if overwrite else "a"
        with (
            _import_progress(show_progress(progress), source) as bar,
            SplitWriter(
                url,
                bins,
                mode=mode,
                shuffle=shuffle,
                seed=seed,
                storage_options=options,
                metadata={"imported_from": src, **source.metadata},
                compression=None if compression == "none" else compression,
                compression_level=compression_level,
                codec=codec,
            ) as writer,
        ):
            writer.write_many(_progressed(source, bar) if bar.enabled else source.records)
    info = writer.info
    assert info is not None
    click.echo(
        f"imported {info.records_written:,} records ({info.bytes_written:,} bytes) from "
        f"{src} ({source.kind}); {url} now holds {info.num_records:,} records in "
        f"{info.num_bins:,} bins (generation {info.generation})"
    )


def _import_progress(enabled: bool, source: Any) -> Any:
    """A bar of records when the source knows its count, else of its bytes (a JSON
    Lines file, tar shards): either way with an ETA, when the size is known."""
    from splitdask._util._progress import Progress

    desc = f"importing {source.kind}"
    if source.total is None and source.nbytes is not None:
        return Progress(enabled, source.nbytes, desc, unit="B")
    return Progress(enabled, source.total, desc)


def _progressed(source: Any, bar: Any, every: int = 1024) -> Iterator[bytes]:
    """``source.records``, advancing ``bar`` by records or by the bytes read."""
    from splitdask._util._progress import counted

    if source.total is not None or source.position is None:
        yield from counted(source.records, bar)
        return
    n = 0
    for n, rec in enumerate(source.records, 1):
        if n % every == 0:
            bar.advance_to(source.position(), n)
        yield rec
    bar.advance_to(source.nbytes, n)


@cli.command()
@url_argument()
@click.argument("dest", metavar="DEST")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["files", "lines", "tar"]),
    default=None,
    help="files: a folder of 00000000.bin...; lines: one per line; tar: an archive. "
    "Default: from DEST's name (.tar/.tar.gz/.tgz: tar; .jsonl/.txt/.csv[.gz]: lines; "
    "a trailing /: files).",
)
@storage_option
@click.option(
    "-d",
    "--dest-option",
    multiple=True,
    metavar="KEY=VALUE",
    help="fsspec storage option for DEST (repeatable).",
)
@progress_option
def export(
    url: str,
    dest: str,
    fmt: str | None,
    storage_option: tuple[str, ...],
    dest_option: tuple[str, ...],
    progress: bool | None,
) -> None:
    """The records of URL, in write order, to DEST (the inverse of import).

    Files and tar members are named by zero-padded global index, so importing them
    restores the order. `lines` refuses a record holding a line break. Memory stays
    bounded whatever the record count.

    The tar layout costs every record a 512-byte header, and its bytes are padded to a
    multiple of 512: a record of 70 bytes takes 1,024 bytes of tar (4M such records:
    4.1 GB for 287 MB of payload). The archive ends with two zero blocks, padded to
    10 KiB. For many small records prefer `lines` (one byte per record) or a
    compressed tar (.tar.gz).

    \b
    Examples:
      splitdask export data/train out/
      splitdask export s3://bucket/train train.jsonl.gz
      splitdask export data/train shard.tar --format tar
    """
    from splitdask import SplitDataLoader
    from splitdask._transfer._export import export_records

    fmt = fmt or _export_format(dest)
    with reporting_errors():
        loader = SplitDataLoader(url, storage_options(storage_option))
        n = len(loader)
        from splitdask._util._progress import Progress, counted

        with Progress(show_progress(progress), n, f"exporting {fmt}") as bar:
            written = export_records(
                counted(iter(loader), bar) if bar.enabled else iter(loader),
                n,
                dest,
                fmt,  # type: ignore[arg-type]
                storage_options(dest_option),
            )
    click.echo(f"exported {written:,} records from {url} to {dest} ({fmt})")


def _export_format(dest: str) -> str:
    """``--format`` from DEST's name, or a usage error saying how to give it."""
    from splitdask._transfer._export import infer_format

    fmt = infer_format(dest)
    if fmt is None:
        raise click.UsageError(
            f"cannot tell the format from {dest!r}: pass --format files, lines or tar "
            "(or name it *.tar, *.jsonl, *.txt, or end a folder with /)"
        )
    return fmt

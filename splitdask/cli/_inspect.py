"""Commands that read a dataset: ``info``, ``verify``, ``head``, ``cat``, ``sample``."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any, BinaryIO

import click

from splitdask.cli._common import (
    EXIT_DAMAGED,
    EXIT_USAGE,
    cli,
    fail,
    progress_option,
    quiet_broken_pipe,
    reporting_errors,
    show_progress,
    storage_option,
    storage_options,
    url_argument,
)


def _open(url: str, options: tuple[str, ...], decode: bool = True) -> Any:
    from splitdask import SplitDataLoader

    return SplitDataLoader(url, storage_options(options), decode=decode)


@cli.command()
@url_argument()
@storage_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def info(url: str, storage_option: tuple[str, ...], as_json: bool) -> None:
    """Records, bins, parts, sizes, format, generation, bin balance, metadata, and for
    a remote dataset the GET requests, bytes and request bill of one epoch of each
    read path.

    \b
    Example:
      splitdask info s3://bucket/train -o anon=false --json
    """
    from splitdask._read._describe import cost_rows, sizeof

    with reporting_errors():
        d = _open(url, storage_option).describe()
    if as_json:
        click.echo(json.dumps(d.to_dict(), indent=2, sort_keys=True))
        return
    fmt = (
        "splitdataloader 0.0.1 (read only)"
        if d.format_version is None
        else f"{d.format} v{d.format_version}"
    )
    lines = [
        ("location", d.urlpath),
        ("format", fmt),
        ("generation", "-" if d.generation is None else str(d.generation)),
        ("records", f"{d.num_records:,}"),
        ("bins", f"{d.num_bins:,}"),
        ("parts", f"{d.num_parts:,}"),
        ("payload", f"{sizeof(d.payload_bytes)} ({d.payload_bytes:,} bytes)"),
        ("stored", f"{sizeof(d.stored_bytes)} ({d.stored_bytes:,} bytes)"),
        (
            "bin balance",
            f"min {d.bin_min:,} / mean {d.bin_mean:,.1f} / max {d.bin_max:,} records "
            f"(max / mean {d.imbalance:.2f})",
        ),
        ("metadata", json.dumps(d.metadata, sort_keys=True) if d.metadata else "-"),
    ]
    costs = cost_rows(d.epoch)
    for key, value in lines + costs[:1]:
        click.echo(f"{key + ':':<13}{value}")
    for key, value in costs[1:]:  # the read paths, under "epoch:"
        click.echo(f"  {key + ':':<13}{value}")


@cli.command()
@url_argument()
@storage_option
@progress_option
def verify(url: str, storage_option: tuple[str, ...], progress: bool | None) -> None:
    """Read every part whole and check sizes, checksums and footers.

    Exit status 0 when intact, 4 when damaged (every damaged file is named), 3 when
    there is no dataset at URL, 1 when it cannot be read (network, permission), 2 for a
    usage error.

    \b
    Example:
      splitdask verify data/train && echo intact
    """
    from splitdask.errors import CorruptDatasetError

    with reporting_errors():
        loader = _open(url, storage_option)
        try:
            report = loader.verify(progress=show_progress(progress))
        except CorruptDatasetError as exc:
            fail(f"{url} is damaged: {exc}", EXIT_DAMAGED)
    click.echo(f"{url}: intact ({report.parts:,} parts, {report.bytes:,} bytes checked)")


def _output_options(f: Any) -> Any:
    f = click.option("--json", "mode", flag_value="json", help="One JSON string per line.")(f)
    f = click.option(
        "--text", "mode", flag_value="text", help="UTF-8 (with replacement), one per line."
    )(f)
    f = click.option("--hex", "mode", flag_value="hex", help="Hex, one record per line.")(f)
    f = click.option(
        "--raw",
        "mode",
        flag_value="raw",
        help="Raw bytes, back to back (the default when stdout is not a terminal).",
    )(f)
    return click.option(
        "--terminal",
        "mode",
        flag_value="terminal",
        hidden=True,  # what a terminal gets by default; named for tests and scripts
    )(f)


def _shown(
    loader: Any, records: Iterable[Any], mode: str | None
) -> tuple[Iterable[Any], str | None]:
    """What ``head``/``cat``/``sample`` print: the records as stored (a ``"bytes"``
    dataset, or ``--hex``, whose loader does not decode), else one JSON line per
    decoded record (``_read._schema.to_json``: arrays as lists, bytes as
    ``{"$base64": ...}``)."""
    if loader.codec == "bytes" or mode == "hex":
        return records, mode
    from splitdask._read._schema import to_json

    return (to_json(r).encode() for r in records), "text"  # ASCII: printed as is


def _default_mode(mode: str | None) -> str:
    """Raw bytes for pipes and files; on a terminal, one readable line per record."""
    if mode is not None:
        return mode
    return "terminal" if sys.stdout.isatty() else "raw"


def _terminal_line(b: bytes) -> bytes:
    """A record as one line a person reads: its text if it is printable UTF-8, else
    Python's bytes literal (``b'sample 1|\\xcf...'``), which shows every byte."""
    try:
        text = b.decode("utf-8")
    except UnicodeDecodeError:
        return repr(b).encode() + b"\n"
    if text.isprintable() or all(c.isprintable() or c == "\t" for c in text):
        return text.encode() + b"\n"
    return repr(b).encode() + b"\n"


def _emit(records: Iterable[bytes], mode: str | None) -> None:
    out: BinaryIO = sys.stdout.buffer
    mode = _default_mode(mode)
    try:
        for rec in records:
            b = bytes(rec)
            if mode == "terminal":
                out.write(_terminal_line(b))
            elif mode == "raw":
                out.write(b)
            elif mode == "hex":
                out.write(b.hex().encode() + b"\n")
            elif mode == "text":
                out.write(b.decode("utf-8", "replace").encode() + b"\n")
            else:
                text = b.decode("utf-8", "surrogateescape")
                out.write(json.dumps(text, ensure_ascii=True).encode() + b"\n")
        out.flush()
    except BrokenPipeError:
        quiet_broken_pipe()


@cli.command()
@url_argument()
@storage_option
@click.option(
    "-n",
    "count",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Number of records.",
)
@_output_options
def head(url: str, storage_option: tuple[str, ...], count: int, mode: str | None) -> None:
    """The first records, in write order, to stdout (raw bytes; on a terminal, one
    line each: the text, or a bytes literal for binary records).

    \b
    Example:
      splitdask head data/train -n 3 --text
    """
    with reporting_errors():
        loader = _open(url, storage_option, decode=mode != "hex")
        records = loader[: min(count, len(loader))]
    _emit(*_shown(loader, records, mode))


@cli.command(context_settings={"ignore_unknown_options": True})  # INDEX may be negative
@url_argument()
@click.argument("indices", metavar="INDEX...", nargs=-1, required=True, type=int)
@storage_option
@_output_options
def cat(
    url: str, indices: tuple[int, ...], storage_option: tuple[str, ...], mode: str | None
) -> None:
    """The records at global INDEX... (negative counts from the end) to stdout.

    \b
    Example:
      splitdask cat data/train 0 17 -1 --hex
    """
    with reporting_errors():
        loader = _open(url, storage_option, decode=mode != "hex")
        try:
            records = loader[list(indices)]
        except IndexError as exc:
            fail(str(exc), EXIT_USAGE)
    _emit(*_shown(loader, records, mode))


@cli.command()
@url_argument()
@storage_option
@click.option(
    "-n",
    "count",
    type=click.IntRange(min=0),
    default=None,
    help="Number of records (default: 10, as head, or all of a smaller dataset).",
)
@click.option("--seed", type=int, default=None, help="Same seed, same sample.")
@_output_options
def sample(
    url: str,
    storage_option: tuple[str, ...],
    count: int | None,
    seed: int | None,
    mode: str | None,
) -> None:
    """N records drawn uniformly without replacement, to stdout.

    \b
    Example:
      splitdask sample s3://bucket/train -n 5 --seed 0 --json
    """
    import numpy as np

    with reporting_errors():
        loader = _open(url, storage_option, decode=mode != "hex")
        n = len(loader)
        if count is None:
            count = min(10, n)
        if count > n:
            fail(f"cannot sample {count} records from a dataset of {n}", EXIT_USAGE)
        idx = np.random.default_rng(seed).choice(n, size=count, replace=False)
        records = loader[idx]
    _emit(*_shown(loader, records, mode))

"""Commands about a dataset's versions and its tidiness: ``log``, ``gc`` and ``compact``."""

from __future__ import annotations

import json

import click

from splitdask.cli._common import (
    cli,
    parse_duration,
    reporting_errors,
    storage_option,
    storage_options,
    url_argument,
)


@cli.command()
@url_argument()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per version.")
@storage_option
def log(url: str, as_json: bool, storage_option: tuple[str, ...]) -> None:
    """List the versions of a dataset that can still be opened, oldest first.

    Each commit makes a version: its number, when, what it did, the dataset's
    records and bins then, what it wrote, and its tag. Open one with
    SplitDataLoader(url, version=N); `splitdask gc` removes versions past their
    retention.

    \b
    Example:
      splitdask log s3://bucket/train
    """
    import time

    import splitdask

    with reporting_errors():
        infos = splitdask.versions(url, storage_options(storage_option))
    if as_json:
        for v in infos:
            click.echo(json.dumps(v.to_dict()))
        return
    click.echo(
        f"{'version':>8}  {'committed':<19}  {'op':<9} {'records':>14} {'bins':>6}  "
        f"{'written':>12}  tag"
    )
    for v in infos:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v.time)) if v.time else "-"
        written = f"+{v.records_written:,}" if v.records_written else ""
        click.echo(
            f"{v.version:>8}  {when:<19}  {v.op:<9} {v.num_records:>14,} {v.num_bins:>6,}  "
            f"{written:>12}  {v.tag or ''}"
        )


@cli.command()
@url_argument()
@click.option(
    "--older-than",
    default="1h",
    show_default=True,
    metavar="DURATION",
    help="Keep anything younger than this (30s, 15m, 2h, 7d; 0: keep nothing).",
)
@click.option(
    "--keep-versions",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Keep the newest N versions whatever their age.",
)
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON object.")
@storage_option
def gc(
    url: str,
    older_than: str,
    keep_versions: int,
    dry_run: bool,
    as_json: bool,
    storage_option: tuple[str, ...],
) -> None:
    """Remove versions past their retention, and files no kept version names.

    A version is kept while the commit that replaced it is younger than
    --older-than, or while it is one of the newest --keep-versions; so are its
    parts. Unnamed files younger than that are kept too, so a write still running
    and readers of older versions keep working.

    \b
    Example:
      splitdask gc s3://bucket/train --older-than 2h --dry-run
    """
    import splitdask

    seconds = parse_duration(older_than)
    with reporting_errors():
        _something_at(url, storage_option)
        report = splitdask.gc(
            url,
            storage_options(storage_option),
            older_than=seconds,
            keep_versions=keep_versions,
            dry_run=dry_run,
        )
    if as_json:
        doc = {
            "retired": list(report.retired),
            "orphans": list(report.orphans),
            "bytes": report.bytes,
            "kept": report.kept,
            "dry_run": report.dry_run,
            "versions": list(report.versions),
            "oldest_kept": report.oldest_kept,
        }
        click.echo(json.dumps(doc, indent=2))
        return
    verb = "would remove" if dry_run else "removed"
    for path in report.removed:
        click.echo(f"{verb} {path}")
    click.echo(
        f"{verb} {len(report.removed):,} files ({report.bytes:,} bytes) and "
        f"{len(report.versions):,} versions; kept {report.kept:,} files younger than "
        f"{older_than}; the oldest version kept is {report.oldest_kept}"
    )


@cli.command()
@url_argument()
@storage_option
def compact(url: str, storage_option: tuple[str, ...]) -> None:
    """Rewrite each bin's parts as one part: same records, same order, one commit.

    After many appends a bin holds many small parts; compacting makes opening and
    reading cheaper. Old parts stay for readers of the previous snapshot until
    `splitdask gc` removes them.

    \b
    Example:
      splitdask compact data/train && splitdask gc data/train
    """
    from splitdask import compact as compact_dataset

    with reporting_errors():
        info = compact_dataset(url, storage_options(storage_option))
    click.echo(
        f"compacted {url}: {info.num_records:,} records in {info.parts_written:,} parts "
        f"over {info.num_bins:,} bins (version {info.version})"
    )


def _something_at(url: str, options: tuple[str, ...]) -> None:
    """A usage slip (a typo'd path) is "not found", not "nothing to remove"; a
    location holding only a killed writer's files is still cleaned."""
    from splitdask._dataset._snapshot import not_a_dataset
    from splitdask._store import open_store

    store = open_store(url, storage_options(options))
    if not store.list_dir(""):
        raise not_a_dataset(store)

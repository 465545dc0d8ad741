"""Commands that tidy a dataset: ``gc`` and ``compact``."""

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
@click.option(
    "--older-than",
    default="1h",
    show_default=True,
    metavar="DURATION",
    help="Keep anything younger than this (30s, 15m, 2h, 7d; 0: keep nothing).",
)
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON object.")
@storage_option
def gc(
    url: str, older_than: str, dry_run: bool, as_json: bool, storage_option: tuple[str, ...]
) -> None:
    """Remove parts no manifest names (leftovers of failed writes, replaced parts).

    Nothing younger than the grace period is removed, so a write still running and
    readers of the previous snapshot keep working.

    \b
    Example:
      splitdask gc s3://bucket/train --older-than 2h --dry-run
    """
    import splitdask

    seconds = parse_duration(older_than)
    with reporting_errors():
        report = splitdask.gc(
            url, storage_options(storage_option), older_than=seconds, dry_run=dry_run
        )
    if as_json:
        doc = {
            "retired": list(report.retired),
            "orphans": list(report.orphans),
            "bytes": report.bytes,
            "kept": report.kept,
            "dry_run": report.dry_run,
        }
        click.echo(json.dumps(doc, indent=2))
        return
    verb = "would remove" if dry_run else "removed"
    for path in report.removed:
        click.echo(f"{verb} {path}")
    click.echo(
        f"{verb} {len(report.removed):,} files ({report.bytes:,} bytes); kept "
        f"{report.kept:,} younger than {older_than}"
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
        f"over {info.num_bins:,} bins (generation {info.generation})"
    )

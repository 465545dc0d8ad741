"""``splitdask cache info|clear``: the local part cache (``cache_dir=``)."""

from __future__ import annotations

import json
import os

import click

from splitdask.cli._common import EXIT_NOT_FOUND, EXIT_USAGE, cli, fail, reporting_errors

_DIR_HELP = "The cache directory (default: $SPLITDASK_CACHE_DIR)."


def _directory(cache_dir: str | None) -> str:
    from splitdask._store._cachesettings import CACHE_DIR_ENV

    given = cache_dir or os.environ.get(CACHE_DIR_ENV)
    if not given:
        fail(f"no cache directory: pass --cache-dir DIR or set {CACHE_DIR_ENV}", EXIT_USAGE)
    directory = os.path.abspath(os.path.expanduser(str(given)))
    if not os.path.isdir(directory):
        fail(
            f"no cache at {directory}: it is not a directory (a cache is made on first use)",
            EXIT_NOT_FOUND,
        )
    return directory


@cli.group()
def cache() -> None:
    """Look at or empty the local cache of remote parts (cache_dir=).

    \b
    Example:
      splitdask cache info --cache-dir /scratch/splitdask
      SPLITDASK_CACHE_DIR=/scratch/splitdask splitdask cache clear
    """


@cache.command()
@click.option("--cache-dir", metavar="DIR", help=_DIR_HELP)
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON object.")
def info(cache_dir: str | None, as_json: bool) -> None:
    """Entries, bytes and the limit of a part cache (every process's entries).

    The limit shown is the one a reader gets by default: $SPLITDASK_CACHE_BYTES, else
    10% of the free space or 50 GiB, whichever is less.
    """
    from splitdask._store._cache import PartCache
    from splitdask._store._cachesettings import (
        CACHE_BYTES_ENV,
        default_cache_bytes,
        parse_bytes,
    )

    directory = _directory(cache_dir)
    with reporting_errors():
        env = os.environ.get(CACHE_BYTES_ENV)
        limit = parse_bytes(env, CACHE_BYTES_ENV) if env else default_cache_bytes(directory)
        report = PartCache(directory, limit).info()
    if as_json:
        click.echo(json.dumps(report._asdict(), indent=2))
        return
    click.echo(
        f"{report.directory}: {report.entries:,} parts, {report.bytes:,} bytes of a "
        f"{report.limit:,}-byte limit ({100 * report.bytes / max(1, report.limit):.0f}%)"
    )


@cache.command()
@click.option("--cache-dir", metavar="DIR", help=_DIR_HELP)
def clear(cache_dir: str | None) -> None:
    """Remove every cached part (only the cache's own files).

    Processes reading through the cache go on: parts they have mapped stay valid,
    and parts they need again are fetched again.
    """
    from splitdask._store._cache import clear_cache

    directory = _directory(cache_dir)
    with reporting_errors():
        n, size = clear_cache(directory)
    click.echo(f"removed {n:,} parts ({size:,} bytes) from {directory}")

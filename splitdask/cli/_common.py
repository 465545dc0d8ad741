"""What every ``splitdask`` command shares: the group, ``-o`` options, errors, progress.

Exit codes, the same for every command (:data:`EXIT_CODES`, shown under each
command's ``--help``): 0 success, 1 the work failed (the message says why), 2 a usage
error (click's own code), 3 nothing found at the location, 4 a damaged dataset (a file
failed its checks: ``fsck``'s "errors left").
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

__all__ = [
    "EXIT_CODES",
    "EXIT_DAMAGED",
    "EXIT_FAILED",
    "EXIT_NOT_FOUND",
    "EXIT_USAGE",
    "cli",
    "document_exit_codes",
    "fail",
    "progress_option",
    "reporting_errors",
    "storage_options",
    "storage_option",
    "show_progress",
    "url_argument",
]

F = TypeVar("F", bound=Callable[..., Any])

EXIT_FAILED = 1
EXIT_USAGE = 2  # click's code for a UsageError
EXIT_NOT_FOUND = 3
EXIT_DAMAGED = 4
EXIT_CODES = (
    "Exit status: 0 success; 1 failed (storage, network, permission, a conflict; the "
    "message says why); 2 usage error; 3 not found (no dataset, file, bucket or cache "
    "there); 4 damaged (a file failed its checks; each is named)."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="splitdask")
def cli() -> None:
    """Look at, check, import, export and maintain splitdask datasets.

    Every command takes a local path or an fsspec URL (s3://bucket/train, ...) and
    -o KEY=VALUE storage options. `splitdask COMMAND --help` shows an example.

    \b
    Example:
      splitdask import ./images data/train --bins 64
      splitdask info data/train
    """


def fail(message: str, code: int = EXIT_FAILED) -> None:
    """Print ``message`` as an error and exit with ``code`` (one of ``EXIT_*``)."""
    click.echo(f"splitdask: error: {message}", err=True)
    sys.exit(code)


def document_exit_codes(command: click.Command) -> None:
    """Put :data:`EXIT_CODES` under the ``--help`` of ``command`` and its subcommands."""
    command.epilog = EXIT_CODES
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            document_exit_codes(sub)


def exit_code(exc: BaseException) -> int:
    """The status a library error ends the command with."""
    from splitdask.errors import CorruptDatasetError

    if isinstance(exc, CorruptDatasetError):
        return EXIT_DAMAGED
    if isinstance(exc, FileNotFoundError | NotADirectoryError):  # DatasetNotFoundError too
        return EXIT_NOT_FOUND
    return EXIT_FAILED


@contextmanager
def reporting_errors() -> Iterator[None]:
    """Library errors become one line on stderr and a status of :func:`exit_code`,
    not a traceback."""
    from splitdask.errors import SplitDaskError

    try:
        yield
    except (SplitDaskError, OSError, ValueError, TypeError, ImportError) as exc:
        if isinstance(exc, BrokenPipeError):
            raise
        fail(str(exc) or type(exc).__name__, exit_code(exc))
    except Exception as exc:
        # A storage backend's own error that no store call translated (botocore's
        # derive from no builtin error): still one line, naming its kind.
        if type(exc).__module__.split(".")[0] not in _BACKENDS:
            raise
        fail(_one_line(f"{type(exc).__name__}: {exc}"))


_BACKENDS = {"botocore", "aiobotocore", "aiohttp", "s3fs", "fsspec", "gcsfs", "adlfs", "urllib3"}


def _one_line(message: str) -> str:
    """``message`` on one line (a server's answer may span several)."""
    return " ".join(message.split())


def _parse_option(value: str) -> tuple[str, Any]:
    key, sep, raw = value.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{value!r} is not KEY=VALUE")
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw  # a plain string


def storage_option(f: F) -> F:
    """``-o/--storage-option KEY=VALUE``, repeatable; values parse as JSON where they can."""
    return click.option(
        "-o",
        "--storage-option",
        "storage_option",
        multiple=True,
        metavar="KEY=VALUE",
        help="fsspec storage option for URL (repeatable); VALUE is parsed as JSON if it "
        'can be (-o anon=true, -o client_kwargs=\'{"region_name": "eu-west-1"}\').',
    )(f)


def storage_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    return dict(_parse_option(p) for p in pairs)


def url_argument(name: str = "url") -> Callable[[F], F]:
    return click.argument(name, metavar=name.upper())


def progress_option(f: F) -> F:
    return click.option(
        "--progress/--no-progress",
        default=None,
        help="Progress bar on stderr (default: when stderr is a terminal).",
    )(f)


def show_progress(flag: bool | None) -> bool:
    return sys.stderr.isatty() if flag is None else flag


def parse_duration(text: str) -> float:
    """``"90"``, ``"90s"``, ``"15m"``, ``"2h"``, ``"7d"`` -> seconds."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([smhdw]?)\s*", text)
    if m is None:
        raise click.BadParameter(f"{text!r} is not a duration such as 30s, 15m, 2h or 7d")
    scale = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
    return float(m.group(1)) * scale


def quiet_broken_pipe() -> None:
    """After a reader such as ``head`` closed stdout: stop quietly (status 0)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass
    sys.exit(0)

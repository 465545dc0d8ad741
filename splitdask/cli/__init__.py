"""The ``splitdask`` command (also ``python -m splitdask``), built on click.

One module per group of commands: ``_inspect`` (info, verify, head, cat, sample),
``_transfer`` (import, export), ``_maintain`` (log, gc, compact), ``_cache`` (cache info,
clear). Each command is a thin
layer over a library function, so everything it does can be done from Python too.
"""

from __future__ import annotations

from splitdask.cli import _cache, _inspect, _maintain, _transfer
from splitdask.cli._common import cli, document_exit_codes

__all__ = ["cli", "main"]

_COMMANDS = (_cache, _inspect, _maintain, _transfer)  # imported to register their commands
document_exit_codes(cli)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="splitdask")

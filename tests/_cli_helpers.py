"""Running the ``splitdask`` command as a user would: a subprocess, bytes in and out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

# No bar unless a test asks (stderr is a pipe anyway) and no colour codes.
ENV = {**os.environ, "NO_COLOR": "1"}


def run(
    *args: str, input: bytes | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "splitdask", *args],
        input=input,
        capture_output=True,
        env=ENV,
        timeout=timeout,
    )


def ok(*args: str) -> bytes:
    """stdout of a command that must succeed."""
    out = run(*args)
    assert out.returncode == 0, (
        f"splitdask {' '.join(args)}: {out.returncode}\n{out.stderr.decode()}"
    )
    return out.stdout


def options(storage_options: dict[str, Any]) -> list[str]:
    """``-o KEY=VALUE`` arguments for a storage-options dict (values as JSON)."""
    out: list[str] = []
    for key, value in storage_options.items():
        out += ["-o", f"{key}={json.dumps(value)}"]
    return out

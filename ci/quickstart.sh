#!/usr/bin/env bash
# Fresh machine -> install splitdask and run the quickstart example
# (writes and reads a dataset in a temp directory, then reads it through a local Dask cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
.venv/bin/python examples/quickstart.py "$@"

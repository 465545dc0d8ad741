#!/usr/bin/env bash
# Fresh machine -> install splitdask and run the quickstart example
# (writes and reads a dataset in a temp directory, then reads it through a local Dask cluster).
# Installs into ./.venv with the pins of ci/constraints.txt (see ci/install.sh) and the
# `dask` extra (the example reads through a LocalCluster of distributed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/install.sh dask
.venv/bin/python examples/quickstart.py "$@"

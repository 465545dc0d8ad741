#!/usr/bin/env bash
# Fresh machine -> install splitdask and run the quickstart example
# (writes and reads a dataset in a temp directory, then reads it through a local Dask cluster).
# Installs into ./.venv with the pins of ci/constraints.txt (see ci/install.sh), no extras.
set -euo pipefail
cd "$(dirname "$0")/.."
# Quiet setuptools' advice about editable installs (a user warning, not a problem here).
PYTHONWARNINGS=ignore::UserWarning bash ci/install.sh
.venv/bin/python examples/quickstart.py "$@"

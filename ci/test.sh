#!/usr/bin/env bash
# Fresh machine -> lint, type-check, structure check, then the whole test suite.
# Creates ./.venv (with python3, or $PYTHON) and installs splitdask with the extras below,
# pinned by ci/constraints.txt (see ci/install.sh); then ruff, mypy, ci/structure.py, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# Extras CI installs and tests: one comma-separated list (e.g. "test,torch").
EXTRAS=test,ray,torch
bash ci/install.sh "$EXTRAS"
# tests/test_notebook_view.py renders the notebook view in a real headless Chromium
# (Debian's package; about 16 s for apt-get update + install on the CI machine).
if ! command -v chromium >/dev/null 2>&1; then
    apt-get update && apt-get install -y --no-install-recommends chromium
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# Module/class size limits and import circles; fatal (it fails on the pre-restructure tree).
.venv/bin/python ci/structure.py
.venv/bin/python -m pytest "$@"

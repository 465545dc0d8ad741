#!/usr/bin/env bash
# Fresh machine -> lint, type-check, structure check, then the whole test suite.
# Creates ./.venv (with python3, or $PYTHON) and installs splitdask with the extras below,
# pinned by ci/constraints.txt (see ci/install.sh); then ruff, mypy, ci/structure.py, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# Extras CI installs and tests: one comma-separated list (test: the suite's own
# dependencies; dev: ruff, mypy, atheris; ray and torch: their engines).
EXTRAS=test,dev,ray,torch
# A headless Chromium for tests/test_notebook_view.py, or a clear stop before the install.
bash ci/browser.sh
bash ci/install.sh "$EXTRAS"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# Module/class size limits and import circles; fatal (it fails on the pre-restructure tree).
.venv/bin/python ci/structure.py
.venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# tests/test_notebook_view.py renders the notebook view in a real headless Chromium
# (`chromium` on PATH). Where it is missing and this runs as root with apt-get (the CI
# machine: Debian, about 16 s), it is installed; anywhere else this stops with what to
# install, since the suite skips nothing. Run by ci/test.sh before anything is installed.
set -euo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update && apt-get install -y --no-install-recommends chromium
    exit 0
fi
echo "ci/browser.sh: tests/test_notebook_view.py needs a headless Chromium as 'chromium'" \
    "on PATH, and this machine has none; installing it needs root and apt-get. Install" \
    "it yourself (Debian/Ubuntu: sudo apt-get install chromium; Fedora: sudo dnf install" \
    "chromium; macOS: brew install --cask chromium), then run bash ci/test.sh again." >&2
exit 1

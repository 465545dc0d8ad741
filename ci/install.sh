#!/usr/bin/env bash
# Install splitdask into ./.venv with the pins of ci/constraints.txt.
#
#   bash ci/install.sh            # splitdask and its runtime dependencies
#   bash ci/install.sh dask       # ... plus an extra (ci/quickstart.sh); "test,dev,s3" etc. too
#
# A regular (not editable) install: a copy of the package in .venv's site-packages. An
# editable install puts only an import hook there, which a folder named `splitdask` in
# the current directory (the clone itself, seen from its parent) shadows: `from splitdask
# import ...` then fails with "(unknown location)". After editing the sources, run this
# again (tests run from the clone's root import the sources themselves).
#
# Creates ./.venv with $PYTHON (default python3) when it has no interpreter. Steps:
#   1. pip itself, at the version the constraints pin;
#   2. the specs of ci/preinstall.txt that belong to the requested extras, alone and first
#      (packages such as torch that must come from one exact spec);
#   3. `pip install -c ci/constraints.txt .[EXTRAS]`, rebuilt from the sources every time.
# ci/constraints.txt pins every package that resolves (see its header and ci/lock.sh), so
# pip never back-tracks. It was resolved for one Python minor version: with another Python
# this script warns and installs without it (pip may then take minutes to resolve).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${1:-}
CONSTRAINTS=ci/constraints.txt

[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip=(.venv/bin/python -m pip)

# The Python the constraints were resolved for: header line "# python: 3.11".
lock_py=$(sed -n 's/^# python: *//p' "$CONSTRAINTS" | head -n 1)
venv_py=$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
pin=(-c "$CONSTRAINTS")
if [ "$lock_py" != "$venv_py" ]; then
    echo "ci/install.sh: $CONSTRAINTS is resolved for Python $lock_py, .venv has $venv_py:" \
        "installing without it (slow resolution possible; 'bash ci/lock.sh' with this" \
        "Python makes a lock for it)" >&2
    pin=()
fi

"${pip[@]}" install -q "${pin[@]}" --upgrade pip

# Step 2: ci/preinstall.txt lines "EXTRA: SPEC" whose EXTRA was asked for.
pre=()
if [ -n "$EXTRAS" ]; then
    while IFS= read -r line; do
        line=${line%%#*}
        [[ $line == *:* ]] || continue
        extra=$(echo "${line%%:*}" | tr -d '[:space:]')
        spec=$(echo "${line#*:}" | xargs)
        if [[ ",$EXTRAS," == *",$extra,"* && " ${pre[*]-} " != *" $spec "* ]]; then
            pre+=("$spec")
        fi
    done < ci/preinstall.txt
fi
if [ ${#pre[@]} -gt 0 ]; then
    "${pip[@]}" install -q "${pin[@]}" "${pre[@]}"
fi

# --force-reinstall --no-deps: the same version number, but maybe other sources.
"${pip[@]}" install -q "${pin[@]}" ".${EXTRAS:+[$EXTRAS]}"
"${pip[@]}" install -q --no-deps --force-reinstall .

#!/usr/bin/env bash
# Install splitdask (editable) into ./.venv with the pins of ci/constraints.txt.
#
#   bash ci/install.sh            # splitdask and its runtime dependencies (ci/quickstart.sh)
#   bash ci/install.sh test       # ... plus the test extra (ci/test.sh); "test,s3" etc. also work
#
# Creates ./.venv with $PYTHON (default python3) when it has no interpreter. Steps:
#   1. pip itself, at the version the constraints pin;
#   2. the specs of ci/preinstall.txt that belong to the requested extras, alone and first
#      (packages such as torch that must come from one exact spec);
#   3. `pip install -c ci/constraints.txt -e .[EXTRAS]`.
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
        if [[ ",$EXTRAS," == *",$extra,"* ]]; then pre+=("$spec"); fi
    done < ci/preinstall.txt
fi
if [ ${#pre[@]} -gt 0 ]; then
    "${pip[@]}" install -q "${pin[@]}" "${pre[@]}"
fi

"${pip[@]}" install -q "${pin[@]}" -e ".${EXTRAS:+[$EXTRAS]}"

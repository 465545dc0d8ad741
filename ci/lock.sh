#!/usr/bin/env bash
# Regenerate ci/constraints.txt: the exact version of every package that splitdask with
# ALL its extras resolves to, for the Python that runs this script (default python3).
#
#   bash ci/lock.sh                     # then review `git diff ci/constraints.txt`, commit
#   PYTHON=python3.12 bash ci/lock.sh   # a lock for another Python (ci/install.sh only
#                                       # uses it on that Python)
#
# Resolves in a scratch venv with pip's --dry-run --report (nothing is installed), in two
# stages so that pip does not back-track:
#   1. the runtime: splitdask plus every extra but `test` and `dev` (s3, ...). No test tool takes
#      part, so the runtime dependencies get the newest versions that fit each other;
#   2. everything, `.[all extras]`, with stage 1's versions as constraints: the test tools
#      (moto, boto3, ...) must fit around the runtime, not the other way round.
#      Resolving everything in one go makes pip take boto3's newest release first, whose
#      botocore no aiobotocore (under s3fs) accepts, and back-track through every release
#      of aiobotocore, s3fs, distributed and dask before it tries an older boto3.
# The specs of ci/preinstall.txt are constraints in both stages and are copied verbatim.
# Adding an extra to pyproject.toml needs nothing here: every extra is locked.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=ci/constraints.txt
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$PY" -m venv "$work/venv"
vpy="$work/venv/bin/python"
"$vpy" -m pip install -q --upgrade pip 'tomli; python_version < "3.11"'

# Extras from pyproject.toml (all, and all but test), preinstall specs into pre.txt.
"$vpy" - "$work" <<'EOF'
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

work = Path(sys.argv[1])
project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
extras = list(project.get("optional-dependencies", {}))
(work / "all").write_text(",".join(extras))
(work / "runtime").write_text(",".join(e for e in extras if e not in ("test", "dev")))
(work / "name").write_text(project["name"])
specs = []
for line in Path("ci/preinstall.txt").read_text().splitlines():
    line = line.split("#", 1)[0]
    if ":" in line:
        specs.append(line.split(":", 1)[1].strip())
(work / "pre.txt").write_text("".join(s + "\n" for s in specs))
EOF
all=$(cat "$work/all")
runtime=$(cat "$work/runtime")

resolve() {  # resolve REPORT EXTRAS [pip options...]
    local report=$1 extras=$2
    shift 2
    echo "ci/lock.sh: resolving .${extras:+[$extras]}" >&2
    "$vpy" -m pip install -q --dry-run --ignore-installed --report "$report" \
        -c "$work/pre.txt" "$@" -e ".${extras:+[$extras]}"
}

pins() {  # pins REPORT OUT: name==version of everything in a report but the project
    "$vpy" - "$1" "$work/name" >"$2" <<'EOF'
import json
import re
import sys

name = open(sys.argv[2]).read()
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
for item in json.load(open(sys.argv[1]))["install"]:
    meta = item["metadata"]
    if norm(meta["name"]) != norm(name):
        print(f"{norm(meta['name'])}=={meta['version']}")
EOF
}

resolve "$work/runtime.json" "$runtime"
pins "$work/runtime.json" "$work/runtime.txt"
resolve "$work/all.json" "$all" -c "$work/runtime.txt"
pins "$work/all.json" "$work/all.txt"

"$vpy" - "$work" "$OUT" "$all" <<'EOF'
import datetime
import platform
import re
import sys
from importlib.metadata import version
from pathlib import Path

work, out, extras = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
pre = {
    norm(re.match(r"[A-Za-z0-9._-]+", s).group()): s
    for s in (work / "pre.txt").read_text().split()
}
lines = {"pip": f"pip=={version('pip')}"}
for line in (work / "all.txt").read_text().split():
    pkg = line.split("==")[0]
    lines[pkg] = pre.get(pkg, line)
py = "%d.%d" % sys.version_info[:2]
header = f"""\
# Exact versions for CI, ci/test.sh and ci/quickstart.sh (through ci/install.sh):
# every package that `pip install '.[{extras}]'` resolves to, so that pip never
# back-tracks. pyproject.toml keeps floors for users; this file is not for them.
#
# python: {py}
#   Resolved for Python {py} only ({platform.system().lower()} {platform.machine()}), although
#   requires-python is >=3.10: some pins need 3.11 (numpy 2.3+ dropped 3.10). ci/install.sh
#   uses this file only when its .venv runs Python {py}, and warns otherwise.
#
# Do not edit by hand. Regenerate, then review the diff and run bash ci/test.sh:
#   bash ci/lock.sh
# Generated {datetime.date.today().isoformat()} by ci/lock.sh with pip {version('pip')}.
"""
out.write_text(header + "".join(lines[k] + "\n" for k in sorted(lines)))
print(f"ci/lock.sh: wrote {out}: {len(lines)} pins for Python {py}", file=sys.stderr)
EOF

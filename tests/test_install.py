"""``ci/install.sh`` as a newcomer runs it: from a fresh copy of the clone, named
``splitdask`` as ``git clone`` names it, into a new ``.venv``; then a script run from
the clone's parent directory imports the installed package, not the clone's folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _clone(dest: Path) -> None:
    """The files git tracks, as a fresh clone has them (no .venv, no build output); in a
    copy without git (an archive), the files but those."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
    if listed.returncode == 0:
        names = [os.fsdecode(n) for n in listed.stdout.split(b"\0") if n]
    else:
        skip = {".git", ".venv", "build", "__pycache__", ".mypy_cache", ".ruff_cache"}
        names = [
            str(p.relative_to(ROOT))
            for p in ROOT.rglob("*")
            if p.is_file()
            and not skip.intersection(p.relative_to(ROOT).parts)
            and not any(part.endswith(".egg-info") for part in p.parts)
        ]
    for rel in names:
        if not (ROOT / rel).is_file():
            continue  # deleted in the work tree
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)


@pytest.mark.timeout(900)
def test_a_script_beside_the_clone_imports_the_installed_package(tmp_path: Path) -> None:
    clone = tmp_path / "splitdask"
    _clone(clone)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHON"] = sys.executable
    install = subprocess.run(
        ["bash", "ci/install.sh"], cwd=clone, env=env, capture_output=True, text=True
    )
    assert install.returncode == 0, install.stderr
    script = tmp_path / "train.py"
    script.write_text(
        "from splitdask import SplitDataLoader, write_split_data\n"
        "write_split_data('data', [b'a', b'b'], splits=2, mode='w')\n"
        "print(len(SplitDataLoader('data')))\n"
    )
    # From the clone's parent: `splitdask/` (the clone) is in the current directory.
    out = subprocess.run(
        [str(clone / ".venv" / "bin" / "python"), script.name],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "2\n"
    cli = subprocess.run(
        [str(clone / ".venv" / "bin" / "splitdask"), "info", "data", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    assert '"num_records": 2' in cli.stdout


def _bin_with(tmp_path: Path, *tools: str) -> str:
    """A PATH of only these tools (symlinks to the real ones): no chromium on it."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in tools:
        real = shutil.which(tool)
        assert real is not None, tool
        (folder / tool).symlink_to(real)
    return str(folder)


def test_the_browser_check_stops_with_advice_where_it_cannot_install(tmp_path: Path) -> None:
    # No apt-get on PATH (as on Fedora or macOS): nothing is tried, the advice is printed.
    env = {**os.environ, "PATH": _bin_with(tmp_path, "id")}
    out = subprocess.run(
        ["/bin/bash", str(ROOT / "ci" / "browser.sh")], env=env, capture_output=True, text=True
    )
    assert out.returncode == 1
    assert "needs a headless Chromium as 'chromium' on PATH" in out.stderr
    assert "sudo apt-get install chromium" in out.stderr
    assert "Reading package lists" not in out.stdout


def test_the_browser_check_is_quiet_when_chromium_is_there(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": _bin_with(tmp_path, "id", "chromium")}
    out = subprocess.run(
        ["/bin/bash", str(ROOT / "ci" / "browser.sh")], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0
    assert out.stdout == out.stderr == ""


def test_the_browser_check_does_not_run_apt_get_unless_root() -> None:
    # apt-get is there but the user is not root (a developer's Debian machine). The
    # unprivileged user must reach the script: a world-readable folder, not tmp_path.
    setpriv = shutil.which("setpriv")
    assert setpriv is not None
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        tmp.chmod(0o755)
        bin_dir = _bin_with(tmp, "id", "apt-get")
        script = tmp / "browser.sh"
        shutil.copy(ROOT / "ci" / "browser.sh", script)
        script.chmod(0o755)
        out = subprocess.run(
            [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "/bin/bash", str(script)],
            env={**os.environ, "PATH": bin_dir},
            capture_output=True,
            text=True,
        )
    assert out.returncode == 1, out.stderr
    assert "installing it needs root and apt-get" in out.stderr
    assert "Reading package lists" not in out.stdout

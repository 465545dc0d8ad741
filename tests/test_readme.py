"""Every code block of README.md runs as a script, in order, from one empty directory,
and then all of them again in the same directory: a reader who re-runs the README top
to bottom gets the counts it states (the blocks assert them).

Python blocks run as ``python block.py`` (so a block that starts processes needs its
``if __name__ == "__main__":`` guard, as a user's script does); shell blocks run with
``bash -e`` and the ``splitdask`` command of this interpreter on ``PATH``. Blocks
that install (``ci/...``) are what CI itself runs, so they are not repeated here.
S3 blocks reach the test server: ``s3://bucket`` is a bucket created there, and the
endpoint and credentials come from the environment, as a user's would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import s3fs
from conftest import DUMMY_CREDENTIALS

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"^```(python|bash)\n(.*?)^```$", re.S | re.M)


def blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(README.read_text())]


@pytest.fixture
def bucket(s3_fs: s3fs.S3FileSystem) -> Iterator[None]:
    s3_fs.call_s3("create_bucket", Bucket="bucket")
    s3_fs.invalidate_cache()
    yield
    s3_fs.invalidate_cache()
    s3_fs.rm("bucket", recursive=True)


def test_the_readme_has_the_blocks_this_test_runs() -> None:
    kinds = [kind for kind, _ in blocks()]
    assert kinds.count("python") >= 6
    assert kinds.count("bash") >= 2


@pytest.mark.timeout(480)
@pytest.mark.usefixtures("bucket")
def test_every_readme_block_runs_as_a_script(
    tmp_path: Path, s3_storage_options: dict[str, Any]
) -> None:
    env: dict[str, str] = {
        **os.environ,
        **DUMMY_CREDENTIALS,
        "AWS_ENDPOINT_URL": s3_storage_options["endpoint_url"],
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    ran = 0
    for run in ("first run", "second run"):
        for k, (kind, code) in enumerate(blocks()):
            if kind == "bash" and "ci/" in code:
                continue
            script = tmp_path / f"block{k}.{'py' if kind == 'python' else 'sh'}"
            script.write_text(code)
            cmd = [sys.executable, script.name] if kind == "python" else ["bash", "-e", script.name]
            out = subprocess.run(
                cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
            )
            assert out.returncode == 0, (
                f"README block {k} ({kind}), {run}:\n{code}\n{out.stdout}\n{out.stderr}"
            )
            ran += 1
    assert ran >= 14


def _sections() -> list[tuple[str, str]]:
    """(heading, text) of each ``##``/``###`` section, code blocks included."""
    parts = re.split(r"^(#{2,3} .*)$", README.read_text(), flags=re.M)
    return list(zip(parts[1::2], parts[2::2], strict=True))


def test_each_block_that_needs_an_extra_says_which() -> None:
    needs = {
        "s3://bucket": '".[s3',
        "import ray": '".[ray]"',
        "torch.utils.data": '".[torch',
        "LocalCluster": '".[dask]"',
    }
    for heading, text in _sections():
        for kind, code in (m.groups() for m in BLOCK.finditer(text)):
            prose = text[: text.index(code)]
            for marker, extra in needs.items():
                if kind == "python" and marker in code:
                    assert extra in prose or extra.replace('"', "") in prose, (heading, marker)


def test_install_commands_work_from_a_clone_and_the_shell_is_activated_first() -> None:
    text = README.read_text()
    assert "pip install splitdask[" not in text  # no index has it: from a clone, ".[...]"
    assert '"splitdask[' not in text.replace('`"splitdask[ray]"` from an\nindex', "")
    first_cli = text.index("splitdask import train.jsonl")
    assert text.index("source .venv/bin/activate") < first_cli
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in text

